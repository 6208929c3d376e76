"""Command line for every stage: `python train.py {fit,validate,test,predict} --config configs/<experiment>/<stage>.yaml`.

The model (SFTModule, GRPOModule, DifficultyEstimator, ...) is chosen in the YAML by `model.class_path`; the data is
always the difficulty-aware `VLMDataModule`. `model.init_args.model_path` is linked to `data.model_path`, so the
checkpoint (and hence tokenizer / chat template) is named once. The resolved config is saved beside the logs and
checkpoints (`<log_dir>/config.yaml`). `python train.py fit --help` lists every option.
"""

from __future__ import annotations

import os
import warnings

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
warnings.filterwarnings("ignore", message=".*does not have many workers.*")
warnings.filterwarnings("ignore", category=FutureWarning)

from lightning.pytorch.cli import LightningCLI  # noqa: E402

from datamodules.vlm_data import VLMDataModule  # noqa: E402


class DCSFTCLI(LightningCLI):
    """LightningCLI with the model path linked from model to data."""

    def add_arguments_to_parser(self, parser) -> None:
        parser.link_arguments("model.init_args.model_path", "data.model_path")


def main(args: list[str] | None = None, run: bool = True) -> DCSFTCLI:
    import lightning as L

    return DCSFTCLI(
        L.LightningModule,
        VLMDataModule,
        subclass_mode_model=True,
        save_config_kwargs={"overwrite": True},
        args=args,
        run=run,
        parser_kwargs={"parser_mode": "omegaconf"},
    )


if __name__ == "__main__":
    main()
