"""GRPO group filtering: the keep rule on hand-made rewards, refilling that stops at max_resample, the DDP round
logic, refill draws, batch slicing and merging, and short fits that train on exactly the kept groups."""

from __future__ import annotations

import json

import lightning as L
import pytest
import torch
from lightning.pytorch.loggers import CSVLogger

from assets.test_data import write_color_data
from datamodules.collate import IGNORE_INDEX
from datamodules.vlm_data import VLMDataModule
from lightning_modules.group_filter import (
    GroupFilter,
    concat_prompt_batches,
    fill_groups,
    keep_groups,
    refill_indices,
    take_rows,
)
from lightning_modules.grpo import GRPOConfig, GRPOModule
from lightning_modules.sampling import SamplingConfig
from lightning_modules.training import OptimConfig
from lightning_modules.vlm import LoraOptions, VLMOptions
from tests.helpers import cpu_trainer

# ------------------------------------------------------------------------------------------------ pure decisions


def test_keep_groups_on_hand_made_rewards():
    rewards = torch.tensor(
        [
            [1.0, 1.0, 1.0, 1.0],  # all right: no spread
            [0.0, 0.0, 0.0, 0.0],  # all wrong: no spread
            [1.0, 0.0, 0.0, 0.0],  # std 0.5
            [0.3, 0.3, 0.3, 0.3],  # equal non-binary rewards: never spread, whatever float sums give
            [1.0, 0.0, 1.0, 0.0],  # std 0.577
        ]
    )
    assert keep_groups(rewards).tolist() == [False, False, True, False, True]
    assert keep_groups(rewards, min_std=0.5).tolist() == [False, False, False, False, True]
    assert keep_groups(torch.ones(3, 1)).tolist() == [False] * 3  # a group of one has no spread
    with pytest.raises(ValueError, match="B, G"):
        keep_groups(torch.ones(4))


def test_group_filter_options_are_checked():
    assert GroupFilter().problems() == [] and not GroupFilter().enabled
    assert len(GroupFilter(min_std=-1, max_resample=-1).problems()) == 2


def _no_spread(round_: int) -> torch.Tensor:
    return torch.ones(4, 8)


@pytest.mark.parametrize("max_resample", [0, 1, 2, 5])
def test_refilling_stops_at_max_resample(max_resample):
    calls = []
    result = fill_groups(lambda r: calls.append(r) or _no_spread(r), 4, max_resample=max_resample)
    assert calls == list(range(max_resample + 1)) and result.rounds == max_resample and result.kept == []


def test_refilling_keeps_at_most_the_batch_and_stops_when_full():
    draws = {
        0: torch.tensor([[1, 1], [1, 0], [0, 0], [1, 1]], dtype=torch.float),  # 1 of 4 with spread
        1: torch.tensor([[0, 1], [1, 1], [1, 0], [0, 1]], dtype=torch.float),  # 3 with spread: fills the batch
        2: torch.tensor([[0, 1]] * 4, dtype=torch.float),
    }
    calls = []
    result = fill_groups(lambda r: calls.append(r) or draws[r], 3, max_resample=2)
    assert calls == [0, 1] and result.rounds == 1
    assert result.kept == [(0, 1), (1, 0), (1, 2)]  # capped at the batch of 3: the last group of round 1 is left


def test_a_full_rank_runs_the_rounds_of_a_short_one_without_sampling():
    """DDP: rounds go on while any rank is short, so every rank makes the same collectives."""
    calls, asked = [], []

    def other_rank_short(short: int) -> int:
        asked.append(short)
        return max(short, 1)  # another rank stays one group short

    result = fill_groups(lambda r: calls.append(r) or torch.tensor([[0.0, 1.0]] * 2), 2, 0.0, 3, other_rank_short)
    assert calls == [0] and asked == [0, 0, 0] and result.rounds == 3 and len(result.kept) == 2


def test_refill_indices_are_seeded_and_disjoint_across_ranks():
    a = refill_indices(10, 3, seed=1, step=4, round_=1, rank=0, world=2)
    assert a == refill_indices(10, 3, seed=1, step=4, round_=1, rank=0, world=2)
    b = refill_indices(10, 3, seed=1, step=4, round_=1, rank=1, world=2)
    assert not set(a) & set(b)
    rounds = {tuple(refill_indices(10, 3, seed=1, step=4, round_=r, rank=0, world=1)) for r in range(1, 6)}
    assert len(rounds) > 1
    assert sorted(refill_indices(3, 5, seed=0, step=0, round_=1, rank=0, world=1))[:3] == [0, 0, 1]  # wraps
    fresh = refill_indices(10, 3, seed=1, step=4, round_=1, rank=0, world=1, exclude={0, 1, 2, 3, 4, 5, 6})
    assert sorted(fresh) == [7, 8, 9]  # items drawn earlier in the step are left out while others remain


