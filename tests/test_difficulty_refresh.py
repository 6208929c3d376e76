"""Re-tiering during SFT (DifficultyRefresh + LiveSelection): the live sampler is the resumable order until the
selection changes and then changes only positions not yet handed out; a refresh on a tiny model re-selects from
freshly measured pass rates, writes them in the difficulty-file format, logs the tier shares, is seeded, and
resumes exactly after a kill."""

from __future__ import annotations

import json
from dataclasses import asdict

import lightning as L
import pytest
import torch
from lightning.pytorch.loggers import CSVLogger

from assets.test_data import write_color_data
from callbacks.checkpoint import AdapterCheckpoint
from callbacks.difficulty_refresh import DifficultyRefresh, refresh_seed
from datamodules.difficulty_file import DifficultyRow, check_items, check_matches, read_difficulty, write_difficulty
from datamodules.live_selection import LiveSampler, LiveSelection
from datamodules.sampler import ResumableSampler
from datamodules.tiers import Selection, apply_selection
from datamodules.vlm_data import VLMDataModule
from lightning_modules.sampling import SamplingConfig
from lightning_modules.sft import SFTModule
from lightning_modules.training import OptimConfig
from lightning_modules.vlm import LoraOptions, VLMOptions
from tests.helpers import KillAtStep, Killed, cpu_trainer

K = 4
N = 12
SAMPLING = SamplingConfig(k=K, max_new_tokens=4, temperature=1.0, seed=5)


def even_length(answer: str, solution: str) -> bool:
    """A test scorer with a spread of pass rates on a random tiny model (its answers are noise)."""
    return len(answer) % 2 == 0


# ------------------------------------------------------------------------------------------- the live sampler
def _drain(live: LiveSelection, epoch: int, rank: int = 0, world: int = 1, start: int = 0) -> list[int]:
    sampler = LiveSampler(live, rank, world)
    sampler.set_epoch(epoch)
    sampler.start = start
    return list(sampler)


@pytest.mark.parametrize("world", [1, 2])
def test_without_a_change_the_live_order_is_the_resumable_one(world):
    selected = [1, 4, 5, 8, 9, 11, 12]  # pool positions of a 7-item selection out of 15
    live = LiveSelection([str(i) for i in range(15)], selected, seed=7)
    for epoch in range(3):
        for rank in range(world):
            static = ResumableSampler(len(selected), seed=7, rank=rank, world_size=world)
            static.set_epoch(epoch)
            assert _drain(live, epoch, rank, world) == [selected[i] for i in static]


def test_a_new_selection_applies_after_the_positions_handed_out_and_resumes():
    live = LiveSelection([str(i) for i in range(20)], list(range(10)), seed=3)
    sampler = LiveSampler(live)
    sampler.set_epoch(0)
    iterator = iter(sampler)
    first = [next(iterator) for _ in range(4)]
    assert live.cursor == (0, 4)
    with pytest.raises(ValueError, match="already handed out"):
        live.apply([15], tag=1, epoch=0, position=2, world_size=1)
    assert live.apply(list(range(10, 20)), tag=1, epoch=0, position=4, world_size=1) == (0, 4)
    state = json.loads(json.dumps(live.state_dict()))  # what a checkpoint keeps
    rest = list(iterator)
    assert first == _drain(LiveSelection([str(i) for i in range(20)], list(range(10)), seed=3), 0)[:4]
    assert len(rest) == 6 and set(rest) <= set(range(10, 20)) and len(set(rest)) == 6  # new items, no repeats
    assert set(_drain(live, 1)) == set(range(10, 20))  # later epochs: the new selection, same epoch length
    resumed = LiveSelection([str(i) for i in range(20)], list(range(10)), seed=3)
    resumed.load_state_dict(state)
    assert _drain(resumed, 0, start=2) == first[2:] + rest  # a resume at position 2 replays the same order
    assert live.apply([0, 1], tag=2, epoch=1, position=10, world_size=1) == (2, 0)  # past the end: next epoch


