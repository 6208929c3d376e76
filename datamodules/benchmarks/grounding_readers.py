"""Readers for the grounding layouts users download (scoring in `grounding.py`), each failing on a wrong layout with
the file, the record and the fix.

- `RefCOCO`: VLM-R1's `rec_jsons_processed` files (`refcoco_val.json`, JSON list or JSONL; `solution` an
  absolute-pixel xyxy list, or a string holding one, e.g. `<answer>[..]</answer>`), the lmms-lab parquet mirrors
  (one row per object, `bbox` as pixel xywh, several expressions in `answer`), or the refer toolkit (`refs(unc).p` +
  `instances.json`, one item per sentence of the chosen split).
- `RefL4`: `ref-l4-{val,test}.parquet` + the images folder; `split: val | test | all`.
- `LISA`: VLM-R1's `lisa_test.json` (problem / solution / image), or a raw ReasonSeg folder (`<name>.json` polygons
  beside `<name>.jpg`) with the box rule of `scoring.lisa_box`.
"""

from __future__ import annotations

import json
import pickle
import random
from io import BytesIO
from pathlib import Path
from typing import Any

from PIL import Image

from datamodules.benchmarks.base import EvalItem, ScoreResult, image_from_cell, read_parquet_rows
from datamodules.benchmarks.grounding import GroundingBenchmark, GroundingRecord, rec_prompt
from datamodules.formats import read_samples
from datamodules.scoring import LISA_BOX_RULES, lisa_box, parse_box, refl4_class_accuracy, xywh_to_xyxy

# lmms-lab's RefCOCO val and RefCOCOg val hold 5,000 rows more than the official splits (reference §1): counts to flag
PADDED_LMMS_SPLITS = {8811: "RefCOCO val", 7573: "RefCOCOg val"}


def image_wh(source: Any, where: str) -> tuple[int, int]:
    """(width, height) from the image header only (path or encoded bytes); `images.image_size` is (height, width)."""
    try:
        with Image.open(BytesIO(source) if isinstance(source, bytes) else source) as image:
            return image.size
    except FileNotFoundError:
        raise FileNotFoundError(f"{where}: image not found at {source}; check image_root / images") from None
    except Exception as err:
        raise ValueError(f"{where}: cannot read the image {str(source)[:80]}: {err}") from None


def solution_box(solution: Any, where: str) -> list[float]:
    """A gold box from a list or from a string holding `[x1, y1, x2, y2]`."""
    if isinstance(solution, list | tuple) and len(solution) == 4:
        return [float(v) for v in solution]
    box = parse_box(str(solution)) if solution is not None else None
    if box is None:
        raise ValueError(f"{where}: solution {solution!r} is not an [x1, y1, x2, y2] box")
    return box


def read_json_records(path: Path, image_root: dict[str, str], expression_from_problem: bool) -> list[GroundingRecord]:
    """VLM-R1-style problem / solution / image rows (JSON list or JSONL) as grounding records."""
    records = []
    for sample in read_samples(str(path), image_root):
        where = sample.source
        if not sample.images:
            raise ValueError(f"{where}: no image")
        width, height = image_wh(sample.images[0], where)
        problem = next(m["content"] for m in sample.messages if m["role"] == "user").replace("<image>", "").strip()
        expression = problem.rsplit(":", 1)[-1].strip() if expression_from_problem else problem
        records.append(
            GroundingRecord(
                sample.id,
                expression,
                sample.images[0],
                solution_box(sample.solution, where),
                width,
                height,
                where,
                prompt=problem,
            )
        )
    return records


