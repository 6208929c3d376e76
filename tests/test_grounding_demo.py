"""The embedded grounding demo (`assets/grounding_demo_data.py`): its files go through the grounding readers and the
training data module, every gold box is its shape's mask extent, every expression names exactly one shape (checked
by reading the words back, independently of the generator), rebuilds are byte-identical, and its runs compose."""

from __future__ import annotations

import json
import random
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from assets.demo_data import _shape_mask
from assets.referring import RELATIONS, loosely, strictly
from assets.shape_canvas import CANVAS, GAP, Placed
from datamodules.benchmarks import DCSFTJson, RefCOCO
from datamodules.formats import read_samples
from datamodules.scoring import continuous_iou, iou

pytest.importorskip("easy_vqa")
from assets.grounding_demo_data import build_grounding_demo_data, canvases, cutouts  # noqa: E402

SMALL = {"cold_start": 6, "train": 10, "test": 5}
TESTS = ("test_id", "test_ood_sketch", "test_ood_texture")


@pytest.fixture(scope="module")
def built(tmp_path_factory) -> Path:
    return build_grounding_demo_data(tmp_path_factory.mktemp("grounding_demo"), sizes=SMALL)


def files(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def test_files_read_back_through_the_grounding_readers(built):
    for name in TESTS:
        items = RefCOCO(str(built / f"{name}.json"), name=name).load()  # VLM-R1 rec_jsons_processed layout
        assert len(items) == SMALL["test"]
        assert all(item.meta["width"] == item.meta["height"] == CANVAS for item in items)
        assert items[0].prompt.startswith("Please provide the bounding box coordinate of the region")
    gold = [item.gold for item in RefCOCO(str(built / "test_id.json")).load()]
    for name in TESTS[1:]:  # the renditions keep ids, expressions and boxes
        assert [item.gold for item in RefCOCO(str(built / f"{name}.json")).load()] == gold
    cold, sft = read_samples(built / "cold_start.json"), read_samples(built / "train_sft.json")
    grpo = DCSFTJson(str(built / "train_grpo.json"), "grounding_train", scorer="iou").load()
    assert (len(cold), len(sft), len(grpo)) == (SMALL["cold_start"], SMALL["train"], SMALL["train"])
    assert [s.id for s in sft] == [item.id for item in grpo]  # difficulty ids line up with the SFT file
    for sample, item in zip(sft, grpo):  # the SFT target is the GRPO solution as int text (official sample.py)
        assert sample.solution == "[" + ", ".join(str(int(v)) for v in json.loads(item.gold)) + "]"
    assert not {s.images[0] for s in cold} & {s.images[0] for s in sft}


def test_the_data_module_encodes_the_training_files(built, tiny_model):
    from datamodules.vlm_data import VLMDataModule

    dm = VLMDataModule(tiny_model, train_file=str(built / "cold_start.json"), batch_size=2, shuffle=False)
    dm.setup("fit")
    batch = next(iter(dm.train_dataloader()))
    answer = batch["labels"][0][batch["labels"][0] != -100]
    box = read_samples(built / "cold_start.json")[0].solution
    assert box.replace(" ", "") in dm.encoder.processor.tokenizer.decode(answer).replace(" ", "")
    predict = VLMDataModule(tiny_model, predict_file=str(built / "train_grpo.json"))
    predict.setup("predict")
    assert len(predict.predict_dataloader().dataset) == SMALL["train"]


def test_canvas_keeps_its_size_in_the_demo_processor():
    from assets.demo_model import DEMO_MAX_PIXELS, DEMO_MIN_PIXELS
    from datamodules.images import smart_resize

    assert smart_resize(CANVAS, CANVAS, min_pixels=DEMO_MIN_PIXELS, max_pixels=DEMO_MAX_PIXELS) == (CANVAS, CANVAS)
    assert (CANVAS // 28) ** 2 == 25  # merged image tokens per canvas


def mask_box(mask: np.ndarray, box: list[int]) -> list[int]:
    """Extent of the mask's pixels near a box (grown by GAP // 2: no other shape is that close)."""
    grow = GAP // 2
    x1, y1, x2, y2 = max(box[0] - grow, 0), max(box[1] - grow, 0), box[2] + grow, box[3] + grow
    ys, xs = np.nonzero(mask[y1:y2, x1:x2])
    return [int(xs.min()) + x1, int(ys.min()) + y1, int(xs.max()) + x1 + 1, int(ys.max()) + y1 + 1]


def test_gold_boxes_are_the_shapes_mask_extents(built):
    described = json.loads((built / "canvases.json").read_text())
    for row in json.loads((built / "test_id.json").read_text()):
        canvas = np.asarray(Image.open(built / row["image"]).convert("RGB"))
        sketch = np.asarray(Image.open(built / row["image"].replace("test_id", "test_ood_sketch")).convert("RGB"))
        textured = np.asarray(Image.open(built / row["image"].replace("test_id", "test_ood_texture")).convert("RGB"))
        mask, _ = _shape_mask(canvas)
        for shape in described[row["id"]]["shapes"]:  # every shape, the referred one included
            assert mask_box(mask, shape["box"]) == shape["box"]
            assert mask_box(_shape_mask(sketch)[0], shape["box"]) == shape["box"]  # the outline spans the shape
        assert (textured[mask] == canvas[mask]).all()  # the texture only replaces the background
        assert continuous_iou(mask_box(mask, row["solution"]), row["solution"]) == 1.0
        assert iou(mask_box(mask, row["solution"]), row["solution"]) == 1.0
    for row in json.loads((built / "train_grpo.json").read_text()):
        mask, _ = _shape_mask(np.asarray(Image.open(built / row["image"]).convert("RGB")))
        assert mask_box(mask, row["solution"]) == row["solution"]


def read_back(placed: list[Placed], expression: str) -> list[int]:
    """The shapes an expression can denote, read from its words, relations read loosely (centre against centre)."""
    words = expression.removeprefix("the ")
    pairs = [(p.cutout.colour, p.cutout.shape) for p in placed]
    for relation in RELATIONS:
        if f" {relation} the " in words:
            kind, anchor = words.split(f" {relation} the ")
            anchors = [i for i, pair in enumerate(pairs) if pair == tuple(anchor.split(" "))]
            assert len(anchors) == 1, f"{expression!r}: the anchor is not unique"
            a = anchors[0]
            return [
                i for i, p in enumerate(placed) if i != a and p.cutout.shape == kind and loosely(relation, p, placed[a])
            ]
    if words.endswith(" shape"):
        return [i for i, (colour, _) in enumerate(pairs) if colour == words.removesuffix(" shape")]
    if " " not in words:
        return [i for i, (_, shape) in enumerate(pairs) if shape == words]
    return [i for i, pair in enumerate(pairs) if pair == tuple(words.split(" "))]


def test_expressions_name_exactly_one_shape():
    kinds = set()
    for canvas in canvases(cutouts("train"), 300, random.Random(1), "check"):
        assert read_back(canvas.placed, canvas.expression) == [canvas.target], canvas.expression
        kinds.add(canvas.kind)
        for relation in RELATIONS:  # a relation also holds strictly: the target lies wholly on that side
            if f" {relation} the " in canvas.expression:
                anchor = read_back(canvas.placed, canvas.expression.split(f" {relation} ")[1])
                assert strictly(relation, canvas.placed[canvas.target], canvas.placed[anchor[0]])
        assert 2 <= len(canvas.placed) <= 4
    assert kinds == {"colour_shape", "shape", "colour", "relation"}


def test_same_seed_same_bytes(built, tmp_path):
    again = build_grounding_demo_data(tmp_path / "again", sizes=SMALL)
    assert files(again) == files(built)
    other = build_grounding_demo_data(tmp_path / "other", seed=1, sizes=SMALL)
    assert files(other)["test_id.json"] != files(built)["test_id.json"]


def test_grounding_runs_compose(monkeypatch, tmp_path):
    """The demo/grounding/* runs (tests/test_configs.py parses every run; this checks what they promise)."""
    import assets
    from scripts.runs import command
    from train import main

    monkeypatch.setattr(assets, "ensure", lambda name: tmp_path / name)
    cpu = ["--trainer.accelerator", "cpu", "--trainer.devices", "1", "--trainer.default_root_dir", str(tmp_path)]

    def compose(name: str):
        return main([*command(name)[1:], *cpu], run=False)

    cold = compose("demo/grounding/cold_start")
    assert cold.model.hparams.export_dir == "runs/demo/grounding/cold_start/model"
    assert cold.datamodule.hparams.train_file == str(tmp_path / "easy_vqa_grounding" / "cold_start.json")
    assert cold.model.hparams.model_path == str(tmp_path / "smollm2-vl-grounding")  # the grounding pre-trained model
    evaluation = next(c for c in cold.trainer.callbacks if type(c).__name__ == "GenerativeEval")
    assert [b.name for b in evaluation.benchmarks] == ["grounding_id", "grounding_ood_sketch", "grounding_ood_texture"]
    assert evaluation.max_new_tokens == 24 and all(type(b).__name__ == "RefCOCO" for b in evaluation.benchmarks)
    difficulty = compose("demo/grounding/difficulty")
    assert difficulty.model.hparams.scorer == "iou" and difficulty.model.sampling.max_new_tokens == 24
    assert difficulty.datamodule.hparams.predict_done_file == "runs/demo/grounding/difficulty/difficulty.jsonl"
    grpo = compose("demo/grounding/grpo")
    assert grpo.model.hparams.rewards == {"iou": 1.0} and grpo.model.sampling.max_new_tokens == 24
    assert grpo.datamodule.hparams.batch_size == 2 and grpo.trainer.logger.save_dir == "runs/demo/grounding"
    assert grpo.model.hparams.model_path == "runs/demo/grounding/cold_start/model"
    assert grpo.datamodule.hparams.difficulty_file == "runs/demo/grounding/difficulty/difficulty.jsonl"


def test_one_shape_canvases_and_the_alignment_cell_labels():
    """assets/grounding_pretrain.py: `shapes=(1, 1)` canvases hold one shape; a token counts as a shape's when at least
    80 of its 784 pixels are that shape's, and only shape tokens carry a column and a row."""
    from assets.demo_data import COLORS, SHAPES
    from assets.grounding_demo_data import Canvas
    from assets.grounding_pretrain import cell_labels
    from assets.shape_canvas import Cutout

    assert all(len(c.placed) == 1 for c in canvases(cutouts("train"), 20, random.Random(0), "one", (1, 1)))
    square = np.ones((30, 30), dtype=bool)
    cutout = Cutout(0, "red", "rectangle", (255, 0, 0), square)
    canvas = Canvas(
        "c", [Placed(cutout, square, (28, 56, 58, 86))], 0, "shape", "the rectangle", Image.new("RGB", (1, 1))
    )
    labels = cell_labels(canvas)
    assert labels[2 * 5 + 1].tolist() == [COLORS.index("red"), SHAPES.index("rectangle"), 1, 2]  # row 2, column 1
    others = [t for t in range(25) if t != 11]  # 56 px spill into column 2 and row 3: background
    assert (labels[others] == torch.tensor([len(COLORS), len(SHAPES), -1, -1])).all()


def test_grounding_pretrain_probe_runs_both_stages(tiny_model, tmp_path, capsys):
    """The grounding pre-training's align and pretrain stages (scripts/grounding_pretrain_probe.py runs one each) train,
    save a loadable model and report held-out scores (tiny model)."""
    from scripts.grounding_pretrain_probe import main

    aligned = tmp_path / "aligned"
    main(["align", "--model", tiny_model, "--steps", "2", "--batch", "2", "--test", "2", "--out", str(aligned)])
    main(["pretrain", "--model", str(aligned), "--shapes", "1", "1", "--steps", "2", "--batch", "2", "--test", "2"])
    out = capsys.readouterr().out
    assert "[align] held-out token decoding" in out and "[pretrain] held-out, 1-1 shapes" in out
    assert (aligned / "model.safetensors").exists() or list(aligned.glob("model*.safetensors"))


def test_grounding_pretraining_encodes_through_the_project_path(tiny_model):
    """The pre-training's DC-SFT prompt is exactly the cold start's; its bare prompt differs only in the user text;
    both are encoded by `Encoder` with the loss on the box and `<|im_end|>` only."""
    from assets.grounding_demo_data import _messages
    from assets.grounding_pretrain import canvas_sample
    from datamodules.collate import IGNORE_INDEX, Encoder
    from datamodules.grounding_data import sft_target
    from datamodules.processor import load_processor

    canvas = canvases(cutouts("train"), 1, random.Random(0), "c")[0]
    assert canvas_sample(canvas, "dcsft").messages == _messages(canvas, "x.png")["messages"]
    bare = canvas_sample(canvas, "bare")
    assert bare.messages[0]["content"] == "<image>" + canvas.expression
    encoder = Encoder(load_processor(tiny_model))
    item = encoder.encode(bare, images=[canvas.image])
    answer = [t for t, label in zip(item["input_ids"], item["labels"]) if label != IGNORE_INDEX]
    assert encoder.processor.tokenizer.decode(answer) == sft_target(canvas.box) + "<|im_end|>"