# ------------------------------------------------------------------------------------ slicing and merging batches


def _trimmed(batch: dict) -> dict:
    """The batch without leading columns that are padding in every row."""
    used = batch["attention_mask"].bool().any(0).nonzero()
    start = int(used.min())
    return {
        k: v[:, start:] if isinstance(v, torch.Tensor) and v.dim() == 2 and k != "pixel_values" else v
        for k, v in batch.items()
    }


def _assert_same(a: dict, b: dict) -> None:
    a, b = _trimmed(a), _trimmed(b)
    assert sorted(a) == sorted(b)
    for key in a:
        if isinstance(a[key], torch.Tensor):
            torch.testing.assert_close(a[key], b[key], msg=key)
        else:
            assert a[key] == b[key], key


def test_take_rows_and_concat_equal_collating_the_items(tiny_model, tmp_path):
    items = []
    for name, size in (("small", 56), ("large", 112)):  # different image token counts: different left padding
        dm = VLMDataModule(
            tiny_model,
            train_file=str(write_color_data(tmp_path / name, n=2, fmt="problem", size=size)),
            prompt_only=True,
            shuffle=False,
        )
        dm.setup("fit")
        items += [dm.train_dataloader().dataset[i] for i in range(2)]
    collate = dm.train_dataloader().collate_fn
    full = collate(items)  # small 0, small 1, large 0, large 1
    assert len(set(full["attention_mask"].sum(1).tolist())) == 2
    _assert_same(take_rows(full, [2, 1]), collate([items[2], items[1]]))
    pad = {"input_ids": dm._encoder().pad_token_id, "labels": IGNORE_INDEX}
    merged = concat_prompt_batches([take_rows(full, [0]), collate([items[3]]), take_rows(full, [2])], pad)
    _assert_same(merged, collate([items[0], items[3], items[2]]))


# ----------------------------------------------------------------------------------------------- short GRPO fits


def never(answer: str, solution: str) -> bool:
    return False


class SpreadOn:
    """A scorer with spread only on items whose gold answer is `color`: every other answer to them is right."""

    def __init__(self, color: str) -> None:
        self.color, self.calls = color, 0

    def __call__(self, answer: str, solution: str) -> bool:
        if solution != self.color:
            return False
        self.calls += 1
        return self.calls % 2 == 0


def _module(model_path: str, scorer, group_filter: GroupFilter) -> GRPOModule:
    module = GRPOModule(
        model_path,
        vlm=VLMOptions(dtype="float32", lora=LoraOptions(r=4, dropout=0.0)),
        sampling=SamplingConfig(k=4, max_new_tokens=3, temperature=1.5),
        grpo=GRPOConfig(beta=0.0),
        optim=OptimConfig(lr=0.0),
        log_completions_every=0,
        group_filter=group_filter,
    )
    module.reward_fns = {"test": (scorer, 1.0)}
    return module


class Spy(L.Callback):
    """Records what each step trained on (ids, solutions, loss weight) and its group metrics."""

    def __init__(self) -> None:
        self.trained: list[tuple[list[str], list[str], float]] = []
        self.metrics: list[dict[str, float]] = []

    def on_train_start(self, trainer, pl_module) -> None:
        collect = pl_module.collect

        def spy(batch):
            out = collect(batch)
            self.trained.append((list(out[0]["ids"]), list(out[0]["solutions"]), out[2]))
            return out

        pl_module.collect = spy

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        names = ("groups_drawn", "groups_kept", "groups_all_correct", "groups_all_wrong", "resample_rounds")
        self.metrics.append({n: float(trainer.callback_metrics[f"train/{n}"]) for n in names})


def _fit(module, data, tmp_path, steps: int = 3, **trainer_args) -> tuple[Spy, list[dict]]:
    spy = Spy()
    dm = VLMDataModule(module.hparams.model_path, train_file=str(data), batch_size=2, prompt_only=True)
    logger = CSVLogger(tmp_path / "logs", name="grpo")
    cpu_trainer(max_steps=steps, logger=logger, callbacks=[spy], **trainer_args).fit(module, dm)
    log = tmp_path / "logs" / "grpo" / "version_0" / "rollouts.jsonl"
    return spy, [json.loads(line) for line in log.read_text().splitlines()]


