"""The project's deterministic-weights generator against the reference rules and hashes."""

from __future__ import annotations

import importlib.util
import json

import numpy as np
import pytest
import torch

from dvlt_core.model import DVLTModel
from dvlt_core.testing import deterministic_state_dict, state_dict_sha256
from dvlt_core.testing.det_weights import load_deterministic_weights, model_shapes


@pytest.fixture(scope="module")
def reference_generator(reference_dir):
    """The reference implementation, imported for cross-checking only."""
    spec = importlib.util.spec_from_file_location(
        "reference_det_weights", reference_dir / "det_weights.py"
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def manifest(reference_dir):
    return json.loads((reference_dir / "manifest_released.json").read_text())


def _one_key_per_rule(manifest) -> dict[str, tuple[int, ...]]:
    picked: dict[str, tuple[int, ...]] = {}
    seen_rules: dict[str, int] = {}
    for key, info in manifest["keys"].items():
        rule = info["det_rule"]
        if seen_rules.get(rule, 0) < 3 and np.prod(info["shape"]) <= 2_000_000:
            picked[key] = tuple(info["shape"])
            seen_rules[rule] = seen_rules.get(rule, 0) + 1
    return picked


def test_matches_reference_generator_for_every_rule(manifest, reference_generator):
    shapes = _one_key_per_rule(manifest)
    shapes.update({"freqs": (16,), "x.scalar_weight": (), "x.odd": (3,)})
    rules = {reference_generator.rule_for_key(k, s) for k, s in shapes.items()}
    assert rules >= {
        "freqs",
        "layerscale",
        "gate_out_weight",
        "gate_out_bias",
        "token",
        "pos_embed",
        "norm_weight",
        "bias",
        "convtranspose_weight",
        "fan_in_weight",
        "other",
    }
    for seed in (0, 7):
        ours = deterministic_state_dict(shapes, seed)
        ref = reference_generator.deterministic_state_dict(shapes, seed)
        assert list(ours) == list(ref)
        for key in ours:
            assert ours[key].dtype == torch.float32
            torch.testing.assert_close(ours[key], ref[key], rtol=0, atol=0, msg=key)


def test_sha256_of_small_case_weights(reference_dir):
    case = np.load(reference_dir / "case_small_public.npz")
    with torch.device("meta"):
        model = DVLTModel(**json.loads(str(case["config_json"])))
    state = deterministic_state_dict(model_shapes(model), int(case["weights_seed"]))
    assert state_dict_sha256(state) == str(case["weights_sha256"])


def test_sha_mismatch_is_reported():
    with torch.device("meta"):
        model = DVLTModel(patch_embed="dinov2_vits14_reg", embed_dim=384, num_heads=6)
    with pytest.raises(ValueError, match=r"hash to .* expected 0+"):
        load_deterministic_weights(model, seed=0, expected_sha256="0" * 64)
    with pytest.raises(ValueError, match="seed must be in"):
        deterministic_state_dict({"a.bias": (2,)}, seed=-1)
