"""Training configs: the shipped recipes, base inheritance, overrides and refusals."""

from __future__ import annotations

from pathlib import Path

import pytest

from dvlt_core.cli.train import build_config, main
from dvlt_core.training.config import ConfigError, load_config

RECIPES = Path(__file__).resolve().parents[3] / "training"


@pytest.mark.parametrize("name", ["dvlt-large", "dvlt-large-depthconv-stage2",
                                  "dvlt-large-ablation", "dvlt-large-ablation-decoupled",
                                  "tiny-cpu"])
def test_recipes_load_and_validate(name):
    config = load_config(RECIPES / f"{name}.yaml")
    assert config.model_config().img_size in (504, 56)


def test_recipes_carry_upstream_numbers():
    stage1 = load_config(RECIPES / "dvlt-large.yaml")
    assert (stage1.optimizer.learning_rate, stage1.optimizer.weight_decay) == (3e-4, 0.05)
    assert stage1.optimizer.lr_param_group_multipliers == {"patch_embed": 0.1}
    assert (stage1.data.tokens_per_batch, stage1.data.images_per_batch) == (20736, 36)
    assert stage1.data.images_per_element == [2, 18]
    assert stage1.trainer.max_train_steps == 200_000 and stage1.scheduler.name == "cosine"
    assert stage1.model_config().depth_head_type == "linear"
    stage2 = load_config(RECIPES / "dvlt-large-depthconv-stage2.yaml")
    assert stage2.finetune.mode == "depth_decoder"
    assert stage2.model_config().depth_head_type == "conv"
    loss = stage2.loss.build()
    assert not loss.ray.enabled and not loss.cam.enabled and loss.depth.enabled
    assert (stage2.optimizer.learning_rate, stage2.scheduler.warmup_steps) == (1e-4, 500)
    assert stage2.data.tokens_per_batch == 20736  # inherited from its base
    ablation = load_config(RECIPES / "dvlt-large-ablation.yaml")
    assert (ablation.data.tokens_per_batch, ablation.data.images_per_element) == (21600, [2, 10])
    decoupled = load_config(RECIPES / "dvlt-large-ablation-decoupled.yaml").model_config()
    assert decoupled.recurrence_mode == "none" and decoupled.k_sampling is None
    assert decoupled.num_recurrent_blocks == 16


def test_overrides_including_list_elements():
    config = build_config(str(RECIPES / "tiny-cpu.yaml"), [
        "trainer.max_train_steps=7", "data.images_per_element=[2,4]",
        "data.sources[0].num_scenes=3", "loss.preset=corrected", "loss.depth.edge_weight=0.5",
    ])
    assert config.trainer.max_train_steps == 7
    assert config.data.images_per_element == [2, 4]
    assert config.data.sources[0]["num_scenes"] == 3
    loss = config.loss.build()
    assert loss.cam.quaternion == "sign_invariant_l1" and loss.depth.edge_weight == 0.5


@pytest.mark.parametrize(("override", "message"), [
    ("trainer.max_trian_steps=3", "unknown key"),
    ("model.finetune_mode=depth_decoder", "finetune.mode"),
    ("model.embed_dim=100", "embed_dim"),
    ("loss.preset=best", "loss.preset"),
    ("trainer.mixed_precision=fp8", "mixed_precision"),
    ("data.sources=[]", "data.sources"),
    ("oops", "section.key=value"),
])
def test_bad_configs_are_refused(override, message):
    with pytest.raises(ConfigError, match=message):
        build_config(str(RECIPES / "tiny-cpu.yaml"), [override])


def test_base_cycle_is_refused(tmp_path):
    (tmp_path / "a.yaml").write_text("base: b.yaml\n")
    (tmp_path / "b.yaml").write_text("base: a.yaml\n")
    with pytest.raises(ConfigError, match="circular"):
        load_config(tmp_path / "a.yaml")


def test_cli_prints_resolved_config(capsys):
    assert main(["--config", str(RECIPES / "dvlt-large-ablation.yaml"), "--print-config",
                 "trainer.max_train_steps=5"]) == 0
    out = capsys.readouterr().out
    assert "max_train_steps: 5" in out and "tokens_per_batch: 21600" in out
    assert main(["--config", str(RECIPES / "tiny-cpu.yaml"), "trainer.bogus=1"]) == 2
