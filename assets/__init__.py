"""Offline assets: the embedded demo model and data, tiny test checkpoints, and test-data writers.

Nothing in the library (`lightning_modules/`, `datamodules/`, `callbacks/`) imports this package: `train.py` resolves
`demo://<asset>/<path>` strings into local paths at the command-line edge, before any class is built, and tests,
benchmarks and scripts call the builders directly. Assets are built on first use into the git-ignored cache
(`$DCSFT_CACHE`, default `<repo>/.cache`), atomically, and rebuilt when their recipe stamp changes.

    python -c "from assets import resolve; print(resolve('demo://smollm2-vl'))"
"""

from __future__ import annotations

import argparse
import os
import random
import shutil
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

DEMO_SCHEME = "demo://"


def cache_root() -> Path:
    """Where built assets live: `$DCSFT_CACHE`, default `<repo>/.cache` (git-ignored)."""
    return Path(os.environ.get("DCSFT_CACHE", Path(__file__).resolve().parents[1] / ".cache"))


def _builders() -> dict[str, tuple[Callable[[Path], Any], str]]:
    """Asset name -> (builder writing into a folder, recipe stamp; a changed stamp rebuilds the cached asset)."""
    from assets import demo_data, demo_model, grounding_demo_data, grounding_pretrain

    return {
        "smollm2-vl": (demo_model.build_demo_model, demo_model.RECIPE),
        "smollm2-vl-grounding": (grounding_pretrain.build_grounding_demo_model, grounding_pretrain.RECIPE),
        "easy_vqa": (demo_data.build_demo_data, demo_data.RECIPE),
        "easy_vqa_grounding": (grounding_demo_data.build_grounding_demo_data, grounding_demo_data.RECIPE),
    }


@contextmanager
def preserved_rng() -> Iterator[None]:
    """Restore Python's, NumPy's and torch's global RNG states on exit. An asset built on first use runs inside a
    seeded job (`train.py` resolves `demo://` after `seed_everything`): without this, the first run on a fresh clone
    would draw its LoRA init and data order from the RNG the builder left behind and differ from every later run."""
    import numpy as np
    import torch

    python_state, numpy_state = random.getstate(), np.random.get_state()
    with torch.random.fork_rng(devices=[]):
        try:
            yield
        finally:
            random.setstate(python_state)
            np.random.set_state(numpy_state)


def ensure(name: str) -> Path:
    """Build a demo asset folder once (into a temp folder, then renamed) and return it."""
    builders = _builders()
    if name not in builders:
        raise ValueError(f"unknown demo asset {name!r} in a {DEMO_SCHEME} path; known: {sorted(builders)}")
    build, recipe = builders[name]
    target = cache_root() / "demo" / name
    stamp = f"{name} {recipe}\n"
    if (target / ".complete").exists() and (target / ".complete").read_text() == stamp:
        return target
    tmp = target.with_name(f"{name}.tmp{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    print(f"[dcsft] building demo asset {name!r} into {target} (first use only)", flush=True)
    with preserved_rng():
        build(tmp)
    (tmp / ".complete").write_text(stamp)
    if (target / ".complete").exists() and (target / ".complete").read_text() == stamp:  # another process won
        shutil.rmtree(tmp, ignore_errors=True)
    else:
        shutil.rmtree(target, ignore_errors=True)
        tmp.rename(target)
    return target


def resolve(path: Any) -> Any:
    """`demo://<asset>/<sub/path>` -> a local path (building the asset on first use); anything else unchanged."""
    if not isinstance(path, str) or not path.startswith(DEMO_SCHEME):
        return path
    asset, _, rest = path[len(DEMO_SCHEME) :].partition("/")
    folder = ensure(asset)
    return str(folder / rest) if rest else str(folder)


def resolve_tree(value: Any) -> Any:
    """Resolve every `demo://` string inside nested dicts / lists / namespaces (a parsed config), in place."""
    if isinstance(value, str):
        return resolve(value)
    if isinstance(value, list):
        for i, item in enumerate(value):
            value[i] = resolve_tree(item)
        return value
    if isinstance(value, dict):
        for key, item in value.items():
            value[key] = resolve_tree(item)
        return value
    if isinstance(value, argparse.Namespace):  # jsonargparse.Namespace subclasses it
        for key, item in vars(value).items():
            setattr(value, key, resolve_tree(item))
    return value