class RefCOCO(GroundingBenchmark):
    """RefCOCO / RefCOCO+ / RefCOCOg in any of three layouts (chosen by the file's suffix).

    Args:
        path: `refcoco_val.json` / `.jsonl` (VLM-R1), a lmms-lab `*.parquet` file, or `refs(unc).p` (refer toolkit).
        name: benchmark name (`refcoco_val`, `refcocop_testA`, ...).
        image_root: JSON layout: maps path prefixes to local folders; refer layout: `{"": <COCO train2014 folder>}`.
        split: refer layout only: `val`, `testA`, `testB`, `test` (RefCOCOg umd), `train`.
        instances: refer layout: the `instances.json` (default: beside the pickle).
        box_frame: see `GroundingBenchmark`.
    """

    def __init__(
        self,
        path: str,
        name: str = "refcoco_val",
        image_root: dict[str, str] | None = None,
        split: str | None = None,
        instances: str | None = None,
        box_frame: str = "original",
    ) -> None:
        super().__init__(name, box_frame)
        self.path, self.image_root, self.split, self.instances = path, dict(image_root or {}), split, instances

    def records(self) -> list[GroundingRecord]:
        path = Path(self.path)
        if not path.is_file():
            raise FileNotFoundError(self._error(f"{path} not found (a VLM-R1 JSON, a lmms-lab parquet or refs(unc).p)"))
        if path.suffix == ".parquet":
            return self._parquet(path)
        if path.suffix == ".p":
            return self._refer(path)
        return read_json_records(path, self.image_root, expression_from_problem=True)

    def _parquet(self, path: Path) -> list[GroundingRecord]:
        rows = read_parquet_rows(self.name, path, ["question_id", "image", "answer", "bbox"])
        if len(rows) in PADDED_LMMS_SPLITS:
            print(
                f"[{self.name}] warning: {path} has {len(rows)} rows like lmms-lab's {PADDED_LMMS_SPLITS[len(rows)]},"
                " which holds 5,000 rows more than the official split; prefer testA / testB or the refer files"
            )
        records = []
        for number, row in enumerate(rows):
            where = f"{path} row {number} (question_id {row['question_id']})"
            image = image_from_cell(row["image"], path.parent)
            width, height = image_wh(image, where)
            expressions = [row["answer"]] if isinstance(row["answer"], str) else list(row["answer"])
            for k, expression in enumerate(expressions):
                box = xywh_to_xyxy(row["bbox"])
                records.append(
                    GroundingRecord(f"{row['question_id']}/{k}", expression, image, box, width, height, where)
                )
        return records

    def _refer(self, path: Path) -> list[GroundingRecord]:
        if self.split is None:
            raise ValueError(self._error(f"{path}: the refer layout needs split (val, testA, testB, test or train)"))
        instances = Path(self.instances) if self.instances else path.parent / "instances.json"
        if not instances.is_file():
            raise FileNotFoundError(self._error(f"{instances} not found; set instances to the refer instances.json"))
        try:
            refs = pickle.loads(path.read_bytes())  # noqa: S301 - the refer toolkit's own format
        except UnicodeDecodeError:  # written by Python 2
            refs = pickle.loads(path.read_bytes(), encoding="latin1")  # noqa: S301
        coco = json.loads(instances.read_text(encoding="utf-8"))
        images = {im["id"]: im for im in coco["images"]}
        boxes = {ann["id"]: ann["bbox"] for ann in coco["annotations"]}
        root = Path(self.image_root.get("", path.parent))
        records = []
        for ref in refs:
            if ref["split"] != self.split:
                continue
            image = images[ref["image_id"]]
            where = f"{path} ref_id {ref['ref_id']}"
            box = xywh_to_xyxy(boxes[ref["ann_id"]])
            for number, sentence in enumerate(ref["sentences"]):
                record_id = f"{ref['ref_id']}/{sentence.get('sent_id', number)}"
                records.append(
                    GroundingRecord(
                        record_id,
                        sentence["sent"],
                        root / image["file_name"],
                        box,
                        image["width"],
                        image["height"],
                        where,
                    )
                )
        if not records:
            raise ValueError(self._error(f"{path}: no refs of split {self.split!r}"))
        return records


