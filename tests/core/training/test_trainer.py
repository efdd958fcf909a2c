"""The accelerate training loop: step plans, gradient checkpointing, initialisation, mixed
precision and bit-identical resume."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from dvlt_core.cli.train import build_config
from dvlt_core.io import save_checkpoint
from dvlt_core.model import DVLTConfig, DVLTModel
from dvlt_core.model.dinov2 import BACKBONE_SPECS, BackboneSpec
from dvlt_core.training.forward import TrainingForward, training_plan
from dvlt_core.training.k_sampler import train_k_for_step
from dvlt_core.training.trainer import Trainer, load_initial_weights

RECIPE = Path(__file__).resolve().parents[3] / "training" / "tiny-cpu.yaml"
TINY_MODEL = ["model.patch_embed=dinov2_tiny_test", "model.embed_dim=64", "model.num_heads=1"]
FAST = [*TINY_MODEL, "data.sources=[{type: synthetic, num_scenes: 4, width: 36, height: 36}]",
        "data.image_size=28", "model.img_size=28", "data.min_epoch_length=4",
        "data.images_per_element=[2,3]", "data.images_per_batch=6", "trainer.progress_bar=false",
        "trainer.cpu=true"]


@pytest.fixture(autouse=True)
def tiny_encoder(monkeypatch):
    # A 1-layer test encoder: no named DINOv2 size trains fast enough on a 2-core CPU.
    monkeypatch.setitem(BACKBONE_SPECS, "dinov2_tiny_test", BackboneSpec(64, 1, 1))
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # small ops on a shared 2-core machine run fastest single-threaded
    yield
    torch.set_num_threads(threads)


def test_linspace_plan_is_the_synchronised_k():
    config = DVLTConfig()
    for step in (0, 1, 7, 123):
        plan = training_plan(config, step)
        assert plan.num_steps == train_k_for_step(step) and set(plan.blocks) == {0}
        assert plan.t_pairs[-1].tolist() == [1.0, 1.0]


def test_stochastic_depth_plans():
    decoupled = DVLTConfig(recurrence_mode="none", num_steps=16, min_steps=16, k_sampling=None)
    assert training_plan(decoupled, 5).blocks == tuple(range(16))
    looped = DVLTConfig(recurrence_mode="no_depthscale", k_sampling=None, num_steps=16,
                        min_steps=8, time_conditioning="continuous")
    counts = set()
    for seed in (0, 1, 2):  # different global RNG states, as on different ranks
        torch.manual_seed(seed)
        counts.add(training_plan(looped, 42).num_steps)
    assert len(counts) == 1 and 8 <= counts.pop() <= 16


def test_gradient_checkpointing_gives_the_same_gradients():
    torch.manual_seed(0)
    model = DVLTModel(patch_embed="dinov2_tiny_test", embed_dim=64, num_heads=1, num_steps=3,
                      min_steps=2,
                      decoder_depth=1, decoder_embed_dim=64, decoder_num_heads=1)
    images = torch.rand(1, 2, 3, 28, 28)
    plan = training_plan(model.config, 3)
    grads = []
    for checkpointing in (False, True):
        model.zero_grad()
        torch.manual_seed(1)  # the same drop-path draws in both runs
        out = TrainingForward(model, checkpointing).train()(images, plan.t_pairs, plan.blocks)
        (out["depth"].mean() + out["rays"].square().mean() + out["pose_enc"].sum()).backward()
        grads.append({n: p.grad.clone() for n, p in model.named_parameters()
                      if p.grad is not None})
    assert grads[0].keys() == grads[1].keys() and len(grads[0]) > 50
    for name in grads[0]:
        torch.testing.assert_close(grads[0][name], grads[1][name], rtol=1e-5, atol=1e-6)


def test_non_strict_init_keeps_new_head(tmp_path):
    """Stage 2: a linear-depth-head checkpoint initialises a conv-head model except the head."""
    kwargs = {"patch_embed": "dinov2_tiny_test", "embed_dim": 64, "num_heads": 1,
              "decoder_depth": 1, "decoder_embed_dim": 64, "decoder_num_heads": 1}
    stage1 = DVLTModel(**kwargs, depth_head_type="linear")
    save_checkpoint(stage1, tmp_path / "stage1")
    stage2 = DVLTModel(**kwargs, depth_head_type="conv")
    before = stage2.depth_decoder.output_block[0].weight.clone()
    load_initial_weights(stage2, str(tmp_path / "stage1"), strict=False)
    assert torch.equal(stage2.recurrent_blocks[0].frame_attn.attn.qkv.weight,
                       stage1.recurrent_blocks[0].frame_attn.attn.qkv.weight)
    assert torch.equal(stage2.depth_decoder.output_block[0].weight, before)
    with pytest.raises(RuntimeError):
        load_initial_weights(DVLTModel(**kwargs, depth_head_type="conv"),
                             str(tmp_path / "stage1"), strict=True)


def test_resume_is_bit_identical(tmp_path):
    """6 steps straight == 3 steps, checkpoint, a fresh process state resuming for 3 more
    (gradient accumulation 2, so the resume position counts micro-batches)."""
    overrides = [*FAST, "trainer.max_train_steps=6", "trainer.checkpointing_steps=3",
                 "trainer.gradient_accumulation_steps=2", "trainer.checkpoints_total_limit=1"]
    straight = Trainer(build_config(str(RECIPE), overrides), tmp_path / "a").fit()
    assert sorted(p.name for p in (tmp_path / "a").glob("checkpoint-*")) == ["checkpoint-6"]
    partial = Trainer(build_config(str(RECIPE), [*overrides, "trainer.max_train_steps=3"]),
                      tmp_path / "b").fit()
    resumed_dir = tmp_path / "c"
    shutil.copytree(tmp_path / "b" / "checkpoint-3", resumed_dir / "checkpoint-3")
    torch.manual_seed(1234)  # the resumed run must not depend on the process' RNG state
    resumed = Trainer(build_config(str(RECIPE), overrides), resumed_dir).fit(resume="latest")
    a = load_file(straight.final_model / "model.safetensors")
    c = load_file(resumed.final_model / "model.safetensors")
    b = load_file(partial.final_model / "model.safetensors")
    assert all(torch.equal(a[k], c[k]) for k in a)
    assert not all(torch.equal(a[k], b[k]) for k in a)  # the last 3 steps changed the weights
    assert [h["train/loss"] for h in straight.history[3:]] == \
        [h["train/loss"] for h in resumed.history]
    assert resumed.global_step == 6


def test_bf16_mixed_precision_step(tmp_path):
    result = Trainer(build_config(str(RECIPE), [*FAST, "trainer.max_train_steps=2",
                                                "trainer.mixed_precision=bf16"]),
                     tmp_path).fit()
    assert all(torch.isfinite(torch.tensor(h["train/loss"])) for h in result.history)
    assert (tmp_path / "config.yaml").is_file() and (tmp_path / "final_model").is_dir()


def test_tensorboard_logging(tmp_path):
    Trainer(build_config(str(RECIPE), [*FAST, "trainer.max_train_steps=2",
                                       "trainer.log_with=[tensorboard]", "trainer.log_every=1"]),
            tmp_path).fit()
    assert list((tmp_path / "logs").rglob("events.out.tfevents.*"))
