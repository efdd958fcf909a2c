"""Synthetic scenes with exact geometry, for tests, demos and bag generation (ROS-free).

:class:`Scene` ray-casts textured planes and boxes for any pinhole camera;
:class:`SyntheticRig` moves cameras through a scene along a known trajectory and returns
ground-truth poses, intrinsics, images and depth at any time; :func:`default_rig` is a
ready-made four-camera rig.
"""

from dvlt_core.synthetic.rig import (
    BASE_FROM_OPTICAL,
    CircularTrajectory,
    PinholeCamera,
    RenderedView,
    SyntheticRig,
    default_rig,
    default_scene,
    mount,
    repeated_texture_scene,
)
from dvlt_core.synthetic.scene import Box, Plane, Scene, Texture, camera_rays

__all__ = [
    "BASE_FROM_OPTICAL",
    "Box",
    "CircularTrajectory",
    "PinholeCamera",
    "Plane",
    "RenderedView",
    "Scene",
    "SyntheticRig",
    "Texture",
    "camera_rays",
    "default_rig",
    "default_scene",
    "mount",
    "repeated_texture_scene",
]
