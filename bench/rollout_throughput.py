"""Rollout throughput: our difficulty estimator's shared-prefill sampling against k separate passes of HF `generate`.

What is measured, on CPU with one torch thread, in ONE process, as completions per second over the whole item list:
the two sides run interleaved batch by batch (ours on batch 1, official on batch 1, ours on batch 2, ...) after a
warm-up (one batch of ours, one `generate` pass), each side's pass time is the sum over its batches, and the figure is
the median pass time over rounds (tiny: 5 rounds; demo: 1 round, where each pass is already over a minute):
- ours: `DifficultyEstimator.predict_step` on each left-padded prompt batch (shared-prefill sampler, k samples per item
  from one prefill, per-item seeded generators, finished rows dropped), decoding and exact-match scoring included;
- official: for each batch, k = 8 separate passes of `model.generate(do_sample=True)` with the same temperature,
  top-p, top-k, max_new_tokens, stop tokens and suppressed vision tokens (global RNG), then the same decoding and
  scoring.
Both sides take the same pre-collated batches (`VLMDataModule.predict_dataloader()`, batch 4, left padding; data
preparation is outside the timing on both sides) and the same model object. Settings: k 8, temperature 0.9, top-p 1.0,
top-k 50 (the official DC-SFT rollout settings), max_new_tokens 16 (answers are one word). Reported: completions/s,
mean completion length (tokens, stop token included) and the share of completions ended by a stop token on each side,
the exact-match pass rate on each side (the two samplers should agree in distribution), the spread of the per-batch
ratios, and what was compared.

Two configurations, both run by default:
- tiny: a tiny random Qwen2.5-VL (BPE vocabulary) briefly fine-tuned on one-colour images (bench/common.py
  `build_trained_tiny_vlm`) so that it answers one word and emits EOS; 32 one-colour 56x56 items, 4 image tokens;
- demo: the 135M SmolLM2-in-Qwen2.5-VL demo model (not cold-started: its answers are short sentences, not one
  word; max_new_tokens 16 caps them on both sides) on the first 16 easy-vqa GRPO items (64x64 images, 4 image tokens,
  one-word answers asked for).

    .venv/bin/python -m bench.rollout_throughput                # both configurations (about 2.5 minutes on 2 cores)
    .venv/bin/python -m bench.rollout_throughput --skip-demo    # tiny only (about 20 s)

The second-to-last line is `ratio_tiny: <ours/official completions per second>`, the last `ratio: <ours/official>`
for the demo model.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench.common import (
    build_trained_tiny_vlm,
    describe_vlm,
    median,
    quiet_libraries,
    set_threads,
    versions,
    write_subset_json,
)


@dataclass
class Tally:
    """Completion lengths and pass counts of the latest pass over the items."""

    lengths: list[int] = field(default_factory=list)
    stopped: int = 0  # completions that end in a stop token (the rest hit max_new_tokens)
    correct: int = 0

    def reset(self) -> None:
        self.lengths, self.stopped, self.correct = [], 0, 0


def estimator(model_path: str, k: int, max_new: int, temperature: float, top_p: float, top_k: int):
    """Our DifficultyEstimator as the predict config builds it (fp32, no LoRA), with its model loaded."""
    from lightning_modules.difficulty import DifficultyEstimator
    from lightning_modules.sampling import SamplingConfig
    from lightning_modules.vlm import VLMOptions

    sampling = SamplingConfig(
        k=k, max_new_tokens=max_new, do_sample=True, temperature=temperature, top_p=top_p, top_k=top_k, seed=42
    )
    est = DifficultyEstimator(
        model_path, vlm=VLMOptions(dtype="float32", lora=None), sampling=sampling, scorer="exact", keep_answers=True
    )
    est.configure_model()
    return est


def record_lengths(tally: Tally):
    """Wrap the sampler that `sample_answers` (hence the estimator) calls, to count completion tokens (a list sum)."""
    import lightning_modules.sampling as sampling

    original = sampling.sample

    def sample(model, batch, cfg, stop_ids, *args, **kwargs):
        out = original(model, batch, cfg, stop_ids, *args, **kwargs)
        tally.lengths += [len(c) for item in out for c in item]
        tally.stopped += sum(bool(c) and c[-1] in stop_ids for item in out for c in item)
        return out

    sampling.sample = sample


def official_pass(
    model, processor, batch: dict[str, Any], k: int, kwargs: dict[str, Any], stops: set[int], score, tally: Tally
) -> list[dict[str, Any]]:
    """k separate `generate` passes over one batch, then decoding and scoring as `predict_step` does."""
    import torch

    from datamodules.collate import model_inputs

    inputs = model_inputs(batch)
    prompt_len = inputs["input_ids"].shape[1]
    answers: list[list[str]] = [[] for _ in batch["ids"]]
    tok = processor.tokenizer
    with torch.no_grad():
        for _ in range(k):
            out = model.generate(**inputs, **kwargs)[:, prompt_len:].tolist()
            for b, new in enumerate(out):
                end = next((i + 1 for i, t in enumerate(new) if t in stops), len(new))  # generate pads after a stop
                tally.lengths.append(end)
                tally.stopped += end > 0 and new[end - 1] in stops
                answers[b].append(tok.decode(new[:end], skip_special_tokens=True))
    rows = []
    for item_id, solution, item_answers in zip(batch["ids"], batch["solutions"], answers):
        correct = sum(bool(score(a, solution)) for a in item_answers)
        tally.correct += correct
        rows.append({"id": item_id, "correct": correct, "k": k, "answers": item_answers})
    return rows


def run_config(name: str, model_path: str, data_file: str, args: argparse.Namespace, rounds: int) -> float:
    """Build both sides for one model, time them interleaved, print the figures; returns ours/official."""
    import torch

    from datamodules.images import MIN_PIXELS, OFFICIAL_TRAIN_MAX_PIXELS
    from datamodules.vlm_data import VLMDataModule
    from lightning_modules.sampling import banned_token_ids, stop_token_ids

    k, max_new = args.k, args.max_new_tokens
    # Pixel bounds pinned to what the figures were measured with (the demo checkpoint's processor now asks for
    # 112x112 at least, i.e. 16 image tokens per easy-vqa image instead of 4); a no-op for the tiny model.
    data = VLMDataModule(
        model_path=model_path,
        predict_file=data_file,
        eval_batch_size=args.batch,
        max_length=None,
        min_pixels=MIN_PIXELS,
        max_pixels=OFFICIAL_TRAIN_MAX_PIXELS,
    )
    data.setup("predict")
    batches = list(data.predict_dataloader())
    n_items = sum(len(b["ids"]) for b in batches)
    est = estimator(model_path, k, max_new, args.temperature, args.top_p, args.top_k)
    model, processor = est.model, est.processor
    stops, banned = stop_token_ids(processor, model), banned_token_ids(processor)
    gen_kwargs = {
        "do_sample": True,
        "temperature": args.temperature,
        "top_p": args.top_p,
        "top_k": args.top_k,
        "max_new_tokens": max_new,
        "eos_token_id": stops,
        "suppress_tokens": banned,
        "pad_token_id": processor.tokenizer.pad_token_id,
    }
    tallies = {"ours": Tally(), "official": Tally()}
    record_lengths(tallies["ours"])
    sides = {
        "ours": lambda i, batch: sum(row["correct"] for row in est.predict_step(batch, i)),
        "official": lambda i, batch: sum(
            row["correct"]
            for row in official_pass(model, processor, batch, k, gen_kwargs, set(stops), est.score, tallies["official"])
        ),
    }

    image_tokens = int((batches[0]["input_ids"][0] == model.config.image_token_id).sum())
    prompt_lens = [int(m.sum()) for b in batches for m in b["attention_mask"]]
    print(f"[{name}] {describe_vlm(model, processor)}")
    print(
        f"  {n_items} items in {len(batches)} batches of {args.batch} (left padded), {image_tokens} image tokens "
        f"per item, prompts {min(prompt_lens)}-{max(prompt_lens)} tokens; k {k}, T {args.temperature}, top-p "
        f"{args.top_p}, top-k {args.top_k}, max_new_tokens {max_new}; stop ids {stops}; suppressed {banned}",
        flush=True,
    )

    torch.manual_seed(0)
    est.predict_step(batches[0], 0)  # warm-up: one batch of ours, one generate pass of the official loop
    official_pass(model, processor, batches[0], 1, gen_kwargs, set(stops), est.score, Tally())
    for tally in tallies.values():
        tally.reset()
    pass_times: dict[str, list[float]] = {"ours": [], "official": []}
    batch_ratios: list[float] = []
    for _ in range(rounds):
        elapsed = {"ours": 0.0, "official": 0.0}
        for i, batch in enumerate(batches):  # interleaved batch by batch: ours, official, ours, official, ...
            spent = {}
            for side, fn in sides.items():
                t0 = time.perf_counter()
                tallies[side].correct += fn(i, batch)
                spent[side] = time.perf_counter() - t0
                elapsed[side] += spent[side]
            batch_ratios.append(spent["official"] / spent["ours"])
        for side in sides:
            pass_times[side].append(elapsed[side])
    completions = n_items * k
    cps = {side: completions / median(pass_times[side]) for side in sides}
    for side, tally in tallies.items():
        lens = tally.lengths
        print(
            f"  {side:8s} {median(pass_times[side]):7.3f} s per pass ({cps[side]:7.1f} completions/s); mean "
            f"completion {sum(lens) / len(lens):.2f} tokens (stop token included), "
            f"{100 * tally.stopped / len(lens):.0f}% ended by a stop token, pass rate "
            f"{100 * tally.correct / len(lens):.1f}%; passes {', '.join(f'{t:.3f}' for t in pass_times[side])} s"
        )
    ratio = cps["ours"] / cps["official"]
    print(
        f"  ours/official completions per second: {ratio:.3f} (median of pass times over {rounds} round(s)); "
        f"per-batch ratios: median {median(batch_ratios):.3f}, min {min(batch_ratios):.3f}, max "
        f"{max(batch_ratios):.3f} over {len(batch_ratios)} batch pairs",
        flush=True,
    )
    return ratio


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--k", type=int, default=8)
    parser.add_argument("--temperature", type=float, default=0.9)
    parser.add_argument("--top-p", type=float, default=1.0)
    parser.add_argument("--top-k", type=int, default=50)
    parser.add_argument("--max-new-tokens", type=int, default=16)
    parser.add_argument("--batch", type=int, default=4, help="prompts per batch, both sides")
    parser.add_argument("--tiny-items", type=int, default=32)
    parser.add_argument("--demo-items", type=int, default=16)
    parser.add_argument("--tiny-rounds", type=int, default=5)
    parser.add_argument("--demo-rounds", type=int, default=1)
    parser.add_argument("--hidden", type=int, default=64, help="tiny model hidden size")
    parser.add_argument("--skip-demo", action="store_true")
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()

    quiet_libraries()
    set_threads(args.threads)
    import torch

    from assets import resolve
    from assets.test_data import write_color_data

    start = time.perf_counter()
    print(
        f"Rollout throughput, ours (DifficultyEstimator.predict_step: shared prefill, per-item generators) vs k "
        f"separate passes of HF generate(do_sample=True) at batch {args.batch}; "
        f"{versions('torch', 'transformers', 'lightning')}; torch threads {torch.get_num_threads()}; fp32; "
        f"timings: median of interleaved passes over all items after a one-batch warm-up per side"
    )
    ratios = {}
    with tempfile.TemporaryDirectory(prefix="bench_rollout_") as tmp:
        workdir = Path(tmp)
        train = write_color_data(workdir / "train", n=16, fmt="messages", size=56)
        tiny = build_trained_tiny_vlm(workdir / "model", train, tokenizer="bpe", hidden=args.hidden)
        items = write_color_data(workdir / "items", n=args.tiny_items, fmt="problem", size=56)
        ratios["tiny"] = run_config("tiny, colour-tuned", str(tiny), str(items), args, args.tiny_rounds)
        if not args.skip_demo:
            demo_items = write_subset_json(
                resolve("demo://easy_vqa/train_grpo.json"), workdir / "demo.json", args.demo_items
            )
            ratios["demo"] = run_config(
                "demo 135M SmolLM2-in-Qwen2.5-VL, easy-vqa",
                resolve("demo://smollm2-vl"),
                str(demo_items),
                args,
                args.demo_rounds,
            )
    print(f"total wall time {time.perf_counter() - start:.0f} s")
    print(f"ratio_tiny: {ratios['tiny']:.3f}")
    if "demo" in ratios:
        print(f"ratio: {ratios['demo']:.3f}")


if __name__ == "__main__":
    main()
