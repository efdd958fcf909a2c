"""The benchmarks (upstream ``data=benchmark_lite`` / ``data=benchmark``) and their reference.

Dataset folders follow upstream's ``${data_root}/test/<dataset>`` convention, with the loader
settings of upstream's ``test_datasets/*.yaml``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from dvlt_core.eval.datasets.dtu import DTUDataset
from dvlt_core.eval.datasets.eth3d import ETH3DDataset
from dvlt_core.eval.datasets.nuscenes import NuScenesDataset
from dvlt_core.eval.datasets.scannetpp import ScanNetppDataset
from dvlt_core.eval.datasets.sevenscenes import SevenScenesDataset

# name → (loader, folder under <data_root>/test, loader arguments)
DATASETS: dict[str, tuple[Callable[..., Any], str, dict[str, Any]]] = {
    "dtu": (DTUDataset, "dtu", {"view_ranking": "middle_first"}),
    "eth3d": (ETH3DDataset, "eth3d", {"max_frames": 100}),
    "sevenscenes": (SevenScenesDataset, "sevenscenes",
                    {"view_sampling": "every_11", "split": "test", "depth_source": "proj",
                     "min_depth": 0.1, "max_depth": 10.0}),
    "scannetpp": (ScanNetppDataset, "scannetpp",
                  {"max_frames": 100, "split_file": "nvs_sem_val.txt"}),
    "nuscenes": (NuScenesDataset, "nuscenes",
                 {"max_frames": 50, "max_depth": 100.0, "split": "trainval", "scenes": "eval"}),
}

BENCHMARKS: dict[str, tuple[str, ...]] = {
    "lite": ("dtu", "eth3d", "sevenscenes"),
    "full": ("dtu", "eth3d", "sevenscenes", "scannetpp", "nuscenes"),
}

# Upstream README, "DVLT reference results on the full benchmark" (released checkpoint, K = 16).
REFERENCE_RESULTS: dict[str, dict[str, float]] = {
    "dtu": {"pose/Auc_3": 0.8319, "pose/Auc_30": 0.9880,
            "pointmap/inlier_depth@3%": 0.9706, "depth/AbsRel": 0.0093},
    "eth3d": {"pose/Auc_3": 0.6604, "pose/Auc_30": 0.9536,
              "pointmap/inlier_depth@3%": 0.7717, "depth/AbsRel": 0.0267},
    "sevenscenes": {"pose/Auc_3": 0.1393, "pose/Auc_30": 0.8172,
                    "pointmap/inlier_depth@3%": 0.7437, "depth/AbsRel": 0.0349},
    "scannetpp": {"pose/Auc_3": 0.7941, "pose/Auc_30": 0.9803,
                  "pointmap/inlier_depth@3%": 0.9239, "depth/AbsRel": 0.0167},
    "nuscenes": {"pose/Auc_3": 0.4340, "pose/Auc_30": 0.8534,
                 "pointmap/inlier_depth@3%": 0.5853, "depth/AbsRel": 0.0673},
}

# The table columns: (metric key, header).
TABLE_COLUMNS = (
    ("pose/Auc_3", "Pose AUC@3"),
    ("pose/Auc_30", "Pose AUC@30"),
    ("pointmap/inlier_depth@3%", "Depth inlier@3%"),
    ("depth/AbsRel", "Depth AbsRel"),
)


def build_dataset(
    name: str,
    data_root: str | Path | None = None,
    root: str | Path | None = None,
    img_size: int = 504,
    **overrides: Any,
):
    """Dataset ``name`` from ``root`` (default ``<data_root>/test/<folder>``)."""
    if name not in DATASETS:
        raise ValueError(f"unknown dataset {name!r}; known: {sorted(DATASETS)}")
    loader, folder, defaults = DATASETS[name]
    if root is None:
        if data_root is None:
            raise ValueError(f"give data_root or a root for {name}")
        root = Path(data_root) / "test" / folder
    return loader(root, img_size=img_size, **{**defaults, **overrides})


def build_benchmark(
    benchmark: str,
    data_root: str | Path | None = None,
    roots: Mapping[str, str | Path] | None = None,
    img_size: int = 504,
) -> dict[str, Any]:
    """The datasets of ``lite`` or ``full``, keyed by name."""
    if benchmark not in BENCHMARKS:
        raise ValueError(f"benchmark must be one of {sorted(BENCHMARKS)}, got {benchmark!r}")
    roots = dict(roots or {})
    return {name: build_dataset(name, data_root, roots.get(name), img_size)
            for name in BENCHMARKS[benchmark]}
