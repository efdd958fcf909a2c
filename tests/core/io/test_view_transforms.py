"""The preprocessing record maps pixels, cameras and maps between original and network."""

from __future__ import annotations

import numpy as np
import pytest

from dvlt_core.io.images import preprocess
from dvlt_core.io.view_transforms import ViewTransform, network_to_opencv_intrinsics
from dvlt_core.result import unproject

# (original size, rotate_portrait, other view in the batch) -> crop, pad and rotation cases.
CASES = [
    ((300, 451), False, (300, 451)),  # resize + crop, no pad
    ((451, 300), False, (300, 451)),  # portrait next to landscape: padded left/right
    ((300, 451), False, (451, 300)),  # padded top/bottom
    ((451, 300), True, (300, 451)),  # rotated
    ((1001, 333), True, (333, 1001)),  # rotated, odd sizes
]


def _transform(shape, rotate, other) -> ViewTransform:
    blank = [np.zeros((*shape, 3), np.uint8), np.zeros((*other, 3), np.uint8)]
    return preprocess(blank, img_size=140, rotate_portrait=rotate).transforms[0]


def _camera(shape, seed=0):
    h, w = shape
    rng = np.random.default_rng(seed)
    K = np.array([[0.9 * w, 0, 0.47 * w], [0, 0.85 * w, 0.55 * h], [0, 0, 1.0]])
    angle = rng.normal(size=3) * 0.2
    R = _rodrigues(angle)
    c2w = np.eye(4)
    c2w[:3, :3], c2w[:3, 3] = R, rng.normal(size=3)
    return K, c2w


def _rodrigues(v):
    theta = np.linalg.norm(v)
    k = v / theta
    Kx = np.array([[0, -k[2], k[1]], [k[2], 0, -k[0]], [-k[1], k[0], 0]])
    return np.eye(3) + np.sin(theta) * Kx + (1 - np.cos(theta)) * Kx @ Kx


def _project(K, c2w, points):
    w2c = np.linalg.inv(c2w)
    cam = points @ w2c[:3, :3].T + w2c[:3, 3]
    uvw = cam @ K.T
    return uvw[:, :2] / uvw[:, 2:]


@pytest.mark.parametrize(("shape", "rotate", "other"), CASES)
def test_cameras_map_consistently_with_pixels(shape, rotate, other):
    t = _transform(shape, rotate, other)
    K, c2w = _camera(shape)
    # World points in front of the camera.
    rng = np.random.default_rng(1)
    cam = np.column_stack([rng.uniform(-1, 1, (50, 2)), rng.uniform(2, 5, 50)])
    world = cam @ c2w[:3, :3].T + c2w[:3, 3]

    K_net, c2w_net = t.intrinsics_to_network(K), t.extrinsics_to_network(c2w)
    on_network = _project(K_net, c2w_net, world)
    np.testing.assert_allclose(on_network, t.original_to_network(_project(K, c2w, world)),
                               atol=1e-9)
    np.testing.assert_allclose(t.intrinsics_to_original(K_net), K, atol=1e-9)
    np.testing.assert_allclose(t.extrinsics_to_original(c2w_net), c2w, atol=1e-12)
    np.testing.assert_allclose(t.network_to_original(on_network), _project(K, c2w, world),
                               atol=1e-9)


@pytest.mark.parametrize(("shape", "rotate", "other"), CASES)
def test_network_crop_has_consistent_intrinsics(shape, rotate, other):
    # Unprojecting the crop map with its intrinsics gives the same points as unprojecting
    # the whole canvas with the canvas camera.
    t = _transform(shape, rotate, other)
    K, c2w = _camera(shape)
    K_net, c2w_net = t.intrinsics_to_network(K), t.extrinsics_to_network(c2w)
    depth = np.random.default_rng(2).uniform(1, 3, t.network_hw).astype(np.float32)
    canvas_points = unproject(depth, K_net, c2w_net)
    crop_points = unproject(
        t.crop_from_network(depth),
        t.network_crop_intrinsics(K_net),
        t.extrinsics_to_original(c2w_net),
    )
    np.testing.assert_allclose(crop_points, t.crop_from_network(canvas_points), atol=1e-5)
    assert crop_points.shape[:2] == (
        t.crop_hw[::-1] if t.rotation_k % 2 else t.crop_hw
    )


@pytest.mark.parametrize(("shape", "rotate", "other"), CASES)
def test_resample_to_original_follows_the_pixel_map(shape, rotate, other):
    t = _transform(shape, rotate, other)
    H, W = t.network_hw
    v, u = np.mgrid[0:H, 0:W].astype(np.float64)
    ramp = np.stack([u, v], axis=-1)  # a map holding its own network coordinates
    back, inside = t.resample_to_original(ramp, mode="bilinear")
    h0, w0 = t.original_hw
    vv, uu = np.mgrid[0:h0, 0:w0]
    expected = t.original_to_network(np.stack([uu, vv], axis=-1))
    # Bilinear interpolation of a linear map is exact away from the crop border.
    rows, cols = t.network_slices
    interior = inside & (expected[..., 0] >= cols.start) & (expected[..., 0] <= cols.stop - 1)
    interior &= (expected[..., 1] >= rows.start) & (expected[..., 1] <= rows.stop - 1)
    assert interior.mean() > 0.8
    np.testing.assert_allclose(back[interior], expected[interior], atol=1e-3)
    assert (back[~inside] == 0).all()


def test_crop_removes_original_pixels_from_the_valid_mask():
    # 300x451 -> resized (93, 140), cropped to 84 rows from row 4: original rows at the
    # top and bottom have no prediction.
    t = _transform((300, 451), False, (300, 451))
    assert t.crop_offset == (4, 0)
    _, inside = t.resample_to_original(np.ones(t.network_hw), mode="nearest")
    assert not inside[0].any() and not inside[-1].any() and inside[150].all()
    assert inside[:, 0].sum() == inside[:, -1].sum()


def test_record_serialises():
    t = _transform((451, 300), True, (300, 451))
    assert ViewTransform.from_dict(t.to_dict()) == t


def test_network_intrinsics_shift_by_half_a_pixel():
    K = np.array([[100.0, 0, 84.0], [0, 100.0, 63.0], [0, 0, 1]])
    np.testing.assert_allclose(network_to_opencv_intrinsics(K)[:2, 2], [83.5, 62.5])
