"""Grounding: scoring on the worked cases, every reader on a small file in its official layout, the box frame, the
RefCOCO -> DC-SFT converter, bad input named by file and record, and a short difficulty + GRPO run on boxes."""

from __future__ import annotations

import json
import pickle
import random
from io import BytesIO
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from PIL import Image

from datamodules import scoring as S
from datamodules.benchmarks import LISA, DCSFTJson, RefCOCO, RefL4
from datamodules.formats import read_samples
from datamodules.grounding_data import sft_target, write_dcsft_files
from datamodules.images import smart_resize

S_PROMPT = "Please provide the bounding box coordinate of the region this sentence describes: {}."
EXAMPLES = json.loads((Path(__file__).parent / "data" / "grounding_math_examples.json").read_text())


def cases(benchmark: str) -> list[dict]:
    return [case for case in EXAMPLES if case["benchmark"] == benchmark]


def png(path: Path, size: tuple[int, int] = (64, 48), color=(200, 30, 30)) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", size, color).save(path)
    return path


def png_bytes(size=(64, 48)) -> bytes:
    buffer = BytesIO()
    Image.new("RGB", size, (10, 200, 10)).save(buffer, format="PNG")
    return buffer.getvalue()


# ----------------------------------------------------------------------------------------------- worked cases
@pytest.mark.parametrize("case", cases("grounding(Qwen2.5-VL resize)"), ids=lambda c: c["note"])
def test_smart_resize_worked_cases(case):
    inputs = case["inputs"]
    bounds = {k: inputs[k] for k in ("min_pixels", "max_pixels") if k in inputs}
    assert list(smart_resize(inputs["height"], inputs["width"], **bounds)) == case["expected"]


@pytest.mark.parametrize("case", cases("Ref-L4"), ids=lambda c: c["note"])
def test_continuous_iou_matches_ref_l4(case):
    gold = S.xywh_to_xyxy(case["inputs"]["gt_bbox_xywh"])
    value = S.continuous_iou(case["inputs"]["pred_bbox"], gold)
    assert value == pytest.approx(case["expected"]["iou"], abs=1e-6)
    assert (value > 0.5) == case["expected"]["acc@0.5"] and (value > 0.75) == case["expected"]["acc@0.75"]


def test_rescale_round_trip_and_vlm_r1_case():
    case = cases("grounding(VLM-R1)")[1]
    pred = S.parse_box(case["inputs"]["model_output"])
    rescaled = S.rescale_box(pred, case["inputs"]["input_hw"], case["inputs"]["image_hw"])
    assert rescaled == pytest.approx(case["expected"]["rescaled"])
    for hw in [(480, 640), (427, 640), (741, 1024), (3000, 4000)]:
        resized = smart_resize(*hw, max_pixels=802816)
        box = [13.0, 27.5, 301.25, 400.0]
        assert S.rescale_box(S.rescale_box(box, hw, resized), resized, hw) == pytest.approx(box)


def test_dcsft_and_continuous_iou_differ_where_documented():
    # the DC-SFT quirk zeroes a 1-px overlap that the continuous IoU counts
    assert S.iou([0, 0, 100, 100], [99, 0, 199, 100]) == 0.0
    assert S.continuous_iou([0, 0, 100, 100], [99, 0, 199, 100]) == pytest.approx(100 / 19900)
    assert S.continuous_iou([5, 5, 5, 5], [5, 5, 5, 5]) == 0.0  # degenerate: no division by zero


@pytest.mark.parametrize("case", cases("LISA(ReasonSeg->box)"), ids=lambda c: c["note"][:30])
def test_lisa_box_first_shape_is_visual_rft(case):
    assert S.lisa_box(case["inputs"]["annotation_json"], rule="first_shape") == pytest.approx(case["expected"][0])


