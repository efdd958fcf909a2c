"""Fixtures of the loop-closure tests: the small deterministic-weight DVLT model (a real
encoder for place descriptors)."""

from __future__ import annotations

import json

import numpy as np
import pytest
from loop_keyframes import IMG_SIZE

from dvlt_core.mapping import EncoderDescriber
from dvlt_core.model import DVLTModel
from dvlt_core.testing import load_deterministic_weights


@pytest.fixture(scope="session")
def small_model(reference_dir):
    case = np.load(reference_dir / "case_small_public.npz")
    model = DVLTModel(**json.loads(str(case["config_json"])))
    load_deterministic_weights(model, int(case["weights_seed"]), str(case["weights_sha256"]))
    return model.eval()


@pytest.fixture(scope="session")
def describer(small_model):
    return EncoderDescriber(small_model, IMG_SIZE)
