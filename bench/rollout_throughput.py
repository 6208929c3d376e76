"""Rollout throughput: our difficulty estimator's shared-prefill sampling against separate passes of HF `generate`.

What is measured, on CPU with one torch thread, in ONE process, as completions per second over the whole item list:
the sides run interleaved batch by batch (ours on batch 1, official on batch 1[, nrs on batch 1], ours on batch 2,
...) after a warm-up (one batch of ours, one `generate` pass[, one `num_return_sequences` call], with at most 16 new
tokens), each side's pass time is the sum over its batches, and the figure is the median pass time over rounds:
- ours: `DifficultyEstimator.predict_step` on each left-padded prompt batch (shared-prefill sampler, k samples per item
  from one prefill, per-item seeded generators, finished rows dropped), decoding and exact-match scoring included;
- official: for each batch, k = 8 separate passes of `model.generate(do_sample=True)` with the same temperature,
  top-p, top-k, max_new_tokens, stop tokens and suppressed vision tokens (global RNG), then the same decoding and
  scoring (DC-SFT's official difficulty estimate runs k passes);
- nrs (realistic and long cases): one `model.generate(num_return_sequences=k)` call per batch with the same settings.
  transformers 5 encodes each image once there and prefills the text B*k times, so it sits between the two.
Both sides take the same pre-collated batches (`VLMDataModule.predict_dataloader()`, batch 4, left padding; data
preparation is outside the timing on every side) and the same model object. Settings: k 8, temperature 0.9, top-p 1.0,
top-k 50 (the official DC-SFT rollout settings). Stop handling is the same on every side (`<|im_end|>`,
`<|endoftext|>`; a random model almost never samples them, so its completions run to max_new_tokens on every side:
the printed mean lengths and stop shares show it). Reported: completions/s, mean completion length (tokens, stop token
included) and the share of completions ended by a stop token on each side, the exact-match pass rate on each side (the
samplers should agree in distribution; a random model scores 0), the spread of the per-batch ratios, the ratio by
process CPU time (on a machine shared with other jobs, wall time measures this process's share of the cores as much as
its work; with one torch thread, CPU time is the steadier figure, but the headline ratios stay wall time), and, for the
random models, the linear-layer multiply-accumulates per item on each side (a compute-only ratio to read the measured
one against, also at the real Qwen2.5-VL-3B / 7B sizes with the same shapes).

Cases:
- tiny (default): a tiny random Qwen2.5-VL (BPE vocabulary) briefly fine-tuned on one-colour images (bench/common.py
  `build_trained_tiny_vlm`) so that it answers one word and emits EOS; 32 one-colour 56x56 items, 4 image tokens,
  max_new_tokens 16, 5 rounds;
- demo (default): the 135M SmolLM2-in-Qwen2.5-VL demo model (not cold-started: its answers are short sentences, not
  one word; max_new_tokens 16 caps them on both sides) on the first 16 easy-vqa GRPO items (64x64 images, 4 image
  tokens, one-word answers asked for), 1 round (each pass is over a minute);
- realistic (default): the paper's ImageNet shape. The exact Qwen2.5 tokenizer (151,665 tokens, lm_head 151,680 rows)
  and a random Qwen2.5-VL of 125 M parameters: Qwen2.5-VL-3B's proportions scaled down (text hidden 512, MLP 2,752 =
  5.375x hidden, 8 layers, 8 heads / 2 KV heads; vision 8 blocks of hidden 256, MLP 684 = 2.67x hidden, one
  full-attention block in 8, window 112 px, merger to 512), about the demo model's size, the most one thread can time
  on 8 items in a few minutes. 8 one-colour 448x448 items, i.e. 1,024 patches -> 256 image tokens each (28-px merged
  tokens), prompts of 290 tokens; k 8, max_new_tokens 8 (short answers, as the one-word ImageNet labels), 1 round. At
  this width the real vocabulary makes the lm_head 2/3 of a decode step's weights (10 % at 3B), so decoding, which
  shared prefill does not save, weighs more here than at 3B: the printed compute-only ratios are 6.0x (k passes) and
  4.1x (nrs) for this model against 7.2x and 4.4x at 3B. On CPU the per-token sampling over the full vocabulary
  (softmax, top-k, multinomial's exponential draw: in a profile about as long per row as the lm_head) is not shared
  either, which the MAC count leaves out;
- long (not in the default run: `--long` adds it, `--long-only` runs it alone): the realistic model and items with
  max_new_tokens 256 (4 items, 1 round): decoding dominates and every completion is 256 tokens long, so it measures
  whether shared prefill still pays then (compute-only ratios 1.5x and 1.3x here, 2.3x and 1.7x at 3B). A random model
  does not stop, so no row finishes early and dropping finished rows is not exercised; among these cases the demo
  model's varied answer lengths (most ending before the 16-token cap) are where rows leave the batch early.

Wall times measured on 2026-12-02 on 2 cores shared with other jobs (load 4-7, so this process got half to all of a
core; the long case's wall-time ratios moved by up to 2x between two runs, its CPU-time ratios are the ones to read):

    .venv/bin/python -m bench.rollout_throughput                    # tiny, demo, realistic: 11 minutes
    .venv/bin/python -m bench.rollout_throughput --realistic-only   # realistic only: 4-7 minutes
    .venv/bin/python -m bench.rollout_throughput --long-only        # long only: 18-32 minutes
    .venv/bin/python -m bench.rollout_throughput --realistic-only --long-only    # both: 22 minutes
    .venv/bin/python -m bench.rollout_throughput --skip-demo --skip-realistic    # tiny only: about 30 s

The summary at the end prints `total wall time`, then, for the cases that ran and in this order:
`ratio_long: <ours/official>`, `ratio_long_nrs: <ours/nrs>`, `ratio_realistic: <ours/official>`,
`ratio_realistic_nrs: <ours/nrs>`, `ratio_tiny: <ours/official>`, and last `ratio: <ours/official>` for the demo model
(all completions per second). So a default run ends with `ratio_tiny:` then `ratio:` as before.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
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

# The realistic model: Qwen2.5-VL-3B's proportions scaled down (see the module docstring for why this size).
REALISTIC_TEXT = {
    "hidden_size": 512,
    "intermediate_size": 2752,
    "num_hidden_layers": 8,
    "num_attention_heads": 8,
    "num_key_value_heads": 2,
    "max_position_embeddings": 4096,
    "rope_parameters": {"rope_type": "default", "rope_theta": 1e6, "mrope_section": [8, 12, 12]},
}
REALISTIC_VISION = {
    "depth": 8,
    "hidden_size": 256,
    "intermediate_size": 684,
    "num_heads": 4,
    "out_hidden_size": 512,
    "fullatt_block_indexes": [7],
}
REALISTIC_IMAGE = 448  # 448 / 14 = 32 patches a side -> 1,024 patches -> 16 x 16 = 256 merged (28-px) tokens
# Released Qwen2.5-VL configs (config.json), for the compute-only reference at real sizes.
REAL_SIZES = {
    "3B": {"hidden_size": 2048, "intermediate_size": 11008, "num_hidden_layers": 36, "num_attention_heads": 16},
    "7B": {"hidden_size": 3584, "intermediate_size": 18944, "num_hidden_layers": 28, "num_attention_heads": 28},
}
REAL_KV_VOCAB = {"3B": (2, 151936), "7B": (4, 152064)}
REAL_VISION = {"depth": 32, "hidden_size": 1280, "intermediate_size": 3420, "num_heads": 16}


@dataclass
class Tally:
    """Completion lengths and pass counts of the latest pass over the items."""

    lengths: list[int] = field(default_factory=list)
    stopped: int = 0  # completions that end in a stop token (the rest hit max_new_tokens)
    correct: int = 0

    def reset(self) -> None:
        self.lengths, self.stopped, self.correct = [], 0, 0


def build_realistic_vlm(folder: Path) -> Path:
    """The realistic case's random Qwen2.5-VL with the exact Qwen2.5 tokenizer, saved with its processor."""
    import torch
    from transformers import Qwen2_5_VLForConditionalGeneration

    from assets.tiny import build_qwen_tokenizer, qwen2_5_vl_config, save_vlm_folder

    tok = build_qwen_tokenizer()
    torch.manual_seed(0)
    model = Qwen2_5_VLForConditionalGeneration(qwen2_5_vl_config(tok, REALISTIC_TEXT, REALISTIC_VISION))
    model.generation_config.pad_token_id = tok.pad_token_id
    model.generation_config.eos_token_id = [tok.convert_tokens_to_ids("<|im_end|>")]
    return save_vlm_folder(model, tok, folder)


