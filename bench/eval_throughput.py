"""Evaluation throughput: our `GenerativeEval.generate` against a plain batch-1 loop of HF `model.generate`.

What is measured, on CPU with one torch thread, in ONE process, interleaved (ours, loop, ours, loop, ...) after a
warm-up round, median over rounds, as items per second over the whole item list:
- ours: `callbacks.generative_eval.GenerativeEval(batch_size=B, max_new_tokens=M).generate(module, items)`, i.e. for
  every batch of B items: `datamodules.collate.Encoder.prompts` (image loading + smart resize, chat encoding,
  left-padding collation), then the shared-prefill sampler greedy with k = 1 (`lightning_modules.sampling.sample`),
  and decoding;
- loop: for every item alone: the same image loading + smart resize, the processor's own path
  (`apply_chat_template` + `processor(text=..., images=...)`), `model.generate(do_sample=False, max_new_tokens=M)`
  with the same stop tokens and the same suppressed vision tokens as ours, and decoding.
Both sides use the same model object, processor, items (prompt + image) and max_new_tokens. Reported: items/s of each,
the answer agreement (identical decoded answers), whether the prompt token ids are identical (our `Encoder` against
the processor, checked once outside the timing), mean generated tokens, and accuracy against the gold. Pixel bounds
on both sides: 3,136 to 12,845,056 (the evaluation defaults the figures were measured with), set on the processor
when the model is loaded, so `GenerativeEval` (bounds None = the processor's) and the loop read the same ones.

Default model: a tiny random Qwen2.5-VL (BPE vocabulary) briefly fine-tuned on one-colour images (bench/common.py
`build_trained_tiny_vlm`) so that it answers one word and stops: a random model never emits EOS and both sides would
run max_new_tokens. Items: one-colour PNGs "What color is the image? ..." (DCSFTJson benchmark). With --demo: the
135M SmolLM2-in-Qwen2.5-VL demo model on easy-vqa test items (64x64 images, 4 image tokens). max_new_tokens: 128 (the
official budget) for the tiny model, whose answers stop after one word; 32 for the demo model, which is not
cold-started and answers in short sentences (8 tokens on average), so that the batch-1 loop stays affordable.

    .venv/bin/python -m bench.eval_throughput                  # tiny model, 64 items (about 30 s on 2 cores)
    .venv/bin/python -m bench.eval_throughput --demo           # 135M demo model, 16 items (about 1-2 minutes)
    .venv/bin/python -m bench.eval_throughput --image-size 224 # 64 image tokens per item instead of 4

The last line is `ratio: <ours items/s / loop items/s>`.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any

from bench.common import (
    build_trained_tiny_vlm,
    describe_vlm,
    median,
    quiet_libraries,
    set_threads,
    versions,
)


def load_items(args: argparse.Namespace, workdir: Path) -> tuple[str, list[Any]]:
    """(model folder, EvalItems) for the chosen configuration."""
    from assets import resolve
    from assets.test_data import write_color_data
    from datamodules.benchmarks.imagenet import DCSFTJson

    if args.demo:
        items = DCSFTJson(resolve("demo://easy_vqa/test_id.json"), "easy_vqa_test").load()[: args.items or 16]
        return resolve("demo://smollm2-vl"), items
    train = write_color_data(workdir / "train", n=16, fmt="messages", size=args.image_size)
    model = build_trained_tiny_vlm(workdir / "model", train, tokenizer="bpe", hidden=args.hidden)
    data = write_color_data(workdir / "eval", n=args.items or 64, fmt="problem", size=args.image_size)
    return str(model), DCSFTJson(str(data), "colors").load()


class HFLoop:
    """The plain baseline: one item at a time through the processor and `model.generate` (greedy)."""

    def __init__(self, model, processor, max_new_tokens: int, stop_ids: list[int], banned_ids: list[int]) -> None:
        from datamodules.processor import pixel_bounds

        self.model, self.processor = model, processor
        self.kwargs = {
            "max_new_tokens": max_new_tokens,
            "do_sample": False,
            "eos_token_id": stop_ids,
            "pad_token_id": processor.tokenizer.pad_token_id,
            "suppress_tokens": banned_ids or None,
            "temperature": None,
            "top_p": None,
            "top_k": None,
        }
        self.min_pixels, self.max_pixels = pixel_bounds(processor)  # the same resize as ours
        self.generated_tokens: list[int] = []

    def encode(self, item) -> dict[str, Any]:
        from datamodules.images import load_image

        images = [load_image(im, self.min_pixels, self.max_pixels) for im in item.images]
        content = [{"type": "image"} for _ in images] + [{"type": "text", "text": item.prompt}]
        text = self.processor.apply_chat_template(
            [{"role": "user", "content": content}], tokenize=False, add_generation_prompt=True
        )
        return self.processor(text=[text], images=images or None, return_tensors="pt")

    def __call__(self, items) -> list[str]:
        import torch

        answers, self.generated_tokens = [], []
        tok = self.processor.tokenizer
        stops = set(self.kwargs["eos_token_id"])
        with torch.no_grad():
            for item in items:
                inputs = self.encode(item)
                out = self.model.generate(**inputs, **self.kwargs)
                new = out[0, inputs["input_ids"].shape[1] :].tolist()
                end = next((i + 1 for i, t in enumerate(new) if t in stops), len(new))  # generate pads after a stop
                self.generated_tokens.append(end)
                answers.append(tok.decode(new[:end], skip_special_tokens=True))
        return answers


def prompt_ids_identical(loop: HFLoop, items, processor) -> int:
    """How many items get exactly the same prompt ids from our `Encoder` as from the processor."""
    from datamodules.collate import Encoder
    from datamodules.formats import IMAGE_MARKER, Sample

    encoder = Encoder(processor)
    same = 0
    for item in items:
        sources = item.image_sources()
        messages = [{"role": "user", "content": IMAGE_MARKER * len(sources) + item.prompt}]
        ours = encoder.encode(Sample(item.id, messages, []), generation=True, images=sources)["input_ids"]
        same += ours == loop.encode(item)["input_ids"][0].tolist()
    return same


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--demo", action="store_true", help="the 135M demo model on easy-vqa test items")
    parser.add_argument("--items", type=int, default=0, help="items (default 64 tiny, 16 demo)")
    parser.add_argument("--batch", type=int, default=16, help="our evaluation batch (GenerativeEval default 16)")
    parser.add_argument("--max-new-tokens", type=int, default=0, help="default 128 tiny (official), 32 demo")
    parser.add_argument("--image-size", type=int, default=56, help="tiny: square image side (56 -> 4 image tokens)")
    parser.add_argument("--hidden", type=int, default=64, help="tiny model hidden size")
    parser.add_argument("--rounds", type=int, default=0, help="timed rounds (default 5 tiny, 2 demo)")
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()

    quiet_libraries()
    set_threads(args.threads)
    import torch

    from callbacks.generative_eval import GenerativeEval
    from datamodules.images import MAX_PIXELS, MIN_PIXELS
    from datamodules.processor import pixel_bounds
    from lightning_modules.sampling import banned_token_ids, stop_token_ids
    from lightning_modules.vlm import VLMOptions, build_vlm

    max_new = args.max_new_tokens or (32 if args.demo else 128)
    rounds = args.rounds or (2 if args.demo else 5)
    start = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="bench_eval_") as tmp:
        model_path, items = load_items(args, Path(tmp))
        opts = VLMOptions(dtype="float32", lora=None)
        model, processor = build_vlm(model_path, opts, min_pixels=MIN_PIXELS, max_pixels=MAX_PIXELS)
        model.eval()
        torch.manual_seed(0)
        evaluator = GenerativeEval(batch_size=args.batch, max_new_tokens=max_new)  # pixel bounds: the processor's
        module = SimpleNamespace(model=model, processor=processor, device=torch.device("cpu"))
        stops, banned = stop_token_ids(processor, model), banned_token_ids(processor)
        loop = HFLoop(model, processor, max_new, stops, banned)
        assert pixel_bounds(processor) == (loop.min_pixels, loop.max_pixels) == (MIN_PIXELS, MAX_PIXELS)

        first = loop.encode(items[0])
        image_tokens = int((first["input_ids"] == model.config.image_token_id).sum())
        same_prompt = prompt_ids_identical(loop, items, processor)
        print(
            f"Evaluation throughput, ours (GenerativeEval.generate, batch {args.batch}, shared-prefill sampler, "
            f"greedy) vs a batch-1 loop of HF model.generate (greedy); "
            f"{versions('torch', 'transformers', 'lightning')}; torch threads {torch.get_num_threads()}; fp32"
        )
        print(
            f"model: {'135M SmolLM2-in-Qwen2.5-VL demo' if args.demo else 'tiny Qwen2.5-VL (BPE), colour-tuned'}; "
            f"{describe_vlm(model, processor)}"
        )
        print(
            f"items: {len(items)} ({'easy-vqa test_id' if args.demo else 'one-colour images'}), "
            f"{image_tokens} image tokens each, prompt {first['input_ids'].shape[1]} tokens (item 0); "
            f"max_new_tokens {max_new}; stop ids {stops}; suppressed (both sides) {banned}"
        )
        print(f"prompt token ids identical (our Encoder vs processor): {same_prompt}/{len(items)}", flush=True)

        def ours() -> list[str]:
            return evaluator.generate(module, items)

        ans_ours, ans_loop = ours(), loop(items)  # warm-up round
        times: dict[str, list[float]] = {"ours": [], "loop": []}
        for _ in range(rounds):
            for name, fn in (("ours", ours), ("loop", lambda: loop(items))):
                t0 = time.perf_counter()
                fn()
                times[name].append(time.perf_counter() - t0)

    agree = sum(a == b for a, b in zip(ans_ours, ans_loop))
    correct = {
        name: sum(a.strip().lower() == str(it.gold).lower() for a, it in zip(ans, items))
        for name, ans in (("ours", ans_ours), ("loop", ans_loop))
    }
    t_ours, t_loop = median(times["ours"]), median(times["loop"])
    ips_ours, ips_loop = len(items) / t_ours, len(items) / t_loop
    gen = loop.generated_tokens
    print(
        f"answers: identical {agree}/{len(items)}; exact-match correct ours {correct['ours']}, loop "
        f"{correct['loop']}; loop mean generated tokens {sum(gen) / len(gen):.2f} (stop token included, max "
        f"{max(gen)}); e.g. ours {ans_ours[:3]} loop {ans_loop[:3]}"
    )
    print(
        f"time per pass over {len(items)} items, median of {rounds} interleaved rounds: ours {t_ours:.3f} s "
        f"({ips_ours:.1f} items/s)   loop {t_loop:.3f} s ({ips_loop:.1f} items/s)   "
        f"[ours all: {', '.join(f'{t:.3f}' for t in times['ours'])}; loop all: "
        f"{', '.join(f'{t:.3f}' for t in times['loop'])}]"
    )
    print(f"total wall time {time.perf_counter() - start:.0f} s")
    print(f"ratio: {ips_ours / ips_loop:.3f}")


if __name__ == "__main__":
    main()
