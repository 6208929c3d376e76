"""Tier report: how a difficulty file splits into tiers, and which answers/classes make up the hard tier.

Why: the paper drops the hard tier (0/k correct), and on ImageNet many "hard" prompts cluster in a few classes
with obscure or ambiguous names (overskirt, maillot, agaric in the released 7B tier files). The report makes that visible
before training: counts and shares per tier, a histogram of correct counts 0..k, and the labels most
over-represented among hard items (lift = share of the label's items that are hard / overall hard share).
Tests: `python -m pytest tests/test_tiers.py -q`.
"""

from __future__ import annotations

import io
import json
import os
from collections import Counter
from collections.abc import Mapping

import numpy as np

from datamodules.difficulty_file import DifficultyRow
from datamodules.files import atomic_write_text
from datamodules.tiers import TIERS


def tier_report(
    difficulty: Mapping[str, DifficultyRow],
    labels: Mapping[str, str] | None = None,
    bins: int | None = None,
    top: int = 10,
    noisy: set[str] | None = None,
) -> dict:
    """Summarise a difficulty file as a JSON-ready dict.

    Args:
        difficulty: {id: row}, e.g. from `read_difficulty`.
        labels: {id: label} (e.g. class name); defaults to each row's `solution`. Unlabelled ids are left out of
            the over-representation table (its overall hard share is computed over labelled items only).
        bins: None (default) = one bin per correct value 0..k (needs a single k); an int = that many equal-width
            pass-rate bins over [0, 1].
        top: how many over-represented labels to keep.
        noisy: ids whose training answer was replaced by label noise (`datamodules/noise.py`): adds how many of
            them each tier caught and the precision / recall of the hard tier for noise.
    """
    n = len(difficulty)
    if n == 0:
        raise ValueError("empty difficulty file: nothing to report")
    counts = Counter(row.tier for row in difficulty.values())
    tiers = {t: {"count": counts[t], "share": counts[t] / n} for t in TIERS}
    ks = sorted({row.k for row in difficulty.values()})

    if bins is None:
        if len(ks) > 1:
            raise ValueError(f"mixed k values {ks}: pass an integer `bins` for a pass-rate histogram")
        k = ks[0]
        per_correct = Counter(row.correct for row in difficulty.values())
        histogram = {"bins": [f"{c}/{k}" for c in range(k + 1)], "counts": [per_correct[c] for c in range(k + 1)]}
    else:
        if bins < 1:
            raise ValueError(f"bins must be >= 1, got {bins}")
        values, edges = np.histogram([row.pass_rate for row in difficulty.values()], bins=bins, range=(0.0, 1.0))
        names = [
            f"[{lo:.2f}, {hi:.2f}{']' if i == bins - 1 else ')'}" for i, (lo, hi) in enumerate(zip(edges, edges[1:]))
        ]
        histogram = {"bins": names, "counts": [int(v) for v in values]}

    if labels is None:
        labels = {i: row.solution for i, row in difficulty.items() if row.solution is not None}
    total_per_label: Counter[str] = Counter()
    hard_per_label: Counter[str] = Counter()
    for item_id, row in difficulty.items():
        if item_id in labels:
            total_per_label[labels[item_id]] += 1
            hard_per_label[labels[item_id]] += row.tier == "hard"
    n_labelled = sum(total_per_label.values())
    overall_hard = sum(hard_per_label.values()) / n_labelled if n_labelled else 0.0
    over = []
    for label, hard in hard_per_label.items():
        if hard >= 1:
            share = hard / total_per_label[label]
            entry = {"label": label, "hard": hard, "total": total_per_label[label], "hard_share": share}
            over.append({**entry, "lift": share / overall_hard})
    over.sort(key=lambda e: (-e["hard"], -e["lift"], e["label"]))

    return {
        "n": n,
        "k": ks[0] if len(ks) == 1 else ks,
        "tiers": tiers,
        "histogram": histogram,
        "overall_hard_share": overall_hard,
        "hard_labels": over[:top],
        **({"noise": noise_report(difficulty, noisy)} if noisy else {}),
    }


def noise_report(difficulty: Mapping[str, DifficultyRow], noisy: set[str]) -> dict:
    """Noisy items per tier, and how well "hard" finds them: precision = noisy hard / hard, recall = noisy hard /
    noisy."""
    per_tier = Counter(difficulty[i].tier for i in noisy if i in difficulty)
    hard = sum(row.tier == "hard" for row in difficulty.values())
    caught = per_tier["hard"]
    return {
        "noisy": len(noisy),
        "per_tier": {t: per_tier[t] for t in TIERS},
        "hard_precision": caught / hard if hard else 0.0,
        "hard_recall": caught / len(noisy) if noisy else 0.0,
    }


