"""Every bad input gets one clear error naming the file, the record (or the option) and the fix, before the model
loads. The cases form a table: `python -m tests.test_bad_input` prints each with the message users see (the README's
troubleshooting section is that output).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest
from PIL import Image

from assets.test_data import write_color_data
from datamodules.formats import read_samples
from datamodules.tiers import Selection
from datamodules.vlm_data import VLMDataModule
from lightning_modules.sampling import SamplingConfig
from lightning_modules.training import OptimConfig
from lightning_modules.vlm import LoraOptions, QuantOptions, VLMOptions, build_vlm


def setup_fit(model: str, path: Path, **kwargs) -> None:
    VLMDataModule(model, train_file=str(path), **kwargs).setup("fit")


def write_json(path: Path, rows) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(rows))
    return path


def problem_rows(tmp: Path, n: int = 2) -> Path:
    return write_color_data(tmp / "d", n=n, fmt="problem")


# ------------------------------------------------------------------------------------------------- the cases
def missing_image(model, tmp):
    data = write_color_data(tmp / "d", n=4)
    (tmp / "d" / "images" / "3.png").unlink()
    setup_fit(model, data)


def not_an_image(model, tmp):
    data = write_color_data(tmp / "d", n=4)
    (tmp / "d" / "images" / "2.png").write_text("not a png")
    setup_fit(model, data)


def truncated_png(model, tmp):
    data = write_color_data(tmp / "d", n=4)
    image = tmp / "d" / "images" / "1.png"
    image.write_bytes(image.read_bytes()[:-60])  # header intact: only a full decode notices
    setup_fit(model, data)


def truncated_png_in_a_benchmark(model, tmp):
    from callbacks.generative_eval import GenerativeEval
    from datamodules.benchmarks import DCSFTJson

    data = problem_rows(tmp, n=3)
    image = tmp / "d" / "images" / "2.png"
    image.write_bytes(image.read_bytes()[:-60])
    GenerativeEval([DCSFTJson(str(data), "colors")]).setup(None, None, "fit")


def malformed_json(model, tmp):
    bad = tmp / "bad.json"
    bad.write_text('[{"problem": "a", "solution": "b", "image": "x.png"},\n {"problem": ]')
    read_samples(bad)


def malformed_jsonl(model, tmp):
    bad = tmp / "bad.jsonl"
    bad.write_text('{"problem": "a", "solution": "b", "image": "x.png"}\n{"problem": "unterminated}\n')
    read_samples(bad)


def not_utf8(model, tmp):
    bad = tmp / "latin1.json"
    bad.write_bytes(
        '[{"problem": "Qu\'est-ce que c\'est ? café", "solution": "b", "image": "x.png"}]'.encode("latin-1")
    )
    read_samples(bad)


def records_under_a_key(model, tmp):
    wrapped = tmp / "wrapped.json"
    wrapped.write_text(json.dumps({"data": [{"problem": "a", "solution": "b", "image": "x.png"}]}, indent=1))
    read_samples(wrapped)


def unknown_format(model, tmp):
    read_samples(write_json(tmp / "unknown.json", [{"question": "a"}]))


def role_spelled_assistant(model, tmp):
    rows = [{"messages": [{"role": "user", "content": "<image>hi"}, {"role": "Assistant", "content": "x"}]}]
    read_samples(write_json(tmp / "roles.json", [{**rows[0], "images": ["a.png"]}]))


def no_assistant_turn(model, tmp):
    write_color_data(tmp / "d", n=1)
    rows = [{"messages": [{"role": "user", "content": "<image>hi"}], "images": ["images/0.png"]}]
    setup_fit(model, write_json(tmp / "d" / "prompts.json", rows))


def record_without_answer(model, tmp):
    data = problem_rows(tmp)
    rows = json.loads(data.read_text())
    rows[1]["solution"] = ""
    VLMDataModule(model, predict_file=str(write_json(data, rows))).setup("predict")


def empty_dataset(model, tmp):
    setup_fit(model, write_json(tmp / "empty.json", []))


def image_tokens_exceed_max_length(model, tmp):
    setup_fit(model, write_color_data(tmp / "big", n=2, size=448), max_length=128)  # 448x448 -> 256 tokens


def text_exceeds_max_length(model, tmp):
    setup_fit(model, write_color_data(tmp / "d", n=4), max_length=30)


def extreme_aspect_ratio(model, tmp):
    data = write_color_data(tmp / "d", n=2)
    Image.new("RGB", (4200, 20), (255, 0, 0)).save(tmp / "d" / "images" / "1.png")
    setup_fit(model, data)


def bad_data_options(model, tmp):
    VLMDataModule(model, batch_size=0, eval_batch_size=-1, selection=Selection(preset="sft_x", hard_share=1.5))


def selection_without_difficulty_file(model, tmp):
    setup_fit(model, write_color_data(tmp / "d", n=2), selection=Selection("sft_m"))


def bad_module_options(model, tmp):
    from lightning_modules.sft import SFTModule

    SFTModule(model, vlm=VLMOptions(dtype="fp8", lora=LoraOptions(target="(unclosed")), optim=OptimConfig(lr=-1))


def zero_answers_per_item(model, tmp):
    from lightning_modules.difficulty import DifficultyEstimator

    DifficultyEstimator(model, sampling=SamplingConfig(k=0))


def unknown_scorer(model, tmp):
    from lightning_modules.difficulty import DifficultyEstimator

    DifficultyEstimator(model, scorer="bleu")


def missing_local_model(model, tmp):
    VLMDataModule("runs/nowhere/cold_start/model", train_file=str(problem_rows(tmp))).setup("fit")


def offline_hub_typo(model, tmp):
    from datamodules.processor import load_processor

    os.environ["HF_HUB_OFFLINE"] = "1"
    try:
        import huggingface_hub.constants as constants

        old, constants.HF_HUB_OFFLINE = constants.HF_HUB_OFFLINE, True
        load_processor("Qwen/Qwen2.5-VL-7B-Instrcut")
    finally:
        constants.HF_HUB_OFFLINE = old
        os.environ.pop("HF_HUB_OFFLINE", None)


def model_folder_without_processor(model, tmp):
    broken = tmp / "weights_only"
    broken.mkdir()
    shutil.copy(f"{model}/config.json", broken)
    shutil.copy(f"{model}/model.safetensors", broken)
    build_vlm(str(broken), VLMOptions(dtype="float32"))


def lora_target_matching_nothing(model, tmp):
    build_vlm(model, VLMOptions(dtype="float32", lora=LoraOptions(target="nonexistent_proj")))


def qlora_without_lora(model, tmp):
    build_vlm(model, VLMOptions(dtype="float32", lora=None, qlora=QuantOptions()))


def unwritable_export_dir(model, tmp):
    from lightning_modules.sft import SFTModule
    from tests.helpers import cpu_trainer

    blocker = tmp / "file"
    blocker.write_text("a file where a folder should be")
    module = SFTModule(model, vlm=VLMOptions(dtype="float32"), export_dir=str(blocker / "model"))
    cpu_trainer(max_steps=1).fit(module, VLMDataModule(model, train_file=str(write_color_data(tmp / "d", n=2))))


def config_key_typo(model, tmp):
    from scripts.runs import command
    from train import main

    main([*command("demo/sft")[1:], "--model.init_args.optim.lrr", "1"], run=False)


def abbreviated_option(model, tmp):
    from scripts.runs import command
    from train import main

    main([*command("demo/sft")[1:], "--trainer.max_step", "3"], run=False)


def resume_with_nothing_to_resume(model, tmp):
    from scripts.runs import command
    from train import main

    main([*command("demo/sft"), "--run.dir", str(tmp / "runs"), "--ckpt_path", "last"])


@dataclass
class Case:
    name: str
    run: Callable[[str, Path], None]
    error: type[BaseException]
    pattern: str


CASES = [
    Case(
        "image file missing",
        missing_image,
        FileNotFoundError,
        r"messages\.json record 3: image not found: .*3\.png.*image_root",
    ),
    Case("not an image", not_an_image, ValueError, r"record 2: unreadable image"),
    Case(
        "truncated PNG (header intact)",
        truncated_png,
        ValueError,
        r"(?s)record 1: cannot decode .*1\.png.*truncated.*verify_images",
    ),
    Case(
        "truncated PNG in a benchmark",
        truncated_png_in_a_benchmark,
        ValueError,
        r"colors item 2: cannot decode .*2\.png",
    ),
    Case("malformed JSON", malformed_json, ValueError, r"bad\.json: malformed JSON \(line 2, column"),
    Case(
        "malformed JSONL line",
        malformed_jsonl,
        ValueError,
        r"bad\.jsonl: malformed JSONL record 1; fix or delete that line \(line 2",
    ),
    Case("file not UTF-8", not_utf8, ValueError, r"latin1\.json: not UTF-8 \(byte \d+, line 1.*iconv"),
    Case("records under a key", records_under_a_key, ValueError, r"wrapped\.json: one JSON object .*under 'data'"),
    Case("unknown record format", unknown_format, ValueError, r"unknown\.json record 0: unknown format"),
    Case(
        "role spelled Assistant",
        role_spelled_assistant,
        ValueError,
        r"roles\.json record 0: unknown role\(s\) \['Assistant'\]; roles are lower-case",
    ),
    Case("no assistant turn to train on", no_assistant_turn, ValueError, r"prompts\.json record 0: no assistant turn"),
    Case(
        "record without an answer (difficulty)",
        record_without_answer,
        ValueError,
        r"1 record\(s\) have no answer .*problem\.json record 1",
    ),
    Case("empty dataset", empty_dataset, ValueError, r"empty\.json: the dataset is empty"),
    Case(
        "image tokens exceed max_length",
        image_tokens_exceed_max_length,
        ValueError,
        r"record 0: its images alone take 256 tokens, max_length is 128",
    ),
    Case("text exceeds max_length", text_exceeds_max_length, ValueError, r"4 rows exceed max_length 30.*overlength"),
    Case(
        "aspect ratio above 200",
        extreme_aspect_ratio,
        ValueError,
        r"messages\.json record 1: a 4200x20 image has an aspect ratio above 200",
    ),
    Case(
        "bad data options",
        bad_data_options,
        ValueError,
        r"invalid data options:\n  - selection.preset 'sft_x'.*\n  - selection.hard_share.*\n  - data.batch_size must be >= 1.*\n  - data.eval_batch_size",
    ),
    Case(
        "selection without difficulty file",
        selection_without_difficulty_file,
        ValueError,
        r"data.selection \(sft_m\) needs data.difficulty_file",
    ),
    Case(
        "bad model options",
        bad_module_options,
        ValueError,
        r"invalid SFT options:\n  - vlm.dtype 'fp8'.*\n  - vlm.lora.target '\(unclosed' is neither a preset .* nor a valid regex.*\n  - optim.lr must be >= 0",
    ),
    Case("k = 0", zero_answers_per_item, ValueError, r"sampling.k must be >= 1"),
    Case("unknown scorer", unknown_scorer, ValueError, r"bleu"),
    Case(
        "local model folder missing",
        missing_local_model,
        FileNotFoundError,
        r"model folder runs/nowhere/cold_start/model does not exist.*run that stage first",
    ),
    Case(
        "hub id typo while offline",
        offline_hub_typo,
        FileNotFoundError,
        r"'Qwen/Qwen2.5-VL-7B-Instrcut' is neither a local folder nor in the Hugging Face cache, and HF_HUB_OFFLINE is set",
    ),
    Case(
        "model folder without processor files",
        model_folder_without_processor,
        FileNotFoundError,
        r"weights_only: no tokenizer files",
    ),
    Case(
        "LoRA target matching nothing",
        lora_target_matching_nothing,
        ValueError,
        r"LoRA target 'nonexistent_proj' matches no linear layer",
    ),
    Case("QLoRA without LoRA", qlora_without_lora, ValueError, r"vlm.qlora needs vlm.lora"),
    Case("export_dir not writable", unwritable_export_dir, OSError, r"export_dir .*file/model is not writable"),
    Case("config key typo", config_key_typo, SystemExit, ""),
    Case("abbreviated option", abbreviated_option, SystemExit, ""),
    Case(
        "--ckpt_path last with nothing to resume",
        resume_with_nothing_to_resume,
        ValueError,
        r"--ckpt_path last: no complete checkpoint under .*allow_fresh_start",
    ),
]
CLI_MESSAGES = {  # what the CLI cases print (stderr), first line
    "config key typo": r'error: Parser key "model" \(lightning_modules.sft.SFTModule\): unrecognized arguments: --optim.lrr=1',
    "abbreviated option": r"error: unrecognized arguments: --trainer.max_step 3",
}


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_bad_input(case, tiny_model, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(Path(__file__).resolve().parents[1])
    with pytest.raises(case.error, match=case.pattern):
        case.run(tiny_model, tmp_path)
    if case.name in CLI_MESSAGES:
        err = capsys.readouterr().err
        assert re.match(CLI_MESSAGES[case.name], err), err
        assert len(err.splitlines()) <= 12  # the problem first, not 70 lines of usage


def test_malformed_difficulty_selection_message(tiny_model, tmp_path):
    """A mismatched difficulty file names both files and the fix."""
    from datamodules.difficulty_file import DifficultyRow, write_difficulty

    data = write_color_data(tmp_path / "d", n=8)
    short = tmp_path / "short.jsonl"
    write_difficulty(short, [DifficultyRow(str(i), 4, 8, 0.5) for i in range(6)])
    with pytest.raises(ValueError, match=r"short\.jsonl") as err:
        setup_fit(tiny_model, data, difficulty_file=str(short), selection=Selection("sft_m"))
    assert "missing" in str(err.value) and "scripts/runs.py <experiment>/difficulty" in str(err.value)


def message_table(model: str, root: Path) -> str:
    """Markdown table: each case and the first lines of the message it produces."""
    import contextlib
    import io

    lines = ["| bad input | message |", "|---|---|"]
    for i, case in enumerate(CASES):
        tmp = root / str(i)
        tmp.mkdir(parents=True)
        stderr = io.StringIO()
        try:
            with contextlib.redirect_stderr(stderr):
                case.run(model, tmp)
            message = "(no error)"
        except SystemExit:
            message = stderr.getvalue().strip().splitlines()[0]
        except Exception as err:  # noqa: BLE001 (the table shows whatever it is)
            message = f"{type(err).__name__}: {err}"
        message = (
            " / ".join(line.strip() for line in message.splitlines()[:4]).replace(str(root), "…").replace("|", "\\|")
        )
        lines.append(f"| {case.name} | `{message}` |")
    return "\n".join(lines)


if __name__ == "__main__":  # python -m tests.test_bad_input: print the table of messages
    import tempfile

    from assets.tiny import build_tiny_vlm

    with tempfile.TemporaryDirectory() as folder:
        tiny = str(build_tiny_vlm(Path(folder) / "tiny"))
        print(message_table(tiny, Path(folder) / "cases"))
    sys.exit(0)
