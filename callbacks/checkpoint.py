"""ModelCheckpoint that also writes the LoRA adapter in PEFT format beside each Lightning checkpoint.

Why: the `.ckpt` file resumes training exactly (trainable weights, optimizer, scheduler, data position, RNG); the
adapter folder is what everyone else loads: `PeftModel.from_pretrained(base, "<ckpt>_adapter")`, or
`python -m lightning_modules.vlm BASE <ckpt>_adapter OUT` to merge it for export.
"""

from __future__ import annotations

import shutil
from pathlib import Path

from lightning.pytorch.callbacks import ModelCheckpoint


def adapter_dir(ckpt_path: str) -> Path:
    """`.../step=100.ckpt` -> `.../step=100_adapter`."""
    path = Path(ckpt_path)
    return path.with_name(path.stem + "_adapter")


class AdapterCheckpoint(ModelCheckpoint):
    """Saves `<name>.ckpt` and, for PEFT models, `<name>_adapter/` (adapter_config.json + safetensors)."""

    def _save_checkpoint(self, trainer, filepath: str) -> None:
        super()._save_checkpoint(trainer, filepath)
        model = getattr(trainer.lightning_module, "model", None)
        if trainer.is_global_zero and model is not None and hasattr(model, "peft_config"):
            target = adapter_dir(filepath)
            tmp = target.with_name(target.name + ".tmp")
            shutil.rmtree(tmp, ignore_errors=True)
            model.save_pretrained(tmp)
            shutil.rmtree(target, ignore_errors=True)
            tmp.rename(target)

    def _remove_checkpoint(self, trainer, filepath: str) -> None:
        super()._remove_checkpoint(trainer, filepath)
        if trainer.is_global_zero:
            shutil.rmtree(adapter_dir(filepath), ignore_errors=True)