def tier_transitions(before: Mapping[str, DifficultyRow], after: Mapping[str, DifficultyRow]) -> dict:
    """How items moved between tiers from one difficulty estimate to a later one (e.g. the cold start's file to the
    merge of a GRPO run's rollouts, or a `DifficultyRefresh` file): {"counts": {before: {after: n}}, "items": n,
    "changed": n} over the items both estimates cover. Why: the paper's tiers are a snapshot of the cold-started
    model; the table shows how much of the medium tier a run has turned easy and which hard items it has reached."""
    common = [i for i in before if i in after]
    counts = {a: dict.fromkeys(TIERS, 0) for a in TIERS}
    for item in common:
        counts[before[item].tier][after[item].tier] += 1
    changed = sum(n for a, row in counts.items() for b, n in row.items() if a != b)
    return {"counts": counts, "items": len(common), "changed": changed}


def format_transitions(moves: dict) -> str:
    """A plain table: one row per earlier tier, one column per later tier."""
    rows = [[a, *(str(moves["counts"][a][b]) for b in TIERS)] for a in TIERS]
    share = 100 * moves["changed"] / max(moves["items"], 1)
    title = f"Tier moves over {moves['items']} items ({moves['changed']} changed, {share:.1f} %)"
    return _plain_table(title, ["before \\ after", *TIERS], rows)


def _rows(report: dict) -> tuple[list[list[str]], list[list[str]], list[list[str]]]:
    """The report's three tables as rows of strings (shared by the rich and the plain renderer)."""
    tiers = [[t, str(v["count"]), f"{100 * v['share']:.1f}%"] for t, v in report["tiers"].items()]
    hist = [[b, str(c)] for b, c in zip(report["histogram"]["bins"], report["histogram"]["counts"])]
    labels = [
        [e["label"], str(e["hard"]), str(e["total"]), f"{100 * e['hard_share']:.1f}%", f"{e['lift']:.2f}"]
        for e in report["hard_labels"]
    ]
    return tiers, hist, labels


_HEADERS = (["tier", "count", "share"], ["correct", "count"], ["label", "hard", "total", "hard share", "lift"])


def _plain_table(title: str, header: list[str], rows: list[list[str]]) -> str:
    widths = [max(len(x) for x in col) for col in zip(header, *rows)]

    def line(cells: list[str]) -> str:
        return "  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(cells, widths)))

    return "\n".join([title, line(header), "  ".join("-" * w for w in widths), *(line(r) for r in rows)])


def _noise_line(report: dict) -> str:
    if "noise" not in report:
        return ""
    n = report["noise"]
    tiers = ", ".join(f"{t} {c}" for t, c in n["per_tier"].items())
    return (
        f"\nLabel noise: {n['noisy']} noisy items ({tiers}); the hard tier catches {100 * n['hard_recall']:.0f} % of them "
        f"and is {100 * n['hard_precision']:.0f} % noise"
    )


def format_tier_report(report: dict, use_rich: bool | None = None) -> str:
    """Render the report as plain-text tables; `rich` when importable (use_rich=None), else a plain fallback."""
    title = f"Difficulty tiers: {report['n']} items, k = {report['k']}"
    names = ("Tiers", "Histogram", "Labels over-represented in the hard tier")
    sections = list(zip(names, _HEADERS, _rows(report)))
    if use_rich is not False:
        try:
            from rich.console import Console
            from rich.table import Table
        except ImportError:
            if use_rich:
                raise
        else:
            console = Console(file=io.StringIO(), width=100, color_system=None, force_terminal=False)
            console.print(title)
            for name, header, rows in sections:
                table = Table(title=name)
                for i, h in enumerate(header):
                    table.add_column(h, justify="left" if i == 0 else "right")
                for r in rows:
                    table.add_row(*r)
                console.print(table)
            return console.file.getvalue() + _noise_line(report)
    return (
        "\n\n".join([title, *(_plain_table(name, h, rows) for name, h, rows in sections)]) + _noise_line(report) + "\n"
    )


def save_tier_report(report: dict, path: str | os.PathLike) -> None:
    """Write the report as JSON atomically."""
    atomic_write_text(path, json.dumps(report, indent=2, ensure_ascii=False) + "\n")


def log_tier_report(writer, report: dict, difficulty: Mapping[str, DifficultyRow], step: int, prefix: str = "") -> None:
    """Pass-rate histogram, tier shares and the report table to a TensorBoard `SummaryWriter` (None: nothing)."""
    if writer is None or not hasattr(writer, "add_histogram"):
        return
    rates = np.array([row.pass_rate for row in difficulty.values()])
    writer.add_histogram(f"{prefix}difficulty/pass_rate", rates, global_step=step)
    table = format_tier_report(report, use_rich=False)
    writer.add_text(f"{prefix}difficulty/tier_report", "```\n" + table + "\n```", global_step=step)
    for tier, info in report["tiers"].items():
        writer.add_scalar(f"{prefix}difficulty/share/{tier}", info["share"], global_step=step)
    writer.flush()