class RefL4(GroundingBenchmark):
    """Ref-L4 (`JierunChen/Ref-L4`): `ref-l4-{val,test}.parquet` and the extracted `images/` folder.

    Besides the grounding metrics, the official class-level view (`scoring.refl4_class_accuracy`): each prediction
    row records its `category` (`ori_category_id`); `val/<name>/class_acc` and `class_macc` are the averages over
    classes, and `tables()` gives the per-class table (`scripts/ref_l4_classes.py` prints it from a predictions file).

    Args:
        root: the dataset folder.
        split: `val`, `test` or `all` (val + test, as the repo's example evaluation).
        images: the images folder, relative to root.
    """

    def __init__(
        self, root: str, split: str = "val", images: str = "images", name: str = "ref_l4", box_frame: str = "original"
    ) -> None:
        super().__init__(name, box_frame)
        if split not in ("val", "test", "all"):
            raise ValueError(f"{name}: split must be val, test or all, got {split!r}")
        self.root, self.split, self.images = root, split, images

    def records(self) -> list[GroundingRecord]:
        root = Path(self.root)
        folder = root / self.images
        if not folder.is_dir():
            raise FileNotFoundError(self._error(f"{folder} not found; extract images.tar.gz into {root}"))
        records = []
        for split in ("val", "test") if self.split == "all" else (self.split,):
            path = root / f"ref-l4-{split}.parquet"
            if not path.is_file():
                raise FileNotFoundError(self._error(f"{path} not found (Ref-L4's ref-l4-{split}.parquet)"))
            columns = ["id", "caption", "bbox", "file_name", "height", "width"]
            for number, row in enumerate(read_parquet_rows(self.name, path, columns)):
                where = f"{path} row {number} (id {row['id']})"
                image = folder / row["file_name"]
                if not image.is_file():
                    raise FileNotFoundError(self._error(f"{where}: image {image} not found"))
                meta = {"category": row.get("ori_category_id")}
                records.append(
                    GroundingRecord(
                        str(row["id"]),
                        row["caption"],
                        image,
                        xywh_to_xyxy(row["bbox"]),
                        int(row["width"]),
                        int(row["height"]),
                        where,
                        meta=meta,
                    )
                )
        return records

    def score(self, item: EvalItem, response: str, rng: random.Random) -> ScoreResult:
        result = super().score(item, response, rng)
        result.details = (result.details or {}) | {"category": item.meta.get("category")}
        return result

    def _classes(self, items: list[EvalItem], results: list[dict[str, Any]]) -> dict[str, Any] | None:
        """The class-level view, or None when some row lacks `ori_category_id` (a parquet without that column)."""
        categories = [item.meta.get("category") for item in items]
        if not items or any(category is None for category in categories):
            return None
        return refl4_class_accuracy(categories, [result["values"]["ciou"] for result in results])

    def aggregate(self, items: list[EvalItem], results: list[dict[str, Any]]) -> dict[str, float]:
        classes = self._classes(items, results)
        return {} if classes is None else {"class_acc": classes["mean_acc"], "class_macc": classes["mean_macc"]}

    def tables(self, items: list[EvalItem], results: list[dict[str, Any]]) -> dict[str, Any]:
        classes = self._classes(items, results)
        return {} if classes is None else {"per_class": classes["classes"]}


class LISA(GroundingBenchmark):
    """LISA-Grounding: VLM-R1's `lisa_test.json`, or a raw ReasonSeg folder (`*.json` + `*.jpg`).

    Args:
        path: the JSON file or the folder (e.g. ReasonSeg `test/`).
        image_root: JSON layout: maps path prefixes to the extracted `lisa-test.zip`.
        rule: ReasonSeg folder only: `union` of the target polygons (default) or `first_shape` (Visual-RFT's files).
    """

    def __init__(
        self,
        path: str,
        name: str = "lisa",
        image_root: dict[str, str] | None = None,
        rule: str = "union",
        box_frame: str = "original",
    ) -> None:
        super().__init__(name, box_frame)
        if rule not in LISA_BOX_RULES:
            raise ValueError(f"{name}: rule must be one of {LISA_BOX_RULES}, got {rule!r}")
        self.path, self.image_root, self.rule = path, dict(image_root or {}), rule

    def records(self) -> list[GroundingRecord]:
        path = Path(self.path)
        if path.is_file():
            return read_json_records(path, self.image_root, expression_from_problem=False)
        if not path.is_dir():
            raise FileNotFoundError(self._error(f"{path} not found (lisa_test.json or a ReasonSeg folder)"))
        records = []
        for file in sorted(path.glob("*.json")):
            image = file.with_suffix(".jpg")
            where = str(file)
            try:
                annotation = json.loads(file.read_text(encoding="utf-8"))
                box = lisa_box(annotation, self.rule)
            except ValueError as err:
                raise ValueError(self._error(f"{where}: {err}; is this a ReasonSeg annotation?")) from None
            text = annotation.get("text") or []
            if not text:
                raise ValueError(self._error(f"{where}: no 'text' (the query)"))
            width, height = image_wh(image, where)
            box = [min(max(box[0], 0.0), width), min(max(box[1], 0.0), height), min(box[2], width), min(box[3], height)]
            for k, query in enumerate(text[:1] if isinstance(text, list) else [text]):
                records.append(
                    GroundingRecord(
                        f"{file.stem}/{k}", query, image, box, width, height, where, prompt=rec_prompt(query)
                    )
                )
        if not records:
            raise ValueError(self._error(f"no *.json annotations in {path}"))
        return records
