"""Rectification against analytic distortion models written out from OpenCV's equations.

The distorted test image is a smooth function ``h`` sampled at the distorted pixels, so the
ideal undistorted image is ``h(forward(p))`` exactly, with ``forward`` the camera's
distortion of the rectified pixel ``p``. Rectifying samples the distorted image bilinearly at
``map(p) ≈ forward(p)``; its error is bounded by

* bilinear interpolation of ``h`` on the unit grid: ``(max|h_uu| + max|h_vv|) / 8``;
* cv2.remap's fixed-point weights (1/32 px table): a position error of at most 1/64 px per
  axis, times ``max|∇h|``;
* the float32 maps (checked against ``forward`` below to ``MAP_TOLERANCE_PX``).
"""

from __future__ import annotations

import math

import numpy as np
import pytest

from dvlt_core.io.rectify import CameraCalibration, Rectifier

WIDTH, HEIGHT = 320, 240
K = np.array([[260.0, 0.0, 163.5], [0.0, 262.0, 117.25], [0.0, 0.0, 1.0]])
PLUMB_BOB = (-0.28, 0.09, 0.0012, -0.0008, -0.012)
RATIONAL = (0.35, -0.12, 0.0009, 0.0006, 0.01, 0.05, -0.08, 0.02)  # pincushion
EQUIDISTANT = (0.08, -0.02, 0.004, -0.0006)
# float32 coordinates below 320 px carry ~2e-5 px rounding; OpenCV computes them in double.
MAP_TOLERANCE_PX = 1e-3
WAVES = (2 * math.pi / 23.0, 2 * math.pi / 19.0)  # h's angular frequencies per px (u, v)


def forward(calibration: CameraCalibration, new_k: np.ndarray, u: np.ndarray, v: np.ndarray):
    """Distorted pixel of each rectified pixel (u, v): OpenCV's camera model, by hand."""
    x = (u - new_k[0, 2]) / new_k[0, 0]
    y = (v - new_k[1, 2]) / new_k[1, 1]
    if calibration.r is not None:  # rectified ray back into the camera frame: Rᵀ
        ray = np.stack([x, y, np.ones_like(x)], -1) @ calibration.r
        x, y = ray[..., 0] / ray[..., 2], ray[..., 1] / ray[..., 2]
    d = calibration.d
    r2 = x * x + y * y
    if calibration.distortion_model == "equidistant":
        r = np.sqrt(r2)
        theta = np.arctan(r)
        t2 = theta * theta
        theta_d = theta * (1 + d[0] * t2 + d[1] * t2**2 + d[2] * t2**3 + d[3] * t2**4)
        scale = np.where(r > 1e-12, theta_d / np.maximum(r, 1e-12), 1.0)
        xd, yd = x * scale, y * scale
    else:
        k1, k2, p1, p2 = d[:4]
        k3 = d[4] if len(d) > 4 else 0.0
        k4, k5, k6 = d[5:8] if len(d) == 8 else (0.0, 0.0, 0.0)
        radial = (1 + k1 * r2 + k2 * r2**2 + k3 * r2**3) / (1 + k4 * r2 + k5 * r2**2 + k6 * r2**3)
        xd = x * radial + 2 * p1 * x * y + p2 * (r2 + 2 * x * x)
        yd = y * radial + p1 * (r2 + 2 * y * y) + 2 * p2 * x * y
    k = calibration.k
    return k[0, 0] * xd + k[0, 1] * yd + k[0, 2], k[1, 1] * yd + k[1, 2]


def texture(u: np.ndarray, v: np.ndarray) -> np.ndarray:
    """The smooth image ``h`` on distorted pixel coordinates, values in [0, 1]."""
    return 0.5 + 0.25 * np.sin(WAVES[0] * u + 0.3) + 0.25 * np.cos(WAVES[1] * v - 0.7)


def interpolation_bound() -> float:
    """The error bound of the module docstring for ``texture``."""
    curvature = 0.25 * WAVES[0] ** 2 + 0.25 * WAVES[1] ** 2
    gradient = 0.25 * WAVES[0] + 0.25 * WAVES[1]  # |h_u| + |h_v|, per-axis position errors
    return curvature / 8 + gradient * (1 / 64 + MAP_TOLERANCE_PX) + 1e-6


