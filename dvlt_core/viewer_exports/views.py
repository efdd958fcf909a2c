"""Which views the viewer exports (``.glb``, ``.rrd``) draw, and each one's colour."""

from __future__ import annotations

import colorsys
from dataclasses import dataclass

import numpy as np

from dvlt_core.result import Reconstruction, ViewReconstruction


@dataclass(frozen=True)
class ExportCamera:
    """One camera the ``.glb`` draws as a frustum: ``intrinsics`` (3, 3) OpenCV pixels,
    ``extrinsics_c2w`` (4, 4), the image ``width`` and ``height``, and its RGB ``color``."""

    name: str
    intrinsics: np.ndarray
    extrinsics_c2w: np.ndarray
    width: int
    height: int
    color: np.ndarray

    @classmethod
    def of_view(cls, view: ViewReconstruction, color: np.ndarray) -> ExportCamera:
        """The camera of ``view`` (its size is that of its depth map)."""
        h, w = view.depth.shape
        return cls(view.name, np.asarray(view.intrinsics, np.float64),
                   np.asarray(view.extrinsics_c2w, np.float64), w, h, np.asarray(color))


def exported_views(recon: Reconstruction, include_failed: bool) -> list[int]:
    """Indices of the views to draw: those with a finite camera whose pose fit succeeded, or
    all with a finite camera with ``include_failed`` (the rule of ``points.ply``)."""
    return [
        i
        for i, view in enumerate(recon.views)
        if (view.pose_valid or include_failed)
        and np.isfinite(view.extrinsics_c2w).all()
        and np.isfinite(view.intrinsics).all()
    ]


def view_colors(count: int) -> np.ndarray:
    """(count, 3) uint8 RGB colours, evenly spaced hues (view 0 red), one per view."""
    hues = np.arange(count) / max(count, 1)
    rgb = [colorsys.hsv_to_rgb(float(h), 0.85, 1.0) for h in hues]
    return np.round(np.asarray(rgb, dtype=np.float64).reshape(count, 3) * 255).astype(np.uint8)
