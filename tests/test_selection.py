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


def test_equal_size_subsets_are_seeded(tmp_path):
    """Table 1 of the paper trains on equal-size easy / medium / hard subsets: `size` draws a seeded subset."""
    from datamodules.difficulty_file import read_difficulty
    from datamodules.tiers import apply_selection

    difficulty = read_difficulty(_difficulty(tmp_path / "diff.jsonl"))
    ids = [str(i) for i in range(8)]
    medium = apply_selection(ids, difficulty, Selection(tiers=["medium"], size=2, seed=0))
    assert len(medium) == 2 and set(medium) <= {"1", "4", "5", "7"}
    assert medium == apply_selection(ids, difficulty, Selection(tiers=["medium"], size=2, seed=0))
    draws = {tuple(apply_selection(ids, difficulty, Selection(tiers=["medium"], size=2, seed=s))) for s in range(6)}
    assert len(draws) > 1  # another seed, another subset
    with pytest.raises(ValueError, match=r"selection.size 3 is larger than the 2 items of tiers \['easy'\]"):
        apply_selection(ids, difficulty, Selection(tiers=["easy"], size=3))
    assert Selection(size=0).problems() == ["selection.size must be >= 1 or null, got 0"]
