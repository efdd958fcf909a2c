"""A small DVLT trained on synthetic rooms on CPU learns: its loss falls and its pose AUC@30 on
held-out synthetic scenes rises clearly above the untrained model's."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from dvlt_core.backends import create_backend
from dvlt_core.cli.train import build_config
from dvlt_core.eval.datasets import SyntheticEvalDataset
from dvlt_core.eval.runner import run_benchmark
from dvlt_core.io import load_model
from dvlt_core.model import DVLTModel
from dvlt_core.model.dinov2 import BACKBONE_SPECS, BackboneSpec
from dvlt_core.training.trainer import Trainer

RECIPE = Path(__file__).resolve().parents[3] / "training" / "tiny-cpu.yaml"
# The recipe's ViT-S encoder needs ~1 s per step on 2 cores; a 2-layer, 128-wide test encoder
# brings the 400 steps to about a minute.
TEST_ENCODER = ["model.patch_embed=dinov2_tiny_test", "model.embed_dim=128", "model.num_heads=2"]


def _auc30(model: DVLTModel) -> float:
    held_out = SyntheticEvalDataset(num_scenes=16, num_views=3, stride=1, image_size=56)
    report = run_benchmark(create_backend("torch", model=model), {"synthetic": held_out},
                           progress=False)
    return report.datasets["synthetic"].aggregate["pose/Auc_30"]


@pytest.mark.slow
def test_small_model_learns_on_synthetic_scenes(tmp_path, monkeypatch):
    monkeypatch.setitem(BACKBONE_SPECS, "dinov2_tiny_test", BackboneSpec(128, 2, 2))
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny ops: one thread beats two contended ones on a 2-core CPU
    try:
        config = build_config(str(RECIPE), [*TEST_ENCODER, "trainer.progress_bar=false",
                                            "trainer.cpu=true",
                                            "trainer.checkpointing_steps=100000"])
        torch.manual_seed(config.trainer.seed)  # the trainer seeds the same way before init
        untrained = DVLTModel(**config.model_config().to_dict()).eval()
        result = Trainer(config, tmp_path).fit()
        losses = np.array([h["train/loss"] for h in result.history])
        assert result.global_step == 400
        assert losses[-40:].mean() < 0.7 * losses[:40].mean()
        before, after = _auc30(untrained), _auc30(load_model(result.final_model))
    finally:
        torch.set_num_threads(threads)
    assert after > before + 0.15, (before, after)
