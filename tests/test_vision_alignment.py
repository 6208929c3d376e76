"""The demo asset's vision-alignment loss on hand-computed cases (assets/vision_alignment.py)."""

import math

import torch

from assets.vision_alignment import alignment_loss


def _case():
    eye = torch.eye(4)
    candidates = [eye[:2], eye[2:]]  # colour words e1, e2; shape words e3, e4
    targets = torch.stack([eye[0], eye[3]]).unsqueeze(0)  # one image: colour e1, shape e4, slots [colour, shape]
    word_ids = torch.tensor([[0, 1]])
    return candidates, targets, word_ids


def test_regression_alone_prefers_the_average_shape_word_over_a_wrong_one() -> None:
    """Why the cross-entropy term exists: the MSE of the average shape embedding is a quarter of the wrong word's."""
    candidates, targets, word_ids = _case()
    mean_shape = targets.clone()
    mean_shape[0, 1] = (candidates[1][0] + candidates[1][1]) / 2
    wrong = targets.clone()
    wrong[0, 1] = candidates[1][0]
    mse = alignment_loss(mean_shape, targets, word_ids, candidates, ce_weight=0.0, temperature=0.05)
    assert math.isclose(mse.item(), 0.5 / 8, rel_tol=1e-6)  # (e3 - e4) / 2 squared, over 2 slots x 4 dims
    assert alignment_loss(wrong, targets, word_ids, candidates, 0.0, 0.05).item() == 4 * mse.item()


def test_cross_entropy_makes_the_average_shape_word_cost_log_2() -> None:
    candidates, targets, word_ids = _case()
    tiny = math.log1p(math.exp(-1 / 0.05))  # CE of a slot equal to its word: logits (1 / T, 0)
    exact = alignment_loss(targets, targets, word_ids, candidates, ce_weight=1.0, temperature=0.05)
    assert math.isclose(exact.item(), 2 * tiny, abs_tol=1e-6)
    mean_shape = targets.clone()
    mean_shape[0, 1] = (candidates[1][0] + candidates[1][1]) / 2
    loss = alignment_loss(mean_shape, targets, word_ids, candidates, ce_weight=1.0, temperature=0.05)
    assert math.isclose(loss.item(), 0.5 / 8 + tiny + math.log(2), rel_tol=1e-5, abs_tol=1e-6)


def test_nearest_word_vote() -> None:
    """scripts/vision_probe.py votes each image's slots of one family for their nearest word."""
    from scripts.vision_probe import nearest_word_accuracy

    words = torch.eye(3)
    tokens = torch.stack(
        [
            torch.stack([words[0], words[2], words[0], words[2], words[1], words[2]]),  # shape slots: 2, 2, 2
            torch.stack([words[0], words[1], words[0], words[1], words[0], words[0]]),  # shape slots: 1, 1, 0 -> 1
        ]
    )
    assert nearest_word_accuracy(tokens, words, torch.tensor([2, 1]), slot=1) == 1.0
    assert nearest_word_accuracy(tokens, words, torch.tensor([2, 0]), slot=1) == 0.5
    assert nearest_word_accuracy(tokens, words, torch.tensor([0, 0]), slot=0) == 1.0  # colour slots: 0, 0, 1 / 0, 0, 0
