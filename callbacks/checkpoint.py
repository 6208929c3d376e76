"""ModelCheckpoint that also writes the LoRA adapter in PEFT format beside each Lightning checkpoint, atomically.

Why: the `.ckpt` file resumes training exactly (trainable weights, optimizer, scheduler, data position, RNG); the
adapter folder is what everyone else loads: `PeftModel.from_pretrained(base, "<ckpt>_adapter")`, or
`python -m lightning_modules.vlm BASE <ckpt>_adapter OUT` to merge it for export.

Both are written under temporary names and renamed into place (adapter first, then the checkpoint), so a kill never
leaves a truncated `.ckpt` that a resume would pick up; leftovers of an interrupted write (`*.tmp*`) are removed at
the next start. A kill between the two renames leaves the adapter one step ahead of the checkpoint (its
`dcsft_step.json` says which step); resuming rewrites both.
"""

from __future__ import annotations

import json
import os
import shutil
import zipfile
from pathlib import Path

from lightning.pytorch.callbacks import ModelCheckpoint

TMP = ".tmp"


def adapter_dir(ckpt_path: str | Path) -> Path:
    """`.../step=100.ckpt` -> `.../step=100_adapter`."""
    path = Path(ckpt_path)
    return path.with_name(path.stem + "_adapter")


def remove_leftovers(folder: str | Path) -> list[Path]:
    """Delete the temporary files / folders of interrupted checkpoint writes in `folder`; returns what was removed."""
    removed = []
    for path in Path(folder).glob(f"*{TMP}*") if Path(folder).is_dir() else []:
        shutil.rmtree(path, ignore_errors=True) if path.is_dir() else path.unlink(missing_ok=True)
        removed.append(path)
    return removed


class AdapterCheckpoint(ModelCheckpoint):
    """Saves `<name>.ckpt` and, for PEFT models, `<name>_adapter/` (adapter_config.json + safetensors)."""

    def setup(self, trainer, pl_module, stage: str) -> None:
        super().setup(trainer, pl_module, stage)
        if trainer.is_global_zero and self.dirpath:
            for path in remove_leftovers(self.dirpath):
                print(f"[checkpoint] removed {path} (left by an interrupted write)", flush=True)

    def _save_checkpoint(self, trainer, filepath: str) -> None:
        target = Path(filepath)
        tmp = target.with_name(target.name + TMP)
        model = getattr(trainer.lightning_module, "model", None)
        with_adapter = model is not None and hasattr(model, "peft_config")
        if with_adapter and trainer.is_global_zero:
            adapter = adapter_dir(filepath)
            adapter_tmp = adapter.with_name(adapter.name + TMP)
            shutil.rmtree(adapter_tmp, ignore_errors=True)
            model.save_pretrained(adapter_tmp)
            (adapter_tmp / "dcsft_step.json").write_text(json.dumps({"global_step": trainer.global_step}))
        super()._save_checkpoint(trainer, str(tmp))  # collective: every rank calls it, rank 0 writes
        self._last_checkpoint_saved = filepath
        if trainer.is_global_zero:
            if with_adapter:
                shutil.rmtree(adapter, ignore_errors=True)
                adapter_tmp.rename(adapter)
            os.replace(tmp, target)

    def _remove_checkpoint(self, trainer, filepath: str) -> None:
        super()._remove_checkpoint(trainer, filepath)
        if trainer.is_global_zero:
            shutil.rmtree(adapter_dir(filepath), ignore_errors=True)


def newest_checkpoint(run_dir: str | Path) -> tuple[str, Path] | None:
    """The newest complete checkpoint of a run folder (`<save_dir>/<name>`): (logger version, path), or None.

    Looks in every `version_*/checkpoints/` (and a bare `checkpoints/` of older runs), ignores temporary files of
    interrupted writes and files that are not complete zip archives (a `.ckpt` is one), newest by modification time.
    """
    root = Path(run_dir)
    candidates = []
    for folder in [root / "checkpoints", *sorted(root.glob("version_*/checkpoints"))]:
        for path in folder.glob("*.ckpt") if folder.is_dir() else []:
            if zipfile.is_zipfile(path):
                version = "" if folder.parent == root else folder.parent.name
                candidates.append((path.stat().st_mtime, version, path))
    if not candidates:
        return None
    _, version, path = max(candidates)
    return version, path
