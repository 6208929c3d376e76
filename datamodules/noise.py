"""Optional label noise: a seeded share of training answers replaced by another valid answer.

Why: on ImageNet much of the paper's hard tier looks like label-name trouble (overskirt, maillot, agaric) rather than
visual difficulty. Injecting known label errors into the demo's training data measures how many of them the hard tier
catches (precision / recall of "hard" for "noisy"), and what filtering them is worth. The same items get the same
noisy answer in every file and stage (SFT file, GRPO / difficulty file), because the choice depends only on the seed
and the item id.
"""

from __future__ import annotations

import hashlib
import random
from dataclasses import dataclass, replace

from datamodules.formats import Sample


@dataclass
class LabelNoise:
    """Replace a seeded share of training answers by another valid answer (default: off)."""

    share: float = 0.0
    """Share of the training items whose answer is replaced (e.g. 0.1)."""
    seed: int = 0
    """Seed of which items and which wrong answers."""
    groups: list[list[str]] | None = None
    """Interchangeable answers (e.g. colours, shapes, yes / no): a noisy answer comes from the true one's group.
    None: any other answer that occurs in the file."""

    def problems(self) -> list[str]:
        return [] if 0.0 <= self.share < 1.0 else [f"data.label_noise.share must be in [0, 1), got {self.share}"]


def _rank(seed: int, item_id: str) -> str:
    return hashlib.sha256(f"{seed}:{item_id}".encode()).hexdigest()


def noisy_answers(samples: list[Sample], noise: LabelNoise) -> dict[str, tuple[str, str]]:
    """{item id: (true answer, noisy answer)} for round(share x items) items, chosen by a seeded hash of the id."""
    if noise.share <= 0:
        return {}
    answers = sorted({s.solution for s in samples if s.solution})
    group_of = {a.lower(): [g for g in group if g.lower() != a.lower()] for group in noise.groups or [] for a in group}
    chosen = sorted((s for s in samples if s.solution), key=lambda s: _rank(noise.seed, s.id))
    out = {}
    for sample in chosen[: round(noise.share * len(samples))]:
        truth = sample.solution
        pool = group_of.get(truth.lower()) if noise.groups else [a for a in answers if a != truth]
        if pool:
            out[sample.id] = (truth, random.Random(_rank(noise.seed + 1, sample.id)).choice(sorted(pool)))
    return out


def with_answers(samples: list[Sample], answers: dict[str, tuple[str, str]]) -> list[Sample]:
    """The samples with their answers replaced (the solution and the last assistant turn)."""
    out = []
    for sample in samples:
        if sample.id not in answers:
            out.append(sample)
            continue
        new = answers[sample.id][1]
        messages = [dict(m) for m in sample.messages]
        last = max((i for i, m in enumerate(messages) if m["role"] == "assistant"), default=None)
        if last is not None:
            messages[last]["content"] = new
        out.append(replace(sample, messages=messages, solution=new))
    return out
