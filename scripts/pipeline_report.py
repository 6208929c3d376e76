"""Summarise a demo (or paper) pipeline run: ID / OOD accuracy per method with wall times, as markdown and PNG.

    python scripts/pipeline_report.py runs/demo

Reads `<run>/<stage>/version_N/predictions/metrics.json` (the newest N; written by GenerativeEval) and
`<run>/timings.jsonl` (written by
scripts/demo.sh). Training wall time excludes evaluation; DC-SFT's cost includes difficulty estimation, as in the
paper's Fig. 4 (DC-SFT incl. the 8-rollout estimate vs GRPO).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

METHODS = [
    ("cold_start", "cold start (baseline)"),
    ("sft", "SFT (all data)"),
    ("sft_m", "SFT-M (DC-SFT)"),
    ("sft_em", "SFT-EM (DC-SFT)"),
    ("grpo", "GRPO"),
]


def latest_metrics(stage_dir: Path) -> Path | None:
    """`metrics.json` of the newest run of a stage (`<stage>/version_N/predictions/`; older runs: no version)."""
    found = sorted(stage_dir.glob("version_*/predictions/metrics.json"), key=lambda p: int(p.parts[-3].split("_")[1]))
    legacy = stage_dir / "predictions" / "metrics.json"
    return found[-1] if found else (legacy if legacy.exists() else None)


def run_metrics(path: Path | None) -> dict[str, float]:
    """{"<benchmark>/<metric>": value} of one run's metrics.json, `val/` dropped ({} when there is none)."""
    if path is None or not path.exists():
        return {}
    return {key.split("/", 1)[1]: value for key, value in json.loads(path.read_text())["metrics"].items()}


def accuracies(path: Path | None) -> dict[str, float]:
    """{benchmark: accuracy} of one run's metrics.json ({} when there is none)."""
    return {key.split("/")[0]: value for key, value in run_metrics(path).items() if key.endswith("/acc")}


def load(run: Path) -> tuple[list[dict], list[str]]:
    timings: dict[str, float] = {}
    if (run / "timings.jsonl").exists():
        for line in (run / "timings.jsonl").read_text().splitlines():
            row = json.loads(line)
            timings[row["stage"]] = row["seconds"]
    rows, benches = [], []
    for stage, label in METHODS:
        path = latest_metrics(run / stage)
        if path is None:
            continue
        summary = json.loads(path.read_text())
        accs = accuracies(path)
        benches = benches or list(accs)
        train = timings.get(stage, float("nan")) - summary.get("eval_seconds", 0.0)
        cost = train + (timings.get("difficulty", 0.0) if stage in ("sft_m", "sft_em") else 0.0)
        rows.append(
            {"stage": stage, "label": label, "acc": accs, "step": summary["step"], "train_s": train, "cost_s": cost}
        )
        rows[-1]["kinds"] = kind_accuracies(path)
    return rows, benches


def markdown(rows: list[dict], benches: list[str]) -> str:
    ood = [b for b in benches if "ood" in b]
    head = ["method", "steps", *benches, "OOD avg", "train wall (s)", "cost incl. difficulty (s)"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        avg = sum(r["acc"][b] for b in ood) / max(len(ood), 1)
        cells = [
            r["label"],
            str(r["step"]),
            *(f"{r['acc'][b]:.2f}" for b in benches),
            f"{avg:.2f}",
            f"{r['train_s']:.0f}",
            f"{r['cost_s']:.0f}",
        ]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def kind_accuracies(metrics: Path) -> dict[str, float] | None:
    """Accuracy per demo question kind (colour / shape / yes-no), pooled over the benchmarks whose predictions sit
    beside `metrics` (newest file each); None when a gold answer is not a demo answer (a paper run)."""
    from assets.demo_data import question_kind

    hits: dict[str, list[bool]] = {}
    for bench in sorted(p for p in metrics.parent.iterdir() if p.is_dir()):
        files = sorted(bench.glob("*.jsonl"), key=lambda f: f.stat().st_mtime)
        for line in files[-1].read_text(encoding="utf-8").splitlines() if files else []:
            row = json.loads(line)
            try:
                hits.setdefault(question_kind(row["gold"]), []).append(bool(row["correct"]))
            except ValueError:
                return None
    return {kind: 100.0 * sum(v) / len(v) for kind, v in sorted(hits.items())} or None


def kind_markdown(rows: list[dict]) -> str:
    """Per-kind table of the demo methods ('' for a paper run): colour, shape and yes / no are learned very
    differently, and a pooled accuracy can move on answer priors alone."""
    from assets.demo_data import KINDS

    kinds = [r for r in rows if r.get("kinds")]
    if not kinds:
        return ""
    names = list(KINDS)
    head = ["method", *(f"{k} (chance {100 / KINDS[k]:.0f})" for k in names)]
    lines = ["Accuracy by question kind, all test sets pooled:", "", "| " + " | ".join(head) + " |"]
    lines.append("|" + "---|" * len(head))
    for r in kinds:
        lines.append("| " + " | ".join([r["label"], *(f"{r['kinds'].get(k, float('nan')):.1f}" for k in names)]) + " |")
    return "\n".join(lines) + "\n"


def chart(rows: list[dict], benches: list[str], out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 4))
    width = 0.8 / max(len(rows), 1)
    for i, r in enumerate(rows):
        ax.bar([j + i * width for j in range(len(benches))], [r["acc"][b] for b in benches], width, label=r["label"])
    ax.set_xticks([j + 0.4 - width / 2 for j in range(len(benches))], benches)
    ax.set_ylabel("accuracy (%)")
    ax.set_title("DC-SFT demo: in-distribution vs out-of-distribution accuracy")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(out, dpi=100)


def tier_counts(difficulty: Path) -> dict[str, int]:
    """Items per tier of a difficulty file (easy: k of k right, hard: 0 of k, medium: the rest)."""
    from datamodules.difficulty_file import read_difficulty
    from datamodules.tiers import tier_counts as count

    return count(read_difficulty(difficulty))


def tier_line(difficulty: Path) -> str:
    """`easy 47 (5.9 %), medium 601 (75.1 %), hard 152 (19.0 %)` from a difficulty file."""
    if not difficulty.exists():
        return "no difficulty file"
    counts = tier_counts(difficulty)
    total = max(sum(counts.values()), 1)
    return ", ".join(f"{t} {n} ({100 * n / total:.1f} %)" for t, n in counts.items())


def main(run: str = "runs/demo") -> str:
    root = Path(run)
    rows, benches = load(root)
    if not rows:
        raise SystemExit(f"{root}: no metrics.json found; run scripts/demo.sh first")
    table = markdown(rows, benches)
    kinds = kind_markdown(rows)
    table += "\n" + kinds if kinds else ""
    (root / "results.md").write_text(table)
    chart(rows, benches, root / "results.png")
    print("\n==== Summary of " + str(root))
    print(table)
    sight = root / "cold_start" / "sight_check.json"
    if sight.exists():
        from scripts.sight_check import format_table

        print(format_table(json.loads(sight.read_text())))
    print(f"Tiers of the training items: {tier_line(root / 'difficulty' / 'difficulty.jsonl')}")
    timings = root / "timings.jsonl"
    if timings.exists():
        total = sum(json.loads(line)["seconds"] for line in timings.read_text().splitlines() if line.strip())
        print(f"Wall time of the stages: {total / 60:.1f} min ({timings})")
    print(f"Table: {root / 'results.md'}; chart: {root / 'results.png'}; TensorBoard: tensorboard --logdir {root}")
    return table


if __name__ == "__main__":
    main(*sys.argv[1:2])