@pytest.mark.parametrize("kind", ["static", "live"])
def test_a_resume_after_an_epochs_last_batch_serves_the_next_epoch_whole(kind):
    """A checkpoint taken at an epoch's last batch resumes in the next epoch (Lightning calls `set_epoch(e + 1)`
    after the datamodule's `resume(e, start)`): the skip belongs to epoch e and must not cut epoch e + 1."""
    make = {
        "static": lambda: ResumableSampler(6, seed=1),
        "live": lambda: LiveSampler(LiveSelection([str(i) for i in range(6)], list(range(6)), seed=1)),
    }[kind]
    whole = make()
    whole.set_epoch(1)
    sampler = make()
    sampler.resume(0, 6)
    sampler.set_epoch(1)
    assert list(sampler) == list(whole) and len(list(whole)) == 6
    sampler.resume(1, 4)  # mid-epoch: the same epoch continues after its first 4 positions
    sampler.set_epoch(1)
    assert list(sampler) == list(whole)[4:]


def test_ranks_apply_the_same_segment_and_stay_disjoint():
    ranks = [LiveSelection([str(i) for i in range(16)], list(range(8)), seed=0) for _ in range(2)]
    for live in ranks:
        live.apply(list(range(8, 16)), tag=1, epoch=0, position=2, world_size=2)
    served = [_drain(live, 0, rank, 2) for rank, live in enumerate(ranks)]
    after = served[0][2:] + served[1][2:]
    assert sorted(after) == sorted(set(after)) and set(after) <= set(range(8, 16))  # 4 positions x 2 ranks, disjoint


# ------------------------------------------------------------------------------------------ refreshes in a fit
class BatchIds(L.Callback):
    """Ids of every training batch, by global step."""

    def __init__(self) -> None:
        self.ids: dict[int, list[str]] = {}

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        self.ids[trainer.global_step] = list(batch["ids"])


@pytest.fixture(scope="module")
def pool(tmp_path_factory):
    """12 colour items and a difficulty file (k 4) whose medium tier is items 0-5 (read only)."""
    tmp_path = tmp_path_factory.mktemp("pool")
    data = write_color_data(tmp_path / "data", n=N)
    rows = [DifficultyRow(str(i), 2 if i < 6 else (K if i % 2 else 0), K, 0.0) for i in range(N)]
    write_difficulty(tmp_path / "difficulty.jsonl", [DifficultyRow(r.id, r.correct, K, r.correct / K) for r in rows])
    meta = {"sampling": asdict(SAMPLING), "scorer": "exact"}  # as the difficulty stage records its settings
    (tmp_path / "difficulty.jsonl.meta.json").write_text(json.dumps(meta))
    return data, tmp_path / "difficulty.jsonl"


def _fit(model_path, pool, root, steps=4, callbacks=(), ckpt_path=None, refresh_size=None, **kwargs):
    L.seed_everything(0)
    data, difficulty = pool
    vlm = VLMOptions(dtype="float32", lora=LoraOptions(r=4, alpha=8, dropout=0.1))
    module = SFTModule(model_path, vlm=vlm, optim=OptimConfig(lr=5e-3, warmup_ratio=0.0))
    dm = VLMDataModule(
        model_path, train_file=str(data), difficulty_file=str(difficulty), selection=Selection("sft_m"), batch_size=2
    )
    refresh = DifficultyRefresh(every_n_steps=2, refresh_size=refresh_size)  # sampling and scorer: the file's
    refresh.score = even_length
    ids = BatchIds()
    trainer = cpu_trainer(max_steps=steps, default_root_dir=root, callbacks=[refresh, ids, *callbacks], **kwargs)
    trainer.fit(module, dm, ckpt_path=ckpt_path)
    return refresh, ids.ids, dm


