"""Difficulty outputs: nothing stale reused, nothing computed lost (fingerprints, locks, repairs, index-id checks).

Each test states the defect it guards against; all of them failed before fingerprints existed (a rerun with another
model, k or seed printed "resuming: 40 items already done, 0 to go" and kept the old tiers).
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest

from assets.test_data import write_color_data
from callbacks.difficulty_writer import DifficultyWriter
from datamodules.difficulty_file import DifficultyRow, meta_path, read_difficulty, write_difficulty
from datamodules.tiers import Selection
from datamodules.vlm_data import VLMDataModule
from lightning_modules.difficulty import DifficultyEstimator
from lightning_modules.sampling import SamplingConfig
from lightning_modules.vlm import VLMOptions
from tests.helpers import KillAfterPredictBatches, Killed, cpu_trainer


def estimate(model, data, output, k=4, seed=3, overwrite=False, callbacks=(), batch=3):
    sampling = SamplingConfig(k=k, max_new_tokens=4, temperature=1.0, seed=seed)
    module = DifficultyEstimator(model, vlm=VLMOptions(dtype="float32", lora=None), sampling=sampling)
    dm = VLMDataModule(model, predict_file=str(data), eval_batch_size=batch, predict_done_file=str(output))
    writer = DifficultyWriter(str(output), report=False, overwrite=overwrite)
    cpu_trainer(callbacks=[writer, *callbacks]).predict(module, dm, return_predictions=False)
    return read_difficulty(output)


@pytest.fixture()
def done(trained_tiny_model, tmp_path):
    data = write_color_data(tmp_path / "d", n=6, fmt="problem")
    output = tmp_path / "out" / "difficulty.jsonl"
    rows = estimate(trained_tiny_model, data, output)
    return data, output, rows


def test_rerun_with_another_k_or_seed_is_refused_then_overwritten(trained_tiny_model, done):
    data, output, rows = done
    before = output.read_text()
    for change in ({"k": 2}, {"seed": 4}):
        with pytest.raises(ValueError, match=r"(?s)other settings, model or data:\n  - sampling:.*overwrite true"):
            estimate(trained_tiny_model, data, output, **change)
        assert output.read_text() == before  # refused before touching anything
    again = estimate(trained_tiny_model, data, output, k=2, overwrite=True)
    assert {r.k for r in again.values()} == {2} and set(again) == set(rows)
    assert json.loads(meta_path(output).read_text())["sampling"]["k"] == 2


def test_rerun_with_the_same_settings_keeps_the_output(trained_tiny_model, done):
    data, output, rows = done
    before = output.read_text()
    assert estimate(trained_tiny_model, data, output) == rows
    assert output.read_text() == before


def test_a_new_model_in_the_same_folder_is_refused(trained_tiny_model, done, tmp_path):
    """A new cold start exports into the same folder: same path, other weights."""
    data, output, _ = done
    model = tmp_path / "model"
    shutil.copytree(trained_tiny_model, model)
    output2 = tmp_path / "out2" / "difficulty.jsonl"
    estimate(str(model), data, output2)
    weights = model / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:-4] + b"\x00\x00\x00\x00")  # a different checkpoint, same size
    with pytest.raises(ValueError, match="model:"):
        estimate(str(model), data, output2)


def test_overlapping_predict_file_never_shrinks_a_complete_output(trained_tiny_model, done, tmp_path):
    """8 old + 4 new items once replaced a complete 40-row output with 12 rows."""
    data, output, rows = done
    other = write_color_data(tmp_path / "other", n=8, fmt="problem", colors=["red", "blue"])
    with pytest.raises(ValueError, match="items:"):
        estimate(trained_tiny_model, other, output)
    assert read_difficulty(output) == rows


def test_a_line_cut_by_a_kill_is_repaired_and_only_that_item_redone(trained_tiny_model, tmp_path):
    data = write_color_data(tmp_path / "d", n=6, fmt="problem")
    full = estimate(trained_tiny_model, data, tmp_path / "full.jsonl")
    output = tmp_path / "cut.jsonl"
    with pytest.raises(Killed):
        estimate(trained_tiny_model, data, output, callbacks=[KillAfterPredictBatches(1)])
    shard = output.with_name("cut.jsonl.shards") / "rank0.jsonl"
    text = shard.read_text()
    shard.write_text(text + text.splitlines()[0][:25])  # a half-written line, as a kill during a write leaves
    assert estimate(trained_tiny_model, data, output) == full
    assert output.read_text() == (tmp_path / "full.jsonl").read_text()


def test_a_second_writer_on_the_same_output_is_refused(trained_tiny_model, tmp_path):
    fcntl = pytest.importorskip("fcntl")
    data = write_color_data(tmp_path / "d", n=3, fmt="problem")
    output = tmp_path / "difficulty.jsonl"
    with open(f"{output}.lock", "w") as held:
        fcntl.flock(held, fcntl.LOCK_EX | fcntl.LOCK_NB)
        with pytest.raises(ValueError, match="another run is writing"):
            estimate(trained_tiny_model, data, output)
    assert not output.exists()


def test_unwritable_output_fails_before_sampling(trained_tiny_model, tmp_path):
    data = write_color_data(tmp_path / "d", n=3, fmt="problem")
    blocker = tmp_path / "file"
    blocker.write_text("a file where a folder should be")
    with pytest.raises(ValueError, match="not writable"):
        estimate(trained_tiny_model, data, blocker / "difficulty.jsonl")


def test_rows_identify_their_items_so_index_ids_of_other_data_are_refused(tiny_model, tmp_path):
    """The released files have no ids: a difficulty file of another data file with as many rows used to pass."""
    data = write_color_data(tmp_path / "d", n=4)  # answers blue, green, red, yellow
    rows = [DifficultyRow(str(i), 4, 8, 0.5, solution="red", images=(f"{i}.png",)) for i in range(4)]
    path = tmp_path / "other.jsonl"
    write_difficulty(path, rows)
    dm = VLMDataModule(tiny_model, train_file=str(data), difficulty_file=str(path), selection=Selection("sft_m"))
    with pytest.raises(ValueError, match=r"(?s)describes other items.*id '0': answer 'red'.*'blue'"):
        dm.setup("fit")
    # the same items (answer and image names agree, folders may differ) pass
    answers = ["blue", "green", "red", "yellow"]  # write_color_data cycles through the sorted colour names
    write_difficulty(
        path, [DifficultyRow(str(i), 4, 8, 0.5, solution=a, images=(f"{i}.png",)) for i, a in enumerate(answers)]
    )
    VLMDataModule(tiny_model, train_file=str(data), difficulty_file=str(path), selection=Selection("sft_m")).setup(
        "fit"
    )


def test_difficulty_rows_record_their_images(done):
    _, _, rows = done
    assert all(r.images == (f"{r.id}.png",) for r in rows.values())


def test_malformed_difficulty_line_message(tmp_path):
    path = tmp_path / "d.jsonl"
    path.write_text('{"id": "a", "correct": 1, "k": 8, "pass_rate": 0.125, "solution": "unterminated}\n')
    with pytest.raises(ValueError) as err:
        read_difficulty(path)
    assert "d.jsonl:1" in str(err.value) and "at at" not in str(err.value)


def test_done_marker_files(done):
    _, output, _ = done
    assert meta_path(output).exists() and not Path(f"{output}.shards").exists()
    assert not Path(f"{output}.lock").exists()


def test_outputs_get_the_usual_file_mode(done):
    """Outputs were written with mode 0600 (mkstemp's), unreadable for the rest of a team."""
    _, output, _ = done
    umask = os.umask(0)
    os.umask(umask)
    assert output.stat().st_mode & 0o777 == 0o666 & ~umask
