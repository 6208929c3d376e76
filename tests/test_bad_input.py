"""Each bad input gets a clear error naming the file/record and the fix, before training starts."""

from __future__ import annotations

import json
import shutil

import pytest

from assets.test_data import write_color_data
from datamodules.formats import read_samples
from datamodules.vlm_data import VLMDataModule
from lightning_modules.vlm import LoraOptions, QuantOptions, VLMOptions, build_vlm


def _setup(model, path, **kwargs):
    VLMDataModule(model, train_file=str(path), **kwargs).setup("fit")


def test_missing_image_names_file_and_record(tiny_model, color_data):
    (color_data.parent / "images" / "3.png").unlink()
    with pytest.raises(FileNotFoundError, match=r"messages\.json record 3: image not found: .*3\.png.*image_root"):
        _setup(tiny_model, color_data.parent / "messages.json")


def test_unreadable_image(tiny_model, color_data):
    (color_data.parent / "images" / "2.png").write_text("not a png")
    with pytest.raises(ValueError, match=r"record 2: unreadable image"):
        _setup(tiny_model, color_data)


def test_malformed_json_and_jsonl(tmp_path):
    bad = tmp_path / "bad.json"
    bad.write_text('[{"problem": "a", "solution": "b", "image": "x.png"},\n {"problem": ]')
    with pytest.raises(ValueError, match=r"bad\.json: malformed JSON at line 2"):
        read_samples(bad)
    lines = tmp_path / "bad.jsonl"
    lines.write_text('{"problem": "a", "solution": "b", "image": "x.png"}\n{oops}\n')
    with pytest.raises(ValueError, match=r"bad\.jsonl: malformed JSONL record 1 \(line 2\)"):
        read_samples(lines)
    unknown = tmp_path / "unknown.json"
    unknown.write_text(json.dumps([{"question": "a"}]))
    with pytest.raises(ValueError, match=r"unknown\.json record 0: unknown format"):
        read_samples(unknown)


def test_image_tokens_alone_exceed_max_length(tiny_model, tmp_path):
    data = write_color_data(tmp_path / "big", n=2, size=448)  # 448x448 -> 16x16 = 256 image tokens
    with pytest.raises(ValueError, match=r"record 0: its images alone take 256 tokens, max_length is 128"):
        _setup(tiny_model, data, max_length=128)


def test_text_overlength_is_reported_never_silent(tiny_model, tmp_path):
    data = write_color_data(tmp_path / "d", n=4)
    with pytest.raises(ValueError, match=r"4 rows exceed max_length 30.*overlength"):
        _setup(tiny_model, data, max_length=30)
    dm = VLMDataModule(tiny_model, train_file=str(data), max_length=30, overlength="truncate")
    dm.setup("fit")
    assert len(dm.report["overlength"]["rows"]) == 4 and len(dm.train_samples) == 4


def test_empty_dataset(tmp_path, tiny_model):
    empty = tmp_path / "empty.json"
    empty.write_text("[]")
    with pytest.raises(ValueError, match=r"empty\.json: the dataset is empty"):
        _setup(tiny_model, empty)


def test_model_dir_without_processor_files(tiny_model, tmp_path):
    broken = tmp_path / "weights_only"
    broken.mkdir()
    shutil.copy(f"{tiny_model}/config.json", broken)
    shutil.copy(f"{tiny_model}/model.safetensors", broken)
    with pytest.raises(FileNotFoundError, match=r"weights_only: no tokenizer files"):
        build_vlm(str(broken), VLMOptions(dtype="float32"))


def test_lora_target_matching_nothing(tiny_model):
    with pytest.raises(ValueError, match=r"LoRA target 'nonexistent_proj' matches no linear layer"):
        build_vlm(tiny_model, VLMOptions(dtype="float32", lora=LoraOptions(target="nonexistent_proj")))


def test_qlora_without_bitsandbytes(tiny_model, monkeypatch):
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "bitsandbytes" else real(name))
    with pytest.raises(RuntimeError, match=r"QLoRA requested but bitsandbytes is not installed"):
        build_vlm(tiny_model, VLMOptions(dtype="float32", qlora=QuantOptions()))
    with pytest.raises(ValueError, match=r"qlora needs lora"):
        build_vlm(tiny_model, VLMOptions(dtype="float32", lora=None, qlora=QuantOptions()))


def test_unknown_config_key(tiny_model, capsys):
    from scripts.runs import command
    from train import main

    args = command("demo/cold_start")[1:]  # without the subcommand: run=False parses one schema
    with pytest.raises(SystemExit):
        main([*args, "--model.init_args.learning_rat", "1"], run=False)
    assert "learning_rat" in capsys.readouterr().err
