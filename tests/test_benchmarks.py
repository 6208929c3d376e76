"""Benchmark readers on tiny fixture files in each exact schema: prompts, image order, golds, scoring, errors.

Run: `python -m pytest tests/test_benchmarks.py -q`. Fixtures are written to tmp_path (16x16 images, one colour each,
so the image order can be checked by pixel).
"""

from __future__ import annotations

import io
import json
import random
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from PIL import Image

from datamodules.benchmarks import MMMU, DCSFTJson, EvalItem, ImageNetFolder, LazyEvalItem, MathVista

RED, GREEN, BLUE = (255, 0, 0), (0, 255, 0), (0, 0, 255)
MC_INSTR = "Answer with the option's letter from the given choices directly."
OPEN_INSTR = "Answer the question using a single word or phrase."
DCSFT_PROMPT = "Please provide the object name in the image. Output the answer using one word."


def png(color: tuple[int, int, int], mode: str = "RGB") -> bytes:
    buffer = io.BytesIO()
    Image.new(mode, (16, 16), color if mode == "RGB" else (*color, 0)).save(buffer, format="PNG")
    return buffer.getvalue()


def save_jpg(path: Path, color: tuple[int, int, int]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (16, 16), color).save(path, format="JPEG", quality=100)
    return path


def pixel(image: Image.Image) -> tuple[int, int, int]:
    assert image.mode == "RGB" and image.size == (16, 16)
    r, g, b = image.getpixel((8, 8))
    return round(r / 255) * 255, round(g / 255) * 255, round(b / 255) * 255  # JPEG noise


# ----------------------------------------------------------------------------------------------------------- MMMU

IMAGE = pa.struct([("bytes", pa.binary()), ("path", pa.string())])
MMMU_SCHEMA = pa.schema(
    [(c, pa.string()) for c in ("id", "question", "options", "explanation")]
    + [(f"image_{k}", IMAGE) for k in range(1, 8)]
    + [(c, pa.string()) for c in ("img_type", "answer", "topic_difficulty", "question_type", "subfield")]
)


def mmmu_row(item_id: str, question: str, options: str, answer: str, qtype: str, images: list[bytes]) -> dict:
    row = {"id": item_id, "question": question, "options": options, "explanation": "", "img_type": "['Tables']"}
    row.update({"answer": answer, "topic_difficulty": "Easy", "question_type": qtype, "subfield": "x"})
    for k in range(1, 8):
        row[f"image_{k}"] = {"bytes": images[k - 1], "path": f"{k}.png"} if k <= len(images) else None
    return row


MMMU_ROWS = {
    "Art": [
        mmmu_row(
            "validation_Art_2",
            "Which option matches <image 1>? ",
            "['<image 2>', 'cat', 'dog']",
            "A",
            "multiple-choice",
            [png(RED), png(BLUE)],
        ),
        mmmu_row(
            "validation_Art_1", "Pick one.", "['$9.00', 'the loss is unlimited']", "B", "multiple-choice", [png(GREEN)]
        ),
    ],
    "Physics": [
        mmmu_row(
            "validation_Physics_1",
            "<image 2> and <image 1>: ratio?",
            "[]",
            "['24/7', '3.429']",
            "open",
            [png(RED), png(GREEN), png(BLUE)],
        ),  # image_3 never referenced: appended last
    ],
}
ART2_PROMPT = f"Which option matches <image 1>?\n(A) <image 2>\n(B) cat\n(C) dog\n\n{MC_INSTR}"


def write_parquet(rows: list[dict], path: Path, schema: pa.Schema | None = None) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.Table.from_pylist(rows, schema=schema), path)
    return path


@pytest.fixture()
def mmmu_tree(tmp_path: Path) -> Path:
    for subject, rows in MMMU_ROWS.items():
        write_parquet(rows, tmp_path / "MMMU" / subject / "validation-00000-of-00001.parquet", MMMU_SCHEMA)
        write_parquet(rows[:1], tmp_path / "MMMU" / subject / "dev-00000-of-00001.parquet", MMMU_SCHEMA)
    return tmp_path / "MMMU"