def _checkpointed(model_path, pool, root, callbacks=(), ckpt_path=None):
    """6 steps (refreshes at 2 and 4), a checkpoint every 2 steps, logs in `root/logs/sft/version_0`."""
    ckpt = AdapterCheckpoint(dirpath=root / "ckpt", every_n_train_steps=2, save_last=True, save_top_k=-1)
    logger = CSVLogger(root / "logs", name="sft", version=0)
    callbacks = [ckpt, *callbacks]
    return _fit(model_path, pool, root, 6, callbacks, ckpt_path, enable_checkpointing=True, logger=logger)


@pytest.fixture(scope="module")
def reference(tiny_model, pool, tmp_path_factory):
    """One uninterrupted run, shared by the tests that read it."""
    root = tmp_path_factory.mktemp("reference")
    return (*_checkpointed(tiny_model, pool, root), root)


def test_refresh_reselects_from_measured_pass_rates(reference, pool):
    refresh, batches, dm, root = reference
    assert refresh.done == 2  # at steps 2 and 4; not at 6, where the fit ends
    assert refresh.sampling == SAMPLING and refresh.scorer == "exact" and refresh.seed == 5  # from the .meta.json
    ids = [str(i) for i in range(N)]
    out = root / "logs/sft/version_0/difficulty_refresh"
    first, second = read_difficulty(out / "refresh_1.jsonl"), read_difficulty(out / "refresh_2.jsonl")
    for refreshed in (first, second):  # the difficulty-file format, for the whole pool, matching the SFT file
        check_matches(ids, refreshed, "train", "refresh", k=K)
        check_items({s.id: (s.solution, (f"{s.id}.png",)) for s in dm.pool_samples}, refreshed, "train", "refresh")
    original = [row.correct for row in read_difficulty(pool[1]).values()]
    assert list(first) == ids and [row.correct for row in first.values()] != original  # re-measured, not copied
    summary = json.loads((out / "refresh_2.json").read_text())
    assert summary["measured"] == N and summary["seed"] == refresh_seed(5, 2) and summary["step"] == 4
    new = apply_selection(ids, second, Selection("sft_m"))  # the run's selection on the fresh pass rates
    assert [refresh.live.ids[i] for i in refresh.live.selected] == new != ids[:6]  # not the file's medium tier
    applies = summary["applies_from"]  # 6 items per epoch, batch 2: 3 steps per epoch
    start = 3 * applies["epoch"] + applies["position"] // 2  # the first step served from the new selection
    assert 4 <= start < 6
    assert all(set(batches[step]) <= set(new) for step in range(start, 6))
    assert set(batches[0]) <= {str(i) for i in range(6)}  # before any refresh: the file's medium tier
    logged = (root / "logs/sft/version_0/metrics.csv").read_text()
    for name in ("refresh/easy", "refresh/medium", "refresh/hard", "refresh/selected", "refresh/seconds"):
        assert name in logged
    shares = summary["metrics"]
    assert shares["refresh/easy"] + shares["refresh/medium"] + shares["refresh/hard"] == pytest.approx(1.0)
    assert shares["refresh/selected"] == pytest.approx(len(new) / N)


def test_refreshes_are_seeded(tiny_model, pool, tmp_path):
    """The same seed gives the same refreshed pass rates; each refresh n draws its own subset from (seed, n), and
    the items it leaves out keep their pass rate."""
    a, _, _ = _fit(tiny_model, pool, tmp_path / "a", steps=3, refresh_size=8)
    _fit(tiny_model, pool, tmp_path / "b", steps=3, refresh_size=8)
    files = [(tmp_path / name / "difficulty_refresh/refresh_1.jsonl").read_text() for name in "ab"]
    assert files[0] == files[1] and a.last_summary["measured"] == 8
    assert a.pool_subset(1) != a.pool_subset(2) and len(a.pool_subset(2)) == 8
    original, refreshed = read_difficulty(pool[1]), read_difficulty(tmp_path / "a/difficulty_refresh/refresh_1.jsonl")
    assert all(refreshed[str(i)].correct == original[str(i)].correct for i in range(N) if i not in a.pool_subset(1))
    assert refresh_seed(5, 1) != refresh_seed(6, 1) != refresh_seed(5, 2)


