"""ImageNet-A / ImageNet-R / ImageNet-val in the DC-SFT style: the original wnid folders or the processed JSONs.

DC-SFT evaluation (benchmarks.md §3.3, paper.md Step 5): one fixed instruction, image before text, the whole
completion is the answer, scored by `exact_match` (strip -> strip('.') -> lower, then ==). Class selection
(§3.2): keep the classes whose LOC_synset_mapping line has exactly one lemma without a space (87 of ImageNet-A's 200,
68 of ImageNet-R's 200); the gold is that lemma verbatim (`Shih-Tzu`, `jack-o'-lantern`).
"""

from __future__ import annotations

import json
import random
from pathlib import Path

from datamodules.benchmarks.base import Benchmark, EvalItem, LazyEvalItem, ScoreResult
from datamodules.scoring import exact_match, get_scorer

DCSFT_PROMPT = "Please provide the object name in the image. Output the answer using one word."
IMAGE_SUFFIXES = (".jpg", ".jpeg")  # compared lower-cased, so .JPEG (ImageNet val) is included
CLASS_SUBSETS = ("single_lemma", "all")


def read_synset_mapping(path: Path, benchmark: str) -> dict[str, list[str]]:
    """`wnid lemma1, lemma2, ...` lines -> {wnid: [lemma, ...]}."""
    if not path.is_file():
        raise FileNotFoundError(f"{benchmark}: synset mapping {path} not found (expected LOC_synset_mapping.txt)")
    mapping = {}
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        wnid, _, names = line.strip().partition(" ")
        if not wnid.startswith("n") or not names:
            raise ValueError(f"{benchmark}: {path} line {number} is not `wnid lemma1, lemma2, ...`: {line!r}")
        mapping[wnid] = [name.strip() for name in names.split(",")]
    return mapping


def single_lemma(lemmas: list[str]) -> bool:
    """DC-SFT class rule: exactly one lemma, and it has no space."""
    return len(lemmas) == 1 and " " not in lemmas[0]


class ImageNetFolder(Benchmark):
    """An ImageNet-style folder `<root>/<wnid>/<image>` (ImageNet-A, ImageNet-R, ImageNet val sorted by wnid).

    Args:
        root: the dataset folder (non-directories such as README.txt are skipped).
        synset_mapping: path to LOC_synset_mapping.txt (wnid -> lemmas).
        name: benchmark name used in metric names (`imagenet_a`, `imagenet_r`, `imagenet_val`).
        class_subset: `single_lemma` (the DC-SFT selection) or `all` (every class, gold = first lemma).
    """

    def __init__(
        self, root: str, synset_mapping: str, name: str = "imagenet_a", class_subset: str = "single_lemma"
    ) -> None:
        if class_subset not in CLASS_SUBSETS:
            raise ValueError(f"{name}: class_subset must be one of {CLASS_SUBSETS}, got {class_subset!r}")
        self.root = root
        self.synset_mapping = synset_mapping
        self.name = name
        self.class_subset = class_subset

    def load(self) -> list[EvalItem]:
        root = Path(self.root)
        if not root.is_dir():
            raise FileNotFoundError(self._error(f"image folder {root} not found (expected <root>/<wnid>/<image>)"))
        mapping = read_synset_mapping(Path(self.synset_mapping), self.name)
        folders = sorted(p for p in root.iterdir() if p.is_dir())
        unknown = [p.name for p in folders if p.name not in mapping]
        if unknown:
            raise ValueError(self._error(f"folders {unknown[:5]} under {root} are not wnids of {self.synset_mapping}"))
        items: list[EvalItem] = []
        for folder in folders:
            lemmas = mapping[folder.name]
            if self.class_subset == "single_lemma" and not single_lemma(lemmas):
                continue
            for file in sorted(folder.iterdir()):
                if file.is_file() and file.suffix.lower() in IMAGE_SUFFIXES:
                    meta = {"class": lemmas[0], "wnid": folder.name, "path": str(file)}
                    items.append(LazyEvalItem(f"{folder.name}/{file.name}", DCSFT_PROMPT, [file], lemmas[0], meta))
        if not items:
            raise ValueError(self._error(f"no .jpg/.jpeg images of selected classes under {root}"))
        return items

    def score(self, item: EvalItem, response: str, rng: random.Random) -> ScoreResult:
        response = response.strip()
        return ScoreResult(exact_match(response, item.gold), response)

    def breakdown_keys(self, item: EvalItem) -> dict[str, list[str]]:
        return {"class": [item.meta["class"]]}


class DCSFTJson(Benchmark):
    """An official DC-SFT processed eval JSON: a list of {"problem", "solution", "image"}.

    Args:
        path: the JSON file (e.g. `imagenet-a_val_processed.json`).
        name: benchmark name used in metric names.
        image_root: maps path prefixes of the authors' machine (e.g. `/data/dataset/Imagenet-A/images/`) to local
            folders; the longest matching prefix wins. Relative image paths are resolved against the JSON's folder.
        scorer: a name from `datamodules.scoring.SCORERS` (`exact` for classification, `iou` for grounding).

    Breakdown: per class (= solution), except for `iou`, where every solution is a different box.
    """

    def __init__(self, path: str, name: str, image_root: dict[str, str] | None = None, scorer: str = "exact") -> None:
        self.path = path
        self.name = name
        self.image_root = dict(image_root or {})
        self.scorer = scorer
        self._scorer = get_scorer(scorer)

    def _resolve(self, image: str, base: Path) -> Path:
        for prefix in sorted(self.image_root, key=len, reverse=True):
            if image.startswith(prefix):
                return Path(self.image_root[prefix]) / image[len(prefix) :].lstrip("/")
        path = Path(image)
        return path if path.is_absolute() else base / path

    def load(self) -> list[EvalItem]:
        from datamodules.demo import resolve

        source = Path(resolve(self.path))
        if not source.is_file():
            raise FileNotFoundError(self._error(f"{source} not found (expected a list of problem/solution/image)"))
        try:
            records = json.loads(source.read_text(encoding="utf-8"))
        except json.JSONDecodeError as err:
            raise ValueError(self._error(f"{source} is not valid JSON: {err}")) from None
        if not isinstance(records, list) or not records:
            raise ValueError(self._error(f"{source} must hold a non-empty JSON list of problem/solution/image"))
        items: list[EvalItem] = []
        for index, record in enumerate(records):
            missing = [k for k in ("problem", "solution", "image") if not isinstance(record, dict) or k not in record]
            if missing:
                raise ValueError(self._error(f"{source} record {index} lacks {missing}"))
            path = self._resolve(str(record["image"]), source.parent)
            if not path.is_file():
                raise FileNotFoundError(
                    self._error(
                        f"{source} record {index}: image {record['image']!r} not found at {path}; "
                        "set image_root to map its prefix to a local folder"
                    )
                )
            meta = {"class": str(record["solution"]), "image": record["image"]}
            items.append(LazyEvalItem(str(index), str(record["problem"]), [path], record["solution"], meta))
        return items

    def score(self, item: EvalItem, response: str, rng: random.Random) -> ScoreResult:
        response = response.strip()
        return ScoreResult(bool(self._scorer(response, item.gold)), response)

    def breakdown_keys(self, item: EvalItem) -> dict[str, list[str]]:
        return {} if self.scorer == "iou" else {"class": [item.meta["class"]]}
