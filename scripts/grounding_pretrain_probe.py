"""Run one stage of the grounding demo model's pre-training (`assets/grounding_pretrain.py`) for experiments.

`demo://smollm2-vl-grounding` runs the recipe's stages in one go; this script runs one at a time from any demo-model
folder, with other step counts, shapes, learning rates or seeds, reports held-out scores (token decoding and boxes
with the bare and the DC-SFT prompt) and saves the result:

    python scripts/grounding_pretrain_probe.py align --model .cache/demo/smollm2-vl --out .cache/experiments/aligned
    python scripts/grounding_pretrain_probe.py pretrain --model .cache/experiments/aligned --shapes 1 1 \
        --out .cache/experiments/pretrained
    python scripts/grounding_pretrain_probe.py evaluate --model .cache/experiments/pretrained --shapes 2 4
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from assets.grounding_pretrain import (  # noqa: E402
    TEST_SEED,
    Stage,
    decoding_accuracy,
    evaluate,
    run_stage,
    stage_canvases,
)

DEFAULTS = {"align": (600, 64, 1e-3), "pretrain": (100, 32, 1e-4)}  # steps, batch, lr


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("stage", choices=["align", "pretrain", "evaluate"])
    parser.add_argument("--model", required=True, help="a demo-model folder (.cache/demo/smollm2-vl or an output)")
    parser.add_argument("--out", help="folder for the trained model (align / pretrain)")
    parser.add_argument("--shapes", type=int, nargs=2, default=(2, 4), help="shapes per canvas, min max")
    parser.add_argument("--steps", type=int, default=None, help="default: 600 (align), 100 (pretrain)")
    parser.add_argument("--batch", type=int, default=None, help="default: 64 (align), 32 (pretrain)")
    parser.add_argument("--lr", type=float, default=None, help="default: 1e-3 (align), 1e-4 (pretrain)")
    parser.add_argument("--seed", type=int, default=1, help=f"seed of the training canvases (test: {TEST_SEED})")
    parser.add_argument("--test", type=int, default=100, help="held-out canvases (easy-vqa test shapes)")
    args = parser.parse_args(argv)
    import torch
    from transformers import Qwen2_5_VLForConditionalGeneration

    from assets.tiny import save_vlm_folder
    from datamodules.collate import Encoder
    from datamodules.processor import load_processor, pixel_bounds

    encoder = Encoder(load_processor(args.model))
    model = Qwen2_5_VLForConditionalGeneration.from_pretrained(args.model, dtype=torch.float32)
    shapes = tuple(args.shapes)
    if args.stage != "evaluate":
        given = (args.steps, args.batch, args.lr)
        steps, batch, lr = (g or d for g, d in zip(given, DEFAULTS[args.stage]))
        canvases = min(steps * batch // 2, 3000) if args.stage == "align" else steps * batch // 2
        run_stage(model, encoder, Stage(args.stage, shapes, steps, batch, lr, args.seed, max(batch, canvases)))
    test = stage_canvases(args.test, "test", shapes, seed=TEST_SEED)
    print(f"[{args.stage}] held-out token decoding (%):", decoding_accuracy(model, encoder, test))
    for prompt in ("bare", "dcsft"):
        print(f"[{args.stage}] held-out, {shapes[0]}-{shapes[1]} shapes:", evaluate(model, encoder, test, prompt))
    if args.out and args.stage != "evaluate":
        low, high = pixel_bounds(encoder.processor)
        save_vlm_folder(model, encoder.processor.tokenizer, args.out, low, high)
        print(f"[{args.stage}] saved to {args.out}")


if __name__ == "__main__":
    main()
