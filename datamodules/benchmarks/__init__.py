"""Evaluation benchmarks: readers, official prompts and scoring (interface in `base.py`).

Build one from YAML with `class_path: datamodules.benchmarks.MMMU` and its `init_args`.
"""

from datamodules.benchmarks.base import Benchmark, EvalItem, LazyEvalItem, ScoreResult
from datamodules.benchmarks.grounding import GroundingBenchmark
from datamodules.benchmarks.grounding_readers import LISA, RefCOCO, RefL4
from datamodules.benchmarks.imagenet import DCSFTJson, ImageNetFolder
from datamodules.benchmarks.math_benchmarks import MMK12, MathVerse, MathVision, WeMath
from datamodules.benchmarks.mathvista import MathVista
from datamodules.benchmarks.mmmu import MMMU

__all__ = [
    "Benchmark",
    "DCSFTJson",
    "EvalItem",
    "GroundingBenchmark",
    "ImageNetFolder",
    "LISA",
    "LazyEvalItem",
    "MMK12",
    "MMMU",
    "MathVerse",
    "MathVision",
    "MathVista",
    "RefCOCO",
    "RefL4",
    "ScoreResult",
    "WeMath",
]
