"""The shared pipeline: preprocess → backend → rays_to_pose → unprojection → original pixels."""

from __future__ import annotations

import json

import numpy as np
import pytest

from dvlt_core.backends import TorchBackend
from dvlt_core.geometry import rays_to_pose, unproject_depth
from dvlt_core.inference import Reconstructor
from dvlt_core.io.images import preprocess
from dvlt_core.model import DVLTModel
from dvlt_core.testing import load_deterministic_weights


@pytest.fixture(scope="module")
def golden(reference_dir):
    with np.load(reference_dir / "case_small_public.npz") as z:
        case = {k: z[k] for k in z.files}
    config = json.loads(str(case["config_json"]))
    # Slim decoders keep it fast; 126x168 views pass preprocessing unchanged at img_size 168.
    config.update(img_size=168, decoder_embed_dim=64, decoder_num_heads=2, decoder_depth=1)
    model = DVLTModel(**config)
    load_deterministic_weights(model, int(case["weights_seed"]))
    return TorchBackend(model), case


def test_network_resolution_is_the_raw_prediction(golden):
    backend, case = golden
    images = [(v.transpose(1, 2, 0) * 255).round().astype(np.uint8) for v in case["images"][0]]
    recon = Reconstructor(backend, pose_mode="upstream", resolution="network").reconstruct(
        images, num_steps=3, names=["x", "y", "z"]
    )
    batch = preprocess(images, img_size=168)
    assert batch.images.shape[-2:] == (126, 168)
    raw = backend.infer(batch.images, num_steps=3)
    fit = rays_to_pose(raw.rays, mode="upstream")
    points = unproject_depth(raw.depth[..., 0], fit.intrinsics, fit.extrinsics_c2w,
                             pixel_offset=0.5)
    assert recon.names == ["x", "y", "z"] and recon.num_steps == 3
    for i, view in enumerate(recon.views):
        np.testing.assert_allclose(view.depth, raw.depth[0, i, ..., 0].numpy(), rtol=1e-6)
        np.testing.assert_allclose(view.confidence, raw.depth_conf[0, i].numpy(), rtol=1e-6)
        np.testing.assert_allclose(view.extrinsics_c2w, fit.extrinsics_c2w[0, i].numpy(),
                                   atol=1e-6)
        K = fit.intrinsics[0, i].double().numpy()
        K[:2, 2] -= 0.5  # reported in the OpenCV convention
        np.testing.assert_allclose(view.intrinsics, K, atol=1e-4)
        assert view.pose_valid == bool(fit.valid[0, i])
        np.testing.assert_allclose(view.world_points, points[0, i].numpy(), atol=1e-4, rtol=1e-5)
        np.testing.assert_array_equal(view.image, images[i])


def test_padding_is_excluded_from_the_pose_fit(golden):
    backend, _ = golden
    rng = np.random.default_rng(0)
    images = [rng.integers(0, 256, s, dtype=np.uint8) for s in [(60, 80, 3), (80, 60, 3)]]
    recon = Reconstructor(backend, pose_mode="upstream", img_size=84).reconstruct(images, 1)
    batch = preprocess(images, img_size=84)
    assert not batch.valid.all()
    raw = backend.infer(batch.images, num_steps=1)
    fit = rays_to_pose(raw.rays, weights=batch.valid.float(), mode="upstream")
    np.testing.assert_allclose(recon.extrinsics_c2w, fit.extrinsics_c2w[0].numpy(), atol=1e-6)
    assert [v.depth.shape for v in recon.views] == [(60, 80), (80, 60)]

    conf = Reconstructor(backend, pose_mode="upstream", pose_weights="confidence", img_size=84)
    weighted = rays_to_pose(raw.rays, weights=raw.depth_conf * batch.valid, mode="upstream")
    np.testing.assert_allclose(conf.reconstruct(images, 1).extrinsics_c2w,
                               weighted.extrinsics_c2w[0].numpy(), atol=1e-6)


def test_rotated_portrait_views_map_back(golden):
    backend, _ = golden
    rng = np.random.default_rng(1)
    images = [rng.integers(0, 256, s, dtype=np.uint8) for s in [(60, 80, 3), (80, 60, 3)]]
    recon = Reconstructor(backend, pose_mode="upstream", rotate_portrait=True,
                          img_size=84).reconstruct(images, 1)
    batch = preprocess(images, img_size=84, rotate_portrait=True)
    assert batch.valid.all() and [t.rotation_k for t in batch.transforms] == [0, 1]
    raw = backend.infer(batch.images, num_steps=1)
    fit = rays_to_pose(raw.rays, mode="upstream")  # no padding: weights=None
    turn = np.eye(4)
    turn[:3, :3] = [[0, 1, 0], [-1, 0, 0], [0, 0, 1]]
    np.testing.assert_allclose(recon.views[1].extrinsics_c2w,
                               fit.extrinsics_c2w[0, 1].double().numpy() @ turn, atol=1e-6)
    K = fit.intrinsics[0, 1].double().numpy()
    s = 80 / 84  # original height / network width of the turned view
    assert recon.views[1].intrinsics[0, 0] == pytest.approx(K[1, 1] * s)
    assert recon.views[1].intrinsics[1, 1] == pytest.approx(K[0, 0] * s)
    assert recon.views[1].depth.shape == (80, 60)


def test_options_and_labels_are_checked(golden):
    backend, _ = golden
    with pytest.raises(ValueError, match="pose_mode"):
        Reconstructor(backend, pose_mode="fast")
    with pytest.raises(ValueError, match="resolution"):
        Reconstructor(backend, resolution="4k")
    with pytest.raises(ValueError, match="2 images but 1 names"):
        Reconstructor(backend).reconstruct([np.zeros((28, 28, 3), np.uint8)] * 2, names=["a"])
