"""Referring expressions for the grounding demo's canvases, each naming exactly one shape.

Four kinds, like RefCOCO's mix of attribute and location expressions:
- `colour_shape`: "the red circle" (no other red circle on the canvas);
- `shape`: "the triangle" (the only triangle);
- `colour`: "the blue shape" (the only blue shape);
- `relation`: "the triangle left of the blue rectangle": only where the shape word alone is ambiguous (RefCOCO's
  annotators add a location to tell same-kind objects apart); the anchor is named by its unique colour and shape.

A relation holds strictly (the target's box lies wholly on that side of the anchor's box) and every other shape of
the target's kind must fail even loosely (its centre is not on that side of the anchor's centre), so no reader could
pick another shape. Canvases keep their boxes `shape_canvas.GAP` px apart, so "wholly on that side" is visible.
"""

from __future__ import annotations

import random
from collections import Counter

from assets.shape_canvas import Placed

KINDS = ("colour_shape", "shape", "colour", "relation")
RELATIONS = ("left of", "right of", "above", "below")


def strictly(relation: str, a: Placed, b: Placed) -> bool:
    """a's box lies wholly `relation` b's box (image coordinates: y grows downwards)."""
    ax1, ay1, ax2, ay2 = a.box
    bx1, by1, bx2, by2 = b.box
    return {"left of": ax2 <= bx1, "right of": ax1 >= bx2, "above": ay2 <= by1, "below": ay1 >= by2}[relation]


def loosely(relation: str, a: Placed, b: Placed) -> bool:
    """a's centre lies `relation` b's centre: what a reader might still accept."""
    (ax, ay), (bx, by) = a.centre, b.centre
    return {"left of": ax < bx, "right of": ax > bx, "above": ay < by, "below": ay > by}[relation]


def relations(placed: list[Placed], target: int) -> list[str]:
    """Every valid relational expression for placed[target] (empty when its shape word alone is unique)."""
    me = placed[target]
    same_kind = [i for i, p in enumerate(placed) if p.cutout.shape == me.cutout.shape]
    if len(same_kind) < 2:
        return []
    pairs = Counter((p.cutout.colour, p.cutout.shape) for p in placed)
    out = []
    for a, anchor in enumerate(placed):
        if a == target or pairs[(anchor.cutout.colour, anchor.cutout.shape)] != 1:
            continue
        for relation in RELATIONS:
            others = [placed[i] for i in same_kind if i not in (target, a)]
            if strictly(relation, me, anchor) and not any(loosely(relation, o, anchor) for o in others):
                out.append(f"the {me.cutout.shape} {relation} the {anchor.cutout.colour} {anchor.cutout.shape}")
    return out


def expressions(placed: list[Placed], target: int) -> dict[str, list[str]]:
    """{kind: the valid expressions of that kind} for placed[target]; kinds with none are left out."""
    me = placed[target].cutout
    colours = Counter(p.cutout.colour for p in placed)
    shapes = Counter(p.cutout.shape for p in placed)
    pairs = Counter((p.cutout.colour, p.cutout.shape) for p in placed)
    found = {
        "colour_shape": [f"the {me.colour} {me.shape}"] if pairs[(me.colour, me.shape)] == 1 else [],
        "shape": [f"the {me.shape}"] if shapes[me.shape] == 1 else [],
        "colour": [f"the {me.colour} shape"] if colours[me.colour] == 1 else [],
        "relation": relations(placed, target),
    }
    return {kind: texts for kind, texts in found.items() if texts}


def refer(placed: list[Placed], rng: random.Random) -> tuple[int, str, str] | None:
    """(target index, kind, expression): a kind drawn uniformly among those some shape of the canvas allows, then a
    target and an expression of that kind; None when no shape can be named uniquely (redraw the canvas)."""
    options = [expressions(placed, i) for i in range(len(placed))]
    kinds = [kind for kind in KINDS if any(kind in found for found in options)]
    if not kinds:
        return None
    kind = rng.choice(kinds)
    target = rng.choice([i for i, found in enumerate(options) if kind in found])
    return target, kind, rng.choice(options[target][kind])