def test_lisa_box_union_of_targets_skips_ignore_and_flag():
    annotation = {
        "shapes": [
            {"label": "ignore", "points": [[0, 0], [5, 5]]},
            {"label": "target", "points": [[10, 20], [50, 80]]},
            {"label": "flag", "points": [[0, 0], [999, 999]]},
            {"label": "target", "points": [[200, 200], [300, 310]]},
        ]
    }
    assert S.lisa_box(annotation) == [10, 20, 300, 310]
    assert S.lisa_box(annotation, "first_shape") == [0, 0, 5, 5]  # Visual-RFT's rule takes the ignore polygon
    with pytest.raises(ValueError, match="no target polygon"):
        S.lisa_box({"shapes": [{"label": "ignore", "points": [[0, 0], [1, 1]]}]})


# ---------------------------------------------------------------------------------------------------- readers
def vlm_r1_file(tmp_path: Path, n: int = 3) -> Path:
    rows = []
    for i in range(n):
        png(tmp_path / "coco" / f"{i}.jpg")
        problem = f"Please provide the bounding box coordinate of the region this sentence describes: thing {i}."
        rows.append({"image": f"train2014/{i}.jpg", "problem": problem, "solution": [2.0 + i, 3.0, 40.5, 30.0]})
    rows[-1]["solution"] = "<answer>[1, 2, 30, 40]</answer>"  # the JSONL training variant's wrapping
    path = tmp_path / "refcoco_val.json"
    path.write_text(json.dumps(rows))
    return path


def test_refcoco_vlm_r1_json(tmp_path):
    bench = RefCOCO(str(vlm_r1_file(tmp_path)), image_root={"train2014/": str(tmp_path / "coco") + "/"})
    items = bench.load()
    assert len(items) == 3 and items[0].gold == [2.0, 3.0, 40.5, 30.0] and items[2].gold == [1, 2, 30, 40]
    assert items[1].prompt.endswith("describes: thing 1.")  # the record's problem, verbatim
    assert items[0].meta["width"] == 64 and items[0].meta["size"] == "small"


def test_refcoco_lmms_parquet_one_item_per_expression(tmp_path):
    image = {"bytes": png_bytes(), "path": "x.jpg"}
    table = pa.table(
        {
            "question_id": ["q1", "q2"],
            "image": [image, image],
            "answer": [["the red one", "left red"], ["green thing"]],
            "bbox": [[4.0, 5.0, 20.0, 10.0], [1.0, 1.0, 2.0, 2.0]],
            "file_name": ["a.jpg", "b.jpg"],
        }
    )
    pq.write_table(table, tmp_path / "val.parquet")
    items = RefCOCO(str(tmp_path / "val.parquet")).load()
    assert [i.id for i in items] == ["q1/0", "q1/1", "q2/0"]
    assert items[0].gold == [4.0, 5.0, 24.0, 15.0]  # xywh -> xyxy
    assert items[1].prompt == S_PROMPT.format("left red")


def test_refcoco_refer_toolkit(tmp_path):
    folder = tmp_path / "refcoco"
    folder.mkdir()
    png(tmp_path / "coco" / "COCO_train2014_1.jpg", (100, 80))
    refs = [
        {"ref_id": 7, "ann_id": 70, "image_id": 1, "split": "val", "sentences": [{"sent_id": 1, "sent": "man"}]},
        {
            "ref_id": 8,
            "ann_id": 71,
            "image_id": 1,
            "split": "testA",
            "sentences": [{"sent_id": 2, "sent": "dog"}, {"sent_id": 3, "sent": "brown dog"}],
        },
    ]
    (folder / "refs(unc).p").write_bytes(pickle.dumps(refs))
    instances = {
        "images": [{"id": 1, "file_name": "COCO_train2014_1.jpg", "width": 100, "height": 80}],
        "annotations": [{"id": 70, "bbox": [10, 10, 30, 20]}, {"id": 71, "bbox": [50, 40, 20, 20]}],
    }
    (folder / "instances.json").write_text(json.dumps(instances))
    root = {"": str(tmp_path / "coco")}
    items = RefCOCO(str(folder / "refs(unc).p"), split="testA", image_root=root).load()
    assert [i.id for i in items] == ["8/2", "8/3"] and items[0].gold == [50.0, 40.0, 70.0, 60.0]
    with pytest.raises(ValueError, match="needs split"):
        RefCOCO(str(folder / "refs(unc).p"), image_root=root).load()


