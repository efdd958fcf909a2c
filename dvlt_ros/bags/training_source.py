"""The ``rosbag`` training source: a rosbag2 converted once into a cached scene folder.

::

    {type: rosbag,
     path: bags/run_01,                      # a rosbag2 folder (or file), or a list of them
     cameras: "IMAGE,INFO,DEPTH ...",        # or [IMAGE,INFO,DEPTH strings or {image, info, depth}]
     pose: {source: tf, fixed_frame: map,    # or {source: odometry, odometry_topic: /odom,
            max_gap: 0.5},                   #     extrinsics: {FRAME: [x, y, z, qx, qy, qz, qw]}}
     tolerance: 0.02, min_interval: 0.0, allow_distortion: false,
     max_depth: null,                        # applied when loading, not part of the cache key
     cache_dir: null}                        # default $DVLT_CACHE_DIR/rosbag-scenes

Importing this module registers the source type ``rosbag`` with
:func:`dvlt_core.training.data.sources.register_source`; ``dvlt-train`` finds it through the
``dvlt.training_sources`` entry point (setup.py), so dvlt_core never imports dvlt_ros.

Each bag is converted by :func:`dvlt_ros.bags.to_dataset.convert_bag` into
``<cache_dir>/<bag name>-<key>/<bag name>/``, where ``key`` hashes the bag's files (names, sizes,
modification times and the content of ``metadata.yaml``) together with the conversion options.
The conversion is written into a ``.partial`` folder that is renamed when complete, under a file
lock, so concurrent runs (one per GPU rank) convert a bag once and never see half a scene. A later
run with the same bag and options loads the cached scene without reading the bag.
"""

from __future__ import annotations

import contextlib
import dataclasses
import fcntl
import hashlib
import json
import logging
import os
import shutil
import tempfile
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

from dvlt_core.io.download import default_cache_dir
from dvlt_core.training.data.folder import FolderScene, find_folder_scenes
from dvlt_core.training.data.sources import register_source
from dvlt_ros.bags.decode import CameraTopics
from dvlt_ros.bags.to_dataset import BagConversion, convert_bag, extrinsic_matrix, parse_camera

logger = logging.getLogger(__name__)

# Bump when the converter's output changes, so that older cache entries are not reused.
CACHE_VERSION = 1
CACHE_SUBDIR = "rosbag-scenes"
INFO_FILE = "conversion.json"
_KEYS = {"path", "cameras", "pose", "tolerance", "min_interval", "allow_distortion", "max_depth",
         "cache_dir"}
_POSE_KEYS = {"source", "fixed_frame", "odometry_topic", "extrinsics", "max_gap"}


def parse_cameras(value: Any) -> list[CameraTopics]:
    """Camera topics from a config value.

    Accepted forms: a string of ``IMAGE,INFO,DEPTH`` specs separated by spaces (convenient on the
    command line), or a list whose items are such strings or ``{image, info, depth}`` mappings.
    """
    if isinstance(value, str):
        items: list[Any] = value.split()
    elif isinstance(value, Sequence):
        items = list(value)
    else:
        raise ValueError("rosbag source 'cameras' must be 'IMAGE,INFO,DEPTH ...' or a list; "
                         "on the command line: data.sources[0].cameras=IMAGE,INFO,DEPTH")
    cameras = []
    for item in items:
        if isinstance(item, Mapping):
            if set(item) != {"image", "info", "depth"}:
                raise ValueError(f"rosbag camera {dict(item)} needs exactly the keys image, info "
                                 "and depth")
            cameras.append(CameraTopics(str(item["image"]), str(item["info"]),
                                        str(item["depth"])))
        else:
            try:
                cameras.append(parse_camera(item))
            except ValueError as exc:
                raise ValueError(f"{exc}; in a YAML list quote each camera, or pass them as one "
                                 "string: cameras=IMAGE,INFO,DEPTH IMAGE,INFO,DEPTH") from None
    if not cameras:
        raise ValueError("rosbag source 'cameras' is empty: give IMAGE,INFO,DEPTH topics")
    return cameras


def parse_conversion(spec: Mapping[str, Any]) -> BagConversion:
    """The :class:`BagConversion` a rosbag source spec describes (its ``cameras``, ``pose``,
    ``tolerance``, ``min_interval`` and ``allow_distortion``)."""
    if spec.get("cameras") is None:
        raise ValueError("rosbag source needs 'cameras'; on the command line: "
                         "data.sources[0].cameras=IMAGE,INFO,DEPTH")
    pose = dict(spec.get("pose") or {})
    unknown = sorted(set(pose) - _POSE_KEYS)
    if unknown:
        raise ValueError(f"unknown keys {unknown} in the rosbag source's pose; known: "
                         f"{sorted(_POSE_KEYS)}")
    extrinsics = pose.get("extrinsics") or {}
    if not isinstance(extrinsics, Mapping):
        raise ValueError("rosbag pose.extrinsics maps optical frames to [x, y, z, qx, qy, qz, qw]")
    options: dict[str, Any] = {
        "cameras": parse_cameras(spec["cameras"]),
        "base_from_camera": {str(f): extrinsic_matrix(v) for f, v in extrinsics.items()},
    }
    # Keys left out keep the converter's defaults.
    renamed = {"source": "pose_source", "fixed_frame": "fixed_frame",
               "odometry_topic": "odometry_topic", "max_gap": "max_gap"}
    options.update({renamed[k]: v for k, v in pose.items() if k in renamed})
    options.update({k: spec[k] for k in ("tolerance", "min_interval", "allow_distortion")
                    if k in spec})
    return BagConversion(**options)


