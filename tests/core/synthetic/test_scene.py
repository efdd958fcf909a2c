"""The synthetic ray-caster and rig: exact depth, consistent geometry between cameras."""

from __future__ import annotations

import math

import numpy as np
import pytest

from dvlt_core.synthetic import (
    BASE_FROM_OPTICAL,
    Box,
    Plane,
    Scene,
    Texture,
    camera_rays,
    default_rig,
    mount,
)


def _k(f: float, cx: float, cy: float) -> np.ndarray:
    return np.array([[f, 0.0, cx], [0.0, f * 1.02, cy], [0.0, 0.0, 1.0]])


def _look(eye: np.ndarray, target: np.ndarray) -> np.ndarray:
    """OpenCV camera-to-world looking from ``eye`` at ``target`` with world z up."""
    z = (target - eye) / np.linalg.norm(target - eye)
    x = np.cross(z, [0.0, 0.0, 1.0])
    x /= np.linalg.norm(x)
    out = np.eye(4)
    out[:3, :3] = np.stack([x, np.cross(z, x), z], axis=1)
    out[:3, 3] = eye
    return out


def test_plane_depth_is_exact_z_depth():
    # The plane z_world = 0 seen by a tilted camera: the analytic z-depth of pixel (u, v) is
    # -h / (R K^-1 [u, v, 1])_z, with h the camera height.
    scene = Scene((Plane((0.0, 0.0, 0.0), (1.0, 0.0, 0.0), (0.0, 1.0, 0.0), Texture(3)),))
    k = _k(120.0, 83.3, 57.9)
    c2w = _look(np.array([0.4, -2.0, 1.7]), np.array([0.2, 1.0, 0.0]))
    image, depth = scene.render(k, c2w, 120, 160)
    rays = camera_rays(k, 120, 160) @ c2w[:3, :3].T
    expected = -c2w[2, 3] / rays[..., 2]
    hit = expected > 0
    assert hit.mean() > 0.5
    np.testing.assert_allclose(depth[hit], expected[hit], rtol=1e-12)
    assert (depth[~hit] == 0).all() and (image[~hit] == 0).all()
    # The hit points lie on the plane.
    points = c2w[:3, 3] + depth[..., None] * rays
    assert np.abs(points[hit][:, 2]).max() < 1e-12
    # High-contrast texture everywhere on the plane.
    assert image[hit].std() > 50


def test_box_faces_and_room_depth():
    box = Box((-0.5, -0.5, 0.0), (0.5, 0.5, 1.0), Texture(1))
    room = Box((-4.0, -4.0, 0.0), (4.0, 4.0, 3.0), Texture(2), inside=True)
    scene = Scene((room, box))
    dirs = np.array([[1.0, 0.0, 0.0], [-1.0, 0.0, 0.0], [0.0, 0.0, 1.0], [0.0, 1.0, 0.0]])
    origin = np.array([-2.0, 0.0, 0.5])
    colour, t = scene.cast(origin, dirs)
    # +x hits the box's -x face at x = -0.5; -x hits the room wall; up hits the ceiling.
    np.testing.assert_allclose(t, [1.5, 2.0, 2.5, 4.0])
    assert colour.shape == (4, 3) and colour.dtype == np.uint8


def test_reprojection_consistency_between_rig_cameras():
    rig = default_rig(160, 120)
    t = 0.7
    a, b = rig.render("cam_front_left", t), rig.render("cam_front_right", t)
    # Unproject camera a, project into camera b, compare with b's depth where visible.
    rays = camera_rays(a.k, 120, 160)
    points = (rays * a.depth[..., None]).reshape(-1, 3) @ a.c2w[:3, :3].T + a.c2w[:3, 3]
    w2c_b = np.linalg.inv(b.c2w)
    cam_b = points @ w2c_b[:3, :3].T + w2c_b[:3, 3]
    uv = cam_b @ b.k.T
    uv = uv[:, :2] / uv[:, 2:]
    inside = (uv[:, 0] > -0.5) & (uv[:, 0] < 159.5) & (uv[:, 1] > -0.5) & (uv[:, 1] < 119.5)
    inside &= cam_b[:, 2] > 0
    assert inside.mean() > 0.5
    # Cast b's exact rays through the projections: unless occluded from b, they hit the
    # same points at b's z-depth, with the same colour.
    pix = np.concatenate([uv[inside], np.ones((inside.sum(), 1))], axis=1)
    dirs = pix @ np.linalg.inv(b.k).T @ b.c2w[:3, :3].T
    colour, z_seen = rig.scene.cast(b.c2w[:3, 3], dirs)
    rel = np.abs(z_seen - cam_b[inside, 2]) / cam_b[inside, 2]
    visible = rel < 1e-9
    assert visible.mean() > 0.9  # the rest is occluded from b
    same = (colour[visible] == a.image.reshape(-1, 3)[inside][visible]).all(-1)
    assert same.mean() > 0.999


def test_rig_geometry_and_helpers():
    rig = default_rig(64, 48)
    assert rig.names == ["cam_front_left", "cam_front_right", "cam_left", "cam_right"]
    for name in rig.names:
        k = rig.intrinsics(name)
        assert abs(k[0, 2] - 31.5) > 0.5 and abs(k[1, 2] - 23.5) > 0.5  # off-centre
    # Camera pose = base pose ∘ mount; the front pair is 0.25 m apart.
    t = 3.0
    base = rig.world_from_base(t)
    c2w = rig.camera_pose("cam_left", t)
    np.testing.assert_allclose(c2w, base @ rig.camera("cam_left").base_from_camera)
    gap = rig.camera_pose("cam_front_left", t)[:3, 3] - rig.camera_pose("cam_front_right", t)[:3, 3]
    assert np.linalg.norm(gap) == pytest.approx(math.hypot(0.25, 0.04))
    # The trajectory moves continuously at the configured speed.
    step = np.linalg.norm(rig.world_from_base(t + 0.01)[:3, 3] - base[:3, 3]) / 0.01
    assert step == pytest.approx(0.3, rel=0.05)
    # Mount: an unrotated optical frame looks along the base's x axis.
    np.testing.assert_allclose(mount(0, 0, 0)[:3, :3] @ [0, 0, 1], [1, 0, 0], atol=1e-12)
    np.testing.assert_allclose(BASE_FROM_OPTICAL @ BASE_FROM_OPTICAL.T, np.eye(3))
    view = rig.render("cam_right", t)
    assert view.image.shape == (48, 64, 3) and view.depth.shape == (48, 64)
    assert (view.depth > 0).all()  # the room closes the scene
    assert rig.render("cam_right", t) is view  # memoised
    with pytest.raises(ValueError, match="unknown camera"):
        rig.camera("nope")
