"""The import direction between layers, checked by walking every import (function-level ones included).

    train.py, scripts/, bench/, tests/  ->  callbacks/  ->  lightning_modules/  ->  datamodules/
                                   \\->  assets/ (demo and tiny builders, test data) -> datamodules/

The library (datamodules, lightning_modules, callbacks) never imports assets/, tests/, bench/, scripts/ or train.py;
the data layer imports nothing from the model or callback layers; modules do not inherit from each other.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

FORBIDDEN = {
    "datamodules": {"lightning_modules", "callbacks", "assets", "tests", "bench", "scripts", "train"},
    "lightning_modules": {"callbacks", "assets", "tests", "bench", "scripts", "train"},
    "callbacks": {"assets", "tests", "bench", "scripts", "train"},
    "assets": {"lightning_modules", "callbacks", "tests", "bench", "scripts", "train"},
    # Entry points are peers: bench composes runs exactly as users run them (train.py's parser, scripts/runs.py).
    "bench": {"tests"},
}


def imports(path: Path) -> list[tuple[int, str]]:
    """(line, top-level package) of every import in a file."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name.split(".")[0]) for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.append((node.lineno, node.module.split(".")[0]))
    return found


@pytest.mark.parametrize("layer", sorted(FORBIDDEN))
def test_import_direction(layer):
    bad = [
        f"{path}:{line} imports {package}"
        for path in sorted(Path(layer).rglob("*.py"))
        for line, package in imports(path)
        if package in FORBIDDEN[layer]
    ]
    assert bad == []


def test_the_check_sees_function_level_imports(tmp_path):
    source = tmp_path / "m.py"
    source.write_text("def f():\n    from lightning_modules.vlm import build_vlm\n")
    assert imports(source) == [(2, "lightning_modules")]


def test_no_module_inherits_from_another():
    ours = set()
    bases: dict[str, list[str]] = {}
    for path in Path("lightning_modules").rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ClassDef):
                ours.add(node.name)
                bases[node.name] = [b.id if isinstance(b, ast.Name) else getattr(b, "attr", "") for b in node.bases]
    modules = {name for name, b in bases.items() if "LightningModule" in b}
    assert {"SFTModule", "GRPOModule", "DifficultyEstimator"} <= modules
    assert {name: b for name, b in bases.items() if set(b) & ours} == {}