def ref_l4_folder(tmp_path: Path, splits=(("val", [0, 1]), ("test", [2])), categories=None) -> Path:
    """Ref-L4's parquet files (gold box [10, 10, 60, 50]) and images folder; `categories`: id -> ori_category_id."""
    root = tmp_path / "ref_l4"
    png(root / "images" / "objects365_v2_1.jpg", (120, 90))
    for split, ids in splits:
        rows = {
            "id": ids,
            "caption": [f"object number {i} in the scene." for i in ids],
            "bbox": [[10.0, 10.0, 50.0, 40.0] for _ in ids],
            "file_name": ["objects365_v2_1.jpg" for _ in ids],
            "height": [90 for _ in ids],
            "width": [120 for _ in ids],
            "ori_category_id": [(categories or {}).get(i, "o365_1") for i in ids],
        }
        pq.write_table(pa.table(rows), root / f"ref-l4-{split}.parquet")
    return root


def test_ref_l4_splits_and_scoring_views(tmp_path):
    root = ref_l4_folder(tmp_path)
    assert len(RefL4(str(root), split="val").load()) == 2 and len(RefL4(str(root), split="all").load()) == 3
    bench = RefL4(str(root), split="test")
    item = bench.load()[0]
    assert item.prompt == S_PROMPT.format("object number 2 in the scene")  # no double period
    result = bench.score(item, "[10, 10, 60, 45]", random.Random(0))  # gold [10, 10, 60, 50]: IoU 0.875
    assert result.correct and result.values["ciou"] == pytest.approx(0.875)
    assert result.values["acc_ciou_75"] == 100.0 and result.values["acc_ciou_90"] == 0.0
    assert result.values["macc"] == pytest.approx(100 * 8 / 10)  # > 0.50 ... > 0.85
    missing = bench.score(item, "I cannot see it", random.Random(0))
    assert not missing.correct and missing.values["no_box"] == 1.0 and missing.extracted is None


def test_ref_l4_class_accuracy_by_hand():
    categories = ["o365_1", "refcoco_1", "o365_2", "refcoco_6", "refcoco_16"]  # refcoco_1 -> o365_1; 6, 16 -> o365_56
    result = S.refl4_class_accuracy(categories, [0.6, 0.4, 0.95, 0.5, 0.77])
    assert list(result["classes"]) == ["o365_1", "o365_2", "o365_56"]  # first appearance
    # o365_1: IoUs 0.6, 0.4 -> acc 1/2; 0.6 beats 2 of the 10 thresholds (> 0.6 is strict), 0.4 none -> mAcc 10
    assert result["classes"]["o365_1"] == {"n": 2, "acc": 50.0, "macc": pytest.approx(10.0)}
    assert result["classes"]["o365_2"] == {"n": 1, "acc": 100.0, "macc": pytest.approx(90.0)}  # not > 0.95
    # o365_56: 0.5 is not > 0.5; 0.77 beats 0.50 .. 0.75 (6 thresholds) -> mAcc 6 / 20
    assert result["classes"]["o365_56"] == {"n": 2, "acc": 50.0, "macc": pytest.approx(30.0)}
    assert result["mean_acc"] == pytest.approx(200 / 3) and result["mean_macc"] == pytest.approx(130 / 3)
    assert S.refl4_class_accuracy([], []) == {"classes": {}, "mean_acc": None, "mean_macc": None}
    with pytest.raises(ValueError, match="2 categories but 1 IoUs"):
        S.refl4_class_accuracy(["a", "b"], [0.5])


