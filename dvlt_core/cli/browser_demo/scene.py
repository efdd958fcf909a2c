"""Draw a reconstruction into a viser scene: the coloured point cloud, one camera frustum per
view (its image on the frustum, in the view's colour) and a viewpoint that shows them.

The scene is the reconstruction's OpenCV world (x right, y down, z forward, about view 0's
camera), which is viser's own camera convention: poses go in unchanged and the scene's up
direction is -y.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from types import ModuleType
from typing import Any

import numpy as np

from dvlt_core.result import Reconstruction
from dvlt_core.viewer_exports.glb import FRUSTUM_FRACTION, scene_size
from dvlt_core.viewer_exports.views import view_colors

#: Point size as a fraction of the scene's size.
POINT_FRACTION = 0.004
#: Longer side of the image shown on a frustum (smaller images keep the page fast).
FRUSTUM_IMAGE_SIDE = 256


def _thumbnail(image: np.ndarray) -> np.ndarray:
    """``image`` subsampled so its longer side is at most :data:`FRUSTUM_IMAGE_SIDE`."""
    step = max(1, math.ceil(max(image.shape[:2]) / FRUSTUM_IMAGE_SIDE))
    return np.ascontiguousarray(image[::step, ::step])


def draw_reconstruction(
    viser: ModuleType,
    scene: Any,
    recon: Reconstruction,
    points: np.ndarray,
    colors: np.ndarray,
    views: Sequence[int],
) -> list[Any]:
    """Add the cloud and the frusta of ``views`` to ``scene`` (a viser ``SceneApi``) under
    ``/reconstruction``; returns the handles (remove them to clear the drawing)."""
    scene.set_up_direction("-y")
    centres = np.array([recon.views[i].extrinsics_c2w[:3, 3] for i in views]).reshape(-1, 3)
    size = scene_size(points, centres)
    handles = []
    if len(points):
        handles.append(
            scene.add_point_cloud(
                "/reconstruction/points",
                points=np.asarray(points, np.float32),
                colors=np.asarray(colors, np.uint8),
                point_size=POINT_FRACTION * size,
                precision="float32",
            )
        )
    palette = view_colors(len(recon.views))
    for i in views:
        view = recon.views[i]
        h, w = view.depth.shape
        c2w = np.asarray(view.extrinsics_c2w, np.float64)
        handles.append(
            scene.add_camera_frustum(
                f"/reconstruction/cameras/{i}",
                fov=2.0 * math.atan2(h / 2.0, float(view.intrinsics[1][1])),
                aspect=w / h,
                scale=FRUSTUM_FRACTION * size,
                thickness=2.0,
                thickness_units="screen",
                color=tuple(int(c) for c in palette[i]),
                image=_thumbnail(view.image),
                wxyz=viser.transforms.SO3.from_matrix(c2w[:3, :3]).wxyz,
                position=c2w[:3, 3],
            )
        )
    return handles


def viewpoint(points: np.ndarray, recon: Reconstruction, views: Sequence[int]) -> tuple:
    """(position, look_at) of a camera behind and above view ``views[0]`` looking at the
    middle of the cloud (the median point; the first camera's centre without points)."""
    centre = np.asarray(recon.views[views[0]].extrinsics_c2w, np.float64)[:3, 3] if views \
        else np.zeros(3)
    finite = points[np.isfinite(points).all(axis=1)] if len(points) else points
    target = np.median(finite, axis=0) if len(finite) else centre + np.array([0.0, 0.0, 1.0])
    offset = centre - target
    distance = float(np.linalg.norm(offset)) or 1.0
    # Back along the line from the target through the camera, and up (-y) a little.
    position = target + 2.5 * offset + np.array([0.0, -0.4 * distance, 0.0])
    return position, target
