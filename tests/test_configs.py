"""Every YAML under configs/ parses through the CLI (a renamed argument fails here, not in the next experiment)."""

from __future__ import annotations

from pathlib import Path

import pytest

CONFIGS = sorted(str(p) for p in Path("configs").rglob("*.yaml"))


@pytest.mark.parametrize("path", CONFIGS)
def test_config_parses(path, tmp_path):
    from train import main  # run=False: no subcommand; fit / validate / predict configs share one schema

    # Paper configs ask for GPUs and DDP: parse them as they are, instantiate on this machine's CPU.
    overrides = ["--trainer.accelerator", "cpu", "--trainer.devices", "1", "--trainer.strategy", "auto"]
    cli = main(["--config", path, *overrides, "--trainer.default_root_dir", str(tmp_path)], run=False)
    assert cli.model is not None and cli.datamodule is not None
    assert cli.datamodule.hparams.model_path == cli.model.hparams.model_path  # linked, set once


def test_there_are_configs():
    assert len(CONFIGS) >= 2
