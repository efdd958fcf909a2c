"""The ground-truth backend through the real Reconstructor: exact cameras and depth."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from dvlt_core.backends import create_backend
from dvlt_core.backends.ground_truth import GroundTruthBackend
from dvlt_core.inference import Reconstructor
from dvlt_core.io.images import preprocess
from dvlt_core.synthetic import default_rig


@pytest.fixture(scope="module")
def rig():
    return default_rig(300, 200)


def _relative(c2w_ref: np.ndarray, c2w: np.ndarray) -> np.ndarray:
    return np.linalg.inv(c2w_ref) @ c2w


def test_reconstructor_recovers_scene_cameras_and_depth(rig):
    # 300x200 -> resized to 224x149 -> cropped to 224x140: resize and crop both matter.
    backend = GroundTruthBackend.for_rig(rig, [0.0, 0.8], img_size=224)
    views = rig.snapshot(0.8) + rig.snapshot(0.0)
    recon = Reconstructor(backend).reconstruct([v.image for v in views], num_steps=3)
    assert recon.num_steps == 3 and len(recon) == 8
    for truth, got in zip(views, recon.views, strict=True):
        assert got.pose_valid
        np.testing.assert_allclose(
            got.extrinsics_c2w, _relative(views[0].c2w, truth.c2w), atol=1e-6
        )
        np.testing.assert_allclose(got.intrinsics, truth.k, atol=1e-4)
        # Bilinear resampling of the network-resolution depth to the original pixels is
        # exact up to the curvature of z-depth across a plane (and blending at edges).
        rel = (np.abs(got.depth - truth.depth) / truth.depth)[got.valid]
        assert np.median(rel) < 2e-5 and np.percentile(rel, 90) < 3e-4
        assert got.valid.mean() == pytest.approx(140 / 149, abs=0.01)
    # At network resolution nothing is resampled: depth is the exact render of the
    # returned camera, to float32 rounding.
    net = Reconstructor(backend, resolution="network").reconstruct([v.image for v in views[:2]])
    for got in net.views:
        c2w = views[0].c2w @ got.extrinsics_c2w
        exact = rig.scene.depth(got.intrinsics, c2w, *got.depth.shape)
        assert (np.abs(got.depth - exact) / exact).max() < 1e-4


def test_raw_outputs_follow_the_model_conventions(rig):
    backend = GroundTruthBackend.for_rig(rig, [0.3], img_size=112, confidence=7.0)
    images = [v.image for v in rig.snapshot(0.3)]
    batch = preprocess(images, img_size=112)
    out = backend.infer(batch.images, num_steps=5)
    assert out.timings.num_steps == 5
    assert out.rays.shape == (1, 4, *batch.images.shape[-2:], 6)
    # View 0 defines the frame: origin 0, directions with z = 1.
    assert out.rays[0, 0, ..., 3:].abs().max() < 1e-12
    torch.testing.assert_close(out.rays[0, 0, ..., 2], torch.ones_like(out.rays[0, 0, ..., 2]))
    expected = out.rays[..., 3:] + out.rays[..., :3] * out.depth
    torch.testing.assert_close(out.world_points, expected)
    assert (out.depth_conf == 7.0).all() and out.pose_enc.shape == (1, 4, 9)
    assert backend.metric


def test_mixed_sizes_padding_and_portrait_rotation(rig):
    scene = rig.scene
    # A landscape rig camera plus a portrait camera of another size: padded in the batch,
    # and turned when rotate_portrait is on.
    land = rig.render("cam_front_left", 0.0)
    k_portrait = np.array([[150.0, 0.0, 62.0], [0.0, 150.0, 95.0], [0.0, 0.0, 1.0]])
    c2w_portrait = rig.camera_pose("cam_left", 0.0)
    portrait, depth_portrait = scene.render(k_portrait, c2w_portrait, 180, 120)
    backend = GroundTruthBackend(scene, img_size=140)
    backend.register_view(land)
    backend.register(portrait, k_portrait, c2w_portrait)
    for rotate in (False, True):
        recon = Reconstructor(backend, rotate_portrait=rotate)
        result = recon.reconstruct([land.image, portrait])
        got = result.views[1]
        assert got.transform.rotation_k == int(rotate)
        np.testing.assert_allclose(got.extrinsics_c2w, _relative(land.c2w, c2w_portrait), atol=1e-5)
        np.testing.assert_allclose(got.intrinsics, k_portrait, atol=2e-3)
        rel = (np.abs(got.depth - depth_portrait) / depth_portrait)[got.valid]
        assert np.median(rel) < 2e-5


def test_unregistered_view_is_refused_and_factory(rig):
    backend = GroundTruthBackend.for_rig(rig, [0.0], img_size=112)
    other = rig.render("cam_front_left", 0.1).image
    with pytest.raises(ValueError, match="matches no registered synthetic view"):
        Reconstructor(backend).reconstruct([other])
    made = create_backend("ground_truth", scene=rig.scene, img_size=112)
    assert isinstance(made, GroundTruthBackend) and made.img_size == 112
    with pytest.raises(ValueError, match="needs scene"):
        create_backend("ground_truth")
