"""Training sources named in a config (``data.sources``): folder, rosbag, ScanNet++ and
synthetic."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from dvlt_core.training.data.folder import find_folder_scenes
from dvlt_core.training.data.rosbag_source import rosbag_scenes
from dvlt_core.training.data.scannetpp import scannetpp_scenes
from dvlt_core.training.data.scene import Scene
from dvlt_core.training.data.synthetic import SyntheticSpec, synthetic_scenes

SOURCE_TYPES = ("folder", "rosbag", "scannetpp", "synthetic")


def scenes_from_source(spec: Mapping[str, Any]) -> list[Scene]:
    """The scenes of one source spec.

    * ``{type: folder, root: DIR, max_depth: null}``: scene folders in the dataset format.
    * ``{type: rosbag, path: BAG, cameras: "IMAGE,INFO,DEPTH", pose: {source: tf}, ...}``: rosbag2
      recordings, converted once into a cache (see :mod:`dvlt_core.training.data.rosbag_source`).
    * ``{type: scannetpp, root: DIR, split_file: nvs_sem_train.txt, max_depth: null}``.
    * ``{type: synthetic, num_scenes: 64, seed: 0, width: 64, height: 64, num_frames: 12,
      num_cameras: 1}``: generated rooms (see :mod:`dvlt_core.training.data.synthetic`).

    ``repeat`` (int ≥ 1, default 1) lists the source's scenes that many times (oversampling).
    """
    spec = dict(spec)
    kind = spec.pop("type", None)
    repeat = int(spec.pop("repeat", 1))
    if repeat < 1:
        raise ValueError(f"source repeat must be >= 1, got {repeat}")
    try:
        if kind == "folder":
            scenes: list[Scene] = list(find_folder_scenes(spec.pop("root"), spec.pop("max_depth",
                                                                                     None)))
        elif kind == "rosbag":
            scenes = list(rosbag_scenes(spec))
            spec = {}
        elif kind == "scannetpp":
            scenes = list(scannetpp_scenes(spec.pop("root"), spec.pop("split_file", None),
                                           spec.pop("max_depth", None)))
        elif kind == "synthetic":
            num = int(spec.pop("num_scenes"))
            seed = int(spec.pop("seed", 0))
            scenes = list(synthetic_scenes(num, seed, SyntheticSpec(**spec)))
            spec = {}
        else:
            raise ValueError(f"data source type must be one of {SOURCE_TYPES}, got {kind!r}")
    except KeyError as exc:
        raise ValueError(f"data source {kind!r} needs the key {exc.args[0]!r}") from None
    if spec:
        raise ValueError(f"unknown keys {sorted(spec)} in the {kind!r} data source")
    return scenes * repeat


def scenes_from_sources(specs: Sequence[Mapping[str, Any]]) -> list[Scene]:
    """All scenes of all sources, in order."""
    scenes = [scene for spec in specs for scene in scenes_from_source(spec)]
    if not scenes:
        raise ValueError("data.sources yielded no scenes; add at least one source")
    return scenes
