"""Fixtures of the command-line tests: a small checkpoint written to disk."""

from __future__ import annotations

import json

import numpy as np
import pytest

from dvlt_core.io.checkpoint import save_checkpoint
from dvlt_core.model import DVLTModel
from dvlt_core.testing import load_deterministic_weights


@pytest.fixture(scope="module")
def checkpoint(reference_dir, tmp_path_factory):
    with np.load(reference_dir / "case_small_public.npz") as case:
        config = json.loads(str(case["config_json"]))
    config.update(img_size=112, decoder_embed_dim=64, decoder_num_heads=2, decoder_depth=1)
    model = DVLTModel(**config)
    load_deterministic_weights(model, seed=5)
    return save_checkpoint(model, tmp_path_factory.mktemp("ckpt"))