def test_mmmu_per_subject_tree(mmmu_tree: Path) -> None:
    items = MMMU(str(mmmu_tree)).load()
    assert [i.id for i in items] == ["validation_Art_1", "validation_Art_2", "validation_Physics_1"]
    art1, art2, phys = items
    assert art2.prompt == ART2_PROMPT  # question stripped; one blank line before the instruction
    assert art1.prompt == f"Pick one.\n(A) $9.00\n(B) the loss is unlimited\n\n{MC_INSTR}"
    assert phys.prompt == f"<image 2> and <image 1>: ratio?\n{OPEN_INSTR}"
    assert [pixel(im) for im in art2.images] == [RED, BLUE]  # <image 2> referenced only in the options
    assert [pixel(im) for im in phys.images] == [GREEN, RED, BLUE]  # first occurrence, then unreferenced
    assert art2.gold == "A" and art2.meta["all_choices"] == ["A", "B", "C"]
    assert art2.meta["index2ans"] == {"A": "<image 2>", "B": "cat", "C": "dog"}
    assert phys.gold == ["24/7", "3.429"]  # stringified list gold parsed with literal_eval
    bench = MMMU(str(mmmu_tree))
    assert bench.breakdown_keys(art2) == {
        "subject": ["Art"],
        "discipline": ["Art and Design"],
        "question_type": ["multiple-choice"],
    }
    assert bench.breakdown_keys(phys)["discipline"] == ["Science"]


def test_mmmu_merged_parquet_matches_tree(mmmu_tree: Path, tmp_path: Path) -> None:
    rows = MMMU_ROWS["Physics"] + MMMU_ROWS["Art"]  # a different file order: items are sorted anyway
    merged = write_parquet(rows, tmp_path / "merged" / "data" / "validation-00000-of-00001.parquet", MMMU_SCHEMA)
    tree = MMMU(str(mmmu_tree)).load()
    for path in (merged, merged.parent.parent, merged.parent):  # a file, a repo folder, a data folder
        loaded = MMMU(str(path)).load()
        assert [(i.id, i.prompt, i.gold) for i in loaded] == [(i.id, i.prompt, i.gold) for i in tree]
    physics_only = MMMU(str(merged), subjects=["Physics"]).load()
    assert [i.id for i in physics_only] == ["validation_Physics_1"]
    assert [i.id for i in MMMU(str(mmmu_tree), split="dev").load()] == ["validation_Art_2", "validation_Physics_1"]


def test_mmmu_scoring(mmmu_tree: Path) -> None:
    bench = MMMU(str(mmmu_tree), subjects=["Art", "Physics"])
    art1, art2, phys = bench.load()
    rng = random.Random(0)
    assert bench.score(art1, "B", rng) == bench.score(art1, "B", rng)
    result = bench.score(art1, "B. \n", rng)  # stripped first: "B." then the '.' goes -> B
    assert result.correct and result.extracted == "B" and not result.fallback
    assert not bench.score(art2, "The answer is (B).", rng).correct
    result = bench.score(art2, "no idea", rng)  # nothing parses: seeded random pick, flagged
    assert result.fallback and result.extracted in {"A", "B", "C"}
    picks = [bench.score(art2, "no idea", random.Random(7)).extracted for _ in range(3)]
    assert len(set(picks)) == 1  # same seed, same pick
    assert bench.score(phys, "24/7", rng).correct  # list gold: any element
    result = bench.score(phys, "The ratio is 3.43", rng)  # tail after "is ", float 3.43 == round(3.429, 2)
    assert result.correct and result.extracted == "[3.43]"
    assert not bench.score(phys, "3.44", rng).correct


def test_mmmu_errors(tmp_path: Path, mmmu_tree: Path) -> None:
    with pytest.raises(FileNotFoundError, match="mmmu: .*does not exist"):
        MMMU(str(tmp_path / "nowhere")).load()
    with pytest.raises(FileNotFoundError, match="mmmu: no parquet files"):
        MMMU(str(tmp_path)).load()  # a folder without the expected layout
    with pytest.raises(ValueError, match="mmmu: unknown subjects \\['Alchemy'\\]"):
        MMMU(str(mmmu_tree), subjects=["Alchemy"])
    bad = write_parquet([{"id": "validation_Art_1", "question": "q"}], tmp_path / "bad.parquet")
    with pytest.raises(ValueError, match=r"mmmu: .*bad\.parquet lacks columns \['options'"):
        MMMU(str(bad)).load()
    with pytest.raises(FileNotFoundError, match=r"mmmu: no .*Art/test-\*\.parquet for subject Art"):
        MMMU(str(mmmu_tree), split="test").load()


# ------------------------------------------------------------------------------------------------------ MathVista

