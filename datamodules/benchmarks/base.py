"""The benchmark interface used by the evaluation callback, plus small shared helpers for readers.

A benchmark turns files on disk into `EvalItem`s (user text built as the official code builds it, RGB images in
user-turn order, gold, metadata) and scores a decoded response with the shared scorers in `datamodules/scoring.py`.
Tests: `python -m pytest tests/test_benchmarks.py -q`.
"""

from __future__ import annotations

import random
from abc import ABC, abstractmethod
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from PIL import Image

from datamodules.images import ImageSource, open_rgb


@dataclass
class EvalItem:
    """One evaluation prompt: `images` come before `prompt` in the single user turn."""

    id: str
    prompt: str
    images: list[Image.Image]
    gold: Any
    meta: dict[str, Any]

    def image_sources(self) -> list[ImageSource]:
        """The images as stored (paths, encoded bytes or decoded images), for one decode by the encoder."""
        return list(self.images)


class LazyEvalItem(EvalItem):
    """An `EvalItem` whose images are decoded from their sources (paths or encoded bytes) on each access.

    Why: ImageNet-R has 30,000 images; holding decoded pixels (or one open file handle per lazily opened PIL image)
    for every item would exhaust memory or file descriptors. Reading `item.images` returns fresh RGB images.
    """

    @property  # type: ignore[override]
    def images(self) -> list[Image.Image]:
        return [open_rgb(source) for source in self._image_sources]

    @images.setter
    def images(self, sources: Iterable[ImageSource]) -> None:
        self._image_sources = list(sources)

    def image_sources(self) -> list[ImageSource]:
        return list(self._image_sources)

    def __repr__(self) -> str:
        return f"LazyEvalItem(id={self.id!r}, images={len(self._image_sources)}, gold={self.gold!r})"


@dataclass
class ScoreResult:
    """Outcome of scoring one response."""

    correct: bool
    extracted: str | None  # the extracted / parsed answer as text, for the predictions file
    fallback: bool = False  # MMMU random fallback or MathVista offline approximate extractor was used
    values: dict[str, float] | None = None  # per-item numbers averaged into `val/<name>/<key>` (e.g. IoU)
    details: dict[str, Any] | None = None  # written to the predictions file (e.g. box frame, image sizes)


class Benchmark(ABC):
    """A benchmark: reads its files into items, scores responses, names the breakdown groups of an item."""

    name: str

    @abstractmethod
    def load(self) -> list[EvalItem]:
        """Validate the files and return the items in a deterministic order."""

    @abstractmethod
    def score(self, item: EvalItem, response: str, rng: random.Random) -> ScoreResult:
        """Score one decoded response; `rng` is used only for MMMU's random fallback."""

    @abstractmethod
    def breakdown_keys(self, item: EvalItem) -> dict[str, list[str]]:
        """Group name -> the group values this item counts toward (multi-label groups list several)."""

    def aggregate(self, items: list[EvalItem], results: list[dict[str, Any]]) -> dict[str, float]:
        """Benchmark-level metrics beyond per-item accuracy (e.g. WeMath's four-dimensional scores), logged as
        `val/<name>/<key>`; none by default."""
        return {}

    def tables(self, items: list[EvalItem], results: list[dict[str, Any]]) -> dict[str, Any]:
        """Benchmark-level tables too long for scalars (e.g. Ref-L4's accuracy per class), JSON-able, for a summary
        file beside the predictions rather than hundreds of logged metrics; none by default."""
        return {}

    def set_pixel_bounds(self, min_pixels: int, max_pixels: int) -> None:
        """The evaluation's image resize bounds, given by the callback (grounding uses them for the box frame)."""
        self.pixel_bounds = (min_pixels, max_pixels)

    def _error(self, message: str) -> str:
        return f"{self.name}: {message}"


def read_parquet_rows(benchmark: str, file: Path, required: Iterable[str]) -> list[dict[str, Any]]:
    """Rows of a parquet file as dicts (HF Image columns become {"bytes", "path"} dicts); checks columns first."""
    import pyarrow.parquet as pq  # imported lazily: only benchmark loading needs it

    try:
        table = pq.read_table(file)
    except Exception as err:
        raise ValueError(f"{benchmark}: cannot read parquet file {file}: {err}") from None
    missing = [column for column in required if column not in table.column_names]
    if missing:
        raise ValueError(
            f"{benchmark}: {file} lacks columns {missing}; it has {table.column_names}. "
            "Point the benchmark at the original Hugging Face parquet files."
        )
    return table.to_pylist()


def image_from_cell(cell: Any, base: Path | None) -> ImageSource | None:
    """Image source from an HF Image cell ({"bytes", "path"}), raw bytes, or a relative/absolute path string."""
    if cell is None:
        return None
    if isinstance(cell, dict):
        if cell.get("bytes"):
            return bytes(cell["bytes"])
        cell = cell.get("path")
        if not cell:
            return None
    if isinstance(cell, str) and not cell.strip():
        return None
    if isinstance(cell, bytes | bytearray):
        return bytes(cell)
    path = Path(cell)
    return path if path.is_absolute() or base is None else base / path


def mc_filter(name: str, items: list[EvalItem], is_mc, mc_only: bool) -> list[EvalItem]:
    """The multiple-choice items when `mc_only` (the paper scores only those), else all; logs the counts."""
    mc = [item for item in items if is_mc(item)]
    print(f"[{name}] {len(mc)} of {len(items)} items are multiple choice; scoring {'those' if mc_only else 'all'}")
    return mc if mc_only else items
