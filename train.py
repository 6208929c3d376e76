"""Command line for every stage: `python train.py {fit,validate,test,predict} --config A.yaml --config B.yaml ...`.

Configs compose with LightningCLI's own features: several `--config` files apply in order (later files override
earlier ones key by key), and `${run:<name>}` interpolates the names that several fragments share (an OmegaConf
resolver, applied after all files are merged: omegaconf+ parser mode). `configs/runs.yaml` lists every runnable experiment as its
subcommand plus fragment list. The model (SFTModule, GRPOModule, DifficultyEstimator) is chosen by
`model.class_path`; the data is always the difficulty-aware `VLMDataModule`.

Edges handled here and nowhere else:
- `demo://<asset>/<path>` strings anywhere in the config are built (first use) and replaced by local paths before
  any class is instantiated, so the library never sees them (`assets/`).
- Links: `model.init_args.model_path` -> `data.model_path` (the checkpoint is named once) and
  `difficulty.init_args.output` -> `data.predict_done_file` (a rerun skips finished rows).
- Callback slots `checkpoint`, `eval` and `difficulty`: each a fragment can set or override key by key
  (`--eval.init_args.limit 100`), unlike the `trainer.callbacks` list, which a later file replaces whole.

`python train.py fit --help` lists every option; `--print_config` shows the composed config.
"""

from __future__ import annotations

import os
import warnings
from dataclasses import dataclass

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
warnings.filterwarnings("ignore", message=".*does not have many workers.*")
warnings.filterwarnings("ignore", category=FutureWarning)

from jsonargparse import set_parsing_settings  # noqa: E402
from lightning.pytorch.cli import LightningCLI  # noqa: E402
from omegaconf import OmegaConf  # noqa: E402

from callbacks.checkpoint import AdapterCheckpoint  # noqa: E402
from callbacks.difficulty_writer import DifficultyWriter  # noqa: E402
from callbacks.generative_eval import GenerativeEval  # noqa: E402
from datamodules.vlm_data import VLMDataModule  # noqa: E402

set_parsing_settings(docstring_parse_attribute_docstrings=True)  # dataclass field docstrings appear in --help
SUBCOMMANDS = ("fit", "validate", "test", "predict")


def run_name(key: str, _root_) -> str:
    """OmegaConf resolver behind `${run:<name>}`: the `run.<name>` value of the config being parsed, found at the
    root or under the subcommand (`fit`, `predict`, ...), so a reference means the same at any depth and after
    links copy it elsewhere (plain `${run.x}` paths are absolute and break under a subcommand)."""
    node = _root_
    if "run" not in node:
        node = next(node[k] for k in SUBCOMMANDS if k in node and node[k] is not None and "run" in node[k])
    return node["run"][key]


# OmegaConf 2.4 renamed register_new_resolver to register_resolver
_register = OmegaConf.register_resolver if hasattr(OmegaConf, "clear_resolver") else OmegaConf.register_new_resolver
_register("run", run_name, replace=True)


@dataclass
class RunNames:
    """Names shared by several config fragments, used in them as `${run:<name>}`."""

    dir: str = "runs/default"
    """This experiment's folder: every stage logs, checkpoints and exports under it."""
    stage: str = "default"
    """The stage being run: its logs and checkpoints go to `<dir>/<stage>/`."""
    base_model: str = ""
    """The checkpoint the cold start starts from (a folder, a hub id or a demo:// asset)."""
    cold_start_file: str = ""
    """Cold-start SFT data (DC-SFT step 1)."""
    sft_file: str = ""
    """Post-training data in the SFT (`messages` + `images`) format."""
    rl_file: str = ""
    """The same items in the `problem` / `solution` / `image` format: difficulty estimation and GRPO."""
    cold_start_model: str = ""
    """Where the cold start exports its merged model, which later stages start from."""
    difficulty_file: str = ""
    """Where difficulty estimation writes, and where selections and per-tier logging read."""


class DCSFTCLI(LightningCLI):
    """LightningCLI with the shared names, the callback slots, the links and `demo://` resolution."""

    def add_arguments_to_parser(self, parser) -> None:
        parser.add_argument("--run", type=RunNames, default=RunNames(), help="Names shared by config fragments.")
        parser.add_lightning_class_args(AdapterCheckpoint, "checkpoint", subclass_mode=True, required=False)
        parser.add_lightning_class_args(GenerativeEval, "eval", subclass_mode=True, required=False)
        parser.add_lightning_class_args(DifficultyWriter, "difficulty", subclass_mode=True, required=False)
        parser.link_arguments("model.init_args.model_path", "data.model_path")
        parser.link_arguments("difficulty.init_args.output", "data.predict_done_file")

    def before_instantiate_classes(self) -> None:
        from assets import resolve_tree

        resolve_tree(self.config[self.subcommand] if self.subcommand else self.config)

    def instantiate_trainer(self, **kwargs):
        """As LightningCLI's, minus the slots left empty (`None`)."""
        parser = self._parser(self.subcommand)
        slots = [self._get(self.config_init, key) for key in parser.callback_keys]
        trainer_config = {**self._get(self.config_init, "trainer", default={}), **kwargs}
        return self._instantiate_trainer(trainer_config, [c for c in slots if c is not None])


def main(args: list[str] | None = None, run: bool = True) -> DCSFTCLI:
    import lightning as L

    return DCSFTCLI(
        L.LightningModule,
        VLMDataModule,
        subclass_mode_model=True,
        save_config_kwargs={"overwrite": True},
        args=args,
        run=run,
        parser_kwargs={"parser_mode": "omegaconf+"},
    )


if __name__ == "__main__":
    main()