def test_resume_after_a_kill_continues_the_refreshes_exactly(tiny_model, pool, reference, tmp_path):
    with pytest.raises(Killed):  # mid-epoch; refresh 1 ran before the step-2 checkpoint
        _checkpointed(tiny_model, pool, tmp_path, callbacks=[KillAtStep(2)])
    resumed, batches, _ = _checkpointed(tiny_model, pool, tmp_path, ckpt_path="last")
    original, ref_batches, _, root = reference
    assert resumed.done == original.done == 2 and min(batches) == 2  # restored, then refresh 2 at step 4
    assert batches == {step: ids for step, ids in ref_batches.items() if step >= 2}
    for n in (1, 2):
        name = f"logs/sft/version_0/difficulty_refresh/refresh_{n}.jsonl"
        assert (tmp_path / name).read_text() == (root / name).read_text()
    assert resumed.rows == original.rows and resumed.live.segments == original.live.segments
    state = torch.load(tmp_path / "ckpt/last.ckpt", weights_only=True)["callbacks"]["DifficultyRefresh"]
    assert state["done"] == 2 and len(state["rows"]) == N


class DumpState(L.Callback):
    """What each DDP rank ended with (spawned processes return nothing): its refresh state and its batches."""

    def __init__(self, folder, refresh: DifficultyRefresh, batches: BatchIds) -> None:
        self.folder, self.refresh, self.batches = folder, refresh, batches

    def on_train_end(self, trainer, pl_module) -> None:
        state = {
            "refresh": self.refresh.state_dict(),
            "batches": self.batches.ids,
            "summary": self.refresh.last_summary,
        }
        (self.folder / f"rank{trainer.global_rank}.json").write_text(json.dumps(state))


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_ddp_ranks_share_one_refresh(tiny_model, pool, tmp_path):
    """2 gloo processes: each estimates half the pool, both apply the same selection at the same position and then
    draw disjoint items from it; rank 0 writes the one refreshed file, over every item."""
    data, difficulty = pool
    module = SFTModule(tiny_model, vlm=VLMOptions(dtype="float32", lora=LoraOptions(r=4, alpha=8)))
    dm = VLMDataModule(
        tiny_model, train_file=str(data), difficulty_file=str(difficulty), selection=Selection("sft_m"), batch_size=1
    )
    refresh = DifficultyRefresh(every_n_steps=2)
    refresh.score, batches = even_length, BatchIds()
    callbacks = [refresh, batches, DumpState(tmp_path, refresh, batches)]
    trainer = cpu_trainer(devices=2, strategy="ddp_spawn", max_steps=5, default_root_dir=tmp_path, callbacks=callbacks)
    trainer.fit(module, dm)
    ranks = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in range(2)]
    for rank in ranks:  # wall times are each rank's own
        del rank["refresh"]["seconds"], rank["summary"]["metrics"]["refresh/seconds"]
    assert ranks[0]["refresh"] == ranks[1]["refresh"] and ranks[0]["summary"] == ranks[1]["summary"]
    summary = ranks[0]["summary"]
    refreshed = read_difficulty(tmp_path / f"difficulty_refresh/refresh_{summary['refresh']}.jsonl")
    assert summary["measured"] == N and len(refreshed) == N
    new = set(apply_selection([str(i) for i in range(N)], refreshed, Selection("sft_m")))
    applies = summary["applies_from"]  # 6 items per epoch over 2 ranks, batch 1: 3 steps per epoch
    first = 3 * applies["epoch"] + applies["position"]
    after = [[i for step, ids in r["batches"].items() if int(step) >= first for i in ids] for r in ranks]
    assert set(after[0]) | set(after[1]) <= new and not set(after[0]) & set(after[1])
