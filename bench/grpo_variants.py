"""GRPO variants per optimizer step on the embedded demo: plain GRPO vs filtered GRPO vs GRPO-M (issue 13).

Why: a GRPO group whose G answers are all right or all wrong has zero advantage, so its rollouts are spent without
a policy gradient. Filtered GRPO (`configs/stages/grpo_filtered.yaml`: drop such groups, refill the batch, at most 2
refill rounds) pays more rollouts per step to train on groups with spread; GRPO-M (`configs/stages/grpo_m.yaml`:
prompts of the medium tier of the difficulty file only) avoids most of them before sampling. This measures what each
costs per optimizer step against the baseline, plain GRPO (`configs/stages/grpo.yaml`), at the same prompt batch.

How: the three runs are composed from `configs/runs.yaml` (`demo/grpo`, `demo/grpo_filtered`, `demo/grpo_m`) by
`train.py`'s own CLI, so every setting is the config's (the differences are printed). All three GRPOModules share ONE
model object (the cold-started demo model with its LoRA adapter, built once); each variant keeps its own adapter
weights (swapped in before its step, outside the timing), its own AdamW and schedule (the demo's 50-step schedule)
and its own step counter. They are driven without a Lightning Trainer as in `bench/grpo_step.py` (`StubTrainer`,
`drive_without_trainer`), one CPU process, interleaved (grpo, filtered, grpo_m, then the next round rotated by one) so
that the load of other processes on the machine falls on all of them alike. A step is the next prompt batch from the
variant's own `VLMDataModule` dataloader plus `GRPOModule.training_step` as written (rollouts, refill rounds when
filtering, rewards, reference and policy log-probs, loss, backward, clipping, AdamW step). Before step n of every
variant the torch seed is `--seed + n` (LoRA dropout); data order and rollout seeds come from the configs (seed 42),
so a rerun with the same thread count draws the same groups.

Reported per variant, over the timed steps (each variant makes `--warmup` untimed steps first, so all make the same
number of optimizer steps): rollouts (completions sampled) per step, wall time per step (mean = total time / steps,
and median), groups drawn per step and the share of them with zero advantage (all-correct / all-wrong), groups
trained on per step and how many of those have reward spread (`keep_groups`), refill rounds per step, wall time per
group with spread, and each ratio against plain GRPO. Wall-time ratios use the mean, since a filtered step's cost
varies with its refill rounds and the total is what a run pays.

Needs the demo's cold-started model and difficulty file (`<run dir>/cold_start/model`,
`<run dir>/difficulty/difficulty.jsonl`; `STAGES="cold_start difficulty" bash scripts/demo.sh` makes them, about 45
minutes on 2 cores).

    nice -n 10 .venv/bin/python -m bench.grpo_variants              # 1 warm-up + 6 timed steps each, ~18 min
    .venv/bin/python -m bench.grpo_variants --steps 3 --warmup 0     # quick look, ~8 min

Measured 2026-12-02 on 2 CPU cores shared with other jobs (load average 5-8), one torch thread: a demo step of any
variant took 38-58 s, and 21 steps plus setup took about 18 minutes. Under such load the step-time spread is larger
than the differences between variants; rollout counts and group shares do not depend on it. With 2 prompts per step
and 6 steps the shares rest on 12-18 groups per variant: indicative, not precise. The last lines are
`zero_adv_share_<variant>: <share>`, `ratio_<variant>_rollouts: <x>` and `ratio_<variant>_time: <x>` (variant /
plain GRPO) for filtered and grpo_m.
"""

from __future__ import annotations

import argparse
import math
import statistics
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench.common import REPO_ROOT, quiet_libraries, set_threads, versions
from bench.grpo_step import StubTrainer, drive_without_trainer, endless

RUNS = {"grpo": "demo/grpo", "filtered": "demo/grpo_filtered", "grpo_m": "demo/grpo_m"}
"""Variant -> its run in configs/runs.yaml; the first is the baseline of every ratio."""
BASELINE = "grpo"


@dataclass(frozen=True)
class StepRecord:
    """What one optimizer step of a variant cost and drew (group counts as GRPOModule logs them)."""

    seconds: float
    rollouts: int  # completions sampled: groups drawn x G
    drawn: int
    kept: int  # groups trained on
    spread: int  # of those, groups with reward spread (non-zero advantage)
    all_correct: int
    all_wrong: int
    rounds: int  # refill rounds


@dataclass
class Summary:
    """Per-step means of a variant's records, and its ratios against the baseline (filled by `summarize`)."""

    name: str
    steps: int
    rollouts: float
    seconds: float  # mean = total / steps
    median_seconds: float
    drawn: float
    kept: float
    spread: float
    rounds: float
    zero_share: float
    all_correct_share: float
    all_wrong_share: float
    seconds_per_spread: float  # total time / groups with spread trained on
    ratios: dict[str, float] = field(default_factory=dict)


