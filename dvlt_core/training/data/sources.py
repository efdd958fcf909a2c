"""Training sources named in a config (``data.sources``): folder, ScanNet++ and synthetic
built in; other packages add source types with :func:`register_source`, found through the
``dvlt.training_sources`` entry-point group (dvlt_ros adds ``rosbag``, see
:mod:`dvlt_ros.bags.training_source`)."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from importlib.metadata import entry_points
from typing import Any

from dvlt_core.training.data.folder import find_folder_scenes
from dvlt_core.training.data.scannetpp import scannetpp_scenes
from dvlt_core.training.data.scene import Scene
from dvlt_core.training.data.synthetic import SyntheticSpec, synthetic_scenes

BUILTIN_SOURCE_TYPES = ("folder", "scannetpp", "synthetic")
#: Entry points ``<type> = module:loader`` of installed packages that add source types.
ENTRY_POINT_GROUP = "dvlt.training_sources"
#: A registered source: the spec without ``type`` and ``repeat`` -> its scenes; it refuses
#: keys it does not know.
SourceLoader = Callable[[Mapping[str, Any]], Sequence[Scene]]
_REGISTERED: dict[str, SourceLoader] = {}


def register_source(kind: str, loader: SourceLoader) -> None:
    """Make ``{type: kind, ...}`` specs load their scenes with ``loader``."""
    if kind in BUILTIN_SOURCE_TYPES:
        raise ValueError(f"data source type {kind!r} is built in")
    _REGISTERED[kind] = loader


def _registered(kind: str) -> SourceLoader | None:
    """The loader of ``kind``, loading its entry point on first use."""
    if kind not in _REGISTERED:
        for entry in entry_points(group=ENTRY_POINT_GROUP, name=kind):
            register_source(kind, entry.load())
    return _REGISTERED.get(kind)


def source_types() -> tuple[str, ...]:
    """The source types a config may name: built in, registered or installed."""
    installed = {entry.name for entry in entry_points(group=ENTRY_POINT_GROUP)}
    return (*BUILTIN_SOURCE_TYPES, *sorted(set(_REGISTERED) | installed))


def scenes_from_source(spec: Mapping[str, Any]) -> list[Scene]:
    """The scenes of one source spec.

    * ``{type: folder, root: DIR, max_depth: null}``: scene folders in the dataset format.
    * ``{type: rosbag, path: BAG, cameras: "IMAGE,INFO,DEPTH", pose: {source: tf}, ...}``: rosbag2
      recordings, converted once into a cache (registered by dvlt_ros, see
      :mod:`dvlt_ros.bags.training_source`).
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
        elif kind == "scannetpp":
            scenes = list(scannetpp_scenes(spec.pop("root"), spec.pop("split_file", None),
                                           spec.pop("max_depth", None)))
        elif kind == "synthetic":
            num = int(spec.pop("num_scenes"))
            seed = int(spec.pop("seed", 0))
            scenes = list(synthetic_scenes(num, seed, SyntheticSpec(**spec)))
            spec = {}
        elif (loader := _registered(str(kind))) is not None:
            scenes = list(loader(spec))
            spec = {}
        else:
            raise ValueError(f"data source type must be one of {source_types()}, got {kind!r}"
                             + ("; the rosbag source comes with dvlt_ros: install (or reinstall, "
                                "e.g. pip install -e .) the package with its bags extra so that "
                                "its entry points are registered" if kind == "rosbag" else ""))
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
