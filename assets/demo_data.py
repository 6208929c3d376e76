"""The embedded default data: easy-vqa converted into the official DC-SFT formats, plus OOD renditions.

Built offline from the `easy-vqa` package on first use of a `demo://` path (a few seconds), into the git-ignored cache
(`$DCSFT_CACHE`, default `<repo>/.cache`). Files (under `<cache>/demo/easy_vqa/`):

| file | format | items | role |
|---|---|---|---|
| cold_start.json | messages + images | 400 | cold-start SFT (paper step 1) |
| train_sft.json / train_grpo.json | messages + images / problem, solution, image | 800 | post-training (same items, same order) |
| test_id.json | problem, solution, image | 150 | in distribution (easy-vqa test images) |
| test_ood_sketch.json | same | 150 | OOD: the shape redrawn as a coloured outline on white (our ImageNet-R stand-in) |
| test_ood_texture.json | same | 150 | OOD: the plain background replaced by coloured stripes and dots (our ImageNet-A stand-in) |

Both renditions keep every answer valid: shape and colour are unchanged. Prompts end with the DC-SFT-style
instruction to answer in one word; answers are easy-vqa's 13 one-word answers. Each image gets one question: about
70 % are easy-vqa's open colour / shape questions, the rest yes / no questions in easy-vqa's wording whose answer,
negation and topic are balanced (`closed_question`), so that the wording does not give the answer away.
"""

from __future__ import annotations

import json
import random
import shutil
from pathlib import Path

import numpy as np
from PIL import Image, ImageFilter

INSTRUCTION = " Output the answer using one word."
SIZES = {"cold_start": 400, "train": 800, "test": 150}
OPEN_SHARE = 0.7
RECIPE = f"sizes={SIZES} open_share={OPEN_SHARE} v3 (texture: far colours; balanced yes / no)"  # a changed recipe rebuilds the cached asset


