"""Training losses against the upstream golden (``loss__``), plus quirks, modes, gradients."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from dvlt_core.geometry import compute_world_rays, pose_encoding_from_cameras
from dvlt_core.training import LossConfig, MultiTaskLoss
from dvlt_core.training.losses import CameraLossConfig, DepthLossConfig, RayLossConfig
from dvlt_core.training.losses.depth import edge_loss

PRED_KEYS = ("rays", "depth", "depth_conf", "world_points", "world_points_conf", "pose_enc")
BATCH_KEYS = ("extrinsics_c2w", "intrinsics", "depths", "world_points", "point_masks",
              "is_synthetic", "world_rays")


@pytest.fixture(scope="module")
def golden(reference_dir):
    with np.load(reference_dir / "metrics_golden.npz") as data:
        return {k: data[k] for k in data.files if k.startswith("loss__")}


@pytest.fixture
def inputs(golden):
    pred = {k: torch.from_numpy(golden[f"loss__pred_{k}"]).clone() for k in PRED_KEYS}
    batch = {k: torch.from_numpy(golden[f"loss__batch_{k}"]).clone() for k in BATCH_KEYS}
    return pred, batch


def test_multitask_loss_matches_upstream(golden, inputs):
    out = MultiTaskLoss(LossConfig.upstream())(*inputs)
    assert float(out.total) == pytest.approx(float(golden["loss__total"]), rel=1e-5)
    assert set(out.per_loss) == {"pmap", "depth", "ray", "cam"}
    for name, value in out.per_loss.items():
        assert float(value) == pytest.approx(float(golden[f"loss__out_loss_{name}"]), rel=1e-5)
    expected = {k[len("loss__out_"):] for k in golden if k.startswith("loss__out_")} - {
        f"loss_{n}" for n in out.per_loss
    }
    assert set(out.components) == expected
    for key, value in out.components.items():
        assert float(value) == pytest.approx(float(golden[f"loss__out_{key}"]), rel=1e-5,
                                             abs=1e-8), key


def test_default_config_is_the_upstream_recipe():
    cfg = LossConfig()
    assert cfg == LossConfig.upstream()
    assert cfg.normalize and not cfg.detach_pred_scale
    assert [getattr(cfg, n).weight for n in ("pmap", "depth", "ray", "cam")] == [1.0] * 4
    assert (cfg.cam.translation_weight, cfg.cam.rotation_weight, cfg.cam.focal_weight) == (
        1.0, 1.0, 0.5)
    assert cfg.depth.edge_clamp == "sum" and cfg.cam.quaternion == "raw_l1"
    assert not cfg.ray.pixel_mask and cfg.depth.edge_synthetic_only


def test_world_rays_match_upstream_targets(inputs):
    _, batch = inputs
    rays = compute_world_rays(batch["extrinsics_c2w"], batch["intrinsics"], 28, 42)
    torch.testing.assert_close(rays, batch["world_rays"], atol=1e-6, rtol=1e-6)
    pred, _ = inputs
    without = dict(batch)
    del without["world_rays"]
    total = MultiTaskLoss()(pred, without).total
    assert float(total) == pytest.approx(float(MultiTaskLoss()(pred, batch).total), rel=1e-6)


def test_gradients_reach_every_supervised_output(inputs):
    pred, batch = inputs
    for key in ("rays", "depth", "world_points", "pose_enc"):
        pred[key].requires_grad_(True)
    MultiTaskLoss()(pred, batch).total.backward()
    for key in ("rays", "depth", "world_points", "pose_enc"):
        grad = pred[key].grad
        assert grad is not None and bool(torch.isfinite(grad).all()), key
        assert float(grad.abs().sum()) > 0, key


def test_prediction_scale_gradient_is_kept_unless_detached(inputs):
    pred, batch = inputs
    has_graph = {}
    for detach in (False, True):
        points = pred["world_points"].clone().requires_grad_(True)
        cfg = LossConfig(detach_pred_scale=detach, pmap=dataclasses.replace(
            LossConfig().pmap, enabled=False))  # world points then act only through the scale
        total = MultiTaskLoss(cfg)(dict(pred, world_points=points), batch).total
        has_graph[detach] = total.requires_grad
        if total.requires_grad:
            total.backward()
            assert float(points.grad.abs().sum()) > 0
    assert has_graph == {False: True, True: False}


def test_loss_is_invariant_to_the_prediction_scale(inputs):
    pred, batch = inputs
    reference = MultiTaskLoss()(pred, batch)
    s = 3.5
    scaled = dict(pred)
    scaled["world_points"] = pred["world_points"] * s
    scaled["depth"] = pred["depth"] * s
    scaled["rays"] = torch.cat([pred["rays"][..., :3], pred["rays"][..., 3:] * s], dim=-1)
    scaled["pose_enc"] = torch.cat([pred["pose_enc"][..., :3] * s, pred["pose_enc"][..., 3:]], -1)
    out = MultiTaskLoss()(scaled, batch)
    assert float(out.total) == pytest.approx(float(reference.total), rel=1e-5)


def _perfect_camera_prediction(batch):
    H, W = batch["depths"].shape[-2:]
    return pose_encoding_from_cameras(batch["extrinsics_c2w"], batch["intrinsics"], (H, W))


def test_quaternion_sign_quirk_and_sign_invariant_mode(inputs):
    pred, batch = inputs
    pose = _perfect_camera_prediction(batch)
    flipped = torch.cat([pose[..., :3], -pose[..., 3:7], pose[..., 7:]], dim=-1)
    losses = {}
    for mode in ("raw_l1", "sign_invariant_l1"):
        cfg = LossConfig(cam=CameraLossConfig(quaternion=mode), normalize=False)
        out = MultiTaskLoss(cfg)(dict(pred, pose_enc=flipped), batch)
        losses[mode] = float(out.components["cam_loss_R"])
    assert losses["raw_l1"] > 0.1  # q and -q are the same rotation, yet penalised upstream
    assert losses["sign_invariant_l1"] == pytest.approx(0.0, abs=1e-7)


def test_ray_loss_pixel_mask_mode(inputs):
    pred, batch = inputs
    noisy = pred["rays"].clone()
    noisy[~batch["point_masks"]] += 5.0  # corrupt only pixels without valid GT points
    ray_terms = {}
    for masked in (False, True):
        cfg = LossConfig(ray=RayLossConfig(pixel_mask=masked))
        clean = MultiTaskLoss(cfg)(pred, batch).per_loss["ray"]
        corrupted = MultiTaskLoss(cfg)(dict(pred, rays=noisy), batch).per_loss["ray"]
        ray_terms[masked] = float(corrupted - clean)
    assert ray_terms[False] > 0.1  # upstream supervises every pixel
    assert ray_terms[True] == pytest.approx(0.0, abs=1e-6)


def test_edge_loss_clamp_modes():
    gen = torch.Generator().manual_seed(1)
    gt = torch.rand(1, 64, 64, generator=gen)
    pred = (gt + 5 * torch.rand(1, 64, 64, generator=gen)).requires_grad_(True)
    mask = torch.ones(1, 64, 64, dtype=torch.bool)
    upstream = edge_loss(pred, gt, mask, clamp="sum")
    assert float(upstream.detach()) == pytest.approx(100 / 64**2)  # the per-view sum hit the clamp
    upstream.sum().backward()
    assert float(pred.grad.abs().sum()) == 0.0  # ... so the edge term gives no gradient
    pred.grad = None
    corrected = edge_loss(pred, gt, mask, clamp="mean")
    assert float(corrected.detach()) > 100 / 64**2
    corrected.sum().backward()
    assert float(pred.grad.abs().sum()) > 0


def test_edge_loss_only_for_synthetic_samples(inputs):
    pred, batch = inputs
    out = MultiTaskLoss()(pred, batch)
    assert float(out.components["depth_loss_grad"]) > 0
    real = dict(batch, is_synthetic=torch.zeros_like(batch["is_synthetic"]))
    assert float(MultiTaskLoss()(pred, real).components["depth_loss_grad"]) == 0.0
    everywhere = LossConfig(depth=DepthLossConfig(edge_synthetic_only=False))
    both = MultiTaskLoss(everywhere)(pred, real).components["depth_loss_grad"]
    assert float(both) > float(out.components["depth_loss_grad"])


def test_depth_finetune_config_and_bad_input(inputs):
    pred, batch = inputs
    head_only = {k: v for k, v in pred.items() if k not in ("rays", "pose_enc")}
    out = MultiTaskLoss(LossConfig.depth_finetune())(head_only, batch)
    assert set(out.per_loss) == {"pmap", "depth"}
    missing = dict(batch)
    del missing["point_masks"]
    with pytest.raises(KeyError, match="point_masks"):
        MultiTaskLoss()(pred, missing)
    no_flag = dict(batch)
    del no_flag["is_synthetic"]
    with pytest.raises(ValueError, match="is_synthetic"):
        MultiTaskLoss()(pred, no_flag)


def test_empty_masks_give_zero_loss_attached_to_the_graph(inputs):
    pred, batch = inputs
    pred = {k: v.requires_grad_(True) if k != "depth_conf" else v for k, v in pred.items()}
    empty = dict(batch, point_masks=torch.zeros_like(batch["point_masks"]))
    cfg = LossConfig(ray=RayLossConfig(enabled=False))  # the ray loss needs no valid points
    out = MultiTaskLoss(cfg)(pred, empty)
    assert float(out.total.detach()) == 0.0
    out.total.backward()
    assert pred["pose_enc"].grad is not None