MV_QUERY_MC = (
    "Hint: Please answer the question and provide the correct option letter, e.g., A, B, C, D, at the end.\n"
    "Question: Find x.\nChoices:\n(A) 3/11\n(B) 8/11"
)
MV_RECORDS = {
    "2": {
        "question": "Find x.",
        "choices": ["3/11", "8/11"],
        "unit": None,
        "precision": None,
        "answer": "8/11",
        "question_type": "multi_choice",
        "answer_type": "text",
        "query": MV_QUERY_MC,
    },
    "1": {
        "question": "Distance?",
        "choices": None,
        "unit": None,
        "precision": 1.0,
        "answer": "1.2",
        "question_type": "free_form",
        "answer_type": "float",
        "query": "Hint: float.\nQuestion: Distance?",
    },
    "10": {
        "question": "Age gap?",
        "choices": None,
        "unit": "years",
        "precision": None,
        "answer": "5",
        "question_type": "free_form",
        "answer_type": "integer",
        "query": "Question: Age gap? (Unit: years)",
    },
}
COLORS = {"1": RED, "2": GREEN, "10": BLUE}


def mv_metadata(pid: str) -> dict:
    skills = ["arithmetic reasoning", "statistical reasoning"] if pid == "10" else ["algebraic reasoning"]
    return {
        "split": "testmini",
        "language": "english",
        "img_width": 16,
        "img_height": 16,
        "source": "S" + pid,
        "category": "math-targeted-vqa",
        "task": "geometry problem solving",
        "context": "geometry diagram",
        "grade": "high school",
        "skills": skills,
    }


@pytest.fixture()
def mathvista_parquet(tmp_path: Path) -> Path:
    rows = []
    for pid, record in MV_RECORDS.items():
        image = {"bytes": png(COLORS[pid]), "path": f"{pid}.jpg"}
        rows.append(
            {"pid": pid, **record, "image": f"images/{pid}.jpg", "decoded_image": image, "metadata": mv_metadata(pid)}
        )
    return write_parquet(rows, tmp_path / "MathVista" / "data" / "testmini-00000-of-00001-725687bf.parquet")


@pytest.fixture()
def mathvista_json(tmp_path: Path) -> Path:
    root = tmp_path / "github" / "data"
    records, queries = {}, {}
    for pid, record in MV_RECORDS.items():
        record = {k: v for k, v in record.items() if k != "query"}  # GitHub testmini.json has no query
        precision = int(record["precision"]) if record["precision"] else None  # the JSON stores an int
        records[pid] = {
            **record,
            "precision": precision,
            "image": f"images/{pid}.jpg",
            "pid": pid,
            "metadata": mv_metadata(pid),
        }
        queries[pid] = MV_RECORDS[pid]["query"]
        save_jpg(root / "images" / f"{pid}.jpg", COLORS[pid])
    (root / "testmini.json").write_text(json.dumps(records))
    (root / "query.json").write_text(json.dumps(queries))
    return root / "testmini.json"


def test_mathvista_parquet(mathvista_parquet: Path) -> None:
    bench = MathVista(str(mathvista_parquet.parent.parent))  # the repo folder: finds data/testmini-*.parquet
    items = bench.load()
    assert [i.id for i in items] == ["1", "2", "10"]  # numeric pid order
    assert items[1].prompt == MV_QUERY_MC  # the query field, verbatim
    assert [pixel(i.images[0]) for i in items] == [RED, GREEN, BLUE]
    assert items[1].meta["choices"] == ["3/11", "8/11"] and items[0].meta["precision"] == 1.0
    groups = bench.breakdown_keys(items[2])
    assert groups["skills"] == ["arithmetic reasoning", "statistical reasoning"]  # multi-label
    assert groups["question_type"] == ["free_form"] and groups["source"] == ["S10"] and groups["grade"]


def test_mathvista_json_matches_parquet(mathvista_json: Path, mathvista_parquet: Path) -> None:
    from_json = MathVista(str(mathvista_json)).load()
    from_parquet = MathVista(str(mathvista_parquet)).load()
    assert [(i.id, i.prompt, i.gold) for i in from_json] == [(i.id, i.prompt, i.gold) for i in from_parquet]
    assert [pixel(i.images[0]) for i in from_json] == [RED, GREEN, BLUE]
    assert from_json[2].meta["skills"] == from_parquet[2].meta["skills"]