def test_filtered_fit_trains_only_on_groups_with_spread(trained_tiny_model, tmp_path):
    data = write_color_data(tmp_path / "d", n=8, fmt="problem", colors=["red", "blue"])
    module = _module(trained_tiny_model, SpreadOn("red"), GroupFilter(enabled=True, max_resample=2))
    spy, rows = _fit(module, data, tmp_path)
    assert len(spy.trained) == 3
    for step, ((ids, solutions, weight), metrics) in enumerate(zip(spy.trained, spy.metrics)):
        logged = [r for r in rows if r["step"] == step]  # the rollout log: one line per group drawn
        assert metrics["groups_drawn"] == len(logged) == 2 * (metrics["resample_rounds"] + 1)
        assert metrics["groups_all_correct"] == 0
        assert metrics["groups_all_wrong"] == sum(r["correct"] == 0 for r in logged)
        assert metrics["groups_kept"] == min(2, sum(r["correct"] == 2 for r in logged))
        if metrics["groups_kept"]:
            assert solutions == ["red"] * int(metrics["groups_kept"]) and weight == 1.0
            assert set(ids) <= {r["id"] for r in logged if r["correct"] == 2}
        if metrics["groups_kept"] < 2:
            assert metrics["resample_rounds"] == 2  # short only after every refill round
    assert sum(m["groups_kept"] for m in spy.metrics) > 0
    assert len(rows) == sum(m["groups_drawn"] for m in spy.metrics)
    assert sorted({r["step"] for r in rows}) == [0, 1, 2]
    assert all(r["k"] == 4 and r["correct"] == (2 if r["solution"] == "red" else 0) for r in rows)
    assert all(r["images"] and r["images"][0].endswith(".png") for r in rows)


def test_refill_stops_at_max_resample_and_trains_on_the_drawn_batch(trained_tiny_model, tmp_path):
    data = write_color_data(tmp_path / "d", n=8, fmt="problem")
    module = _module(trained_tiny_model, never, GroupFilter(enabled=True, max_resample=2))
    spy, rows = _fit(module, data, tmp_path, steps=2)
    for metrics in spy.metrics:
        assert metrics == {
            "groups_drawn": 6.0,
            "groups_kept": 0.0,
            "groups_all_correct": 0.0,
            "groups_all_wrong": 6.0,
            "resample_rounds": 2.0,
        }
    assert [len(ids) for ids, _, weight in spy.trained] == [2, 2] and all(w == 1.0 for *_, w in spy.trained)
    assert len(rows) == 12 and {r["correct"] for r in rows} == {0}


def test_without_the_filter_every_group_trains_and_is_logged(trained_tiny_model, tmp_path):
    data = write_color_data(tmp_path / "d", n=8, fmt="problem")
    spy, rows = _fit(_module(trained_tiny_model, never, GroupFilter()), data, tmp_path, steps=2)
    assert [m["groups_drawn"] for m in spy.metrics] == [2.0, 2.0]
    assert [m["groups_kept"] for m in spy.metrics] == [2.0, 2.0] and {m["resample_rounds"] for m in spy.metrics} == {0}
    assert [(r["step"], r["correct"], r["k"]) for r in rows] == [(0, 0, 4)] * 2 + [(1, 0, 4)] * 2


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_filtered_ddp_ranks_take_the_same_steps(trained_tiny_model, tmp_path):
    """2 gloo processes whose ranks keep different numbers of groups: no hang, one gathered log with both ranks."""
    data = write_color_data(tmp_path / "d", n=8, fmt="problem", colors=["red", "blue", "green", "blue"])
    module = _module(trained_tiny_model, SpreadOn("red"), GroupFilter(enabled=True, max_resample=1))
    dm = VLMDataModule(trained_tiny_model, train_file=str(data), batch_size=2, prompt_only=True)
    logger = CSVLogger(tmp_path / "logs", name="grpo")
    trainer = cpu_trainer(devices=2, strategy="ddp_spawn", max_steps=3, logger=logger)
    trainer.fit(module, dm)
    rows = [json.loads(line) for line in (tmp_path / "logs/grpo/version_0/rollouts.jsonl").read_text().splitlines()]
    assert sorted({r["step"] for r in rows}) == [0, 1, 2]
    kept = []  # per step, per rank: the gathered log holds rank 0's groups, then rank 1's, equally many
    for step in range(3):
        logged = [r for r in rows if r["step"] == step]
        assert len(logged) in (4, 8)  # 2 ranks x 2 prompts x (1 or 2 rounds, the same on both ranks)
        half = len(logged) // 2
        kept.append([min(2, sum(r["correct"] == 2 for r in part)) for part in (logged[:half], logged[half:])])
    assert any(0 in pair and max(pair) > 0 for pair in kept), kept  # a rank trained on nothing (weight 0)