def distorted_image() -> np.ndarray:
    v, u = np.mgrid[0:HEIGHT, 0:WIDTH].astype(np.float64)
    return texture(u, v).astype(np.float32)


def check_against_forward_model(calibration: CameraCalibration, rectifier: Rectifier) -> float:
    """Maps and rectified image against the forward model; returns the fraction of rectified
    pixels that sample outside the distorted image."""
    maps = rectifier.maps(calibration)
    v, u = np.mgrid[0:HEIGHT, 0:WIDTH].astype(np.float64)
    fu, fv = forward(calibration, maps.k, u, v)
    # Rectified pixel coordinates map back through the forward model.
    inside = (fu > -50) & (fu < WIDTH + 50) & (fv > -50) & (fv < HEIGHT + 50)
    assert inside.mean() > 0.5
    np.testing.assert_allclose(maps.map_x[inside], fu[inside], atol=MAP_TOLERANCE_PX)
    np.testing.assert_allclose(maps.map_y[inside], fv[inside], atol=MAP_TOLERANCE_PX)
    # The rectified image is the undistorted render within the interpolation bound, at the
    # pixels whose bilinear sample lies inside the distorted image (maps.valid).
    rectified = rectifier.rectify(distorted_image(), calibration)
    assert rectified.image.shape == (HEIGHT, WIDTH) and rectified.image.dtype == np.float32
    np.testing.assert_array_equal(rectified.k, maps.k)
    expected = texture(fu, fv)
    interior = maps.valid & (fu >= 0) & (fu <= WIDTH - 1) & (fv >= 0) & (fv <= HEIGHT - 1)
    assert interior.mean() > 0.5
    error = np.abs(rectified.image - expected)[interior]
    assert error.max() < interpolation_bound(), (error.max(), interpolation_bound())
    # Pixels sampling outside the distorted image are 0, not smeared border pixels.
    outside = (fu < -1) | (fu > WIDTH) | (fv < -1) | (fv > HEIGHT)
    assert (rectified.image[outside] == 0).all()
    assert not maps.valid[outside].any()
    return float(outside.mean())


@pytest.mark.parametrize(
    ("model", "coefficients"),
    [("plumb_bob", PLUMB_BOB), ("rational_polynomial", RATIONAL), ("equidistant", EQUIDISTANT)],
)
def test_rectification_inverts_the_analytic_distortion(model, coefficients):
    calibration = CameraCalibration(WIDTH, HEIGHT, K, model, coefficients)
    rectifier = Rectifier()
    outside = check_against_forward_model(calibration, rectifier)
    assert outside > 0.01 if model == "rational_polynomial" else outside == 0  # pincushion
    assert not rectifier.maps(calibration).identity
    np.testing.assert_array_equal(rectifier.maps(calibration).k, K)  # no P: K


@pytest.mark.parametrize("model", ["plumb_bob", "equidistant"])
def test_stereo_rotation_and_projection(model):
    """CameraInfo R and P (a stereo camera): the new K is P's 3x3 and the rectified image is
    that of the camera turned by R."""
    angle = math.radians(2.0)
    c, s = math.cos(angle), math.sin(angle)
    r = np.array([[c, 0.0, s], [0.0, 1.0, 0.0], [-s, 0.0, c]])
    p = np.array([[240.0, 0.0, 160.0, -12.0], [0.0, 240.0, 120.0, 0.0], [0.0, 0.0, 1.0, 0.0]])
    d = PLUMB_BOB if model == "plumb_bob" else EQUIDISTANT
    calibration = CameraCalibration.from_camera_info(
        WIDTH, HEIGHT, K.reshape(-1), model, d, r.reshape(-1), p.reshape(-1)
    )
    rectifier = Rectifier()
    maps = rectifier.maps(calibration)
    np.testing.assert_array_equal(maps.k, p[:, :3])
    np.testing.assert_allclose(maps.camera_from_rectified, r.T)
    check_against_forward_model(calibration, rectifier)


