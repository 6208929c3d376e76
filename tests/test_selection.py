"""The DataModule's difficulty selection: exact tiers, refusal of a mismatched file, ms-swift export."""

from __future__ import annotations

import json

import pytest

from assets.test_data import write_color_data
from datamodules.difficulty_file import DifficultyRow, write_difficulty
from datamodules.export_tiers import export
from datamodules.tiers import Selection
from datamodules.vlm_data import VLMDataModule

CORRECT = [8, 3, 0, 8, 1, 7, 0, 5]  # easy, medium, hard, easy, medium, medium, hard, medium


def _difficulty(path, n=8, k=8):
    rows = [DifficultyRow(str(i), CORRECT[i], k, CORRECT[i] / k) for i in range(n)]
    write_difficulty(path, rows)
    return path


@pytest.mark.parametrize(
    "selection,expected",
    [
        ("sft_m", ["1", "4", "5", "7"]),
        ("sft_em", ["0", "1", "3", "4", "5", "7"]),
        ("sft_h", ["2", "6"]),
        ("sft", [str(i) for i in range(8)]),
    ],
)
def test_selection_presets(tiny_model, tmp_path, selection, expected):
    data = write_color_data(tmp_path / "d", n=8)
    dm = VLMDataModule(
        tiny_model,
        train_file=str(data),
        difficulty_file=str(_difficulty(tmp_path / "diff.jsonl")),
        selection=Selection(preset=selection),
    )
    dm.setup("fit")
    assert [s.id for s in dm.train_samples] == expected


def test_mismatched_difficulty_file_is_refused(tiny_model, tmp_path):
    data = write_color_data(tmp_path / "d", n=8)
    short = _difficulty(tmp_path / "short.jsonl", n=6)
    with pytest.raises(ValueError, match=r"short\.jsonl") as err:
        VLMDataModule(tiny_model, train_file=str(data), difficulty_file=str(short), selection=Selection("sft_m")).setup(
            "fit"
        )
    assert "missing" in str(err.value) and "scripts/runs.py <experiment>/difficulty" in str(err.value)
    with pytest.raises(ValueError, match="needs data.difficulty_file"):
        VLMDataModule(tiny_model, train_file=str(data), selection=Selection("sft_m")).setup("fit")


def test_export_selection_to_ms_swift_json(tmp_path):
    data = write_color_data(tmp_path / "d", n=8, fmt="problem")
    n = export(str(data), str(_difficulty(tmp_path / "diff.jsonl")), str(tmp_path / "out.json"), Selection("sft_m"))
    rows = json.loads((tmp_path / "out.json").read_text())
    assert n == 4 == len(rows)
    assert rows[0]["messages"][0] == {
        "role": "user",
        "content": "<image>What color is the image? Output the answer using one word.",
    }
    assert rows[0]["messages"][1]["role"] == "assistant" and rows[0]["images"] == ["images/1.png"]