def summarize(records: dict[str, list[StepRecord]], baseline: str = BASELINE) -> dict[str, Summary]:
    """Per-variant summaries, with `ratios` (rollouts, time, time per group with spread) against `baseline`."""
    out: dict[str, Summary] = {}
    for name, recs in records.items():
        n, drawn, spread = len(recs), sum(r.drawn for r in recs), sum(r.spread for r in recs)
        total = sum(r.seconds for r in recs)
        out[name] = Summary(
            name=name,
            steps=n,
            rollouts=sum(r.rollouts for r in recs) / n,
            seconds=total / n,
            median_seconds=statistics.median(r.seconds for r in recs),
            drawn=drawn / n,
            kept=sum(r.kept for r in recs) / n,
            spread=spread / n,
            rounds=sum(r.rounds for r in recs) / n,
            zero_share=sum(r.all_correct + r.all_wrong for r in recs) / drawn,
            all_correct_share=sum(r.all_correct for r in recs) / drawn,
            all_wrong_share=sum(r.all_wrong for r in recs) / drawn,
            seconds_per_spread=total / spread if spread else float("inf"),
        )
    base = out[baseline]
    for s in out.values():
        s.ratios = {
            "rollouts": s.rollouts / base.rollouts,
            "time": s.seconds / base.seconds,
            "time_per_spread": ratio(s.seconds_per_spread, base.seconds_per_spread),
        }
    return out


def ratio(value: float, base: float) -> float:
    """value / base, NaN where either side had no group with spread (an infinite cost per group)."""
    return value / base if math.isfinite(value) and math.isfinite(base) else float("nan")


