"""Sight check: does a model use the image? For the embedded demo's cold-started model (or any checkpoint).

On the demo's ID test set it measures (a) accuracy on the open colour / shape questions, (b) the same with every image
replaced by a uniform grey image and by another item's image, with the share of answers that change, and (c) the
accuracy on each rendition (ID, sketch, texture). A model that ignores the image scores the same in all three of (b)
and (c): that is what made the first demo's ID / OOD table meaningless.

    python scripts/sight_check.py runs/demo/cold_start/model            # prints a table, writes sight_check.json

Targets (issue "The embedded demo must see its images"): open-question accuracy >= 60 % with real images and <= 35 %
with grey ones, at least half of the answers change with grey images, each rendition above the grey accuracy and at
least one rendition 5 points below ID.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from types import SimpleNamespace

from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from assets.demo_data import KINDS, question_kind  # noqa: E402
from callbacks.generative_eval import GenerativeEval  # noqa: E402
from datamodules.benchmarks import DCSFTJson, EvalItem  # noqa: E402
from datamodules.files import atomic_write_json  # noqa: E402
from datamodules.scoring import exact_match  # noqa: E402

RENDITIONS = {"id": "test_id.json", "sketch": "test_ood_sketch.json", "texture": "test_ood_texture.json"}
TARGETS = {"open_real_min": 60.0, "open_grey_max": 35.0, "changed_min": 50.0, "id_minus_ood_min": 5.0}


def is_open(item: EvalItem) -> bool:
    """A colour or shape question (not yes / no)."""
    return str(item.gold).lower() not in ("yes", "no")


def accuracy(items: list[EvalItem], answers: list[str]) -> float:
    return 100.0 * sum(exact_match(a, str(i.gold)) for i, a in zip(items, answers)) / max(len(items), 1)


def changed_share(before: list[str], after: list[str]) -> float:
    """Percentage of answers that differ (case and surrounding spaces ignored)."""
    return 100.0 * sum(a.strip().lower() != b.strip().lower() for a, b in zip(before, after)) / max(len(before), 1)


def with_images(items: list[EvalItem], images: list[Image.Image]) -> list[EvalItem]:
    return [EvalItem(i.id, i.prompt, [im], i.gold, i.meta) for i, im in zip(items, images)]


def final_answers(stage_dir: Path, items: list[EvalItem], benchmark: str) -> list[str] | None:
    """A training run's own answers at its final evaluation (`<stage>/version_N/predictions/<benchmark>/`), in the
    order of `items`; None when that run did not evaluate every item."""
    files = sorted(stage_dir.glob(f"version_*/predictions/{benchmark}/*.jsonl"), key=lambda p: p.stat().st_mtime)
    if not files:
        return None
    rows = {}
    for line in files[-1].read_text(encoding="utf-8").splitlines():
        row = json.loads(line)
        rows[row["id"]] = row["response"]
    return [rows[i.id] for i in items] if all(i.id in rows for i in items) else None


def sight_check(
    model,
    processor,
    data_dir: str | Path,
    batch_size: int = 32,
    max_new_tokens: int = 16,
    stage_dir: Path | None = None,
) -> dict:
    """The sight-check figures (accuracies in %) for a loaded model and the demo's test files in `data_dir`.

    `stage_dir`: the training run that exported the model; its final evaluation's answers (same test files, same
    greedy decoding) are reused for the real images instead of generating them again.
    """
    data_dir = Path(data_dir)
    evaluator = GenerativeEval(batch_size=batch_size, max_new_tokens=max_new_tokens)
    module = SimpleNamespace(model=model, processor=processor, device=next(model.parameters()).device)
    items = {name: DCSFTJson(str(data_dir / file), name).load() for name, file in RENDITIONS.items()}
    answers = {}
    for name, group in items.items():
        reused = final_answers(stage_dir, group, f"demo_{'ood_' if name != 'id' else ''}{name}") if stage_dir else None
        answers[name] = reused if reused is not None else evaluator.generate(module, group)
    ident = items["id"]
    open_items = [i for i in ident if is_open(i)]
    open_real = [a for i, a in zip(ident, answers["id"]) if is_open(i)]
    size = open_items[0].images[0].size
    grey = with_images(open_items, [Image.new("RGB", size, (128, 128, 128))] * len(open_items))
    shifted = with_images(open_items, [open_items[(n + 1) % len(open_items)].images[0] for n in range(len(open_items))])
    open_grey, open_other = evaluator.generate(module, grey), evaluator.generate(module, shifted)
    closed_items = [i for i in ident if not is_open(i)]
    closed_real = [a for i, a in zip(ident, answers["id"]) if not is_open(i)]
    closed_grey = evaluator.generate(module, with_images(closed_items, [grey[0].images[0]] * len(closed_items)))
    result = {
        "n_open": len(open_items),
        "open_acc": {
            "real": accuracy(open_items, open_real),
            "grey": accuracy(open_items, open_grey),
            "other_image": accuracy(open_items, open_other),
        },
        "changed_with_grey": changed_share(open_real, open_grey),
        # yes / no answers that a grey image changes: near 0 means they come from the wording, not the image
        "closed_changed_with_grey": changed_share(closed_real, closed_grey),
        "acc": {name: accuracy(items[name], answers[name]) for name in RENDITIONS},
        "open_acc_by_rendition": {
            name: accuracy(
                [i for i in items[name] if is_open(i)], [a for i, a in zip(items[name], answers[name]) if is_open(i)]
            )
            for name in RENDITIONS
        },
    }
    result["acc_by_kind"] = {name: by_kind(items[name], answers[name]) for name in RENDITIONS}
    result["acc_by_kind"]["id, grey image"] = by_kind(open_items + closed_items, open_grey + closed_grey)
    result["checks"] = checks(result)
    return result


def by_kind(items: list[EvalItem], answers: list[str]) -> dict[str, float]:
    """Accuracy per question kind (colour / shape / yes-no): pooled open-question accuracy can pass the targets on
    colour alone while shapes stay at chance."""
    groups: dict[str, list[tuple[EvalItem, str]]] = {}
    for item, answer in zip(items, answers):
        groups.setdefault(question_kind(item.gold), []).append((item, answer))
    return {kind: accuracy([i for i, _ in rows], [a for _, a in rows]) for kind, rows in sorted(groups.items())}


def checks(result: dict) -> dict[str, bool]:
    """Which targets the figures meet."""
    grey, by = result["open_acc"]["grey"], result["open_acc_by_rendition"]
    return {
        "open_real >= 60": result["open_acc"]["real"] >= TARGETS["open_real_min"],
        "open_grey <= 35": grey <= TARGETS["open_grey_max"],
        "half the answers change with grey": result["changed_with_grey"] >= TARGETS["changed_min"],
        "every rendition above grey": all(by[name] > grey for name in ("sketch", "texture")),
        "ID - OOD >= 5 for a rendition": max(by["id"] - by[name] for name in ("sketch", "texture"))
        >= TARGETS["id_minus_ood_min"],
    }


def format_table(result: dict) -> str:
    o, a, b = result["open_acc"], result["acc"], result["open_acc_by_rendition"]
    lines = [
        f"Sight check ({result['n_open']} open questions of the ID test set)",
        f"  open questions: real {o['real']:.1f} %, grey {o['grey']:.1f} %, another item's image {o['other_image']:.1f} %; "
        f"{result['changed_with_grey']:.0f} % of answers change with a grey image",
        f"  yes / no questions: {result.get('closed_changed_with_grey', float('nan')):.0f} % of answers change with a "
        "grey image (near 0: answered from the wording)",
        "  all questions:  " + ", ".join(f"{k} {v:.1f} %" for k, v in a.items()),
        "  open, by rendition: " + ", ".join(f"{k} {v:.1f} %" for k, v in b.items()),
    ]
    for name, accs in result.get("acc_by_kind", {}).items():
        cells = ", ".join(f"{kind} {acc:.1f} % (chance {100 / KINDS[kind]:.0f})" for kind, acc in accs.items())
        lines.append(f"  by question kind, {name}: {cells}")
    lines += [
        "  targets: " + ", ".join(f"{k}: {'yes' if ok else 'NO'}" for k, ok in result["checks"].items()),
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> dict:
    from assets import resolve
    from lightning_modules.vlm import VLMOptions, build_vlm

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("model", help="checkpoint folder (e.g. runs/demo/cold_start/model)")
    parser.add_argument("--data", default="demo://easy_vqa", help="folder with the demo's test_*.json files")
    parser.add_argument("--out", default=None, help="JSON output (default: <model>/../sight_check.json)")
    parser.add_argument(
        "--reuse-eval",
        action="store_true",
        help="reuse the real-image answers of the final evaluation of the run that exported the model (<model>/..)",
    )
    args = parser.parse_args(argv)
    model, processor = build_vlm(args.model, VLMOptions(dtype="float32", lora=None))
    model.eval()
    stage_dir = Path(args.model).parent if args.reuse_eval else None
    result = sight_check(model, processor, resolve(args.data), stage_dir=stage_dir)
    print(format_table(result), flush=True)
    atomic_write_json(args.out or Path(args.model).parent / "sight_check.json", result)
    return result


if __name__ == "__main__":
    main()