@pytest.mark.parametrize(
    ("model", "coefficients"), [("plumb_bob", PLUMB_BOB), ("equidistant", EQUIDISTANT)]
)
def test_optimal_new_intrinsics_keep_only_valid_pixels(model, coefficients):
    calibration = CameraCalibration(WIDTH, HEIGHT, K, model, coefficients)
    rectifier = Rectifier(new_intrinsics="optimal")
    maps = rectifier.maps(calibration)
    assert not np.allclose(maps.k, K)
    # alpha / balance 0: every rectified pixel comes from inside the image, up to the
    # outermost pixel ring (OpenCV fits the valid region on a sparse grid of points).
    assert maps.valid[2:-2, 2:-2].all()
    check_against_forward_model(calibration, rectifier)


def test_colour_images_keep_dtype_and_channels():
    calibration = CameraCalibration(WIDTH, HEIGHT, K, "plumb_bob", PLUMB_BOB)
    rgb = (distorted_image()[..., None] * np.array([255, 128, 64])).astype(np.uint8)
    out = Rectifier().rectify(rgb, calibration)
    assert out.image.shape == rgb.shape and out.image.dtype == np.uint8
    depth = Rectifier().rectify(distorted_image() * 3.0, calibration, interpolation="nearest")
    assert set(np.unique(depth.image)) <= set(np.unique(distorted_image() * 3.0)) | {0.0}


def test_maps_are_computed_once_per_calibration():
    rectifier = Rectifier(cache_size=2)
    a = CameraCalibration(WIDTH, HEIGHT, K, "plumb_bob", PLUMB_BOB)
    same = CameraCalibration(WIDTH, HEIGHT, K.copy(), "plumb_bob", tuple(PLUMB_BOB))
    assert rectifier.maps(a) is rectifier.maps(same)
    assert a == same and hash(a) == hash(same) and len({a, same}) == 1
    others = [CameraCalibration(WIDTH, HEIGHT, K, "equidistant", EQUIDISTANT),
              CameraCalibration(WIDTH, HEIGHT, K * [[1.01], [1.01], [1]], "plumb_bob", PLUMB_BOB)]
    for other in others:
        assert rectifier.maps(other) is not rectifier.maps(a) or other.key == a.key
    assert len(rectifier) == 2


def test_undistorted_cameras_pass_through():
    rectifier = Rectifier()
    image = distorted_image()
    for model, d in [("", ()), ("plumb_bob", (0.0,) * 5), ("unknown_model", (0.0,) * 4)]:
        out = rectifier.rectify(image, CameraCalibration(WIDTH, HEIGHT, K, model, d))
        assert out.maps.identity and out.image is image
        np.testing.assert_array_equal(out.k, K)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"distortion_model": "kannala_brandt", "d": (0.1,) * 4}, "not supported"),
        ({"distortion_model": "plumb_bob", "d": (0.1,) * 3}, "4 or 5 coefficients"),
        ({"distortion_model": "equidistant", "d": (0.1,) * 5}, "4 coefficients"),
        ({"distortion_model": "plumb_bob", "d": (math.nan,) * 5}, "NaN"),
        ({"k": np.zeros((3, 3))}, "positive fx"),
        ({"r": np.ones((3, 3))}, "rotation"),
        ({"width": 0}, "empty"),
    ],
)
def test_bad_calibrations_are_refused(kwargs, message):
    values = {"width": WIDTH, "height": HEIGHT, "k": K} | kwargs
    with pytest.raises(ValueError, match=message):
        CameraCalibration(**values)


def test_image_of_another_size_is_refused():
    calibration = CameraCalibration(WIDTH, HEIGHT, K, "plumb_bob", PLUMB_BOB)
    with pytest.raises(ValueError, match="scale the CameraInfo"):
        Rectifier().rectify(np.zeros((HEIGHT // 2, WIDTH // 2), np.float32), calibration)
    with pytest.raises(ValueError, match="new_intrinsics"):
        Rectifier(new_intrinsics="p")
