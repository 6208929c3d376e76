"""The runs listed in `configs/runs.yaml`, as `python train.py` commands: print one, run one, or list them.

    python scripts/runs.py --list
    python scripts/runs.py --print demo/sft_m
    python scripts/runs.py demo/sft_m --trainer.max_steps 10     # extra arguments go after the run name

`scripts/demo.sh` and `tests/test_configs.py` use `command()` from here, so the three never disagree.
"""

from __future__ import annotations

import argparse
import os
import shlex
import sys
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
RUNS_FILE = ROOT / "configs" / "runs.yaml"
SUBCOMMANDS = ("fit", "validate", "test", "predict")


def load_runs(path: Path = RUNS_FILE) -> dict[str, list[str]]:
    """Run name -> its words (subcommand, fragment names, extra arguments), checked for known fragments."""
    runs = yaml.safe_load(path.read_text(encoding="utf-8"))
    out = {}
    for name, spec in runs.items():
        words = shlex.split(spec)
        if not words or words[0] not in SUBCOMMANDS:
            raise ValueError(f"{path}: run {name!r} must start with one of {SUBCOMMANDS}, got {spec!r}")
        out[name] = words
    return out


def command(name: str, extra: list[str] | None = None, runs: dict[str, list[str]] | None = None) -> list[str]:
    """`train.py` argument list of a run: subcommand, `--config configs/<fragment>.yaml` per fragment, extras."""
    runs = runs or load_runs()
    if name not in runs:
        raise SystemExit(f"unknown run {name!r}; known runs: {', '.join(runs)}")
    subcommand, *rest = runs[name]
    args = [subcommand]
    words = iter(rest)
    for word in words:
        if word.startswith("--"):
            args += [word, next(words)]
        else:
            fragment = Path("configs") / f"{word}.yaml"
            if not (ROOT / fragment).is_file():
                raise FileNotFoundError(f"{RUNS_FILE}: run {name!r} names {word!r}, but {fragment} does not exist")
            args += ["--config", str(fragment)]
    return args + list(extra or [])


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("name", nargs="?", help="a run from configs/runs.yaml")
    parser.add_argument("--list", action="store_true", help="list the runs")
    parser.add_argument("--print", action="store_true", help="print the command instead of running it")
    args, extra = parser.parse_known_args(argv)
    if args.list or not args.name:
        print("\n".join(load_runs()))
        return
    cmd = [sys.executable, "train.py", *command(args.name, extra)]
    if args.print:
        print(shlex.join(["python", *cmd[1:]]))
        return
    os.chdir(ROOT)
    os.execv(sys.executable, cmd)


if __name__ == "__main__":
    main()