def test_ref_l4_per_class_table_in_what_the_evaluation_writes(tmp_path):
    from callbacks.generative_eval import summarize
    from scripts.ref_l4_classes import class_table

    categories = {0: "o365_1", 1: "refcoco_1", 2: "o365_9"}
    root = ref_l4_folder(tmp_path, splits=(("val", [0, 1, 2]),), categories=categories)
    bench = RefL4(str(root), split="val")
    items = bench.load()
    answers = ["[10, 10, 60, 50]", "no box here", "[10, 10, 60, 45]"]  # gold [10, 10, 60, 50]: IoU 1, -, 0.875
    results = []
    for item, answer in zip(items, answers):  # rows as GenerativeEval writes them to the predictions file
        score = bench.score(item, answer, random.Random(0))
        results.append({"correct": score.correct, "fallback": False, "values": score.values} | score.details)
    assert [row["category"] for row in results] == ["o365_1", "refcoco_1", "o365_9"]
    metrics = summarize(bench, items, results)
    # classes o365_1 (IoU 1 and 0: acc 50, mAcc 50) and o365_9 (0.875: acc 100, mAcc 80)
    assert metrics["val/ref_l4/class_acc"] == pytest.approx(75.0)
    assert metrics["val/ref_l4/class_macc"] == pytest.approx(65.0)
    per_class = bench.tables(items, results)["per_class"]
    assert per_class == {
        "o365_1": {"n": 2, "acc": 50.0, "macc": pytest.approx(50.0)},
        "o365_9": {"n": 1, "acc": 100.0, "macc": pytest.approx(80.0)},
    }
    predictions = tmp_path / "epoch=0-step=1.jsonl"
    predictions.write_text("".join(json.dumps(row) + "\n" for row in results))
    text = class_table(predictions)
    assert text.index("| o365_1 | 2 | 50.00 | 50.00 |") < text.index("| o365_9 | 1 | 100.00 | 80.00 |")  # worst first
    assert "2 classes, 3 annotations; mean over classes: acc 75.00, mAcc 65.00" in text
    assert RefL4(str(root)).tables(items[:0], []) == {}  # nothing to tabulate: no table


def test_resized_frame_rescales_answers(tmp_path):
    root = tmp_path / "big"
    png(root / "images" / "a.jpg", (640, 480))
    rows = {
        "id": [0],
        "caption": ["x"],
        "bbox": [[320.0, 240.0, 320.0, 240.0]],
        "file_name": ["a.jpg"],
        "height": [480],
        "width": [640],
    }
    pq.write_table(pa.table(rows), root / "ref-l4-val.parquet")
    bench = RefL4(str(root), box_frame="resized")
    item = bench.load()[0]
    bench.set_pixel_bounds(3136, 12845056)  # 480x640 -> 476x644
    result = bench.score(item, "[322, 238, 644, 476]", random.Random(0))  # VLM-R1's worked case
    assert result.values["ciou"] == pytest.approx(1.0) and result.details["resized_hw"] == [476, 644]
    original = RefL4(str(root)).load()[0]
    assert RefL4(str(root)).score(original, "[322, 238, 644, 476]", random.Random(0)).values["ciou"] < 1.0


def test_lisa_json_and_reasonseg_folder(tmp_path):
    png(tmp_path / "lisa" / "q.jpg", (80, 60))
    rows = [{"image": "q.jpg", "problem": "Which part keeps the rain off?", "solution": [1, 2, 30, 40]}]
    (tmp_path / "lisa" / "lisa_test.json").write_text(json.dumps(rows))
    items = LISA(str(tmp_path / "lisa" / "lisa_test.json")).load()
    assert items[0].gold == [1, 2, 30, 40] and items[0].prompt == "Which part keeps the rain off?"
    raw = tmp_path / "reasonseg"
    png(raw / "img1.jpg", (80, 60))
    shapes = [{"label": "target", "points": [[5, 6], [20, 30]]}, {"label": "target", "points": [[40, 10], [50, 20]]}]
    (raw / "img1.json").write_text(json.dumps({"text": ["the thing used to sit."], "shapes": shapes}))
    union, first = LISA(str(raw)).load()[0], LISA(str(raw), rule="first_shape").load()[0]
    assert union.gold == [5, 6, 50, 30] and first.gold == [5, 6, 20, 30]
    assert union.prompt == S_PROMPT.format("the thing used to sit")