def linear_macs(config: Any, patches: int, prompt: int, new: int, k: int) -> dict[str, float]:
    """Multiply-accumulates of the linear layers per item on each side (attention scores, norms and sampling left
    out): what the ratios would be if time followed compute alone. `patches`: vision patches per item; `prompt`:
    prompt tokens; `new`: tokens per completion."""
    t, v = config.text_config, config.vision_config
    head = t.hidden_size // t.num_attention_heads
    attention = 2 * t.hidden_size * head * (t.num_attention_heads + t.num_key_value_heads)  # q, o; k, v
    llm = t.num_hidden_layers * (attention + 3 * t.hidden_size * t.intermediate_size)
    merged = v.hidden_size * v.spatial_merge_size**2
    patch_in = v.in_channels * v.temporal_patch_size * v.patch_size**2
    block = 4 * v.hidden_size**2 + 3 * v.hidden_size * v.intermediate_size  # qkv + proj, gated MLP
    vision = patches * (v.depth * block + patch_in * v.hidden_size)
    vision += patches // v.spatial_merge_size**2 * (merged**2 + merged * v.out_hidden_size)
    prefill, decode = prompt * llm, k * new * (llm + t.hidden_size * t.vocab_size)
    return {
        "ours": vision + prefill + decode,
        "official": k * (vision + prefill) + decode,
        "nrs": vision + k * prefill + decode,
    }


