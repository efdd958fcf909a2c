"""State-dict layout against the reference manifest, for the release and the other configs."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from dvlt_core.model import DVLTConfig, DVLTModel


def meta_model(**overrides) -> DVLTModel:
    """A model on the meta device: real key names, shapes and dtypes, no memory."""
    with torch.device("meta"):
        return DVLTModel(**overrides)


@pytest.fixture(scope="module")
def manifest(reference_dir):
    return json.loads((reference_dir / "manifest_released.json").read_text())


@pytest.fixture(scope="module")
def released_sd(manifest):
    return meta_model(**manifest["config"]).state_dict()


def _num_params(model: DVLTModel) -> int:
    return sum(p.numel() for p in model.parameters())


def test_released_keys_shapes_dtypes_and_order(manifest, released_sd):
    expected = manifest["keys"]
    assert list(released_sd) == list(expected)
    for key, info in expected.items():
        tensor = released_sd[key]
        assert list(tensor.shape) == info["shape"], key
        assert str(tensor.dtype).removeprefix("torch.") == info["dtype"], key


def test_released_totals(manifest, released_sd):
    model = meta_model(**manifest["config"])
    assert len(released_sd) == manifest["num_state_dict_keys"] == 368
    assert _num_params(model) == manifest["num_parameters"] == 117_081_667
    assert sum(t.numel() for t in released_sd.values()) == manifest["num_state_dict_elements"]
    buffers = {k for k, _ in model.named_buffers() if k in released_sd}
    assert sorted(buffers) == sorted(manifest["persistent_buffers"])
    for name in manifest["non_persistent_buffers_not_in_state_dict"]:
        assert name in dict(model.named_buffers()) and name not in released_sd
    for group, info in manifest["top_level_groups"].items():
        keys = [k for k in released_sd if k.split(".")[0] == group]
        assert len(keys) == info["num_keys"], group
        assert sum(released_sd[k].numel() for k in keys) == info["num_elements"], group


def test_imagenet_normalisation_buffers():
    model = DVLTModel(patch_embed="dinov2_vits14_reg", embed_dim=384, num_heads=6)
    torch.testing.assert_close(model._resnet_mean.flatten(), torch.tensor([0.485, 0.456, 0.406]))
    torch.testing.assert_close(model._resnet_std.flatten(), torch.tensor([0.229, 0.224, 0.225]))
    freqs = model.recurrent_blocks[0].frame_attn.depth_scale.freqs
    expected = torch.exp(-np.log(10000.0) * torch.arange(32).float() / 32)
    torch.testing.assert_close(freqs, expected, rtol=0, atol=0)


def _diff(sd, released):
    added = sorted(set(sd) - set(released))
    removed = sorted(set(released) - set(sd))
    changed = {
        k: [list(released[k].shape), list(sd[k].shape)]
        for k in set(sd) & set(released)
        if sd[k].shape != released[k].shape
    }
    return added, removed, changed


def _check_listed_keys(listed, ours: list[str]) -> None:
    """Long manifest lists are cut: some keys, then a "... (N total)" marker."""
    if isinstance(listed, str):  # a stringified, cut list: only its key count is usable
        return
    marker = [item for item in listed if item.startswith("... (")]
    keys = [item for item in listed if not item.startswith("... (")]
    assert set(keys) <= set(ours)
    total = int(marker[0].split("(")[1].split()[0]) if marker else len(keys)
    assert len(ours) == total


@pytest.mark.parametrize(
    ("name", "overrides"),
    [
        ("no_sout", {"recurrence_mode": "no_sout"}),
        ("no_depthscale", {"recurrence_mode": "no_depthscale"}),
        ("depth_head_type=linear (stage-1 checkpoints)", {"depth_head_type": "linear"}),
        (
            "small_vits14 (case_small_public)",
            {"patch_embed": "dinov2_vits14_reg", "embed_dim": 384, "num_heads": 6},
        ),
        (
            "none (decoupled, num_steps=3 as in case_hidden_c)",
            {"recurrence_mode": "none", "num_steps": 3, "k_sampling": None},
        ),
        (
            "none (decoupled, num_steps=16 as in dvlt-large-ablation-decoupled)",
            {"recurrence_mode": "none", "num_steps": 16, "min_steps": 16, "k_sampling": None},
        ),
    ],
)
def test_other_configs_match_manifest(manifest, released_sd, name, overrides):
    info = manifest["other_configs"][name]
    model = meta_model(**{**manifest["config"], **overrides})
    sd = model.state_dict()
    assert len(sd) == info["num_state_dict_keys"]
    assert _num_params(model) == info["num_parameters"]
    added, removed, changed = _diff(sd, released_sd)
    assert len(changed) == info["num_shape_changed_vs_released"]
    for field, ours in (("keys_added_vs_released", added), ("keys_removed_vs_released", removed)):
        _check_listed_keys(info[field], ours)
    listed = info["shape_changed_vs_released (first 25)"]
    if isinstance(listed, dict):
        assert {k: changed[k] for k in listed} == listed
    if overrides.get("recurrence_mode") == "none":
        n = overrides["num_steps"]
        block0 = {k.split(".", 2)[2] for k in sd if k.startswith("recurrent_blocks.0.")}
        assert not any("depth_scale" in k for k in block0)
        expected_added = sorted(
            f"recurrent_blocks.{i}.{suffix}" for i in range(1, n) for suffix in block0
        )
        assert added == expected_added


def test_continuous_time_conditioning_gate_shapes(released_sd):
    sd = meta_model(time_conditioning="continuous", k_sampling=None).state_dict()
    assert sd["recurrent_blocks.0.frame_attn.depth_scale.proj.0.weight"].shape == (64, 64)
    assert sd["recurrent_blocks.0.global_attn.depth_scale.proj.2.weight"].shape == (2304, 64)
    assert set(sd) == set(released_sd)


def test_decoder_overrides_and_layerscale():
    sd = meta_model(
        decoder_head_type="conv",
        depth_decoder_embed_dim=768,
        depth_decoder_num_heads=12,
        depth_decoder_depth=3,
        decoder_init_values=0.01,
    ).state_dict()
    assert "ray_decoder.head.weight" not in sd
    assert sd["ray_decoder.output_block.2.weight"].shape == (6, 32, 1, 1)
    assert sd["depth_decoder.upsample_blocks.0.0.0.weight"].shape == (770, 256, 2, 2)
    assert sd["depth_decoder.blocks.2.attn.q_norm.weight"].shape == (64,)
    assert sd["ray_decoder.blocks.1.ls2.gamma"].shape == (384,)
    assert not any(k.startswith("camera_head") for k in meta_model(camera_head=False).state_dict())


@pytest.mark.parametrize(
    ("backbone", "dim", "depth", "heads"),
    [
        ("dinov2_vits14_reg", 384, 12, 6),
        ("dinov2_vitb14_reg", 768, 12, 12),
        ("dinov2_vitl14_reg", 1024, 24, 16),
        ("dinov2_vitg2_reg", 1536, 40, 24),
        ("dinov2_vitg14_reg", 1536, 40, 24),
    ],
)
def test_backbone_variants(backbone, dim, depth, heads):
    model = meta_model(patch_embed=backbone, embed_dim=dim, num_heads=heads)
    sd = model.state_dict()
    blocks = {k.split(".")[2] for k in sd if k.startswith("patch_embed_encoder.blocks.")}
    assert len(blocks) == depth
    assert sd["patch_embed_encoder.pos_embed"].shape == (1, 1 + 37 * 37, dim)
    assert sd["patch_embed_encoder.register_tokens"].shape == (1, 4, dim)
    assert sd["patch_embed_encoder.mask_token"].shape == (1, dim)
    assert sd[f"patch_embed_encoder.blocks.{depth - 1}.mlp.fc1.weight"].shape == (4 * dim, dim)
    assert "patch_embed_encoder.norm.weight" not in sd
    assert sd["camera_token"].shape == (1, 2, 1, dim)
    assert all(t.dtype == torch.float32 for t in sd.values())


def test_hub_config_builds_the_release(manifest, released_sd):
    hub = DVLTConfig(**{**manifest["config"]}).hub_config()
    assert list(meta_model(**hub).state_dict()) == list(released_sd)
