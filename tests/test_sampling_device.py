"""Sampling stays on the device: no vocabulary-sized tensor is copied to the host while decoding, one small host sync
per step (GPU-scale issue; per-item draws independent of the batch: tests/test_difficulty.py)."""

from __future__ import annotations

import sys

import pytest
import torch

from assets.test_data import write_color_data
from datamodules.collate import model_inputs
from lightning_modules.sampling import SamplingConfig, banned_token_ids, item_generator, sample
from lightning_modules.vlm import VLMOptions, build_vlm
from tests.helpers import prompt_batch

HOST_METHODS = ("cpu", "tolist", "item", "numpy", "__bool__", "__int__", "__float__")


class HostCalls:
    """Records every Tensor -> host conversion (method, shape, whether our sampler made it) while active."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, tuple[int, ...], bool]] = []
        self._saved: dict[str, object] = {}

    def __enter__(self) -> HostCalls:
        for name in HOST_METHODS:
            original = getattr(torch.Tensor, name)
            self._saved[name] = original

            def wrapper(tensor, *args, _name=name, _original=original, **kwargs):
                ours = sys._getframe(1).f_code.co_filename.endswith("sampling.py")
                self.calls.append((_name, tuple(tensor.shape), ours))
                return _original(tensor, *args, **kwargs)

            setattr(torch.Tensor, name, wrapper)
        return self

    def __exit__(self, *exc) -> None:
        for name, original in self._saved.items():
            setattr(torch.Tensor, name, original)


@pytest.fixture(scope="module")
def setup(trained_tiny_model, tmp_path_factory):
    data = write_color_data(tmp_path_factory.mktemp("dev") / "d", n=3, fmt="problem")
    batch = prompt_batch(trained_tiny_model, data, n=3)
    model, processor = build_vlm(trained_tiny_model, VLMOptions(dtype="float32", lora=None))
    model.eval()
    return model, processor, batch


def _run(setup, steps: int) -> list[tuple[str, tuple[int, ...], bool]]:
    model, processor, batch = setup
    cfg = SamplingConfig(k=4, max_new_tokens=steps, temperature=1.0)
    generators = [item_generator(0, i) for i in batch["ids"]]
    with HostCalls() as calls:  # no stop tokens: every row decodes every step
        sample(model, model_inputs(batch), cfg, [], banned_token_ids(processor), generators)
    return calls.calls


def test_no_vocabulary_sized_copy_and_one_sync_per_step(setup):
    model = setup[0]
    vocab = model.config.get_text_config().vocab_size
    short, long = _run(setup, 2), _run(setup, 10)
    assert not [c for c in short + long if any(dim >= vocab for dim in c[1])]  # nothing vocabulary-sized
    ours_short, ours_long = [c for c in short if c[2]], [c for c in long if c[2]]
    assert len(ours_long) - len(ours_short) == 8  # 8 more decode steps, one host sync each (which rows stopped)
    assert ("tolist", (12, 10), True) in ours_long  # the tokens come back once, at the end


def test_repetition_penalty_equals_hugging_face():
    from transformers import RepetitionPenaltyLogitsProcessor

    from lightning_modules.sampling import repetition_penalty

    torch.manual_seed(0)
    logits, history = torch.randn(5, 50), torch.randint(0, 50, (5, 12))
    expected = RepetitionPenaltyLogitsProcessor(1.1)(history, logits.clone())
    torch.testing.assert_close(repetition_penalty(logits, history, 1.1), expected, rtol=0, atol=0)


def test_greedy_with_repetition_penalty_equals_generate(setup):
    """Early-finishing rows leave the batch; every answer still equals plain `generate` with the same penalty."""
    from lightning_modules.sampling import stop_token_ids

    model, processor, batch = setup
    inputs = model_inputs(batch)
    stops = stop_token_ids(processor, model)
    cfg = SamplingConfig(k=2, max_new_tokens=12, do_sample=False, repetition_penalty=1.3)
    ours = sample(model, inputs, cfg, stops, banned_token_ids(processor))
    reference = model.generate(**inputs, max_new_tokens=12, do_sample=False, repetition_penalty=1.3)
    plain = sample(model, inputs, SamplingConfig(k=1, max_new_tokens=12, do_sample=False), stops)
    assert ours != [[p[0]] * 2 for p in plain]  # the penalty changes some answer: the comparison is not vacuous
    for b in range(len(batch["ids"])):
        ref = reference[b, inputs["input_ids"].shape[1] :].tolist()
        cut = next((i + 1 for i, t in enumerate(ref) if t in stops), len(ref))
        assert ours[b] == [ref[:cut]] * 2
