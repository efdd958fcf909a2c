"""Calibrated cameras: distorted inputs rectified in prepare_frame (checked against the
distortion models written out here, independently of OpenCV) and the known K used by the
pose fit through the session."""

from __future__ import annotations

import numpy as np
import pytest
from rig_constants import RIG_IMG_SIZE, RIG_TIMES

from dvlt_core.backends.ground_truth_unscaled import GroundTruthUnscaledBackend
from dvlt_core.io.rectify import Rectifier
from dvlt_ros.pipeline import CameraFrame, CameraInfoData, prepare_frame
from dvlt_ros.pipeline.session import ReconstructionSession
from dvlt_ros.pipeline.settings import load_parameters

WIDTH, HEIGHT = 160, 120
# A smooth test pattern of the distorted pixel coordinates (grey levels).
AMPLITUDE, FU, FV = 90.0, 0.2, 0.15
MODELS = {
    "plumb_bob": (np.array([[110.0, 0, 81.0], [0, 112.0, 58.5], [0, 0, 1]]),
                  (-0.25, 0.08, 0.001, -0.0015, -0.01)),
    "equidistant": (np.array([[80.0, 0, 79.0], [0, 80.5, 60.5], [0, 0, 1]]),
                    (-0.02, 0.005, -0.001, 0.0002)),
}


def distort(model: str, d: tuple, x: np.ndarray, y: np.ndarray):
    """Normalised pinhole coordinates -> distorted ones (ROS/OpenCV model definitions)."""
    if model == "plumb_bob":
        k1, k2, p1, p2, k3 = d
        r2 = x * x + y * y
        radial = 1 + k1 * r2 + k2 * r2**2 + k3 * r2**3
        return (x * radial + 2 * p1 * x * y + p2 * (r2 + 2 * x * x),
                y * radial + p1 * (r2 + 2 * y * y) + 2 * p2 * x * y)
    k1, k2, k3, k4 = d
    r = np.hypot(x, y)
    theta = np.arctan(r)
    theta_d = theta * (1 + k1 * theta**2 + k2 * theta**4 + k3 * theta**6 + k4 * theta**8)
    factor = np.where(r > 0, theta_d / np.maximum(r, 1e-12), 1.0)
    return x * factor, y * factor


def pattern(u: np.ndarray, v: np.ndarray) -> np.ndarray:
    return 128.0 + AMPLITUDE * np.sin(FU * u) * np.cos(FV * v)


@pytest.mark.parametrize("model", sorted(MODELS))
def test_distorted_frames_are_rectified_against_the_analytic_model(model):
    k, d = MODELS[model]
    v, u = np.mgrid[0:HEIGHT, 0:WIDTH].astype(np.float64)
    grey = np.clip(np.rint(pattern(u, v)), 0, 255).astype(np.uint8)
    info = CameraInfoData(k, WIDTH, HEIGHT, model, d)
    frame = CameraFrame("cam", 1, "cam_optical", np.repeat(grey[..., None], 3, axis=2), info)
    rectifier = Rectifier("k")
    out, events = prepare_frame(frame, img_size=RIG_IMG_SIZE, rectifier=rectifier)
    assert events == [] and out is not None
    assert not out.info.distorted and out.info.distortion_model == ""
    np.testing.assert_array_equal(out.info.k, k)  # rectified to the pinhole camera of K
    # Where rectified pixel (u, v) comes from in the distorted image, by the model itself.
    x, y = (u - k[0, 2]) / k[0, 0], (v - k[1, 2]) / k[1, 1]
    xd, yd = distort(model, d, x, y)
    ud, vd = k[0, 0] * xd + k[0, 2], k[1, 1] * yd + k[1, 2]
    inside = (ud >= 1) & (ud <= WIDTH - 2) & (vd >= 1) & (vd <= HEIGHT - 2)
    assert inside.mean() > 0.5
    error = np.abs(out.rgb[..., 0].astype(np.float64) - pattern(ud, vd))[inside]
    # Bilinear sampling of the pattern errs by at most max|second derivative| / 8 =
    # AMPLITUDE·max(FU, FV)² / 8 grey levels; OpenCV's remap rounds sample positions to
    # 1/32 px (up to the gradient AMPLITUDE·max(FU, FV) times 1/64 px); rounding of input
    # and output adds 0.5 each.
    bound = AMPLITUDE * max(FU, FV) ** 2 / 8 + AMPLITUDE * max(FU, FV) / 64 + 1.0
    assert error.max() <= bound
    assert error.mean() <= bound / 2
    # The maps are computed once per CameraInfo.
    prepare_frame(frame, img_size=RIG_IMG_SIZE, rectifier=rectifier)
    assert len(rectifier) == 1
    other = CameraInfoData(k, WIDTH, HEIGHT, model, tuple(c * 0.5 for c in d))
    prepare_frame(CameraFrame("cam", 2, "f", frame.rgb, other), img_size=RIG_IMG_SIZE,
                  rectifier=rectifier)
    assert len(rectifier) == 2


@pytest.mark.parametrize(("model", "d", "words"), [
    ("fisheye_unknown", (0.1, 0.0, 0.0, 0.0), "not supported"),
    ("plumb_bob", (0.1, 0.0, 0.0), "coefficients"),
])
def test_unrectifiable_distortion_drops_the_camera_info(model, d, words):
    k = MODELS["plumb_bob"][0]
    rgb = np.zeros((HEIGHT, WIDTH, 3), np.uint8)
    info = CameraInfoData(k, WIDTH, HEIGHT, model, d)
    out, events = prepare_frame(CameraFrame("cam", 1, "f", rgb, info), img_size=RIG_IMG_SIZE)
    assert out is not None and out.info is None  # predicted intrinsics instead
    assert [e.code for e in events] == ["camera_info_distortion"]
    assert words in events[0].message and "rectified images" in events[0].message


def test_known_intrinsics_drive_the_pose_fit(pipeline_rig):
    backend = GroundTruthUnscaledBackend.for_rig(pipeline_rig, RIG_TIMES, img_size=RIG_IMG_SIZE)
    errors = {}
    for known in (False, True):
        params = load_parameters(None, {
            "cameras": list(pipeline_rig.names), "img_size": RIG_IMG_SIZE, "num_steps": 3,
            "window_timesteps": 2, "keyframe_min_spacing": 0.0, "camera_timeout": 1e4,
            "use_input_camera_info": known})
        session = ReconstructionSession(params)
        session.install_backend(backend)
        worst = 0.0
        for t in RIG_TIMES:
            stamp = round(t * 1e9)
            for view in pipeline_rig.snapshot(t):
                cam = pipeline_rig.camera(view.camera)
                info = CameraInfoData(cam.k, cam.width, cam.height)
                session.add_frame(CameraFrame(view.camera, stamp, cam.optical_frame,
                                              view.image, info), stamp)
            snapshot, _ = session.poll(stamp)
            cycle = session.reconstruct(snapshot, stamp)
            result = cycle.result
            recon = result.reconstruction
            for frame, view in zip(cycle.window.frames, recon.views, strict=True):
                assert view.pose_valid
                k = pipeline_rig.intrinsics(frame.camera)
                if known:  # the calibrated K, exactly, and depth published with it
                    np.testing.assert_allclose(view.intrinsics, k, rtol=1e-9, atol=1e-6)
                worst = max(worst, float(np.abs(view.intrinsics - k).max()))
            for depth in result.depths:
                if known:
                    np.testing.assert_allclose(depth.camera_model.k,
                                               pipeline_rig.intrinsics(depth.camera))
        errors[known] = worst
    assert errors[True] < 1e-5 < errors[False]
