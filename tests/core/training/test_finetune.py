"""Finetune freezing, parameter groups, learning-rate multipliers and the schedules."""

from __future__ import annotations

import math

import pytest
import torch

from dvlt_core.model import DVLTModel
from dvlt_core.model.dinov2 import BACKBONE_SPECS, BackboneSpec
from dvlt_core.training.finetune import apply_freezing, optimizer_param_groups
from dvlt_core.training.lr_schedule import build_optimizer, build_scheduler, lr_lambda

TINY = {"patch_embed": "dinov2_tiny_test", "embed_dim": 64, "num_heads": 1, "num_steps": 2,
        "min_steps": 1, "decoder_depth": 1, "decoder_embed_dim": 64, "decoder_num_heads": 1,
        "depth_head_type": "conv"}


@pytest.fixture
def model(monkeypatch):
    # A 1-layer test encoder (no named DINOv2 size is small enough for CPU unit tests).
    monkeypatch.setitem(BACKBONE_SPECS, "dinov2_tiny_test", BackboneSpec(64, 1, 1))
    return DVLTModel(**TINY)


def _trainable(model):
    return {n.split(".")[0] for n, p in model.named_parameters() if p.requires_grad}


@pytest.mark.parametrize(("mode", "groups", "modules"), [
    (None, {"patch_embed", "recurrent_blocks", "camera_token", "register_token", "ray_decoder",
            "depth_decoder", "camera_head"},
     {"patch_embed_encoder", "recurrent_blocks", "camera_token", "register_token",
      "ray_decoder", "depth_decoder", "camera_head"}),
    ("depth_output", {"depth_decoder_output"}, {"depth_decoder"}),
    ("depth_decoder", {"depth_decoder"}, {"depth_decoder"}),
    ("depth_decoder_recurrent", {"depth_decoder", "recurrent_blocks"},
     {"depth_decoder", "recurrent_blocks"}),
    ("all_heads", {"ray_decoder", "depth_decoder", "camera_head"},
     {"ray_decoder", "depth_decoder", "camera_head"}),
])
def test_finetune_modes_freeze_the_rest(model, mode, groups, modules):
    trainable = apply_freezing(model, mode)
    assert set(trainable) == groups
    assert _trainable(model) == modules
    assert not model.patch_embed_encoder.mask_token.requires_grad


def test_depth_output_trains_only_the_output_stage(model):
    apply_freezing(model, "depth_output")
    names = {n for n, p in model.named_parameters() if p.requires_grad}
    assert names and all(n.startswith(("depth_decoder.upsample_blocks",
                                       "depth_decoder.output_block")) for n in names)


def test_freeze_paths_and_errors(model):
    groups = apply_freezing(model, None, ["patch_embed_encoder", "camera_token"])
    assert "patch_embed" not in groups and "camera_token" not in groups
    with pytest.raises(ValueError, match="has no"):
        apply_freezing(model, None, ["ray_decoder.nonexistent"])
    with pytest.raises(ValueError, match="no trainable"):
        apply_freezing(model, "depth_decoder", ["depth_decoder"])
    with pytest.raises(ValueError, match="finetune mode"):
        apply_freezing(model, "everything")


def test_param_groups_split_decay_and_multiply_lr(model):
    groups = apply_freezing(model, None)
    pg = optimizer_param_groups(model, groups, 3e-4, 0.05, {"patch_embed": 0.1})
    by_name = {g["name"]: g for g in pg}
    assert by_name["patch_embed"]["lr"] == pytest.approx(3e-5)
    assert by_name["ray_decoder"]["lr"] == pytest.approx(3e-4)
    assert by_name["patch_embed/no_decay"]["weight_decay"] == 0.0
    assert by_name["recurrent_blocks"]["weight_decay"] == 0.05
    decayed = {id(p) for g in pg if g["weight_decay"] > 0 for p in g["params"]}
    for name, p in model.named_parameters():
        if id(p) in decayed:
            assert p.ndim > 1 and not name.endswith(".bias")
    n_params = sum(p.numel() for g in pg for p in g["params"])
    assert n_params == sum(p.numel() for p in model.parameters() if p.requires_grad)
    # Multipliers of frozen groups are ignored (upstream stage 2), unknown names refused.
    frozen = apply_freezing(model, "depth_decoder")
    assert optimizer_param_groups(model, frozen, 1e-4, 0.05, {"patch_embed": 0.1})
    with pytest.raises(ValueError, match="unknown groups"):
        optimizer_param_groups(model, frozen, 1e-4, 0.05, {"patch_embedding": 0.1})


def test_cosine_schedule_matches_upstream_formula():
    f = lr_lambda("cosine", warmup_steps=10, total_steps=110, min_lr_ratio=0.01)
    assert f(0) == 0.0 and f(5) == 0.5 and f(10) == 1.0
    assert f(60) == pytest.approx(0.01 + 0.99 * 0.5 * (1 + math.cos(math.pi * 0.5)))
    assert f(110) == pytest.approx(0.01)
    assert lr_lambda("constant", 10, 100)(0) == 1.0
    assert lr_lambda("constant_with_warmup", 10, 100)(5) == 0.5
    p = torch.nn.Parameter(torch.zeros(2, 2))
    opt = build_optimizer([{"params": [p], "lr": 2.0, "weight_decay": 0.0, "name": "x"}])
    sched = build_scheduler(opt, "cosine", 0, 4, min_lr_ratio=0.0)
    lrs = []
    for _ in range(4):
        lrs.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    assert lrs == pytest.approx([2.0, 2 * 0.5 * (1 + math.cos(math.pi / 4)), 1.0,
                                 2 * 0.5 * (1 + math.cos(3 * math.pi / 4))])
    with pytest.raises(ValueError, match="lr scheduler"):
        lr_lambda("step", 0, 10)
