"""The preprocessing record maps pixels, cameras and maps between original and network."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

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
# Smaller than the network input: the resize enlarges (by a non-integer factor).
UPSCALED = [((45, 61), False, (45, 61)), ((61, 45), True, (45, 61))]


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


def _previous_resample(t: ViewTransform, array: np.ndarray, mode: str):
    """The implementation the cached grid replaced, kept as the reference: the full
    float32 grid of every original pixel, one grid_sample over the crop's channels."""
    h0, w0 = t.original_hw
    along_u = t.original_to_network(np.stack([np.arange(w0), np.zeros(w0)], -1))
    along_v = t.original_to_network(np.stack([np.zeros(h0), np.arange(h0)], -1))
    origin = t.original_to_network(np.zeros(2))
    uv = (along_u - origin).astype(np.float32)[None] + along_v.astype(np.float32)[:, None]
    rows, cols = t.network_slices
    crop = np.asarray(array[rows, cols], dtype=np.float32)
    ch, cw = t.crop_hw
    x = uv[..., 0] + 0.5 - cols.start
    y = uv[..., 1] + 0.5 - rows.start
    inside = (x >= 0) & (x <= cw) & (y >= 0) & (y <= ch)
    grid = np.stack([2.0 * x / cw - 1.0, 2.0 * y / ch - 1.0], axis=-1).astype(np.float32)
    src = torch.from_numpy(crop.reshape(ch, cw, -1)).permute(2, 0, 1)[None]
    out = F.grid_sample(src, torch.from_numpy(grid)[None], mode=mode, padding_mode="border",
                        align_corners=False)[0].permute(1, 2, 0).numpy()
    out = out.reshape((h0, w0, *array.shape[2:]))
    out[~inside] = 0.0
    return out, inside


def _random_maps(t: ViewTransform, count: int, seed: int) -> np.ndarray:
    """(count, H, W) canvas maps with NaN and inf sprinkled in, also on the crop border."""
    rng = np.random.default_rng(seed)
    maps = rng.uniform(-2.0, 5.0, (count, *t.network_hw))
    maps[rng.random(maps.shape) < 0.02] = np.nan
    maps[rng.random(maps.shape) < 0.01] = np.inf
    rows, cols = t.network_slices
    maps[:, rows.stop - 1, cols.start + 3] = np.nan
    maps[:, rows.start + 2, cols.stop - 1] = np.inf
    return maps


@pytest.mark.parametrize("mode", ["bilinear", "nearest"])
@pytest.mark.parametrize(("shape", "rotate", "other"), CASES + UPSCALED)
def test_resample_matches_the_previous_implementation(shape, rotate, other, mode):
    # The same grid values and kernel: byte-identical, NaN and inf included, for one map,
    # channels (H, W, C) and a stack of maps (N, H, W).
    t = _transform(shape, rotate, other)
    maps = _random_maps(t, 3, seed=4)
    for array in (maps[0], np.moveaxis(maps, 0, -1)):
        got, inside = t.resample_to_original(array, mode=mode)
        want, want_inside = _previous_resample(t, array, mode)
        assert got.dtype == np.float32 and got.shape == want.shape
        np.testing.assert_array_equal(inside, want_inside)
        assert got.tobytes() == np.ascontiguousarray(want).tobytes()
    stacked, inside = t.resample_maps_to_original(maps, mode=mode)
    assert stacked.shape == (3, *t.original_hw)
    for one, array in zip(stacked, maps, strict=True):
        assert one.tobytes() == t.resample_to_original(array, mode=mode)[0].tobytes()


def _per_pixel_reference(t: ViewTransform, array: np.ndarray, mode: str):
    """Every original pixel on its own, in float64: its canvas position, the crop's
    clamped two-by-two taps (bilinear; taps past the last row or column drop out) or the
    nearest pixel. Also returns where that is well conditioned: positions at least 1e-3 px
    from the crop's edge and from a tap change (integers for bilinear, halves for
    nearest), where float32 grid arithmetic cannot choose other taps."""
    h0, w0 = t.original_hw
    vv, uu = np.mgrid[0:h0, 0:w0]
    uv = t.original_to_network(np.stack([uu, vv], axis=-1).astype(np.float64))
    rows, cols = t.network_slices
    crop = array[rows, cols]
    ch, cw = t.crop_hw
    px, py = uv[..., 0] - cols.start, uv[..., 1] - rows.start  # crop pixel positions
    inside = (px >= -0.5) & (px <= cw - 0.5) & (py >= -0.5) & (py <= ch - 0.5)
    margin = np.minimum.reduce([np.abs(px + 0.5), np.abs(px - cw + 0.5),
                                np.abs(py + 0.5), np.abs(py - ch + 0.5)])
    shift = 0.0 if mode == "bilinear" else 0.5
    margin = np.minimum(margin, np.abs((px + shift) - np.round(px + shift)))
    margin = np.minimum(margin, np.abs((py + shift) - np.round(py + shift)))
    cx, cy = np.clip(px, 0, cw - 1), np.clip(py, 0, ch - 1)
    out = np.zeros((h0, w0))
    for v in range(h0):
        for u in range(w0):
            if not inside[v, u]:
                continue
            x, y = cx[v, u], cy[v, u]
            if mode == "nearest":
                out[v, u] = crop[int(np.rint(y)), int(np.rint(x))]
                continue
            x0, y0 = int(np.floor(x)), int(np.floor(y))
            total = 0.0
            for xi, wx in ((x0, 1 - (x - x0)), (x0 + 1, x - x0)):
                for yi, wy in ((y0, 1 - (y - y0)), (y0 + 1, y - y0)):
                    if xi < cw and yi < ch:
                        with np.errstate(invalid="ignore"):  # 0 * inf is NaN, as in the kernel
                            total += wx * wy * crop[yi, xi]
            out[v, u] = total
    return out, inside, margin > 1e-3


@pytest.mark.parametrize("mode", ["bilinear", "nearest"])
@pytest.mark.parametrize(("shape", "rotate", "other"), [
    ((45, 61), False, (45, 61)),  # enlarged
    ((61, 45), True, (45, 61)),  # enlarged, rotated
    ((61, 45), False, (45, 61)),  # enlarged, padded left and right
    ((45, 61), False, (61, 45)),  # enlarged, padded top and bottom
])
def test_resample_matches_a_per_pixel_reference(shape, rotate, other, mode):
    t = _transform(shape, rotate, other)
    array = _random_maps(t, 1, seed=5)[0]
    got, inside = t.resample_to_original(array, mode=mode)
    want, want_inside, settled = _per_pixel_reference(t, array, mode)
    assert settled.mean() > 0.9
    np.testing.assert_array_equal(inside[settled], want_inside[settled])
    assert (got[~inside] == 0).all()
    compare = settled & inside
    np.testing.assert_array_equal(np.isnan(got[compare]), np.isnan(want[compare]))
    np.testing.assert_array_equal(np.isinf(got[compare]), np.isinf(want[compare]))
    finite = compare & np.isfinite(want)
    if mode == "nearest":
        np.testing.assert_array_equal(got[finite], want[finite].astype(np.float32))
    else:
        # float32 grid arithmetic moves a position by a few float32 ulp of the canvas
        # size per axis; neighbouring values differ by at most 7; plus the float32
        # rounding of a blend of values up to 5.
        position_error = 8 * np.finfo(np.float32).eps * max(t.network_hw)
        atol = 2 * 7.0 * position_error + 8 * np.finfo(np.float32).eps * 5.0
        np.testing.assert_allclose(got[finite], want[finite], rtol=0, atol=atol)


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
