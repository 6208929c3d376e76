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
- Callback slots `checkpoint`, `eval`, `difficulty`, `global_batch`, `progress` and `refresh`: each a fragment can
  set or override key by key (`--eval.init_args.limit 100`), unlike the `trainer.callbacks` list, which a later
  file replaces whole.

`python train.py fit --help` lists every option; `--print_config` shows the composed config.
"""

from __future__ import annotations

import os
import re
import sys
import warnings
from dataclasses import dataclass
from pathlib import Path

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
warnings.filterwarnings("ignore", message=".*does not have many workers.*")
warnings.filterwarnings("ignore", category=FutureWarning)
# Our datamodule restores the data position itself (state_dict / load_state_dict), so resumes are exact.
warnings.filterwarnings("ignore", message=".*your dataloader is not resumable.*")
# GRPO checkpoints the weights after the optimizer step on purpose (that is what a resume continues from).
warnings.filterwarnings("ignore", message=".*ModelCheckpoint with manual optimization.*")

from jsonargparse import set_parsing_settings  # noqa: E402
from lightning.pytorch.cli import LightningArgumentParser, LightningCLI  # noqa: E402
from omegaconf import OmegaConf  # noqa: E402

from callbacks.checkpoint import AdapterCheckpoint, newest_checkpoint  # noqa: E402
from callbacks.difficulty_refresh import DifficultyRefresh  # noqa: E402
from callbacks.difficulty_writer import DifficultyWriter  # noqa: E402
from callbacks.generative_eval import GenerativeEval  # noqa: E402
from callbacks.global_batch import GlobalBatchSize  # noqa: E402
from callbacks.progress import ProgressLog  # noqa: E402
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
    size: str = ""
    """The model's folder name (e.g. qwen2_5_vl_7b): paper experiments put their runs under runs/paper/<size>..."""
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


class DCSFTParser(LightningArgumentParser):
    """LightningCLI's parser with whole option names only (`--trainer.max_step 3` is an error, not an abbreviation
    of max_steps) and errors that lead with the problem instead of 70 lines of usage."""

    def __init__(self, *args, **kwargs) -> None:
        kwargs.setdefault("allow_abbrev", False)
        super().__init__(*args, **kwargs)

    def error(self, message: str, ex: Exception | None = None):
        if not self.exit_on_error or os.environ.get("JSONARGPARSE_DEBUG"):
            return super().error(message, ex)
        first, _, rest = message.partition("\n")
        nested = re.search(r"class_path '([\w.]+)':\s*\n\s*(unrecognized arguments: [^\n]+)", message)
        if nested:  # lead with the innermost cause: which class, which argument
            first = f"{first.rstrip(':')} ({nested.group(1)}): {nested.group(2)}"
        sys.stderr.write(f"error: {first}\n")
        if rest.strip():
            sys.stderr.write(rest.rstrip() + "\n")
        sys.stderr.write(f"(`{self.prog} --help` lists every option; `--print_config` shows the composed config)\n")
        sys.exit(2)


class DCSFTCLI(LightningCLI):
    """LightningCLI with the shared names, the callback slots, the links and `demo://` resolution."""

    def add_arguments_to_parser(self, parser) -> None:
        parser.add_argument("--run", type=RunNames, default=RunNames(), help="Names shared by config fragments.")
        parser.add_lightning_class_args(AdapterCheckpoint, "checkpoint", subclass_mode=True, required=False)
        parser.add_lightning_class_args(GenerativeEval, "eval", subclass_mode=True, required=False)
        parser.add_lightning_class_args(DifficultyWriter, "difficulty", subclass_mode=True, required=False)
        parser.add_argument(
            "--allow_fresh_start",
            type=bool,
            default=False,
            help="With --ckpt_path last: start from scratch when there is nothing to resume (default: an error).",
        )
        parser.add_lightning_class_args(GlobalBatchSize, "global_batch", subclass_mode=True, required=False)
        parser.add_lightning_class_args(ProgressLog, "progress", subclass_mode=True, required=False)
        parser.add_lightning_class_args(DifficultyRefresh, "refresh", subclass_mode=True, required=False)
        parser.link_arguments("model.init_args.model_path", "data.model_path")
        parser.link_arguments("difficulty.init_args.output", "data.predict_done_file")

    def before_instantiate_classes(self) -> None:
        from assets import resolve_tree

        config = self.config[self.subcommand] if self.subcommand else self.config
        if self.subcommand == "fit":
            resume_last(config)
        resolve_tree(config)

    def instantiate_trainer(self, **kwargs):
        """As LightningCLI's, minus the slots left empty (`None`)."""
        parser = self._parser(self.subcommand)
        slots = [self._get(self.config_init, key) for key in parser.callback_keys]
        trainer_config = {**self._get(self.config_init, "trainer", default={}), **kwargs}
        return self._instantiate_trainer(trainer_config, [c for c in slots if c is not None])


def resume_last(config) -> None:
    """`--ckpt_path last`: the newest complete checkpoint of this run, logging into its version folder; an error when
    there is none, unless `--allow_fresh_start`. (Lightning's own "last" looks only in the new run's empty folder.)"""
    if config.get("ckpt_path") != "last":
        return
    logger = config.trainer.logger
    if not logger or not hasattr(logger, "init_args"):
        raise ValueError("--ckpt_path last needs trainer.logger (its folder holds the run's checkpoints)")
    run_dir = Path(logger.init_args.save_dir) / logger.init_args.name
    found = newest_checkpoint(run_dir)
    if found is None:
        if not config.get("allow_fresh_start"):
            raise ValueError(
                f"--ckpt_path last: no complete checkpoint under {run_dir}; drop --ckpt_path to start a new run, "
                "or add --allow_fresh_start true to resume when possible and start fresh otherwise"
            )
        print(f"[resume] nothing to resume under {run_dir}: starting fresh", flush=True)
        config.ckpt_path = None
        return
    version, path = found
    logger.init_args.version = version
    config.ckpt_path = str(path)
    print(f"[resume] {path} (logs continue in {run_dir / version})", flush=True)


def die_with_launcher() -> None:
    """A DDP worker that Lightning's launcher started (LOCAL_RANK > 0) ends when the launcher dies, even by kill -9,
    instead of running on alone (Linux `PR_SET_PDEATHSIG`; elsewhere nothing changes)."""
    if int(os.environ.get("LOCAL_RANK", "0")) == 0 or not sys.platform.startswith("linux"):
        return
    import ctypes
    import signal

    try:
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # 1 = PR_SET_PDEATHSIG
    except OSError:
        pass


def main(args: list[str] | None = None, run: bool = True) -> DCSFTCLI:
    import lightning as L

    die_with_launcher()
    return DCSFTCLI(
        L.LightningModule,
        VLMDataModule,
        subclass_mode_model=True,
        save_config_kwargs={"overwrite": True},
        args=args,
        run=run,
        parser_class=DCSFTParser,
        parser_kwargs={"parser_mode": "omegaconf+"},
    )


if __name__ == "__main__":
    main()