def test_mathvista_scoring(mathvista_parquet: Path) -> None:
    bench = MathVista(str(mathvista_parquet))
    floaty, mc, integer = bench.load()
    rng = random.Random(0)
    result = bench.score(floaty, " 1.20 ", rng)  # rule 4 after the strip: "1.2", official path
    assert result.correct and result.extracted == "1.2" and not result.fallback
    result = bench.score(floaty, "The answer is 1.2.", rng)  # needs the (approximate) extractor
    assert result.correct and result.fallback
    assert bench.score(mc, "8/11", rng) == bench.score(mc, "8/11", rng)
    assert bench.score(mc, "8/11", rng).correct and not bench.score(mc, "8/11", rng).fallback
    result = bench.score(mc, "B", rng)  # a bare letter is not a choice: extractor -> B -> 8/11
    assert result.correct and result.fallback and result.extracted == "B"
    assert bench.score(integer, "5 years", rng).correct  # the extractor drops the unit
    assert not bench.score(integer, "", rng).correct  # official: "" -> None for integers
    quick = MathVista(str(mathvista_parquet), quick_extract=True)
    result = quick.score(integer, 'The answer is "5".', rng)
    assert result.correct and not result.fallback


def test_mathvista_errors(tmp_path: Path, mathvista_json: Path) -> None:
    with pytest.raises(FileNotFoundError, match="mathvista: .*testmini-\\*\\.parquet"):
        MathVista(str(tmp_path / "nowhere")).load()
    (mathvista_json.parent / "query.json").unlink()
    with pytest.raises(FileNotFoundError, match="mathvista: .*query.json"):
        MathVista(str(mathvista_json)).load()
    (mathvista_json.parent / "query.json").write_text(json.dumps({p: r["query"] for p, r in MV_RECORDS.items()}))
    (mathvista_json.parent / "images" / "10.jpg").unlink()
    with pytest.raises(FileNotFoundError, match="mathvista: image of pid 10 .*image_root"):
        MathVista(str(mathvista_json)).load()
    bad = write_parquet([{"pid": "1", "answer": "1"}], tmp_path / "testmini-bad.parquet")
    with pytest.raises(ValueError, match=r"mathvista: .*testmini-bad\.parquet lacks columns \['query'"):
        MathVista(str(bad)).load()


# ------------------------------------------------------------------------------------------------------- ImageNet

SYNSETS = """n01443537 goldfish, Carassius auratus
n01855672 goose
n02085620 Chihuahua
n02099601 golden retriever
n03590841 jack-o'-lantern
"""


@pytest.fixture()
def imagenet_a(tmp_path: Path) -> tuple[Path, Path]:
    root = tmp_path / "imagenet-a"
    save_jpg(root / "n01855672" / "0.006116_stick insect _ stick insect_0.87.jpg", RED)  # spaces in names
    save_jpg(root / "n01855672" / "b.JPEG", GREEN)
    save_jpg(root / "n01855672" / "c.jpeg", BLUE)
    (root / "n01855672" / "notes.txt").write_text("not an image")
    save_jpg(root / "n01443537" / "fish.jpg", RED)  # several lemmas: excluded by the DC-SFT rule
    save_jpg(root / "n02099601" / "dog.jpg", RED)  # a space in the lemma: excluded
    save_jpg(root / "n03590841" / "pumpkin.jpg", GREEN)
    (root / "README.txt").write_text("ImageNet-A")
    mapping = tmp_path / "LOC_synset_mapping.txt"
    mapping.write_text(SYNSETS)
    return root, mapping


def test_imagenet_folder(imagenet_a: tuple[Path, Path]) -> None:
    root, mapping = imagenet_a
    bench = ImageNetFolder(str(root), str(mapping))
    items = bench.load()
    assert [i.id for i in items] == [
        "n01855672/0.006116_stick insect _ stick insect_0.87.jpg",
        "n01855672/b.JPEG",
        "n01855672/c.jpeg",
        "n03590841/pumpkin.jpg",
    ]
    assert {i.prompt for i in items} == {DCSFT_PROMPT}
    assert [i.gold for i in items] == ["goose", "goose", "goose", "jack-o'-lantern"]
    assert [pixel(i.images[0]) for i in items] == [RED, GREEN, BLUE, GREEN]
    assert bench.breakdown_keys(items[3]) == {"class": ["jack-o'-lantern"]}
    rng = random.Random(0)
    assert bench.score(items[0], " Goose.\n", rng).correct
    assert not bench.score(items[0], "geese", rng).correct
    everything = ImageNetFolder(str(root), str(mapping), name="imagenet_all", class_subset="all").load()
    assert sorted({i.gold for i in everything}) == ["golden retriever", "goldfish", "goose", "jack-o'-lantern"]