# ------------------------------------------------------------------------------------------------- bad input
def test_bad_grounding_input_is_named(tmp_path):
    path = vlm_r1_file(tmp_path)
    rows = json.loads(path.read_text())
    rows[1]["solution"] = [40, 3, 2, 30]  # x2 < x1
    path.write_text(json.dumps(rows))
    roots = {"train2014/": str(tmp_path / "coco") + "/"}
    with pytest.raises(ValueError, match=r"refcoco_val\.json.*record 1.*x2 < x1.*\[x, y, w, h\]"):
        RefCOCO(str(path), image_root=roots).load()
    rows[1]["solution"] = [5, 5, 5, 30]
    path.write_text(json.dumps(rows))
    with pytest.raises(ValueError, match="record 1.*zero area"):
        RefCOCO(str(path), image_root=roots).load()
    with pytest.raises(FileNotFoundError, match="image not found"):
        RefCOCO(str(path)).load()
    pq.write_table(pa.table({"id": [0], "caption": ["x"]}), tmp_path / "ref-l4-val.parquet")
    (tmp_path / "images").mkdir()
    with pytest.raises(ValueError, match=r"ref-l4-val\.parquet lacks columns \['bbox'"):
        RefL4(str(tmp_path)).load()
    raw = tmp_path / "rs"
    png(raw / "a.jpg")
    (raw / "a.json").write_text(
        json.dumps({"text": ["q"], "shapes": [{"label": "ignore", "points": [[0, 0], [1, 1]]}]})
    )
    with pytest.raises(ValueError, match=r"a\.json: no target polygon"):
        LISA(str(raw)).load()


# ------------------------------------------------------------------------------------------------- converter
def test_converter_writes_official_files_that_read_back(tmp_path):
    bench = RefCOCO(str(vlm_r1_file(tmp_path, n=6)), image_root={"train2014/": str(tmp_path / "coco") + "/"})
    counts = write_dcsft_files(bench.records(), tmp_path / "out", cold_start=2, seed=1)
    assert counts == {"cold_sft": 2, "left_sft": 4, "left_grpo": 4}
    sft = read_samples(str(tmp_path / "out" / "refcoco_left_sft.json"))
    grpo = read_samples(str(tmp_path / "out" / "refcoco_left_grpo.json"))
    assert [s.images for s in sft] == [s.images for s in grpo]  # same items, same order
    for a, b in zip(sft, grpo):
        assert a.messages[-1]["content"] == sft_target(S.parse_box(b.solution))  # int-truncated target
    assert sft_target([2.9, 3.0, 40.5, 30.0]) == "[2, 3, 40, 30]"
    items = DCSFTJson(str(tmp_path / "out" / "refcoco_left_grpo.json"), "rec", scorer="iou").load()
    assert len(items) == 4
    cold = {tuple(s.images) for s in read_samples(str(tmp_path / "out" / "refcoco_cold_sft.json"))}
    assert not cold & {tuple(s.images) for s in sft}  # the cold start and post-training sets do not overlap