def real_config(size: str) -> Any:
    """A released Qwen2.5-VL config's sizes (no weights), for `linear_macs`."""
    from transformers import Qwen2_5_VLConfig

    text, (kv_heads, vocab) = REAL_SIZES[size], REAL_KV_VOCAB[size]
    vision = {**REAL_VISION, "out_hidden_size": text["hidden_size"]}
    return Qwen2_5_VLConfig(
        text_config={**text, "num_key_value_heads": kv_heads, "vocab_size": vocab}, vision_config=vision
    )


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


@contextmanager
def recording(tally: Tally) -> Iterator[None]:
    """Wrap the sampler that `sample_answers` (hence the estimator) calls, to count completion tokens (a list sum)."""
    import lightning_modules.sampling as sampling

    original = sampling.sample

    def sample(model, batch, cfg, stop_ids, *args, **kwargs):
        out = original(model, batch, cfg, stop_ids, *args, **kwargs)
        tally.lengths += [len(c) for item in out for c in item]
        tally.stopped += sum(bool(c) and c[-1] in stop_ids for item in out for c in item)
        return out

    sampling.sample = sample
    try:
        yield
    finally:
        sampling.sample = original


def official_pass(
    model,
    processor,
    batch: dict[str, Any],
    k: int,
    kwargs: dict[str, Any],
    stops: set[int],
    score: Callable[[str, Any], Any],
    tally: Tally,
    nrs: bool = False,
) -> list[dict[str, Any]]:
    """k separate `generate` passes over one batch (or, with `nrs`, one `generate(num_return_sequences=k)` call),
    then decoding and scoring as `predict_step` does."""
    import torch

    from datamodules.collate import model_inputs

    inputs = model_inputs(batch)
    prompt_len = inputs["input_ids"].shape[1]
    calls, per_call = (1, k) if nrs else (k, 1)
    answers: list[list[str]] = [[] for _ in batch["ids"]]
    tok = processor.tokenizer
    with torch.no_grad():
        for _ in range(calls):
            out = model.generate(**inputs, **kwargs, num_return_sequences=per_call)[:, prompt_len:].tolist()
            for row, new in enumerate(out):  # item-major: rows b * per_call ... belong to item b
                end = next((i + 1 for i, t in enumerate(new) if t in stops), len(new))  # generate pads after a stop
                tally.lengths.append(end)
                tally.stopped += end > 0 and new[end - 1] in stops
                answers[row // per_call].append(tok.decode(new[:end], skip_special_tokens=True))
    rows = []
    for item_id, solution, item_answers in zip(batch["ids"], batch["solutions"], answers):
        correct = sum(bool(score(a, solution)) for a in item_answers)
        tally.correct += correct
        rows.append({"id": item_id, "correct": correct, "k": k, "answers": item_answers})
    return rows


def run_config(
    name: str, model_path: str, data_file: str, args: argparse.Namespace, rounds: int, max_new: int, nrs: bool = False
) -> dict[str, float]:
    """Build the sides for one model, time them interleaved, print the figures; returns ours/official (and
    ours/nrs with `nrs`) in completions per second."""
    import torch

    from datamodules.images import MIN_PIXELS, OFFICIAL_TRAIN_MAX_PIXELS
    from datamodules.vlm_data import VLMDataModule
    from lightning_modules.sampling import banned_token_ids, stop_token_ids

    k = args.k
    # Pixel bounds pinned to what the figures were measured with (the demo checkpoint's processor now asks for
    # 112x112 at least, i.e. 16 image tokens per easy-vqa image instead of 4); a no-op for the other models.
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
    names = ["ours", "official", "nrs"] if nrs else ["ours", "official"]
    tallies = {side: Tally() for side in names}

    def baseline(side: str, kwargs: dict[str, Any]) -> Callable[[int, dict[str, Any]], int]:
        return lambda i, batch: sum(
            row["correct"]
            for row in official_pass(
                model, processor, batch, k, kwargs, set(stops), est.score, tallies[side], nrs=side == "nrs"
            )
        )

    sides = {"ours": lambda i, batch: sum(row["correct"] for row in est.predict_step(batch, i))}
    sides.update({side: baseline(side, gen_kwargs) for side in names[1:]})

    image_tokens = int((batches[0]["input_ids"][0] == model.config.image_token_id).sum())
    prompt_lens = [int(m.sum()) for b in batches for m in b["attention_mask"]]
    print(f"[{name}] {describe_vlm(model, processor)}")
    print(
        f"  {n_items} items in {len(batches)} batches of {args.batch} (left padded), {image_tokens} image tokens "
        f"per item, prompts {min(prompt_lens)}-{max(prompt_lens)} tokens; k {k}, T {args.temperature}, top-p "
        f"{args.top_p}, top-k {args.top_k}, max_new_tokens {max_new}; stop ids {stops}; suppressed {banned}",
        flush=True,
    )

    with recording(tallies["ours"]):
        torch.manual_seed(0)  # warm-up: one batch of ours, one generate pass (and one nrs call), <= 16 new tokens
        warm = min(max_new, 16)
        est.sampling.max_new_tokens = warm
        est.predict_step(batches[0], 0)
        est.sampling.max_new_tokens = max_new
        warm_kwargs = {**gen_kwargs, "max_new_tokens": warm}
        for side in names[1:]:
            official_pass(model, processor, batches[0], 1, warm_kwargs, set(stops), est.score, Tally(), side == "nrs")
        for tally in tallies.values():
            tally.reset()
        pass_times: dict[str, list[float]] = {side: [] for side in names}
        cpu_times: dict[str, list[float]] = {side: [] for side in names}  # process CPU time: less sensitive to load
        batch_ratios: dict[str, list[float]] = {side: [] for side in names[1:]}
        for _ in range(rounds):
            elapsed, cpu = dict.fromkeys(names, 0.0), dict.fromkeys(names, 0.0)
            for i, batch in enumerate(batches):  # interleaved batch by batch: ours, official, [nrs,] ours, ...
                spent = {}
                for side, fn in sides.items():
                    t0, c0 = time.perf_counter(), time.process_time()
                    tallies[side].correct += fn(i, batch)
                    spent[side] = time.perf_counter() - t0
                    elapsed[side] += spent[side]
                    cpu[side] += time.process_time() - c0
                for side in batch_ratios:
                    batch_ratios[side].append(spent[side] / spent["ours"])
            for side in names:
                pass_times[side].append(elapsed[side])
                cpu_times[side].append(cpu[side])
    completions = n_items * k
    cps = {side: completions / median(pass_times[side]) for side in names}
    for side, tally in tallies.items():
        lens = tally.lengths
        print(
            f"  {side:8s} {median(pass_times[side]):8.3f} s per pass ({cps[side]:7.2f} completions/s; CPU "
            f"{median(cpu_times[side]):.3f} s); mean "
            f"completion {sum(lens) / len(lens):.2f} tokens (stop token included), "
            f"{100 * tally.stopped / len(lens):.0f}% ended by a stop token, pass rate "
            f"{100 * tally.correct / len(lens):.1f}%; passes {', '.join(f'{t:.3f}' for t in pass_times[side])} s"
        )
    ratios = {side: cps["ours"] / cps[side] for side in names[1:]}
    for side, ratio in ratios.items():
        spread = batch_ratios[side]
        print(
            f"  ours/{side} completions per second: {ratio:.3f} (median of pass times over {rounds} round(s)); "
            f"per-batch ratios: median {median(spread):.3f}, min {min(spread):.3f}, max {max(spread):.3f} over "
            f"{len(spread)} batch pairs; by process CPU time "
            f"{median(cpu_times[side]) / median(cpu_times['ours']):.3f}",
            flush=True,
        )
    if nrs:  # random models only: what compute alone would give, here and at the real sizes
        patches = int(batches[0]["image_grid_thw"][0].prod())
        prompt = round(sum(prompt_lens) / len(prompt_lens))
        refs = {"this model": model.config, **{f"Qwen2.5-VL-{s}": real_config(s) for s in REAL_SIZES}}
        parts = []
        for label, config in refs.items():
            macs = linear_macs(config, patches, prompt, max_new, k)
            parts.append(
                f"{label} {macs['ours'] / 1e9:,.1f} G ours, official/ours {macs['official'] / macs['ours']:.2f}, "
                f"nrs/ours {macs['nrs'] / macs['ours']:.2f}"
            )
        print(
            f"  linear-layer MACs per item at these shapes ({patches} patches, {prompt}-token prompts, {max_new} new "
            f"tokens x k {k}; compute only): " + "; ".join(parts),
            flush=True,
        )
    return ratios


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--k", type=int, default=8)
    parser.add_argument("--temperature", type=float, default=0.9)
    parser.add_argument("--top-p", type=float, default=1.0)
    parser.add_argument("--top-k", type=int, default=50)
    parser.add_argument("--max-new-tokens", type=int, default=16, help="tiny and demo cases")
    parser.add_argument("--batch", type=int, default=4, help="prompts per batch, every side")
    parser.add_argument("--tiny-items", type=int, default=32)
    parser.add_argument("--demo-items", type=int, default=16)
    parser.add_argument("--realistic-items", type=int, default=8)
    parser.add_argument("--long-items", type=int, default=4)
    parser.add_argument("--tiny-rounds", type=int, default=5)
    parser.add_argument("--demo-rounds", type=int, default=1)
    parser.add_argument("--realistic-rounds", type=int, default=1)
    parser.add_argument("--long-rounds", type=int, default=1)
    parser.add_argument("--realistic-max-new-tokens", type=int, default=8)
    parser.add_argument("--long-max-new-tokens", type=int, default=256)
    parser.add_argument("--hidden", type=int, default=64, help="tiny model hidden size")
    parser.add_argument("--skip-demo", action="store_true")
    parser.add_argument("--skip-realistic", action="store_true")
    parser.add_argument("--long", action="store_true", help="add the long-answer case (20-30 minutes)")
    parser.add_argument(
        "--realistic-only", action="store_true", help="run only the realistic case (with --long-only: both)"
    )
    parser.add_argument("--long-only", action="store_true", help="run only the long-answer case")
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    only = {case for case in ("realistic", "long") if getattr(args, f"{case}_only")}
    skipped = {case for case in ("demo", "realistic") if getattr(args, f"skip_{case}")}
    cases = only or {"tiny", "demo", "realistic"} - skipped | ({"long"} if args.long else set())

    quiet_libraries()
    set_threads(args.threads)
    import torch

    from assets import resolve
    from assets.test_data import write_color_data

    start = time.perf_counter()
    print(
        f"Rollout throughput, ours (DifficultyEstimator.predict_step: shared prefill, per-item generators) vs k "
        f"separate passes of HF generate(do_sample=True) at batch {args.batch} (official) and, for the realistic and "
        f"long cases, one generate(num_return_sequences={args.k}) call per batch (nrs); "
        f"{versions('torch', 'transformers', 'lightning')}; torch threads {torch.get_num_threads()}; fp32; "
        f"timings: median of interleaved passes over all items after a one-batch warm-up per side"
    )
    ratios: dict[str, dict[str, float]] = {}
    with tempfile.TemporaryDirectory(prefix="bench_rollout_") as tmp:
        workdir = Path(tmp)
        if "tiny" in cases:
            train = write_color_data(workdir / "train", n=16, fmt="messages", size=56)
            tiny = build_trained_tiny_vlm(workdir / "model", train, tokenizer="bpe", hidden=args.hidden)
            items = write_color_data(workdir / "items", n=args.tiny_items, fmt="problem", size=56)
            ratios["tiny"] = run_config(
                "tiny, colour-tuned", str(tiny), str(items), args, args.tiny_rounds, args.max_new_tokens
            )
        if "demo" in cases:
            demo_items = write_subset_json(
                resolve("demo://easy_vqa/train_grpo.json"), workdir / "demo.json", args.demo_items
            )
            ratios["demo"] = run_config(
                "demo 135M SmolLM2-in-Qwen2.5-VL, easy-vqa",
                resolve("demo://smollm2-vl"),
                str(demo_items),
                args,
                args.demo_rounds,
                args.max_new_tokens,
            )
        if cases & {"realistic", "long"}:
            model = str(build_realistic_vlm(workdir / "realistic"))
            for case in ("realistic", "long"):
                if case not in cases:
                    continue
                n = args.realistic_items if case == "realistic" else args.long_items
                items = write_color_data(workdir / case, n=n, fmt="problem", size=REALISTIC_IMAGE)
                rounds = args.realistic_rounds if case == "realistic" else args.long_rounds
                max_new = args.realistic_max_new_tokens if case == "realistic" else args.long_max_new_tokens
                label = (
                    f"{case}, random Qwen2.5-VL with the real vocabulary, {REALISTIC_IMAGE}x{REALISTIC_IMAGE} images"
                )
                ratios[case] = run_config(label, model, str(items), args, rounds, max_new, nrs=True)
    print(f"total wall time {time.perf_counter() - start:.0f} s")
    for case in ("long", "realistic"):
        if case in ratios:
            print(f"ratio_{case}: {ratios[case]['official']:.3f}")
            print(f"ratio_{case}_nrs: {ratios[case]['nrs']:.3f}")
    if "tiny" in ratios:
        print(f"ratio_tiny: {ratios['tiny']['official']:.3f}")
    if "demo" in ratios:
        print(f"ratio: {ratios['demo']['official']:.3f}")


if __name__ == "__main__":
    main()