def report_lines(summaries: dict[str, Summary], baseline: str = BASELINE) -> list[str]:
    """The markdown table, then one `key: value` line per figure (ratios against `baseline` last)."""
    lines = [
        f"| variant | optimizer steps | rollouts / step | x {baseline} | time / step, mean (median) | x {baseline} | "
        "groups drawn / step | zero-advantage share of drawn (all-correct + all-wrong) | groups trained / step | "
        f"of them with spread | refill rounds / step | time per group with spread | x {baseline} |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for s in summaries.values():
        lines.append(
            f"| {s.name} | {s.steps} | {s.rollouts:.1f} | {s.ratios['rollouts']:.2f} | {s.seconds:.2f} s "
            f"({s.median_seconds:.2f} s) | {s.ratios['time']:.2f} | {s.drawn:.2f} | {s.zero_share:.1%} "
            f"({s.all_correct_share:.1%} + {s.all_wrong_share:.1%}) | {s.kept:.2f} | {s.spread:.2f} | {s.rounds:.2f} | "
            f"{s.seconds_per_spread:.2f} s | {s.ratios['time_per_spread']:.2f} |"
        )
    others = [s for s in summaries.values() if s.name != baseline]
    lines += [f"zero_adv_share_{s.name}: {s.zero_share:.3f}" for s in summaries.values()]
    lines += [f"ratio_{s.name}_rollouts: {s.ratios['rollouts']:.3f}" for s in others]
    lines += [f"ratio_{s.name}_time: {s.ratios['time']:.3f}" for s in others]
    return lines


# ------------------------------------------------------------------------------------------------------- variants
def compose(run: str, extra: list[str]) -> Any:
    """The run's LightningCLI, parsed and instantiated but not run (no logger: nothing is written)."""
    from scripts.runs import command
    from train import main

    cpu = ["--trainer.accelerator", "cpu", "--trainer.devices", "1", "--trainer.logger", "false"]
    return main([*command(run)[1:], *cpu, *extra], run=False)


def flat(tree: Any, prefix: str = "") -> dict[str, Any]:
    """Nested dicts -> {dotted key: leaf}."""
    if not isinstance(tree, dict):
        return {prefix: tree}
    return {k: v for key, value in tree.items() for k, v in flat(value, f"{prefix}{key}.").items()}


def config_differences(base: Any, other: Any) -> list[str]:
    """Model and data hyper-parameters in which `other` differs from `base` (what the variant changes)."""
    out = []
    for part in ("model", "datamodule"):
        a, b = flat(dict(getattr(base, part).hparams)), flat(dict(getattr(other, part).hparams))
        out += [
            f"{part}.{k.rstrip('.')}: {a.get(k)!r} -> {b.get(k)!r}"
            for k in sorted(a.keys() | b.keys())
            if a.get(k) != b.get(k)
        ]
    return out


@dataclass
class Variant:
    """One GRPO variant driven on the shared model: its module, data, optimizer state and adapter weights."""

    name: str
    module: Any
    trainer: StubTrainer
    optimizer: Any
    scheduler: Any
    batches: Any
    weights: list[Any]
    records: list[StepRecord] = field(default_factory=list)


def build_variants(clis: dict[str, Any]) -> tuple[list[Variant], list[Any]]:
    """The variants and the shared model's trainable parameters. The baseline module builds the model once; every
    other module gets that same object (its configure_model then keeps it), its own AdamW and schedule over it, and
    its own copy of the initial adapter weights."""
    base = clis[BASELINE].model
    base.configure_model()
    trainable = [p for p in base.model.parameters() if p.requires_grad]
    variants = []
    for name, cli in clis.items():
        module, data = cli.model, cli.datamodule
        if module is not base:
            module.model, module.processor = base.model, base.processor
        data.setup("fit")
        trainer = StubTrainer(int(cli.trainer.max_steps), train_dataloader=data.train_dataloader())
        module.trainer = trainer
        conf = module.configure_optimizers()
        optimizer, scheduler = conf["optimizer"], conf["lr_scheduler"]["scheduler"]
        weights = [p.detach().clone() for p in trainable]
        variants.append(Variant(name, module, trainer, optimizer, scheduler, endless(data.train_dataloader), weights))
    base.model.train()
    return variants, trainable


def run_step(v: Variant, trainable: list[Any], seed: int) -> StepRecord:
    """One optimizer step of `v`: its adapter weights in, the timed step, its weights out."""
    import torch

    from lightning_modules.group_filter import keep_groups

    with torch.no_grad():
        for p, w in zip(trainable, v.weights):
            p.copy_(w)
    logged = drive_without_trainer(v.module, v.optimizer, v.scheduler)
    torch.manual_seed(seed + v.trainer.global_step)
    start = time.perf_counter()
    batch = next(v.batches)
    v.module.training_step(batch, v.trainer.global_step)
    seconds = time.perf_counter() - start
    v.trainer.global_step += 1
    with torch.no_grad():
        for p, w in zip(trainable, v.weights):
            w.copy_(p)
    k = v.module.sampling.k
    drawn = int(logged["train/groups_drawn"])
    if v.module.group_filter.enabled:
        spread = int(logged["train/groups_kept"])
    else:  # trained on every group drawn
        spread = int(keep_groups(torch.tensor(v.module.last_rollout["rewards"]).view(-1, k)).sum())
    return StepRecord(
        seconds=seconds,
        rollouts=drawn * k,
        drawn=drawn,
        kept=int(logged["train/groups_kept"]) if v.module.group_filter.enabled else drawn,
        spread=spread,
        all_correct=int(logged["train/groups_all_correct"]),
        all_wrong=int(logged["train/groups_all_wrong"]),
        rounds=int(logged["train/resample_rounds"]),
    )


# ----------------------------------------------------------------------------------------------------------- main
def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--steps", type=int, default=6, help="timed optimizer steps per variant")
    parser.add_argument("--warmup", type=int, default=1, help="untimed optimizer steps per variant first")
    parser.add_argument("--prompts", type=int, default=None, help="prompts per step (default: the demo's, 2)")
    parser.add_argument("--run-dir", default=None, help="experiment folder (default: the demo's, runs/demo)")
    parser.add_argument("--seed", type=int, default=0, help="torch seed base (LoRA dropout)")
    parser.add_argument("--threads", type=int, default=1, help="torch intra-op threads")
    args = parser.parse_args()

    import os

    os.chdir(REPO_ROOT)  # the configs name their files relative to the repository
    quiet_libraries()
    extra = (["--run.dir", args.run_dir] if args.run_dir else []) + (
        ["--data.batch_size", str(args.prompts)] if args.prompts else []
    )
    clis = {name: compose(run, extra) for name, run in RUNS.items()}
    base = clis[BASELINE]
    for path in (base.model.hparams.model_path, base.datamodule.hparams.difficulty_file):
        if not Path(path).exists():
            raise SystemExit(f'{path} is missing: `STAGES="cold_start difficulty" bash scripts/demo.sh` makes it')
    set_threads(args.threads)
    import torch

    data, sampling = base.datamodule.hparams, base.model.sampling
    print(
        f"GRPO variants on {base.model.hparams.model_path} ({versions('torch', 'transformers', 'lightning')}; "
        f"torch threads {torch.get_num_threads()}): {data.batch_size} prompts x G {sampling.k} per step, max "
        f"{sampling.max_new_tokens} new tokens, {args.warmup} warm-up + {args.steps} timed optimizer steps per "
        f"variant, interleaved in one process on one shared model; runs {RUNS}",
        flush=True,
    )
    for name, cli in clis.items():
        if name != BASELINE:
            print(f"  {name} differs from {BASELINE} in: {'; '.join(config_differences(base, cli)) or 'nothing'}")
    variants, trainable = build_variants(clis)
    for v in variants:
        print(f"  {v.name}: {len(v.trainer.train_dataloader.dataset)} training prompts", flush=True)
    start = time.perf_counter()
    for r in range(args.warmup + args.steps):
        for v in variants[r % len(variants) :] + variants[: r % len(variants)]:
            rec = run_step(v, trainable, args.seed)
            if r >= args.warmup:
                v.records.append(rec)
            print(
                f"  step {r}{' (warm-up)' if r < args.warmup else ''} {v.name:8s} {rec.seconds:6.2f} s, "
                f"{rec.rollouts} rollouts, drawn {rec.drawn}, trained {rec.kept} (spread {rec.spread}), "
                f"all-correct {rec.all_correct}, all-wrong {rec.all_wrong}, refill rounds {rec.rounds}",
                flush=True,
            )
    summaries = summarize({v.name: v.records for v in variants})
    print(f"\nsteps done in {time.perf_counter() - start:.0f} s")
    print("\n".join(report_lines(summaries)))


if __name__ == "__main__":
    main()
