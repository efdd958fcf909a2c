"""``scene.glb``: the point cloud and one camera frustum per view as a glTF 2.0 binary.

What the file holds:

* node ``points``: the coloured point cloud (a ``POINTS`` primitive with ``COLOR_0``),
  exactly the points and colours the caller selected (``dvlt-reconstruct`` passes those of
  ``points.ply``); left out when there are none;
* node ``frustum_<view>`` per exported view: a ``LINES`` primitive (apex to the four image
  corners, and the image rectangle) in that view's colour (:func:`view_colors`), its depth
  :data:`FRUSTUM_FRACTION` of the scene's size, so frusta stay visible at any scale.

Axes: the reconstruction's world is OpenCV's camera convention (x right, y down, z forward,
about view 0's camera). glTF is y up and its cameras look along -z, so every coordinate is
written turned 180 degrees about x: glTF ``(x, y, z)`` = reconstruction ``(x, -y, -z)``
(:data:`OPENCV_TO_GLTF`). A glTF viewer then shows view 0 looking along -z with image-up
as +y. Units are the reconstruction's: metres only for a metric backend (DVLT's geometry is
up to scale). Both facts are also written into the scene's ``extras`` (:func:`scene_extras`).
"""

from __future__ import annotations

import json
import struct
from collections.abc import Sequence
from pathlib import Path
from types import ModuleType

import numpy as np

from dvlt_core.atomic import write_atomic
from dvlt_core.result import Reconstruction
from dvlt_core.viewer_exports.packages import require_viewer_package
from dvlt_core.viewer_exports.views import ExportCamera, exported_views, view_colors

#: Rotation taking the reconstruction's OpenCV-convention coordinates to glTF's (y up).
OPENCV_TO_GLTF = np.diag([1.0, -1.0, -1.0])
#: Depth of a frustum as a fraction of the scene's size (diagonal of the bounding box of
#: the points and the camera centres).
FRUSTUM_FRACTION = 0.05
AXES = "glTF (x, y, z) = reconstruction OpenCV world (x, -y, -z): y up, view 0 looks along -z"
#: Segments of a frustum, as indices into (apex, 4 image corners).
_FRUSTUM_SEGMENTS = ((0, 1), (0, 2), (0, 3), (0, 4), (1, 2), (2, 3), (3, 4), (4, 1))


def require_trimesh() -> ModuleType:
    """trimesh, or :class:`ViewerPackageMissingError` saying how to install it."""
    return require_viewer_package("trimesh", "the .glb export (--glb)")


def scene_extras(metric: bool) -> dict[str, str]:
    """What the scene's ``extras`` say about the file: its axes and its unit."""
    units = "metres" if metric else "arbitrary: the reconstruction is up to scale"
    return {"axes": AXES, "units": units}


def scene_size(points: np.ndarray, centres: np.ndarray) -> float:
    """Diagonal of the bounding box of ``points`` and camera ``centres`` (1.0 if empty or
    degenerate, e.g. one camera and no points)."""
    every = np.concatenate([points.reshape(-1, 3), centres.reshape(-1, 3)]).astype(np.float64)
    every = every[np.isfinite(every).all(axis=1)]
    if len(every) == 0:
        return 1.0
    size = float(np.linalg.norm(every.max(axis=0) - every.min(axis=0)))
    return size if size > 0.0 else 1.0


def frustum_segments(camera: ExportCamera, depth: float) -> np.ndarray:
    """(8, 2, 3) world-frame segments of the camera's frustum cut at z-depth ``depth``: apex
    to the corners of the image's outer pixel edges, then the image rectangle."""
    h, w = camera.height, camera.width
    u = np.array([-0.5, w - 0.5, w - 0.5, -0.5])
    v = np.array([-0.5, -0.5, h - 0.5, h - 0.5])
    pixels = np.stack([u, v, np.ones(4)])
    corners = (np.linalg.inv(camera.intrinsics) @ pixels).T * depth
    c2w = camera.extrinsics_c2w
    apex_and_corners = np.concatenate([np.zeros((1, 3)), corners]) @ c2w[:3, :3].T + c2w[:3, 3]
    return apex_and_corners[np.asarray(_FRUSTUM_SEGMENTS)]


def build_glb(
    points: np.ndarray,
    colors: np.ndarray,
    cameras: Sequence[ExportCamera],
    metric: bool = False,
) -> bytes:
    """The GLB bytes of ``points`` (N, 3) with ``colors`` (N, 3) uint8 and a frustum per
    camera (node ``frustum_<name>``); ``metric``: the geometry is in metres."""
    trimesh = require_trimesh()
    from trimesh.path.entities import Line

    scene = trimesh.Scene()
    scene.metadata.update(scene_extras(metric))
    if len(points):
        rgba = np.concatenate([colors, np.full((len(colors), 1), 255, np.uint8)], axis=1)
        cloud = trimesh.PointCloud(np.asarray(points, np.float64) @ OPENCV_TO_GLTF, colors=rgba)
        scene.add_geometry(cloud, node_name="points", geom_name="points")
    centres = np.array([c.extrinsics_c2w[:3, 3] for c in cameras]).reshape(-1, 3)
    depth = FRUSTUM_FRACTION * scene_size(points, centres)
    for camera in cameras:
        ends = frustum_segments(camera, depth).reshape(-1, 3) @ OPENCV_TO_GLTF
        lines = [Line(points=np.array([2 * k, 2 * k + 1])) for k in range(len(ends) // 2)]
        rgba = np.append(camera.color, 255).astype(np.uint8)
        path = trimesh.path.Path3D(
            entities=lines, vertices=ends, colors=np.tile(rgba, (len(lines), 1)), process=False
        )
        name = f"frustum_{camera.name}"
        scene.add_geometry(path, node_name=name, geom_name=name)
    if not scene.geometry:  # trimesh refuses to export nothing; an empty glTF is valid
        return empty_glb(scene_extras(metric))
    return scene.export(file_type="glb")


def empty_glb(extras: dict[str, str]) -> bytes:
    """A valid GLB with one empty scene carrying ``extras`` (nothing to draw)."""
    document = {
        "asset": {"version": "2.0", "generator": "dvlt_core.viewer_exports.glb"},
        "scene": 0,
        "scenes": [{"nodes": [], "extras": extras}],
    }
    text = json.dumps(document).encode()
    text += b" " * (-len(text) % 4)  # chunks are 4-byte aligned, JSON padded with spaces
    header = struct.pack("<4sII", b"glTF", 2, 12 + 8 + len(text))
    return header + struct.pack("<I4s", len(text), b"JSON") + text


def write_glb(
    path: str | Path,
    recon: Reconstruction,
    points: np.ndarray,
    colors: np.ndarray,
    include_failed: bool = False,
    metric: bool = False,
) -> None:
    """Write :func:`build_glb` of the :func:`exported_views` atomically to ``path``."""
    palette = view_colors(len(recon.views))
    cameras = [ExportCamera.of_view(recon.views[i], palette[i])
               for i in exported_views(recon, include_failed)]
    write_glb_scene(path, points, colors, cameras, metric)


def write_glb_scene(
    path: str | Path,
    points: np.ndarray,
    colors: np.ndarray,
    cameras: Sequence[ExportCamera],
    metric: bool = False,
) -> None:
    """Write :func:`build_glb` of the cloud and ``cameras`` atomically to ``path``."""
    data = build_glb(points, colors, cameras, metric)
    write_atomic(path, lambda tmp: tmp.write_bytes(data))
