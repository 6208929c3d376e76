"""Vision probe: do a demo model's image tokens carry colour and shape? (where a sight-check failure comes from)

The sight check measures answers; this looks one step earlier, at the merged image tokens that enter the language
model, on easy-vqa test images (never used by the vision alignment):
- nearest word: each token's nearest colour word (even slots) or shape word (odd slots) in the language model's input
  embeddings, voted over the image's slots; the alignment stage trains exactly this layout;
- linear probe: a softmax regression on the image's flattened tokens, fitted on the alignment's training images and
  tested on the test images; high train and chance test accuracy means the tokens do not carry the attribute.

    python scripts/vision_probe.py .cache/demo/smollm2-vl      # or runs/demo/cold_start/model (same vision side)
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from assets.demo_data import COLORS, SHAPES, image_labels, unused_train_images  # noqa: E402
from assets.demo_model import DEMO_MAX_PIXELS, DEMO_MIN_PIXELS  # noqa: E402
from assets.tiny import image_processor  # noqa: E402
from assets.vision_alignment import image_tokens, word_embedding  # noqa: E402
from datamodules.images import load_image  # noqa: E402

FAMILIES = {"colour": COLORS, "shape": SHAPES}  # slot j of an image carries family j % 2, as in the alignment


def nearest_word_accuracy(tokens: torch.Tensor, words: torch.Tensor, gold: torch.Tensor, slot: int) -> float:
    """Share of images whose slots `slot, slot + 2, ...` vote (by Euclidean nearest word) for the gold word.

    tokens: [images, slots, hidden]; words: [candidates, hidden]; gold: [images] candidate indices."""
    picked = tokens[:, slot::2]
    distances = torch.cdist(picked.reshape(-1, picked.shape[-1]), words).reshape(*picked.shape[:2], -1)
    votes = distances.argmin(-1).mode(-1).values
    return (votes == gold).float().mean().item()


def linear_probe(train: torch.Tensor, y_train: torch.Tensor, test: torch.Tensor, y_test: torch.Tensor) -> tuple:
    """Train / test accuracy of a softmax regression on standardised flattened tokens (seeded, 300 Adam steps)."""
    torch.manual_seed(0)
    a, b = train.flatten(1), test.flatten(1)
    mean, std = a.mean(0), a.std(0) + 1e-6
    a, b = (a - mean) / std, (b - mean) / std
    layer = torch.nn.Linear(a.shape[1], int(y_train.max()) + 1)
    optimizer = torch.optim.Adam(layer.parameters(), lr=1e-2, weight_decay=1e-4)
    for _ in range(300):
        optimizer.zero_grad()
        torch.nn.functional.cross_entropy(layer(a), y_train).backward()
        optimizer.step()
    with torch.no_grad():
        return tuple((layer(x).argmax(-1) == y).float().mean().item() for x, y in ((a, y_train), (b, y_test)))


def encode(model, image_ids: list[int], paths: list[str], batch: int = 64) -> torch.Tensor:
    processor = image_processor(DEMO_MIN_PIXELS, DEMO_MAX_PIXELS)
    out = []
    for start in range(0, len(image_ids), batch):
        images = [load_image(paths[i], DEMO_MIN_PIXELS, DEMO_MAX_PIXELS) for i in image_ids[start : start + batch]]
        pixels = processor(images=images, return_tensors="pt")
        with torch.no_grad():
            out.append(image_tokens(model, pixels["pixel_values"], pixels["image_grid_thw"]))
    return torch.cat(out)


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("model", help="a demo model folder (Qwen2.5-VL layout)")
    parser.add_argument("--train-images", type=int, default=1200, help="alignment images to fit the linear probe on")
    parser.add_argument("--test-images", type=int, default=600, help="easy-vqa test images to measure on")
    args = parser.parse_args(argv)
    import easy_vqa
    from transformers import AutoTokenizer, Qwen2_5_VLForConditionalGeneration

    model = Qwen2_5_VLForConditionalGeneration.from_pretrained(args.model, dtype=torch.float32).eval()
    tokenizer = AutoTokenizer.from_pretrained(args.model)
    train_labels = image_labels(unused_train_images())
    test_labels = image_labels(sorted(set(easy_vqa.get_test_questions()[2])), "test")
    train_ids, test_ids = sorted(train_labels)[: args.train_images], sorted(test_labels)[: args.test_images]
    train = encode(model, train_ids, easy_vqa.get_train_image_paths())
    test = encode(model, test_ids, easy_vqa.get_test_image_paths())
    report = {"images": len(test_ids), "token_norm": test.norm(dim=-1).mean().item()}
    print(f"{len(test_ids)} easy-vqa test images, mean image-token norm {report['token_norm']:.2f}")
    for slot, (family, vocabulary) in enumerate(FAMILIES.items()):
        words = torch.stack([word_embedding(model, tokenizer, w) for w in vocabulary])
        gold_train = torch.tensor([vocabulary.index(train_labels[i][slot]) for i in train_ids])
        gold_test = torch.tensor([vocabulary.index(test_labels[i][slot]) for i in test_ids])
        nearest = nearest_word_accuracy(test, words, gold_test, slot)
        fit, held_out = linear_probe(train, gold_train, test, gold_test)
        report[family] = {"nearest_word": nearest, "probe_train": fit, "probe_test": held_out}
        print(
            f"  {family} (chance {100 / len(vocabulary):.0f} %): nearest word {100 * nearest:.1f} %, "
            f"linear probe train {100 * fit:.1f} % / test {100 * held_out:.1f} %"
        )
    return report


if __name__ == "__main__":
    main()
