"""The fuller demo (`bash scripts/demo.sh --full`): the paper's Table 1 and Fig. 5 on the embedded demo, over 3 seeds,
and the whole pipeline once more with 10 % label noise.

Runs after the main pipeline, reusing its cold-started model and difficulty file (`runs/demo`), all at the main
run's 50 SFT steps:
- **Table 1** (paper: SFT on equal-size easy / medium / hard subsets at equal steps, against the cold start): the
  subset size is the smallest tier's count; each seed draws another subset and another data order / LoRA init.
- **Fig. 5** (paper: SFT-EM with 0 %, 5 % and the natural share of hard items): 0 % is SFT-EM, natural is SFT on
  all data (the main run is seed 0 of both), 5 % adds `selection.hard_share 0.05`.
- **Live difficulty**: GRPO vs GRPO with group filtering vs GRPO-M at equal optimizer steps, and SFT-M with the
  static difficulty file vs re-tiered every 25 steps (`DifficultyRefresh`): accuracies plus the cost of each run
  (wall time, completions sampled, share of zero-advantage groups among those drawn, re-estimate time). Seed 42 is
  `runs/demo/<stage>` (`python scripts/runs.py demo/<stage>`; run when missing); wall times come from the seeds this
  script ran, which share one machine state.
- **Label noise** (`configs/demo/label_noise.yaml`): difficulty -> SFT, SFT-M, SFT-EM, GRPO from the same clean
  cold start with 10 % of the training answers replaced by another colour / shape / yes-no; the tier report says how
  many noisy items each tier caught.

Every run is one `python scripts/runs.py demo/<stage> --run.stage <name> ...` command (printed); runs that already
have a `metrics.json` are skipped, so an interrupted `--full` run resumes where it stopped. The results go to
`runs/demo/full.md`, `runs/demo/full.json` and `runs/demo/full.png` (mean +- std over seeds, error bars).

    python scripts/demo_full.py                      # everything (about 2 hours on 2 cores)
    python scripts/demo_full.py --parts table1       # only Table 1 (or fig5, live, noise); --seeds 42 1 to use fewer
    python scripts/demo_full.py --report-only        # the tables of whatever has finished (mean +- std, n seeds)

Order: every part at seed 42 (the main run's), then the noise pipeline, then seeds 1 and 2, so a run stopped early
still has one complete picture.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from scripts.pipeline_report import accuracies, latest_metrics, tier_counts  # noqa: E402

TIERS = ("easy", "medium", "hard")
NOISE_STAGES = ("difficulty", "sft", "sft_m", "sft_em", "grpo")
LIVE = {  # label: demo stage (configs/runs.yaml)
    "GRPO": "grpo",
    "GRPO + group filter": "grpo_filtered",
    "GRPO-M (medium prompts)": "grpo_m",
    "SFT-M, static tiers": "sft_m",
    "SFT-M, re-tiered every 25 steps": "sft_m_refresh",
}


REPORT_ONLY = False  # set by main() for the report: collect what exists, run nothing


def run(stage: str, name: str, args: list[str], run_dir: Path) -> Path | None:
    """Run `demo/<stage>` of configs/runs.yaml as stage folder `name` unless it already finished; returns its
    metrics.json (difficulty.jsonl for a difficulty stage), None when not run (report only)."""
    done = latest_metrics(run_dir / name) if not stage.endswith("difficulty") else run_dir / name / "difficulty.jsonl"
    if done is not None and done.exists():
        if not REPORT_ONLY:
            print(f"=== {name}: done already ({done})", flush=True)
        return done
    if REPORT_ONLY:
        return None
    cmd = [sys.executable, "scripts/runs.py", f"demo/{stage}", "--run.dir", str(run_dir), "--run.stage", name, *args]
    if not stage.endswith("difficulty"):  # small subsets run many epochs: evaluate once, at the end
        cmd += ["--eval.init_args.every_n_epochs", "0"]
    print("=== " + " ".join(["python", *cmd[1:]]), flush=True)
    start = time.perf_counter()
    subprocess.run(cmd, cwd=ROOT, check=True)
    with (run_dir / "timings.jsonl").open("a") as f:
        f.write(json.dumps({"stage": name, "seconds": time.perf_counter() - start}) + "\n")
    return latest_metrics(run_dir / name) if not stage.endswith("difficulty") else run_dir / name / "difficulty.jsonl"


def table1(run_dir: Path, seeds: list[int]) -> dict[str, list[dict]]:
    counts = tier_counts(run_dir / "difficulty" / "difficulty.jsonl")
    size = min(counts.values())
    print(f"Table 1: tiers {counts}; equal-size subsets of {size} items", flush=True)
    out: dict[str, list[dict]] = {}
    for tier in TIERS:
        for seed in seeds:
            tiers = str(run_dir / "difficulty" / "difficulty.jsonl")
            extra = ["--data.difficulty_file", tiers, "--data.selection.tiers", f"[{tier}]"]
            extra += ["--data.selection.size", str(size), "--data.selection.seed", str(seed)]
            extra += ["--seed_everything", str(seed), "--data.seed", str(seed)]
            metrics = run("sft", f"full/table1_{tier}_s{seed}", extra, run_dir)
            out.setdefault(f"SFT on {size} {tier}", []).append(accuracies(metrics))  # {} when not run
    return out


def fig5(run_dir: Path, seeds: list[int]) -> dict[str, list[dict]]:
    variants = {
        "SFT-EM, 0 % hard": ("sft_em", []),
        "SFT-EM, 5 % hard": ("sft_em", ["--data.selection.hard_share", "0.05"]),
        "SFT, natural share": ("sft", []),
    }
    counts = tier_counts(run_dir / "difficulty" / "difficulty.jsonl")
    natural = counts["hard"] / max(sum(counts.values()), 1)
    if natural <= 0.05:  # the 5 % variant needs more hard items than there are
        print(f"Fig. 5: the natural hard share is {100 * natural:.1f} %, not above 5 %: the 5 % variant is skipped")
        variants.pop("SFT-EM, 5 % hard")
    out: dict[str, list[dict]] = {}
    for label, (stage, extra) in variants.items():
        for seed in seeds:
            if seed == 42 and not extra:
                metrics = latest_metrics(run_dir / stage)  # the main run (seed 42) is one of the seeds
                if metrics is None:
                    raise SystemExit(f"{run_dir / stage}: run the main pipeline first (bash scripts/demo.sh)")
            else:
                seeded = ["--seed_everything", str(seed), "--data.seed", str(seed), "--data.selection.seed", str(seed)]
                metrics = run(stage, f"full/fig5_{stage}{'_hard5' if extra else ''}_s{seed}", extra + seeded, run_dir)
            out.setdefault(label, []).append(accuracies(metrics))
    return out


def live(run_dir: Path, seeds: list[int]) -> tuple[dict[str, list[dict]], dict[str, list[dict]]]:
    """Accuracies and costs of the live-difficulty variants, per seed."""
    accs: dict[str, list[dict]] = {}
    costs: dict[str, list[dict]] = {}
    for label, stage in LIVE.items():
        for seed in seeds:
            name = stage if seed == 42 else f"full/live_{stage}_s{seed}"
            extra = [] if seed == 42 else ["--seed_everything", str(seed), "--data.seed", str(seed)]
            if seed != 42 and stage.startswith("grpo"):
                extra += ["--model.init_args.sampling.seed", str(seed)]
            if seed != 42 and stage.endswith("refresh"):
                extra += ["--refresh.init_args.seed", str(seed)]
            metrics = run(stage, name, extra, run_dir)
            accs.setdefault(label, []).append(accuracies(metrics))
            costs.setdefault(label, []).append(run_cost(run_dir, name, metrics))
    return accs, costs


def run_cost(run_dir: Path, name: str, metrics: Path | None) -> dict:
    """Wall time (this script's timing, when it ran the run), completions sampled for training (GRPO rollouts,
    re-estimates), groups drawn and the share with zero advantage (all answers right or all wrong)."""
    if metrics is None:
        return {}
    version = metrics.parent.parent
    cost: dict = {}
    timings = run_dir / "timings.jsonl"
    if timings.exists() and name.startswith("full/"):
        seconds = [row["seconds"] for row in map(json.loads, timings.read_text().splitlines()) if row["stage"] == name]
        if seconds:
            cost["wall_s"] = seconds[-1]
    rollouts = version / "rollouts.jsonl"
    if rollouts.exists():
        groups = [json.loads(line) for line in rollouts.read_text().splitlines() if line.strip()]
        cost["groups"] = len(groups)
        cost["completions"] = sum(g["k"] for g in groups)
        cost["zero_adv"] = 100 * sum(g["correct"] in (0, g["k"]) for g in groups) / max(len(groups), 1)
    refreshes = [json.loads(p.read_text()) for p in sorted(version.glob("difficulty_refresh/refresh_*.json"))]
    if refreshes:
        cost["completions"] = sum(r["measured"] * r["sampling"]["k"] for r in refreshes)
        cost["refresh_s"] = sum(r["metrics"]["refresh/seconds"] for r in refreshes)
    return cost


def cost_markdown(costs: dict[str, list[dict]]) -> str:
    """Mean +- std over the seeds that have each figure (n in brackets)."""
    columns = {
        "wall_s": "wall time (s)",
        "completions": "completions sampled",
        "groups": "groups drawn",
        "zero_adv": "zero-advantage groups (%)",
        "refresh_s": "re-estimates (s)",
    }
    lines = ["| run | " + " | ".join(columns.values()) + " |", "|---|" + "---|" * len(columns)]
    for label, runs in costs.items():
        cells = []
        for key in columns:
            values = [r[key] for r in runs if key in r]
            std = statistics.stdev(values) if len(values) > 1 else 0.0
            cells.append(f"{statistics.fmean(values):.0f} ± {std:.0f} ({len(values)})" if values else "–")
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    return "Cost per run, mean ± std (n seeds):\n\n" + "\n".join(lines) + "\n\n"


def noise(run_dir: Path) -> dict[str, list[dict]]:
    out: dict[str, list[dict]] = {}
    for stage in NOISE_STAGES:
        metrics = run(f"noise/{stage}", f"noise/{stage}", [], run_dir)
        if stage != "difficulty" and metrics is not None:
            out[f"{stage} (10 % noise)"] = [accuracies(metrics)]
    return out


def summarise(groups: dict[str, list[dict]]) -> dict[str, dict[str, tuple[float, float, int]]]:
    """{row: {benchmark: (mean, std, n)}} over seeds, with the OOD average as a benchmark."""
    out = {}
    for label, runs in groups.items():
        runs = [r for r in runs if r]
        if not runs:
            continue
        for r in runs:
            ood = [v for k, v in r.items() if "ood" in k and k != "ood_avg"]
            r["ood_avg"] = sum(ood) / max(len(ood), 1)
        out[label] = {}
        for bench in runs[0]:
            values = [r[bench] for r in runs]
            std = statistics.stdev(values) if len(values) > 1 else 0.0
            out[label][bench] = (statistics.fmean(values), std, len(values))
    return out


def markdown(title: str, summary: dict) -> str:
    if not summary:
        return ""
    benches = list(next(iter(summary.values())))
    lines = [f"### {title}", "", "| run | seeds | " + " | ".join(benches) + " |", "|---|---|" + "---|" * len(benches)]
    for label, row in summary.items():
        n = next(iter(row.values()))[2]
        lines.append(f"| {label} | {n} | " + " | ".join(f"{m:.2f} ± {s:.2f}" for m, s, _ in row.values()) + " |")
    return "\n".join(lines) + "\n\n"


def chart(parts: dict[str, dict], out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    parts = {k: v for k, v in parts.items() if v}
    if not parts:
        return
    fig, axes = plt.subplots(1, len(parts), figsize=(6 * len(parts), 4), squeeze=False)
    for ax, (title, summary) in zip(axes[0], parts.items()):
        benches = list(next(iter(summary.values())))
        width = 0.8 / len(summary)
        for i, (label, row) in enumerate(summary.items()):
            xs = [j + i * width for j in range(len(benches))]
            ax.bar(xs, [row[b][0] for b in benches], width, yerr=[row[b][1] for b in benches], capsize=3, label=label)
        ax.set_xticks([j + 0.4 - width / 2 for j in range(len(benches))], benches, fontsize=8)
        ax.set_ylabel("accuracy (%), mean ± std over seeds")
        ax.set_title(title, fontsize=10)
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(out, dpi=100)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--run-dir", default="runs/demo", help="the main pipeline's run folder")
    parser.add_argument(
        "--parts", nargs="+", default=["table1", "fig5", "live", "noise"], choices=["table1", "fig5", "live", "noise"]
    )
    parser.add_argument("--seeds", nargs="+", type=int, default=[42, 1, 2], help="42 = the main run's seed")
    parser.add_argument("--report-only", action="store_true", help="tabulate the runs that finished; run nothing")
    args = parser.parse_args(argv)
    run_dir = Path(args.run_dir)
    if not args.report_only:  # one seed of every part first, then the noise pipeline, then the other seeds
        for index, seed in enumerate(args.seeds):
            if "table1" in args.parts:
                table1(run_dir, [seed])
            if "fig5" in args.parts:
                fig5(run_dir, [seed])
            if "live" in args.parts:
                live(run_dir, [seed])
            if index == 0 and "noise" in args.parts:
                noise(run_dir)
    global REPORT_ONLY
    REPORT_ONLY = True
    cold = {"cold start (baseline)": [accuracies(latest_metrics(run_dir / "cold_start"))]}
    parts = {}
    if "table1" in args.parts:
        parts["Table 1: SFT on equal-size tiers (50 steps)"] = summarise(cold | table1(run_dir, args.seeds))
    if "fig5" in args.parts:
        parts["Fig. 5: share of hard items in SFT-EM (50 steps)"] = summarise(cold | fig5(run_dir, args.seeds))
    costs = {}
    if "live" in args.parts:
        accs, costs = live(run_dir, args.seeds)
        parts["Live difficulty: GRPO variants and re-tiered SFT-M (50 steps)"] = summarise(cold | accs)
    if "noise" in args.parts:
        parts["10 % label noise (one seed)"] = summarise(cold | noise(run_dir))
    text = "".join(markdown(title, summary) for title, summary in parts.items())
    text += cost_markdown(costs) if costs else ""
    (run_dir / "full.md").write_text(text)
    (run_dir / "full.json").write_text(json.dumps(parts | {"live costs": costs}, indent=1))
    chart(parts, run_dir / "full.png")
    print(text + f"wrote {run_dir / 'full.md'}, {run_dir / 'full.json'} and {run_dir / 'full.png'}", flush=True)


if __name__ == "__main__":
    main()
