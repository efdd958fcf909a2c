"""The project's training dataset format: one folder per scene with a ``scene.json``.

::

    <root>/<scene>/
        scene.json
        images/<frame>.png | .jpg          RGB
        depth/<frame>.png                  uint16, metres = value * depth_scale (0 = invalid)
              <frame>.npy                  or float32 metres
        masks/<frame>.png                  optional, nonzero = depth valid

``scene.json``::

    {"format": "dvlt-scene", "version": 1, "is_synthetic": false, "depth_scale": 0.001,
     "frames": [{"image": "images/000000.png", "depth": "depth/000000.png",
                 "mask": null, "camera": "cam_front", "stamp": 12.25,
                 "intrinsics": [fx, fy, cx, cy], "c2w": [[...4x4...]]}, ...]}

Poses are OpenCV camera-to-world in metres, intrinsics in pixels with pixel centres at
(u + 0.5, v + 0.5) (see :mod:`dvlt_core.training.data.scene`). Frames are listed in the order
view sampling treats as temporal (the bag converter writes them sorted by stamp, then camera).
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from dvlt_core.atomic import write_atomic
from dvlt_core.training.data.scene import (
    Frame,
    Scene,
    intrinsics_matrix,
    read_png_u16,
    read_rgb,
    sanitize_depth,
    write_png_u16,
)

FORMAT_NAME = "dvlt-scene"
FORMAT_VERSION = 1
SCENE_FILE = "scene.json"
DEFAULT_DEPTH_SCALE = 0.001  # uint16 millimetres


class SceneFormatError(ValueError):
    """A scene folder does not follow the dataset format."""


@dataclass(frozen=True)
class FrameRecord:
    """One ``frames`` entry of ``scene.json``."""

    image: str
    depth: str
    c2w: np.ndarray
    intrinsics: np.ndarray
    mask: str | None = None
    camera: str = ""
    stamp: float | None = None


class FolderScene(Scene):
    """A scene folder in the dataset format (see the module docstring)."""

    def __init__(self, path: str | Path, max_depth: float | None = None) -> None:
        self.path = Path(path)
        meta_path = self.path / SCENE_FILE
        if not meta_path.is_file():
            raise SceneFormatError(
                f"{self.path} has no {SCENE_FILE}; convert the data with dvlt-bag-to-dataset or "
                "write it as described in docs/training.md"
            )
        try:
            meta = json.loads(meta_path.read_text())
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise SceneFormatError(f"cannot read {meta_path}: {exc}") from exc
        if not isinstance(meta, dict):
            raise SceneFormatError(f"{meta_path} must hold a JSON object")
        if meta.get("format") != FORMAT_NAME or meta.get("version") != FORMAT_VERSION:
            raise SceneFormatError(
                f"{meta_path}: expected format {FORMAT_NAME!r} version {FORMAT_VERSION}, got "
                f"{meta.get('format')!r} version {meta.get('version')!r}"
            )
        self.name = self.path.name
        self.is_synthetic = bool(meta.get("is_synthetic", False))
        self.depth_scale = float(meta.get("depth_scale", DEFAULT_DEPTH_SCALE))
        self.max_depth = max_depth
        self.records = [_parse_record(entry, i, meta_path) for i, entry in
                        enumerate(meta.get("frames", []))]
        if not self.records:
            raise SceneFormatError(f"{meta_path} lists no frames")

    def __len__(self) -> int:
        return len(self.records)

    def poses(self) -> np.ndarray:
        return np.stack([r.c2w for r in self.records])

    def frame(self, index: int) -> Frame:
        record = self.records[index]
        image = read_rgb(self.path / record.image)
        depth = self._read_depth(self.path / record.depth)
        if depth.shape != image.shape[:2]:
            raise SceneFormatError(
                f"{self.path / record.depth}: depth {depth.shape} does not match image "
                f"{image.shape[:2]}; store depth at the image resolution"
            )
        if record.mask is not None:
            with Image.open(self.path / record.mask) as mask:
                depth = np.where(np.asarray(mask) > 0, depth, 0.0).astype(np.float32)
        return Frame(image, depth, record.c2w, record.intrinsics)

    def _read_depth(self, path: Path) -> np.ndarray:
        if path.suffix == ".npy":
            return sanitize_depth(np.load(path, allow_pickle=False), self.max_depth)
        if path.suffix == ".png":
            return sanitize_depth(read_png_u16(path) * self.depth_scale, self.max_depth)
        raise SceneFormatError(f"{path}: depth must be a 16-bit .png or a float32 .npy")


def _parse_record(entry: dict[str, Any], index: int, where: Path) -> FrameRecord:
    try:
        c2w = np.asarray(entry["c2w"], dtype=np.float64)
        fx, fy, cx, cy = (float(v) for v in entry["intrinsics"])
        record = FrameRecord(
            image=str(entry["image"]),
            depth=str(entry["depth"]),
            c2w=c2w,
            intrinsics=intrinsics_matrix(fx, fy, cx, cy),
            mask=entry.get("mask"),
            camera=str(entry.get("camera", "")),
            stamp=None if entry.get("stamp") is None else float(entry["stamp"]),
        )
    except (KeyError, TypeError, ValueError) as exc:
        raise SceneFormatError(
            f"{where}: frame {index} is malformed ({exc}); each frame needs image, depth, "
            "intrinsics [fx, fy, cx, cy] and a 4x4 c2w"
        ) from exc
    if c2w.shape != (4, 4) or not np.all(np.isfinite(c2w)):
        raise SceneFormatError(f"{where}: frame {index} c2w must be a finite 4x4 matrix")
    for name in (record.image, record.depth, record.mask):
        if name is None:
            continue
        relative = Path(name) if isinstance(name, str) else None
        if relative is None or relative.is_absolute() or ".." in relative.parts:
            raise SceneFormatError(
                f"{where}: frame {index} file {name!r} must be a relative path inside the "
                "scene folder"
            )
    return record


def find_folder_scenes(root: str | Path, max_depth: float | None = None) -> list[FolderScene]:
    """Every scene folder under ``root`` (``root`` itself if it holds a ``scene.json``)."""
    root = Path(root)
    if (root / SCENE_FILE).is_file():
        return [FolderScene(root, max_depth)]
    paths = sorted(p.parent for p in root.glob(f"*/{SCENE_FILE}"))
    if not paths:
        raise SceneFormatError(
            f"no scene folders (*/{SCENE_FILE}) under {root}; see docs/training.md for the format"
        )
    return [FolderScene(p, max_depth) for p in paths]


@dataclass
class SceneWriter:
    """Writes one scene folder frame by frame; :meth:`close` writes ``scene.json``.

    Depth is stored as uint16 PNG with ``depth_scale`` metres per unit (values beyond the
    uint16 range are stored as 0, invalid); images as PNG.
    """

    path: Path
    is_synthetic: bool = False
    depth_scale: float = DEFAULT_DEPTH_SCALE
    frames: list[dict[str, Any]] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.path = Path(self.path)
        for sub in ("images", "depth"):
            (self.path / sub).mkdir(parents=True, exist_ok=True)

    def add(
        self,
        image: np.ndarray,
        depth: np.ndarray,
        c2w: np.ndarray,
        intrinsics: np.ndarray | Sequence[float],
        camera: str = "",
        stamp: float | None = None,
    ) -> None:
        """Append a frame (conventions of :mod:`dvlt_core.training.data.scene`)."""
        name = f"{len(self.frames):06d}"
        image = np.asarray(image)
        if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
            raise ValueError(f"image must be RGB uint8 (H, W, 3), got {image.dtype} {image.shape}")
        if np.shape(depth) != image.shape[:2]:
            raise ValueError(f"depth {np.shape(depth)} must match the image {image.shape[:2]}")
        k = np.asarray(intrinsics, dtype=np.float64)
        fx, fy, cx, cy = (k[0, 0], k[1, 1], k[0, 2], k[1, 2]) if k.shape == (3, 3) else k
        Image.fromarray(image).save(self.path / "images" / f"{name}.png")
        scaled = np.round(sanitize_depth(depth) / self.depth_scale)
        scaled[scaled > np.iinfo(np.uint16).max] = 0
        write_png_u16(self.path / "depth" / f"{name}.png", scaled.astype(np.uint16))
        self.frames.append(
            {
                "image": f"images/{name}.png",
                "depth": f"depth/{name}.png",
                "mask": None,
                "camera": camera,
                "stamp": None if stamp is None or not math.isfinite(stamp) else float(stamp),
                "intrinsics": [float(fx), float(fy), float(cx), float(cy)],
                "c2w": np.asarray(c2w, dtype=np.float64).tolist(),
            }
        )

    def close(self) -> Path:
        """Write ``scene.json`` (atomically) and return the scene folder."""
        meta = {
            "format": FORMAT_NAME,
            "version": FORMAT_VERSION,
            "is_synthetic": self.is_synthetic,
            "depth_scale": self.depth_scale,
            "frames": self.frames,
        }
        text = json.dumps(meta, indent=1) + "\n"
        write_atomic(self.path / SCENE_FILE, lambda p: p.write_text(text))
        return self.path
