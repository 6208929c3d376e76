"""Shared pieces of the converters that write the official DC-SFT training files (`grounding_data.py`,
`math_data.py`): the seeded cold-start / post-training split and images embedded in parquet files written out."""

from __future__ import annotations

import hashlib
import random
from pathlib import Path


def seeded_split(n: int, cold_start: int, post_train: int | None, seed: int) -> tuple[list[int], list[int]]:
    """Indices of the cold-start set and of the post-training set (the rest, or its first `post_train`) after a
    seeded shuffle, as the paper draws 400 cold-start items and keeps the others for post-training."""
    if cold_start < 0 or cold_start >= n:
        raise ValueError(f"cold_start must be in [0, {n}) for {n} records, got {cold_start}")
    order = list(range(n))
    random.Random(seed).shuffle(order)
    rest = order[cold_start:]
    return order[:cold_start], rest[:post_train] if post_train is not None else rest


def stored_image(image: object, name: str, images_dir: Path) -> str:
    """An absolute path for an image: a path as is, encoded bytes (parquet cells) written to images_dir under a name
    that includes a hash of the bytes (another split or dataset with the same ids never reuses a wrong picture)."""
    if image is None:
        raise ValueError(f"{name}: no image")
    if isinstance(image, bytes):
        digest = hashlib.blake2b(image, digest_size=8).hexdigest()
        out = images_dir / f"{name.replace('/', '_')}_{digest}.img"
        if not out.exists():
            images_dir.mkdir(parents=True, exist_ok=True)
            out.write_bytes(image)
        return str(out.resolve())
    return str(Path(str(image)).resolve())
