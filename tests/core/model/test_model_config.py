"""Constructor arguments: upstream names accepted, unknown and invalid ones refused."""

from __future__ import annotations

import dataclasses
import json
import typing

import numpy as np
import pytest
import torch

from dvlt_core.model import DVLTConfig, DVLTModel
from dvlt_core.model.config import NUMERIC_RANGES

# Upstream ``DVLTModel.__init__`` parameters: what its PyTorchModelHubMixin config.json holds.
HUB_KEYS = {
    "img_size", "patch_size", "embed_dim", "num_steps", "min_steps", "num_heads", "mlp_ratio",
    "num_register_tokens", "patch_embed", "load_patch_embed_weights", "decoder_depth",
    "decoder_embed_dim", "decoder_num_heads", "gradient_checkpointing_config", "camera_head",
    "drop_path", "stochastic_depth", "stochastic_depth_mode", "sync_stochastic_depth",
    "recurrence_mode", "time_conditioning", "k_sampling", "k_sampler_beta_a", "k_sampler_beta_b",
    "inference_steps", "decoder_head_type", "depth_head_type", "depth_decoder_depth",
    "depth_decoder_embed_dim", "depth_decoder_num_heads", "decoder_init_values",
    "decode_chunk_size",
}  # fmt: skip


def meta_model(**kwargs) -> DVLTModel:
    with torch.device("meta"):
        return DVLTModel(**kwargs)


@pytest.mark.parametrize("case", ["case_small_public", "case_released_public"])
def test_golden_config_json_is_accepted(reference_dir, case):
    config = json.loads(str(np.load(reference_dir / f"{case}.npz")["config_json"]))
    model = meta_model(**config)
    assert model.config.to_dict() == {**DVLTConfig().to_dict(), **config}


def test_hub_config_json_round_trip():
    hub = DVLTConfig(img_size=504, inference_steps=12).hub_config()
    assert set(hub) == HUB_KEYS
    text = json.dumps(hub)
    assert DVLTConfig.from_json(text).hub_config() == hub
    with torch.device("meta"):
        assert DVLTModel.from_config(text).config.inference_steps == 12


def test_training_only_arguments_are_stored():
    model = meta_model(
        drop_path=0.0,
        stochastic_depth=0.5,
        stochastic_depth_mode="prefix",
        gradient_checkpointing_config={"use_reentrant": False, "modules": ["recurrent_blocks"]},
        finetune_mode="depth_decoder",
        loss={"normalize": True},
        freeze=["patch_embed_encoder"],
        log_params=[],
        log_every_n_steps=10,
        load_patch_embed_weights=True,
        decode_chunk_size=None,
        use_depth_conf_for_pose=True,
        world_points_from_rays=True,
    )
    cfg = model.config
    assert cfg.stochastic_depth_mode == "prefix" and cfg.finetune_mode == "depth_decoder"
    assert cfg.gradient_checkpointing_config["modules"] == ["recurrent_blocks"]
    assert cfg.loss == {"normalize": True} and cfg.use_depth_conf_for_pose


def test_unknown_arguments_are_refused_by_name():
    with pytest.raises(ValueError, match=r"unknown DVLT argument\(s\) \['bogus', 'embed_size'\]"):
        DVLTModel(embed_size=768, bogus=1)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"recurrence_mode": "looped"}, "recurrence_mode must be one of"),
        ({"time_conditioning": "discrete"}, "time_conditioning must be one of"),
        ({"k_sampling": "beta"}, "k_sampling must be one of"),
        ({"k_sampling": None}, "requires k_sampling='linspace'"),
        ({"decoder_head_type": "dpt"}, "decoder_head_type must be one of"),
        ({"depth_head_type": "dpt"}, "depth_head_type must be one of"),
        ({"patch_embed": "dinov2_vitb16"}, "patch_embed must be one of"),
        ({"embed_dim": 384}, "does not match the dinov2_vitb14_reg width 768"),
        ({"num_heads": 7}, "not divisible"),
        ({"decoder_num_heads": 64}, "multiple of 4"),
        ({"inference_steps": 0}, r"inference_steps must be an int in \[1, 1024\] or null, got 0"),
        ({"k_sampler_beta_a": 1.5}, "k_sampler_beta_a must be an int >= 1, got 1.5"),
        ({"decode_chunk_size": 0}, "decode_chunk_size must be an int >= 1 or null, got 0"),
        ({"finetune_mode": "everything"}, "finetune_mode must be one of"),
    ],
)
def test_invalid_values_are_refused(kwargs, message):
    with pytest.raises(ValueError, match=message):
        DVLTConfig(**kwargs)


def test_every_numeric_argument_has_a_range():
    """A new int/float argument must get bounds, or a config.json could ask for any size."""
    hints = typing.get_type_hints(DVLTConfig)
    numeric = {f.name for f in dataclasses.fields(DVLTConfig)
               if {int, float} & {hints[f.name], *typing.get_args(hints[f.name])}}
    assert numeric == set(NUMERIC_RANGES)


def test_default_k_follows_upstream_dvltmodel():
    assert DVLTConfig().default_num_steps == 16  # inference_steps=None -> num_steps
    assert DVLTConfig(inference_steps=12).default_num_steps == 12  # Python quick-start value
    assert DVLTConfig(num_steps=10).default_num_steps == 10
    decoupled = DVLTConfig(recurrence_mode="none", num_steps=3, k_sampling=None, inference_steps=16)
    assert decoupled.default_num_steps == 3  # upstream ignores inference_steps there


def test_none_with_linspace_warns_about_the_upstream_trap():
    with pytest.warns(UserWarning, match="applies only block 0"):
        meta_model(recurrence_mode="none", num_steps=2)
