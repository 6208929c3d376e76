"""The embedded grounding demo data: easy-vqa shapes on canvases with referring expressions, in the official DC-SFT
grounding formats, plus the classification demo's two OOD renditions.

Built offline from the `easy-vqa` package on first use of a `demo://easy_vqa_grounding/...` path (seconds), into the
git-ignored cache (`$DCSFT_CACHE`, default `<repo>/.cache`). Each canvas is 140 x 140 px with 2-4 shapes cut out of
easy-vqa images (`shape_canvas.py`) and one expression that names exactly one of them (`referring.py`). Files (under
`<cache>/demo/easy_vqa_grounding/`):

| file | format | items | role |
|---|---|---|---|
| cold_start.json | messages + images | 400 | cold-start SFT (paper step 1) |
| train_sft.json / train_grpo.json | messages + images / problem, solution, image | 800 | post-training (same items) |
| test_id.json | problem, solution, image (VLM-R1 `rec_jsons_processed` style) | 150 | in distribution |
| test_ood_sketch.json | same | 150 | OOD: the same canvases, each shape a coloured outline on white |
| test_ood_texture.json | same | 150 | OOD: the same canvases on a background of coloured stripes and dots |
| canvases.json | {id: expression, kind, target, shapes} | all | what each canvas holds (analysis, tests) |

Prompts are the DC-SFT / VLM-R1 grounding prompt around the expression; answers are `[x1, y1, x2, y2]` in canvas
pixels (SFT: int text, as the official `sample.py`; GRPO / test: a list). 140 is a multiple of 28, so the demo
processor keeps the canvas as is: original and resized box frames coincide (`box_frame: original`). Training canvases
use easy-vqa's train images, test canvases its test images; the renditions keep every box (an outline spans its
shape, the texture only replaces the background).
"""

from __future__ import annotations

import functools
import json
import random
from dataclasses import dataclass
from pathlib import Path

from PIL import Image

from assets.demo_data import image_labels, sketch, texture
from assets.referring import refer
from assets.shape_canvas import CANVAS, GAP, MIN_SOURCE_SIDE, SHAPE_SIDE, Cutout, Placed, cut_out, layout, render
from datamodules.benchmarks.grounding import rec_prompt
from datamodules.grounding_data import sft_target

SIZES = {"cold_start": 400, "train": 800, "test": 150}
SHAPES_PER_CANVAS = (2, 4)
RECIPE = (
    f"sizes={SIZES} canvas={CANVAS} side={SHAPE_SIDE} min_source={MIN_SOURCE_SIDE} gap={GAP} "
    f"shapes={SHAPES_PER_CANVAS} v2 (texture: far colours)"
)  # a changed recipe rebuilds the cached asset


@dataclass
class Canvas:
    """One item: its shapes, the referred one and the expression."""

    id: str
    placed: list[Placed]
    target: int
    kind: str
    expression: str
    image: Image.Image

    @property
    def box(self) -> list[int]:
        return list(self.placed[self.target].box)


@functools.lru_cache(maxsize=2)
def cutouts(split: str) -> tuple[Cutout, ...]:
    """Every labelled easy-vqa shape of a split (`train` / `test`) large enough to scale up. Cached: reading 5,000
    images is most of a build, and the pool depends on nothing but the installed package (tests build several)."""
    import easy_vqa

    paths = easy_vqa.get_train_image_paths() if split == "train" else easy_vqa.get_test_image_paths()
    labels = image_labels(list(range(len(paths))), split)
    found = (cut_out(Image.open(paths[i]), i, *labels[i]) for i in sorted(labels))
    return tuple(c for c in found if c is not None)


def canvases(
    pool: tuple[Cutout, ...], n: int, rng: random.Random, prefix: str, shapes: tuple[int, int] = SHAPES_PER_CANVAS
) -> list[Canvas]:
    """n canvases of `shapes` = (min, max) shapes (default 2-4) drawn from the pool, each with a uniquely referring
    expression."""
    out: list[Canvas] = []
    while len(out) < n:
        placed = layout(rng.sample(pool, rng.randint(*shapes)), rng)
        found = refer(placed, rng) if placed else None
        if found is None:
            continue  # the shapes did not fit, or none of them can be named uniquely: draw again
        target, kind, expression = found
        out.append(Canvas(f"{prefix}-{len(out):04d}", placed, target, kind, expression, render(placed, rng)))
    return out


def _problem(canvas: Canvas, image: str) -> dict:
    return {"id": canvas.id, "problem": rec_prompt(canvas.expression), "solution": canvas.box, "image": image}


def _messages(canvas: Canvas, image: str) -> dict:
    return {
        "id": canvas.id,
        "messages": [
            {"role": "user", "content": "<image>" + rec_prompt(canvas.expression)},
            {"role": "assistant", "content": sft_target(canvas.box)},
        ],
        "images": [image],
    }


def _describe(canvas: Canvas) -> dict:
    shapes = [{"colour": p.cutout.colour, "shape": p.cutout.shape, "box": list(p.box)} for p in canvas.placed]
    for shape, placed in zip(shapes, canvas.placed):
        shape["source_image"] = placed.cutout.image_id
    return {"expression": canvas.expression, "kind": canvas.kind, "target": canvas.target, "shapes": shapes}


def _write(path: Path, rows: list[dict] | dict) -> None:
    path.write_text(json.dumps(rows, indent=1, ensure_ascii=False), encoding="utf-8")


def build_grounding_demo_data(out_dir: str | Path, seed: int = 0, sizes: dict[str, int] | None = None) -> Path:
    """Write the grounding demo files (see module docstring) and their images into out_dir; `sizes` overrides SIZES
    (smaller builds for tests)."""
    sizes = SIZES | (sizes or {})
    out_dir = Path(out_dir)
    (out_dir / "images").mkdir(parents=True, exist_ok=True)
    rng = random.Random(seed)
    train = canvases(cutouts("train"), sizes["cold_start"] + sizes["train"], rng, "train")
    test = canvases(cutouts("test"), sizes["test"], rng, "test")
    cold, post = train[: sizes["cold_start"]], train[sizes["cold_start"] :]

    def save(image: Image.Image, name: str) -> str:
        image.save(out_dir / "images" / f"{name}.png")
        return f"images/{name}.png"

    _write(out_dir / "cold_start.json", [_messages(c, save(c.image, c.id)) for c in cold])
    post_images = [save(c.image, c.id) for c in post]
    _write(out_dir / "train_sft.json", [_messages(c, image) for c, image in zip(post, post_images)])
    _write(out_dir / "train_grpo.json", [_problem(c, image) for c, image in zip(post, post_images)])
    renditions = {
        "test_id": lambda image: image,
        "test_ood_sketch": sketch,
        "test_ood_texture": lambda image: texture(image, rng),
    }
    for name, rendition in renditions.items():
        _write(out_dir / f"{name}.json", [_problem(c, save(rendition(c.image), f"{name}_{c.id}")) for c in test])
    _write(out_dir / "canvases.json", {c.id: _describe(c) for c in train + test})
    return out_dir
