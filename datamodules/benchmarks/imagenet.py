"""ImageNet-A / ImageNet-R / ImageNet-val in the DC-SFT style: the original wnid folders or the processed JSONs.

DC-SFT evaluation (official `infer/test_dp.py`, github.com/byyx666/DC-SFT): one fixed instruction, image before
text, the whole completion is the answer, scored by `exact_match` (strip -> strip('.') -> lower, then ==). Class
selection (as in the released processed files): keep the classes whose LOC_synset_mapping line has exactly one lemma
without a space (87 of ImageNet-A's 200, 68 of ImageNet-R's 200); the gold is that lemma verbatim (`Shih-Tzu`,
`jack-o'-lantern`).
"""

from __future__ import annotations

import random
from pathlib import Path

from datamodules.benchmarks.base import Benchmark, EvalItem, LazyEvalItem, ScoreResult
from datamodules.formats import IMAGE_MARKER, read_samples
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
    """An official DC-SFT processed eval file: {"problem", "solution", "image"} rows (or `messages` + `images`), JSON
    list or JSONL.

    Args:
        path: the JSON file (e.g. `imagenet-a_val_processed.json`).
        name: benchmark name used in metric names.
        image_root: maps path prefixes of the authors' machine (e.g. `/data/dataset/Imagenet-A/images/`) to local
            folders, as for training data (`datamodules/formats.py`: longest prefix wins, `file://` dropped,
            relative paths resolved against the file's folder).
        scorer: a name from `datamodules.scoring.SCORERS` (`exact` for classification, `iou` for grounding).

    Breakdown: per class (= solution), except for `iou`, where every solution is a different box.
    """

    def __init__(self, path: str, name: str, image_root: dict[str, str] | None = None, scorer: str = "exact") -> None:
        self.path = path
        self.name = name
        self.image_root = dict(image_root or {})
        self.scorer = scorer
        self._scorer = get_scorer(scorer)

    def load(self) -> list[EvalItem]:
        try:  # the same reader as training data: JSON list or JSONL, either official format
            samples = read_samples(self.path, self.image_root)
        except (ValueError, FileNotFoundError) as err:
            raise type(err)(self._error(str(err))) from None
        items: list[EvalItem] = []
        for sample in samples:
            if sample.solution is None:
                raise ValueError(self._error(f"{sample.source} has no solution (answer) to score against"))
            for image in sample.images:
                if not Path(image).is_file():
                    raise FileNotFoundError(
                        self._error(f"{sample.source}: image not found at {image}; set image_root to map its prefix")
                    )
            user = next(m["content"] for m in sample.messages if m["role"] == "user")
            meta = {"class": sample.solution, "image": sample.images[0] if sample.images else None}
            items.append(LazyEvalItem(sample.id, user.replace(IMAGE_MARKER, ""), sample.images, sample.solution, meta))
        return items

    def score(self, item: EvalItem, response: str, rng: random.Random) -> ScoreResult:
        response = response.strip()
        return ScoreResult(bool(self._scorer(response, item.gold)), response)

    def breakdown_keys(self, item: EvalItem) -> dict[str, list[str]]:
        return {} if self.scorer == "iou" else {"class": [item.meta["class"]]}
