"""Fixtures of the checkpoint tests: a small real DVLT checkpoint and a local Hub server."""

from __future__ import annotations

import json

import numpy as np
import pytest
from hub_server import hub_routes, point_hub_at, serve

from dvlt_core.io.checkpoint import save_checkpoint
from dvlt_core.model import DVLTModel
from dvlt_core.testing import load_deterministic_weights


@pytest.fixture(scope="module")
def tiny_config(reference_dir) -> dict:
    """The ViT-S golden config with slim decoders: a real DVLT that builds fast."""
    case = np.load(reference_dir / "case_small_public.npz")
    config = json.loads(str(case["config_json"]))
    config.update(img_size=112, decoder_embed_dim=64, decoder_num_heads=2, decoder_depth=1)
    return config


@pytest.fixture(scope="module")
def saved(tiny_config, tmp_path_factory):
    """(model, checkpoint folder) with deterministic weights."""
    model = DVLTModel(**tiny_config)
    load_deterministic_weights(model, seed=3)
    folder = save_checkpoint(model, tmp_path_factory.mktemp("ckpt"))
    return model, folder


@pytest.fixture
def hub(monkeypatch, saved):
    """A local server speaking the Hub's resolve protocol for repo nvidia/dvlt."""
    with serve(hub_routes(saved[1])) as (server, base):
        point_hub_at(monkeypatch, base)
        yield server
