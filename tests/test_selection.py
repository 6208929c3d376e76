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


def test_prompt_only_training_data_keeps_the_selection(tiny_model, tmp_path):
    """GRPO-M: the medium tier of the difficulty file selects GRPO's prompts; batches carry each prompt's tier."""
    data = write_color_data(tmp_path / "d", n=8, fmt="problem")
    dm = VLMDataModule(
        tiny_model,
        train_file=str(data),
        difficulty_file=str(_difficulty(tmp_path / "diff.jsonl")),
        selection=Selection(tiers=["medium"]),
        prompt_only=True,
        batch_size=4,
        shuffle=False,
    )
    dm.setup("fit")
    batch = next(iter(dm.train_dataloader()))
    assert [s.id for s in dm.train_samples] == batch["ids"] == ["1", "4", "5", "7"]
    assert batch["tiers"] == ["medium"] * 4 and bool((batch["labels"] == -100).all())  # prompts, no answers


def test_variance_weights_are_p_times_one_minus_p(tmp_path):
    from datamodules.difficulty_file import read_difficulty
    from datamodules.tiers import variance_weights

    difficulty = read_difficulty(_difficulty(tmp_path / "diff.jsonl"))
    ids = [str(i) for i in range(8)]
    expected = [c / 8 * (1 - c / 8) for c in CORRECT]  # 0 for the easy (8/8) and hard (0/8) items
    assert variance_weights(ids, difficulty) == pytest.approx(expected)
    assert variance_weights(ids, difficulty, uniform_mix=0.1) == pytest.approx([w + 0.1 for w in expected])


def test_variance_weighted_selection_never_draws_items_without_spread(tmp_path):
    from datamodules.difficulty_file import read_difficulty
    from datamodules.tiers import apply_selection

    difficulty = read_difficulty(_difficulty(tmp_path / "diff.jsonl"))
    ids = [str(i) for i in range(8)]

    def draw(size: int, seed: int, mix: float = 0.0) -> list[str]:
        return apply_selection(ids, difficulty, Selection(weighting="variance", uniform_mix=mix, size=size, seed=seed))

    for seed in range(30):  # p in {0, 1} (items 0, 2, 3, 6) has weight 0: never drawn
        assert len(draw(3, seed)) == 3 and set(draw(3, seed)) <= {"1", "4", "5", "7"}
    assert draw(3, 5) == draw(3, 5) and len({tuple(draw(2, s)) for s in range(10)}) > 1  # seeded
    first = [draw(1, s)[0] for s in range(400)]  # p = 3/8 or 5/8 (weight 0.234) beats 1/8 or 7/8 (0.109)
    assert first.count("1") + first.count("7") > 1.5 * (first.count("4") + first.count("5"))
    assert set().union(*(draw(4, s, mix=1.0) for s in range(30))) == set(ids)  # a uniform mix reaches every item
    with pytest.raises(ValueError, match="4 items with a positive weight"):
        draw(5, 0)
    assert Selection(weighting="variance").problems() == [
        "selection.weighting 'variance' draws a subset: give selection.size"
    ]
    assert len(Selection(weighting="mean", uniform_mix=-1).problems()) == 2
    assert Selection(weighting="variance", size=3).describe() == "sft, variance-weighted (mix 0.0), 3 items"


def test_export_command_line(tmp_path, capsys):
    """The command passes its options by name (the seed once landed in `size`)."""
    from datamodules.export_tiers import main

    data = write_color_data(tmp_path / "d", n=8, fmt="problem")
    diff, out = _difficulty(tmp_path / "diff.jsonl"), tmp_path / "out.json"
    main(["--train-file", str(data), "--difficulty", str(diff), "--out", str(out), "--selection", "sft_m"])
    assert len(json.loads(out.read_text())) == 4 and "wrote 4 rows" in capsys.readouterr().out