def bag_fingerprint(bag: Path) -> dict[str, Any]:
    """What identifies a bag's content cheaply: every file's name, size and modification time,
    and the hash of ``metadata.yaml`` (no message data is read)."""
    if not bag.exists():
        raise FileNotFoundError(f"bag {bag} not found (give the rosbag2 folder or file)")
    files = sorted(p for p in bag.rglob("*") if p.is_file()) if bag.is_dir() else [bag]
    stats = [(p.relative_to(bag).as_posix() if bag.is_dir() else p.name, p.stat()) for p in files]
    metadata = bag / "metadata.yaml"
    return {
        "files": [[name, st.st_size, st.st_mtime_ns] for name, st in stats],
        "metadata_sha256": (hashlib.sha256(metadata.read_bytes()).hexdigest()
                            if metadata.is_file() else None),
    }


def _options(conversion: BagConversion) -> dict[str, Any]:
    options = dataclasses.asdict(conversion)
    options["base_from_camera"] = {frame: matrix.round(9).tolist() for frame, matrix
                                   in sorted(conversion.base_from_camera.items())}
    return options


def cache_key(bag: Path, conversion: BagConversion) -> tuple[str, dict[str, Any]]:
    """``(key, identity)``: the cache key of converting ``bag`` with ``conversion`` and the
    JSON-able facts it hashes."""
    identity = {"cache_version": CACHE_VERSION, "bag": bag_fingerprint(bag),
                "options": _options(conversion)}
    digest = hashlib.sha256(json.dumps(identity, sort_keys=True).encode()).hexdigest()
    return digest[:16], identity


@contextlib.contextmanager
def _locked(lock_path: Path, bag: Path) -> Iterator[None]:
    """Hold an exclusive lock on ``lock_path``; the OS releases it if the process dies."""
    with open(lock_path, "a+") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            logger.info("waiting for another process that is converting %s", bag)
            fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def cached_conversion(bag: str | Path, conversion: BagConversion,
                      cache_dir: str | Path | None = None) -> Path:
    """The cache entry (a dataset root holding one scene) of ``bag`` converted with
    ``conversion``, converting it first if it is not cached yet."""
    bag = Path(bag)
    cache = Path(cache_dir) if cache_dir is not None else default_cache_dir() / CACHE_SUBDIR
    key, identity = cache_key(bag, conversion)
    entry = cache / f"{bag.stem}-{key}"
    if entry.is_dir():
        logger.info("rosbag %s: using the cached conversion %s", bag, entry)
        return entry
    cache.mkdir(parents=True, exist_ok=True)
    with _locked(cache / f".{entry.name}.lock", bag):
        if entry.is_dir():  # another process converted it while we waited
            logger.info("rosbag %s: using the cached conversion %s", bag, entry)
            return entry
        logger.info("rosbag %s: converting into the cache %s (once for these options)", bag,
                    entry)
        partial = Path(tempfile.mkdtemp(prefix=f".{entry.name}.", suffix=".partial", dir=cache))
        try:
            report = convert_bag(bag, partial, conversion, scene_name=bag.stem, progress=True)
            info = {**identity, "source": str(bag.resolve()), "frames": report.written,
                    "skipped": dict(report.skipped), "warnings": report.warnings}
            (partial / INFO_FILE).write_text(json.dumps(info, indent=1) + "\n")
            partial.chmod(0o755)  # mkdtemp makes it private; the entry is a dataset like any other
            os.replace(partial, entry)
        except BaseException:
            shutil.rmtree(partial, ignore_errors=True)
            raise
    logger.info("rosbag %s: wrote %d frames; skipped %s", bag, report.written,
                dict(report.skipped) or "none")
    return entry


def rosbag_scenes(spec: Mapping[str, Any]) -> list[FolderScene]:
    """The scenes of a ``{type: rosbag, ...}`` source spec (without ``type`` and ``repeat``):
    one per bag, converted through the cache."""
    unknown = sorted(set(spec) - _KEYS)
    if unknown:
        raise ValueError(f"unknown keys {unknown} in the 'rosbag' data source; known: "
                         f"{sorted(_KEYS)}")
    paths = spec.get("path")
    if not paths:
        raise ValueError("rosbag source needs 'path' (a rosbag2 folder or a list of them); on the "
                         "command line: data.sources[0].path=BAG")
    paths = [paths] if isinstance(paths, str | os.PathLike) else list(paths)
    conversion = parse_conversion(spec)
    scenes: list[FolderScene] = []
    for bag in paths:
        entry = cached_conversion(bag, conversion, spec.get("cache_dir"))
        scenes.extend(find_folder_scenes(entry, spec.get("max_depth")))
    return scenes


register_source("rosbag", rosbag_scenes)
