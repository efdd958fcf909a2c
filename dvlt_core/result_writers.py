"""Writing a :class:`~dvlt_core.result.Reconstruction`: all its arrays as NPZ and its
cameras as JSON, atomically (the array writers are :mod:`dvlt_core.io.writers`)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from dvlt_core.atomic import write_atomic
from dvlt_core.result import Reconstruction


def cameras_dict(recon: Reconstruction) -> dict:
    """JSON-ready description of every camera of ``recon``; cameras of failed fits are null
    (robust mode) or kept with ``pose_valid: false`` (upstream mode's fallback camera)."""
    cameras = []
    for view in recon.views:
        h, w = view.depth.shape
        cameras.append(
            {
                "name": view.name,
                "timestamp": view.timestamp,
                "width": w,
                "height": h,
                "pose_valid": view.pose_valid,
                "intrinsics": _finite_or_none(view.intrinsics),
                "extrinsics_c2w": _finite_or_none(view.extrinsics_c2w),
                "preprocessing": view.transform.to_dict(),
            }
        )
    return {
        "convention": "OpenCV: x right, y down, z forward; camera-to-world; intrinsics with "
        "pixel (u, v) centred at (u, v)",
        "resolution": recon.resolution,
        "num_steps": recon.num_steps,
        "pose_mode": recon.pose_mode,
        "cameras": cameras,
    }


def _finite_or_none(matrix: np.ndarray) -> list | None:
    """Nested lists, or None for a matrix holding NaN/inf (JSON has no NaN)."""
    return matrix.tolist() if np.isfinite(matrix).all() else None


def write_cameras_json(path: str | Path, recon: Reconstruction) -> None:
    text = json.dumps(cameras_dict(recon), indent=2) + "\n"
    write_atomic(path, lambda p: p.write_text(text))


def write_npz(path: str | Path, recon: Reconstruction) -> None:
    """All arrays of ``recon``. Per-view maps are stacked (S, h, w, ...) when every view has
    the same size, else stored per view as ``depth_0``, ``depth_1``, ...."""
    arrays: dict[str, np.ndarray] = {
        "names": np.array(recon.names),
        "timestamps": np.array([v.timestamp for v in recon.views]),
        "intrinsics": recon.intrinsics,
        "extrinsics_c2w": recon.extrinsics_c2w,
        "num_steps": np.array(recon.num_steps),
        "cameras_json": np.array(json.dumps(cameras_dict(recon))),
    }
    if recon.pose_enc is not None:
        arrays["pose_enc"] = recon.pose_enc
    fields = ("image", "depth", "confidence", "valid", "world_points")
    same_size = len({v.depth.shape for v in recon.views}) == 1
    for field in fields:
        maps = [getattr(v, field) for v in recon.views]
        if same_size:
            arrays[field] = np.stack(maps)
        else:
            arrays.update({f"{field}_{i}": m for i, m in enumerate(maps)})
    def save(tmp: Path) -> None:
        with open(tmp, "wb") as handle:  # a file object: numpy must not append ".npz"
            np.savez_compressed(handle, **arrays)

    write_atomic(path, save)