def test_imagenet_folder_errors(imagenet_a: tuple[Path, Path], tmp_path: Path) -> None:
    root, mapping = imagenet_a
    with pytest.raises(FileNotFoundError, match="imagenet_r: synset mapping .*missing.txt"):
        ImageNetFolder(str(root), str(tmp_path / "missing.txt"), name="imagenet_r").load()
    with pytest.raises(FileNotFoundError, match="imagenet_a: image folder"):
        ImageNetFolder(str(tmp_path / "none"), str(mapping)).load()
    with pytest.raises(ValueError, match="class_subset"):
        ImageNetFolder(str(root), str(mapping), class_subset="some")
    (root / "n99999999").mkdir()
    with pytest.raises(ValueError, match="imagenet_a: folders \\['n99999999'\\]"):
        ImageNetFolder(str(root), str(mapping)).load()


def test_dcsft_json_with_image_root(tmp_path: Path) -> None:
    local = tmp_path / "local-a"
    save_jpg(local / "n01855672" / "x.jpg", RED)
    save_jpg(tmp_path / "data" / "imgs" / "y.jpg", BLUE)
    records = [
        {"problem": DCSFT_PROMPT, "solution": "goose", "image": "/data/dataset/Imagenet-A/images/n01855672/x.jpg"},
        {"problem": DCSFT_PROMPT, "solution": "Chihuahua", "image": "imgs/y.jpg"},  # relative to the JSON
    ]
    path = tmp_path / "data" / "imagenet-a_val_processed.json"
    path.write_text(json.dumps(records))
    bench = DCSFTJson(str(path), "imagenet_a", image_root={"/data/dataset/Imagenet-A/images/": str(local)})
    items = bench.load()
    assert [(i.id, i.prompt, i.gold) for i in items] == [("0", DCSFT_PROMPT, "goose"), ("1", DCSFT_PROMPT, "Chihuahua")]
    assert [pixel(i.images[0]) for i in items] == [RED, BLUE]
    assert bench.breakdown_keys(items[1]) == {"class": ["Chihuahua"]}
    assert bench.score(items[1], "chihuahua.", random.Random(0)).correct
    with pytest.raises(FileNotFoundError, match=r"imagenet_a: .*record 0: image .*x\.jpg.* set image_root"):
        DCSFTJson(str(path), "imagenet_a").load()
    with pytest.raises(ValueError, match="valid names"):
        DCSFTJson(str(path), "imagenet_a", scorer="f1")


def test_dcsft_json_grounding_and_errors(tmp_path: Path) -> None:
    save_jpg(tmp_path / "a.jpg", RED)
    path = tmp_path / "ref.json"
    path.write_text(json.dumps([{"problem": "Locate the dog.", "solution": "[0, 0, 10, 10]", "image": "a.jpg"}]))
    bench = DCSFTJson(str(path), "refcoco", scorer="iou")
    (item,) = bench.load()
    assert bench.score(item, "[0, 0, 10, 20]", random.Random(0)).correct  # IoU 0.5 (official convention)
    assert bench.breakdown_keys(item) == {}
    path.write_text(json.dumps([{"problem": "p", "image": "a.jpg"}]))
    with pytest.raises(ValueError, match=r"refcoco: .*record 0: a 'problem' record needs a 'solution'"):
        bench.load()
    with pytest.raises(FileNotFoundError, match="refcoco: .*not found"):
        DCSFTJson(str(tmp_path / "none.json"), "refcoco").load()


def test_lazy_item_reads_rgb_each_time(tmp_path: Path) -> None:
    # RGBA is composited onto white (qwen-vl-utils); a LazyEvalItem is still an EvalItem.
    item = LazyEvalItem("x", "p", [png(RED, mode="RGBA"), save_jpg(tmp_path / "g.jpg", GREEN)], "g", {})
    assert isinstance(item, EvalItem)
    first, second = item.images, item.images
    assert [pixel(im) for im in first] == [(255, 255, 255), GREEN]
    assert first[0] is not second[0]
    assert "images=2" in repr(item)
