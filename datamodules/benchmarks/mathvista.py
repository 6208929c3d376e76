"""MathVista testmini (1,000 items): reader, official prompt (`query`), official shortcuts + offline extractor.

Scoring (github.com/lupantech/MathVista, `evaluation/extract_answer.py` and `calculate_score.py`): the official rule-based shortcuts (`mathvista_extract`); where the official pipeline
would ask GPT, our deterministic `mathvista_fallback_extract` instead (an approximation, flagged `fallback=True` so
the callback can count it); then the official normalisation (`int(precision)`) and `safe_equal`. For terse outputs
(hitting the shortcuts) the score equals the official one; the fallback count bounds the gap otherwise.
"""

from __future__ import annotations

import json
import random
from pathlib import Path
from typing import Any

from datamodules.benchmarks.base import (
    Benchmark,
    EvalItem,
    LazyEvalItem,
    ScoreResult,
    image_from_cell,
    mc_filter,
    read_parquet_rows,
)
from datamodules.scoring import (
    mathvista_extract,
    mathvista_fallback_extract,
    mathvista_is_correct,
    mathvista_normalize,
)

REQUIRED_COLUMNS = ("pid", "query", "answer", "question_type", "answer_type")
METADATA_KEYS = ("language", "source", "category", "task", "context", "grade", "skills")
BREAKDOWN_KEYS = ("question_type", "answer_type", "language", "source", "category", "task", "context", "grade")


class MathVista(Benchmark):
    """MathVista from the Hugging Face parquet or the GitHub `testmini.json`.

    Args:
        path: the hub parquet file (`decoded_image` struct or `image` bytes/path), a folder holding
            `<split>-*.parquet` (directly or under `data/`), or a `testmini.json` (dict keyed by pid) whose queries
            come from its `query` field or from `query.json` next to it; a folder holding `<split>.json` also works.
        split: `testmini` (the `test` split has no answers).
        quick_extract: also apply the official `--quick_extract` rule (`The answer is "X".`).
        image_root: folder against which relative image paths (`images/<pid>.jpg`) are resolved; default the data
            file's folder.
        mc_only: keep the multiple-choice items only (`question_type == 'multi_choice'`, 540 of testmini's 1,000;
            the paper scores only those).
    """

    name = "mathvista"

    def __init__(
        self,
        path: str,
        split: str = "testmini",
        quick_extract: bool = False,
        image_root: str | None = None,
        mc_only: bool = False,
    ) -> None:
        self.mc_only = mc_only
        self.path = path
        self.split = split
        self.quick_extract = quick_extract
        self.image_root = image_root

    def _source(self) -> Path:
        root = Path(self.path)
        if root.is_file():
            return root
        if root.is_dir():
            pattern = f"{self.split}-*.parquet"
            found = sorted(root.glob(pattern)) or sorted(root.glob(f"data/{pattern}"))
            if len(found) > 1:
                raise ValueError(self._error(f"several {pattern} files under {root}: {found}; pass one file"))
            if found:
                return found[0]
            if (root / f"{self.split}.json").is_file():
                return root / f"{self.split}.json"
        raise FileNotFoundError(
            self._error(f"{root} not found: expected the hub parquet ({self.split}-*.parquet) or {self.split}.json")
        )

    def load(self) -> list[EvalItem]:
        source = self._source()
        rows = (
            self._json_rows(source)
            if source.suffix == ".json"
            else read_parquet_rows(self.name, source, REQUIRED_COLUMNS)
        )
        base = Path(self.image_root) if self.image_root else source.parent
        items = [self._item(row, source, base) for row in rows]
        if not items:
            raise ValueError(self._error(f"no items in {source}"))
        items = mc_filter(self.name, items, lambda item: item.meta["question_type"] == "multi_choice", self.mc_only)
        return sorted(items, key=lambda item: (int(item.id) if item.id.isdigit() else 10**9, item.id))

    def _json_rows(self, source: Path) -> list[dict[str, Any]]:
        try:
            records = json.loads(source.read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError) as err:
            raise ValueError(self._error(f"cannot read {source}: {err}")) from None
        if not isinstance(records, dict):
            raise ValueError(self._error(f"{source} must be a JSON object keyed by pid (GitHub data/testmini.json)"))
        queries: dict[str, str] = {}
        if any("query" not in record for record in records.values()):
            query_file = source.parent / "query.json"
            if not query_file.is_file():
                raise FileNotFoundError(
                    self._error(f"{source} has records without `query` and {query_file} (pid -> query) is missing")
                )
            queries = json.loads(query_file.read_text(encoding="utf-8"))
        rows = []
        for pid, record in records.items():
            row = {"pid": str(pid), **record}
            row.setdefault("query", queries.get(str(pid)))
            missing = [key for key in (*REQUIRED_COLUMNS, "image") if row.get(key) is None]
            if missing:
                raise ValueError(self._error(f"{source}: record {pid} lacks {missing}"))
            rows.append(row)
        return rows

    def _item(self, row: dict[str, Any], source: Path, base: Path) -> EvalItem:
        pid = str(row["pid"])
        image = image_from_cell(row.get("decoded_image"), base) or image_from_cell(row.get("image"), base)
        if image is None:
            raise ValueError(self._error(f"{source}: pid {pid} has neither `decoded_image` nor `image`"))
        if isinstance(image, Path) and not image.is_file():
            raise FileNotFoundError(
                self._error(f"image of pid {pid} ({source}) not found at {image}; set image_root to the images' folder")
            )
        metadata = row.get("metadata") or {}
        if isinstance(metadata, str):
            metadata = json.loads(metadata)
        meta: dict[str, Any] = {
            "question_type": row["question_type"],
            "answer_type": row["answer_type"],
            "choices": list(row["choices"]) if row.get("choices") is not None else None,
            "precision": row.get("precision"),
            "unit": row.get("unit"),
        }
        meta.update({key: metadata[key] for key in METADATA_KEYS if metadata.get(key) is not None})
        return LazyEvalItem(pid, str(row["query"]), [image], str(row["answer"]), meta)

    def score(self, item: EvalItem, response: str, rng: random.Random) -> ScoreResult:
        """`extracted` is the extraction (official `extraction` field); correctness uses its normalised form."""
        response = response.strip()
        meta = item.meta
        args = (meta["question_type"], meta["answer_type"], meta["choices"])
        extraction = mathvista_extract(response, *args, quick_extract=self.quick_extract)
        fallback = extraction is None
        if fallback:
            extraction = mathvista_fallback_extract(response, *args)
        normalized = mathvista_normalize(extraction, meta["choices"], *args[:2], meta["precision"])
        return ScoreResult(mathvista_is_correct(normalized, item.gold), extraction, fallback)

    def breakdown_keys(self, item: EvalItem) -> dict[str, list[str]]:
        groups = {key: [str(item.meta[key])] for key in BREAKDOWN_KEYS if item.meta.get(key) is not None}
        if item.meta.get("skills"):
            groups["skills"] = [str(skill) for skill in item.meta["skills"]]
        return groups