def _colour_counts(pixels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Distinct colours of `pixels` ([..., 3]) as [n, 3] int32 rows sorted by (r, g, b), and how often each occurs."""
    flat = pixels.reshape(-1, 3).astype(np.int32)
    packed = (flat[:, 0] << 16) | (flat[:, 1] << 8) | flat[:, 2]  # 1-D unique: far faster than unique(axis=0)
    colours, counts = np.unique(packed, return_counts=True)
    return np.stack([colours >> 16, (colours >> 8) & 255, colours & 255], axis=-1).astype(np.int32), counts


def _shape_mask(array: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Boolean mask of shape pixels (far from the most common = background colour) and that background colour."""
    colours, counts = _colour_counts(array)
    background = colours[counts.argmax()]  # first of equal counts in (r, g, b) order
    distance = np.abs(array.astype(np.int32) - background).sum(-1)
    return distance > 60, background


def sketch(image: Image.Image) -> Image.Image:
    """The shape's 2-pixel outline in its own colour, on white."""
    array = np.asarray(image.convert("RGB"))
    mask, _ = _shape_mask(array)
    padded = np.pad(mask, 2)  # the image border counts as outside, so shapes touching it keep their edge
    inner = np.asarray(Image.fromarray(padded.astype(np.uint8) * 255).filter(ImageFilter.MinFilter(5)))[2:-2, 2:-2] > 0
    edge = mask & ~inner
    out = np.full_like(array, 255)
    out[edge] = array[edge]
    return Image.fromarray(out)


TEXTURE_CHANNELS = (120, 250)  # each channel of a background colour; mid-to-light, so no colour is near black
TEXTURE_MIN_DISTANCE = 150  # L1 distance of every background colour from every colour of the shapes


def _far_colour(rng: random.Random, avoid: list[np.ndarray]) -> np.ndarray:
    """A random colour at least TEXTURE_MIN_DISTANCE from each colour in `avoid` (the last draw after 100 tries)."""
    for _ in range(100):
        colour = np.array([rng.randint(*TEXTURE_CHANNELS) for _ in range(3)])
        if all(np.abs(colour - a).sum() >= TEXTURE_MIN_DISTANCE for a in avoid):
            break
    return colour


def texture(image: Image.Image, rng: random.Random) -> Image.Image:
    """The plain background replaced by random stripes and dots of mid-to-light colours, each far from every colour
    that fills at least 5 % of the shape pixels: the shapes stay visible and every answer stays valid.

    Why not pastel: the first version drew pastel colours (channels 200-245). Once the demo model saw shapes, that
    rendition was exactly as easy as ID (cold start 90.67 on both, 2026-12-03), so it stood in for nothing; the issue
    asks for renditions that are answerable yet harder. Stronger backgrounds cost the same cold start 10 points in a
    prototype (80.7 against 90.7 on ID)."""
    array = np.asarray(image.convert("RGB"))
    mask, _ = _shape_mask(array)
    colours, counts = _colour_counts(array[mask])
    avoid = list(colours[counts >= 0.05 * max(int(mask.sum()), 1)])
    h, w, _ = array.shape
    yy, xx = np.mgrid[0:h, 0:w]
    period = rng.randint(4, 10)
    angle = rng.choice([(1, 0), (0, 1), (1, 1), (1, -1)])
    stripes = ((yy * angle[0] + xx * angle[1]) // period) % 2
    c1, c2 = _far_colour(rng, avoid), _far_colour(rng, avoid)
    background = np.where(stripes[..., None] == 1, c1, c2).astype(np.uint8)
    dots = np.random.default_rng(rng.randint(0, 2**31)).random((h, w)) < 0.04
    background[dots] = _far_colour(rng, avoid).astype(np.uint8)
    out = np.where(mask[..., None], array, background).astype(np.uint8)
    return Image.fromarray(out)


POSITIVE = ("Is there a {x}?", "Is there a {x} in the image?", "Does the image contain a {x}?", "Is a {x} present?")
NEGATIVE = ("Is there not a {x}?", "Is there not a {x} in the image?", "Does the image not contain a {x}?")


def closed_question(colour: str, shape: str, rng: random.Random) -> tuple[str, str]:
    """A yes / no question about an image of a `colour` `shape`, in easy-vqa's wording, whose answer, negation and
    topic (colour or shape) are drawn uniformly and independently: the wording says nothing about the answer.

    Why not easy-vqa's own yes / no questions: their answers follow the wording ("Is there a teal shape?" is "no" 88 %
    of the time, "Is there not a teal shape?" "yes" 88 %), and the demo's models answered them from the text alone
    (0 of 34 answers changed with a grey image, 2026-12-03), so that column measured a prior, not sight. An image has
    too few yes / no questions to balance them by picking."""
    answer, negated, topic = rng.choice(("yes", "no")), rng.random() < 0.5, rng.choice(("colour", "shape"))
    true_value, values = (colour, COLORS) if topic == "colour" else (shape, SHAPES)
    named = true_value if (answer == "yes") != negated else rng.choice([v for v in values if v != true_value])
    template = rng.choice(NEGATIVE if negated else POSITIVE)
    return template.format(x=f"{named} shape" if topic == "colour" else named), answer


def _pick(
    indices: list[int], questions: list[str], answers: list[str], label: tuple[str, str] | None, rng: random.Random
) -> tuple[str, str]:
    """(question, answer) for an image: one of its open (colour / shape) easy-vqa questions with probability
    OPEN_SHARE, else a balanced yes / no question (`closed_question`) from the image's (colour, shape) `label`.
    Without a label, an open easy-vqa question if it has one, else any."""
    open_ones = [i for i in indices if answers[i] not in ("yes", "no")]
    if label is not None and not (open_ones and rng.random() < OPEN_SHARE):
        return closed_question(*label, rng)
    index = rng.choice(open_ones or indices)
    return questions[index], answers[index]


def _problem(question: str, answer: str, image: str, rid: str) -> dict:
    return {"id": rid, "problem": question[0].upper() + question[1:] + INSTRUCTION, "solution": answer, "image": image}


def _messages(row: dict) -> dict:
    return {
        "id": row["id"],
        "messages": [
            {"role": "user", "content": "<image>" + row["problem"]},
            {"role": "assistant", "content": row["solution"]},
        ],
        "images": [row["image"]],
    }


def _write(path: Path, rows: list[dict]) -> None:
    path.write_text(json.dumps(rows, indent=1, ensure_ascii=False), encoding="utf-8")


COLORS = ("red", "green", "blue", "yellow", "black", "gray", "brown", "teal")
SHAPES = ("circle", "rectangle", "triangle")
KINDS = {"colour": len(COLORS), "shape": len(SHAPES), "yes/no": 2}  # question kind -> number of possible answers


def question_kind(gold: str) -> str:
    """`colour`, `shape` or `yes/no` from a demo item's gold answer. Reported apart because colour, shape and yes / no
    questions are learned very differently: pooled accuracies hide a model that reads colour but not shape."""
    answer = str(gold).strip().lower()
    if answer in COLORS:
        return "colour"
    if answer in SHAPES:
        return "shape"
    if answer in ("yes", "no"):
        return "yes/no"
    raise ValueError(f"{gold!r} is not an easy-vqa answer (colours {COLORS}, shapes {SHAPES}, yes / no)")


def _train_image_order(seed: int) -> list[int]:
    """easy-vqa train image ids in the order `build_demo_data` draws them (the first ones are the demo's splits)."""
    import easy_vqa

    images = sorted(set(easy_vqa.get_train_questions()[2]))
    random.Random(seed).shuffle(images)
    return images


def unused_train_images(seed: int = 0) -> list[int]:
    """The easy-vqa train images that no demo split uses (2,800 of 4,000): the vision alignment's data."""
    return _train_image_order(seed)[SIZES["cold_start"] + SIZES["train"] :]


def image_labels(image_ids: list[int], split: str = "train") -> dict[int, tuple[str, str]]:
    """{image id: (colour, shape)} read off easy-vqa's questions of `split` (train / test): open answers, and yes / no
    answers to questions that name a colour or shape ("does the image not contain a circle?" -> no: it is a circle)."""
    import easy_vqa

    questions = easy_vqa.get_train_questions() if split == "train" else easy_vqa.get_test_questions()
    wanted, labels = set(image_ids), {}
    for question, answer, image_id in zip(*questions):
        if image_id not in wanted:
            continue
        found = labels.setdefault(image_id, {})
        if answer in COLORS:
            found["color"] = answer
        elif answer in SHAPES:
            found["shape"] = answer
        elif answer in ("yes", "no"):
            words = f" {question.rstrip('?')} ".split()
            positive = (answer == "yes") != ("not" in words or "no" in words)
            for word in words if positive else ():
                if word in COLORS:
                    found["color"] = word
                elif word in SHAPES:
                    found["shape"] = word
    return {i: (f["color"], f["shape"]) for i, f in labels.items() if "color" in f and "shape" in f}


def build_demo_data(out_dir: str | Path, seed: int = 0) -> Path:
    """Write the demo files (see module docstring) and their images into out_dir."""
    import easy_vqa

    out_dir = Path(out_dir)
    rng = random.Random(seed)
    train_q, train_a, train_i = easy_vqa.get_train_questions()
    test_q, test_a, test_i = easy_vqa.get_test_questions()
    train_paths, test_paths = easy_vqa.get_train_image_paths(), easy_vqa.get_test_image_paths()
    (out_dir / "images").mkdir(parents=True, exist_ok=True)

    # Training pool: one question per image, so cold start / train / test never share an image.
    by_image: dict[int, list[int]] = {}
    for index, image_id in enumerate(train_i):
        by_image.setdefault(image_id, []).append(index)
    images = sorted(by_image)
    rng.shuffle(images)
    assert images == _train_image_order(seed)  # unused_train_images() relies on this order
    used = images[: SIZES["cold_start"] + SIZES["train"]]
    labels = image_labels(used)
    rows = []
    for image_id in used:
        question, answer = _pick(by_image[image_id], train_q, train_a, labels.get(image_id), rng)
        target = out_dir / "images" / f"train_{image_id}.png"
        shutil.copyfile(train_paths[image_id], target)
        rows.append(_problem(question, answer, f"images/{target.name}", f"train-{image_id}"))
    cold, train = rows[: SIZES["cold_start"]], rows[SIZES["cold_start"] :]
    _write(out_dir / "cold_start.json", [_messages(r) for r in cold])
    _write(out_dir / "train_sft.json", [_messages(r) for r in train])
    _write(out_dir / "train_grpo.json", train)

    by_test: dict[int, list[int]] = {}
    for index, image_id in enumerate(test_i):
        by_test.setdefault(image_id, []).append(index)
    test_images = sorted(by_test)
    rng.shuffle(test_images)
    sets: dict[str, list[dict]] = {"test_id": [], "test_ood_sketch": [], "test_ood_texture": []}
    test_labels = image_labels(test_images[: SIZES["test"]], "test")
    for image_id in test_images[: SIZES["test"]]:
        question, answer = _pick(by_test[image_id], test_q, test_a, test_labels.get(image_id), rng)
        original = Image.open(test_paths[image_id]).convert("RGB")
        variants = {
            "test_id": original,
            "test_ood_sketch": sketch(original),
            # its own RNG: a change to the texture never changes the questions
            "test_ood_texture": texture(original, random.Random(f"texture:{seed}:{image_id}")),
        }
        for name, image in variants.items():
            target = out_dir / "images" / f"{name}_{image_id}.png"
            image.save(target)
            sets[name].append(_problem(question, answer, f"images/{target.name}", f"test-{image_id}"))
    for name, rows in sets.items():
        _write(out_dir / f"{name}.json", rows)
    return out_dir
