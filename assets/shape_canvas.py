"""Canvases of easy-vqa shapes for the grounding demo: each shape cut out of its easy-vqa image with a colour-distance
mask, scaled, and pasted at a random position that keeps it apart from the others; gold boxes come from the pasted
masks, so a box is exactly the extent of the pixels it names.

Why cut out instead of drawing shapes: the silhouettes (triangle orientations, rectangle aspect ratios) and the
colour / shape labels are easy-vqa's own, the ones the demo model's vision tower was pre-aligned on. An easy-vqa image
is one shape on a plain light background (its most common colour), so every pixel more than 60 (L1, RGB) away from
the background is shape (`demo_data._shape_mask`, shared with the OOD renditions). The mask is scaled up (bilinear,
threshold 0.5) and filled with the shape's most common colour: the source shapes are 9-34 px with anti-aliased edges,
and scaled-up blended edge pixels would be neither the background nor a named colour.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

import numpy as np
from PIL import Image

from assets.demo_data import _colour_counts, _shape_mask

CANVAS = 140  # px, a multiple of 28: the demo processor keeps it (5 x 5 = 25 merged image tokens), no box rescale
SHAPE_SIDE = (32, 52)  # longest side of a pasted shape, px: one to two 28-px image tokens
MIN_SOURCE_SIDE = 14  # px: smaller easy-vqa shapes (9-13 px) turn into blocks when scaled 3-4x
GAP = 6  # px at least between the boxes of two shapes: relations and box extents stay unambiguous
BACKGROUND = (225, 255)  # each channel of a canvas's plain background, like easy-vqa's light backgrounds


@dataclass(frozen=True)
class Cutout:
    """One easy-vqa shape: its labels, fill colour and mask cropped to the shape's extent."""

    image_id: int
    colour: str
    shape: str
    fill: tuple[int, int, int]
    mask: np.ndarray  # bool [h, w]


@dataclass(frozen=True)
class Placed:
    """A shape on a canvas: its cut-out, its scaled mask and its box (x1, y1, x2, y2; x2 / y2 exclusive, pixels)."""

    cutout: Cutout
    mask: np.ndarray  # bool [y2 - y1, x2 - x1], tight
    box: tuple[int, int, int, int]

    @property
    def centre(self) -> tuple[float, float]:
        return (self.box[0] + self.box[2]) / 2, (self.box[1] + self.box[3]) / 2


def tight(mask: np.ndarray) -> np.ndarray:
    """The mask cropped to the rows and columns holding shape pixels."""
    ys, xs = np.nonzero(mask)
    return mask[ys.min() : ys.max() + 1, xs.min() : xs.max() + 1]


def cut_out(image: Image.Image, image_id: int, colour: str, shape: str) -> Cutout | None:
    """The shape of one easy-vqa image, or None when it is smaller than MIN_SOURCE_SIDE."""
    array = np.asarray(image.convert("RGB"))
    mask, _ = _shape_mask(array)
    if not mask.any():
        return None
    cropped = tight(mask)
    if max(cropped.shape) < MIN_SOURCE_SIDE:
        return None
    colours, counts = _colour_counts(array[mask])
    fill = tuple(int(c) for c in colours[counts.argmax()])
    return Cutout(image_id, colour, shape, fill, cropped)


def scaled(mask: np.ndarray, side: int) -> np.ndarray:
    """The mask scaled so that its longer side is `side` px (bilinear, threshold 0.5), cropped tight again."""
    h, w = mask.shape
    factor = side / max(h, w)
    size = (max(2, round(w * factor)), max(2, round(h * factor)))
    soft = Image.fromarray(mask.astype(np.uint8) * 255).resize(size, Image.BILINEAR)
    return tight(np.asarray(soft) >= 128)


def _apart(box: tuple[int, int, int, int], others: list[Placed]) -> bool:
    """No other box within GAP px (boxes grown by GAP do not intersect)."""
    x1, y1, x2, y2 = box
    return all(
        x2 + GAP <= o.box[0] or o.box[2] + GAP <= x1 or y2 + GAP <= o.box[1] or o.box[3] + GAP <= y1 for o in others
    )


def layout(cutouts: list[Cutout], rng: random.Random, tries: int = 200) -> list[Placed] | None:
    """Random sizes and non-overlapping positions for the cut-outs, or None when they do not fit (redraw)."""
    placed: list[Placed] = []
    for cutout in cutouts:
        mask = scaled(cutout.mask, rng.randint(*SHAPE_SIDE))
        h, w = mask.shape
        for _ in range(tries):
            x, y = rng.randint(0, CANVAS - w), rng.randint(0, CANVAS - h)
            if _apart((x, y, x + w, y + h), placed):
                placed.append(Placed(cutout, mask, (x, y, x + w, y + h)))
                break
        else:
            return None
    return placed


def render(placed: list[Placed], rng: random.Random) -> Image.Image:
    """The canvas: a plain light background and each shape's mask in its fill colour."""
    background = tuple(rng.randint(*BACKGROUND) for _ in range(3))
    canvas = np.empty((CANVAS, CANVAS, 3), dtype=np.uint8)
    canvas[:] = background
    for item in placed:
        x1, y1, x2, y2 = item.box
        canvas[y1:y2, x1:x2][item.mask] = item.cutout.fill
    return Image.fromarray(canvas)
