"""Benchmark loaders (DTU, ETH3D, 7-Scenes, ScanNet++, NuScenes, held-out synthetic) with
upstream's evaluation preprocessing."""

from dvlt_core.eval.datasets.base import (
    EvalDataset,
    EvalSequence,
    RawFrames,
    preprocess_frames,
    select_frames,
)
from dvlt_core.eval.datasets.benchmarks import (
    BENCHMARKS,
    DATASETS,
    REFERENCE_RESULTS,
    TABLE_COLUMNS,
    build_benchmark,
    build_dataset,
)
from dvlt_core.eval.datasets.dtu import DTUDataset
from dvlt_core.eval.datasets.eth3d import ETH3DDataset
from dvlt_core.eval.datasets.nuscenes import NuScenesDataset
from dvlt_core.eval.datasets.scannetpp import ScanNetppDataset
from dvlt_core.eval.datasets.sevenscenes import SevenScenesDataset
from dvlt_core.eval.datasets.synthetic import SyntheticEvalDataset

__all__ = [
    "BENCHMARKS",
    "DATASETS",
    "REFERENCE_RESULTS",
    "TABLE_COLUMNS",
    "DTUDataset",
    "ETH3DDataset",
    "EvalDataset",
    "EvalSequence",
    "NuScenesDataset",
    "RawFrames",
    "ScanNetppDataset",
    "SevenScenesDataset",
    "SyntheticEvalDataset",
    "build_benchmark",
    "build_dataset",
    "preprocess_frames",
    "select_frames",
]
