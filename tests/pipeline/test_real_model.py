"""The whole pipeline on the real DVLT network (small deterministic ViT-S weights)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from dvlt_core.backends import TorchBackend
from dvlt_core.model import DVLTModel
from dvlt_core.testing import load_deterministic_weights
from dvlt_ros.pipeline import KPolicy, KPolicyConfig, PipelineConfig, ReconstructionPipeline


@pytest.fixture(scope="module")
def small_backend(reference_dir):
    case = np.load(reference_dir / "case_small_public.npz")
    model = DVLTModel(**json.loads(str(case["config_json"])))
    load_deterministic_weights(model, int(case["weights_seed"]), str(case["weights_sha256"]))
    return TorchBackend(model.eval())


def test_pipeline_runs_on_the_real_model(small_backend, pipeline_windows):
    pipeline = ReconstructionPipeline(small_backend, PipelineConfig(img_size=112))
    policy = KPolicy(KPolicyConfig(mode="budget", k_min=1, k_max=4, latency_budget_ms=60_000))
    for window in pipeline_windows[:2]:
        decision = policy.choose(len(window))
        result = pipeline.submit(window, decision.num_steps)
        policy.observe(result.num_views, result.backend_timings, result.timings.post_ms)
        assert result.num_steps == decision.num_steps
        assert result.units == "arbitrary"  # a learned model's scale is not metric
        assert result.backend_timings.num_steps == decision.num_steps
        valid = [v.pose_valid for v in result.reconstruction.views]
        assert len(result.poses) == sum(valid[:3]) and len(result.window_poses) == sum(valid)
        for depth in result.depths:
            assert depth.depth.shape == (120, 160)
            assert depth.camera_model.k.shape == (3, 3)
        assert np.isfinite(result.cloud.points).all()
        if not all(valid):
            assert "pose_fit_failed" in [e.code for e in result.events]
    # The second cycle used the measured costs: a K within the budget, predicted.
    assert decision.num_steps == 4 and decision.predicted_ms is not None