# ------------------------------------------------------------------------------------- pipeline on tiny model
def test_difficulty_and_grpo_run_on_boxes(trained_tiny_model, tmp_path):
    """The converted files go through difficulty estimation (scorer iou) and GRPO (reward iou) unchanged."""
    from callbacks.difficulty_writer import DifficultyWriter
    from datamodules.difficulty_file import read_difficulty
    from datamodules.vlm_data import VLMDataModule
    from lightning_modules.difficulty import DifficultyEstimator
    from lightning_modules.grpo import GRPOModule
    from lightning_modules.sampling import SamplingConfig
    from lightning_modules.training import OptimConfig
    from lightning_modules.vlm import LoraOptions, VLMOptions
    from tests.helpers import cpu_trainer

    bench = RefCOCO(str(vlm_r1_file(tmp_path, n=5)), image_root={"train2014/": str(tmp_path / "coco") + "/"})
    write_dcsft_files(bench.records(), tmp_path / "out", cold_start=1)
    grpo_file = str(tmp_path / "out" / "refcoco_left_grpo.json")
    sampling = SamplingConfig(k=2, max_new_tokens=4, temperature=1.0, seed=0)
    estimator = DifficultyEstimator(
        trained_tiny_model, vlm=VLMOptions(dtype="float32", lora=None), sampling=sampling, scorer="iou"
    )
    output = tmp_path / "difficulty.jsonl"
    dm = VLMDataModule(trained_tiny_model, predict_file=grpo_file, eval_batch_size=2, predict_done_file=str(output))
    cpu_trainer(callbacks=[DifficultyWriter(str(output), report=False)]).predict(
        estimator, dm, return_predictions=False
    )
    rows = read_difficulty(output)
    assert len(rows) == 4 and all(r.k == 2 and r.solution.startswith("[") for r in rows.values())
    module = GRPOModule(
        trained_tiny_model,
        vlm=VLMOptions(dtype="float32", lora=LoraOptions(r=4, dropout=0.0)),
        sampling=sampling,
        rewards={"iou": 1.0},
        optim=OptimConfig(lr=1e-3, warmup_ratio=0.0),
        log_completions_every=0,
    )
    dm = VLMDataModule(trained_tiny_model, train_file=grpo_file, batch_size=2, prompt_only=True)
    trainer = cpu_trainer(max_steps=2, limit_val_batches=0)
    trainer.fit(module, dm)
    assert trainer.global_step == 2 and "train/reward" in trainer.callback_metrics


def test_paper_table_averages_the_four_ood_sets(tmp_path):
    from scripts.paper_table import table

    def metrics(run: Path, stage: str, accs: dict[str, float]) -> None:
        folder = run / stage / "version_0" / "predictions"
        folder.mkdir(parents=True)
        values = {f"val/{name}/acc": value for name, value in accs.items()}
        (folder / "metrics.json").write_text(json.dumps({"step": 600, "metrics": values}))

    metrics(tmp_path / "cls", "sft_em", {"imagenet_val": 80.0, "imagenet_r": 70.0, "imagenet_a": 50.0})
    metrics(tmp_path / "rec", "sft_em", {"refcoco_val": 90.0, "ref_l4": 60.0, "lisa": 40.0})
    metrics(tmp_path / "cls", "sft", {"imagenet_val": 80.0, "imagenet_r": 70.0, "imagenet_a": 50.0})
    text = table(tmp_path / "cls", tmp_path / "rec")
    assert "| SFT-EM (DC-SFT) | 80.00 | 70.00 | 50.00 | 90.00 | 60.00 | 40.00 | 55.00 |" in text
    assert "| SFT (all data) | 80.00 | 70.00 | 50.00 | - | - | - | - |" in text  # no grounding run: no average


def test_demo_table_averages_both_demos_four_renditions(tmp_path, capsys):
    from scripts.paper_table import main

    folder = tmp_path / "cls" / "grpo" / "version_0" / "predictions"
    folder.mkdir(parents=True)
    cls = {"val/demo_id/acc": 80.0, "val/demo_ood_sketch/acc": 60.0, "val/demo_ood_texture/acc": 70.0}
    (folder / "metrics.json").write_text(json.dumps({"step": 50, "metrics": cls}))
    folder = tmp_path / "rec" / "grpo" / "version_0" / "predictions"
    folder.mkdir(parents=True)
    rec = {"val/grounding_id/acc": 40.0, "val/grounding_ood_sketch/acc": 2.0, "val/grounding_ood_texture/acc": 28.0}
    (folder / "metrics.json").write_text(json.dumps({"step": 50, "metrics": rec}))
    main(["--demo", str(tmp_path / "cls"), str(tmp_path / "rec")])
    out = capsys.readouterr().out
    assert "| method | easy-vqa (ID) | easy-vqa sketch | easy-vqa texture | canvases (ID) |" in out
    assert "| GRPO | 80.00 | 60.00 | 70.00 | 40.00 | 2.00 | 28.00 | 40.00 |" in out
