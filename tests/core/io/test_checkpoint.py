"""Checkpoint loading from folders, files, URLs (local HTTP server) and the Hub protocol."""

from __future__ import annotations

import json
import logging
import shutil

import huggingface_hub.constants as hf_constants
import pytest
import torch
from hub_server import COMMIT, hub_routes, point_hub_at, serve

from dvlt_core.io.checkpoint import (
    CheckpointError,
    load_model,
    released_config,
    resolve_checkpoint,
    save_checkpoint,
)


def _same_weights(a: torch.nn.Module, b: torch.nn.Module) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


# ---- local sources -----------------------------------------------------------------------


def test_directory_round_trip(saved):
    model, folder = saved
    assert {p.name for p in folder.iterdir()} == {"config.json", "model.safetensors"}
    loaded = load_model(folder)
    assert not loaded.training
    assert loaded.config == model.config
    assert _same_weights(loaded, model)


def test_safetensors_file_config_sources(saved, tmp_path, tiny_config):
    model, folder = saved
    # A config.json beside the file is used.
    assert _same_weights(load_model(folder / "model.safetensors"), model)
    # Without one there is no config: load_model then assumes the released one.
    lone = tmp_path / "weights.safetensors"
    shutil.copyfile(folder / "model.safetensors", lone)
    assert resolve_checkpoint(lone).config is None
    # An explicit config wins; one that does not describe the weights is refused.
    assert _same_weights(load_model(lone, config=tiny_config), model)
    wrong = {**tiny_config, "decoder_embed_dim": 32, "decoder_num_heads": 1}
    with pytest.raises(CheckpointError) as info:
        load_model(lone, config=wrong)
    message = str(info.value)
    assert "shape mismatches" in message and "depth_decoder" in message
    assert "Check that config.json (or the config argument)" in message


def test_released_config_matches_the_manifest(reference_dir):
    manifest = json.loads((reference_dir / "manifest_released.json").read_text())
    ours = released_config().to_dict()
    network_fields = [k for k in manifest["config"] if k not in ("load_patch_embed_weights",
                                                                "inference_steps")]
    assert {k: ours[k] for k in network_fields} == {k: manifest["config"][k]
                                                    for k in network_fields}


def test_save_is_atomic_and_leaves_no_temporaries(saved, tmp_path):
    model, _ = saved
    save_checkpoint(model, tmp_path)
    save_checkpoint(model, tmp_path)  # overwrite in place
    assert sorted(p.name for p in tmp_path.iterdir()) == ["config.json", "model.safetensors"]


# ---- URLs --------------------------------------------------------------------------------


def test_url_folder_download_is_cached(saved, tmp_path):
    model, folder = saved
    routes = {f"/ckpt/{p.name}": p for p in folder.iterdir()}
    with serve(routes) as (server, base):
        loaded = load_model(base + "/ckpt/", cache_dir=tmp_path)
        assert _same_weights(loaded, model)
        # config.json first: a bad one is refused before the weights are downloaded.
        assert server.requests == ["GET /ckpt/config.json", "GET /ckpt/model.safetensors"]
    # The server is gone: the cached copy is used.
    resolved = resolve_checkpoint(base + "/ckpt/", cache_dir=tmp_path)
    assert resolved.config == json.loads((folder / "config.json").read_text())
    assert not list(tmp_path.rglob("*.part"))


def test_url_of_a_file_and_missing_files(saved, tmp_path):
    _, folder = saved
    with serve({"/w/model.safetensors": folder / "model.safetensors"}) as (_, base):
        resolved = resolve_checkpoint(base + "/w/model.safetensors", cache_dir=tmp_path)
        assert resolved.config is None and resolved.weights.name == "model.safetensors"
        with pytest.raises(CheckpointError, match="HTTP 404"):
            resolve_checkpoint(base + "/other/", cache_dir=tmp_path)
    # A folder URL without config.json falls back to explicit/released config.
    with serve({"/f/model.safetensors": folder / "model.safetensors"}) as (_, base):
        assert resolve_checkpoint(base + "/f", cache_dir=tmp_path / "c2").config is None


# ---- Hugging Face Hub --------------------------------------------------------------------


def test_hub_download_caches_and_prints_the_licence(hub, saved, tmp_path, caplog, monkeypatch):
    model, _ = saved
    with caplog.at_level(logging.WARNING, logger="dvlt_core.io.checkpoint"):
        loaded = load_model("nvidia/dvlt", cache_dir=tmp_path)
    assert _same_weights(loaded, model)
    assert "NVIDIA License" in caplog.text and "non-commercial" in caplog.text
    assert any("resolve/main/model.safetensors" in r for r in hub.requests)
    # Offline, the cached snapshot is used.
    monkeypatch.setattr(hf_constants, "HF_HUB_OFFLINE", True)
    resolved = resolve_checkpoint("nvidia/dvlt", cache_dir=tmp_path)
    assert resolved.released and COMMIT in str(resolved.weights)


def test_hub_revision_pinning(hub, tmp_path):
    resolved = resolve_checkpoint(f"nvidia/dvlt@{COMMIT}", cache_dir=tmp_path)
    assert resolved.origin == f"nvidia/dvlt@{COMMIT}" and resolved.config is not None
    assert any(f"resolve/{COMMIT}/model.safetensors" in r for r in hub.requests)
    with pytest.raises(CheckpointError, match="two revisions"):
        resolve_checkpoint("nvidia/dvlt@v1", revision="v2", cache_dir=tmp_path)




def test_a_da3_checkpoint_loads_from_a_hub_id_through_the_checked_download(tmp_path,
                                                                           monkeypatch):
    """``backend: da3`` with a Hub id: config.json and model.safetensors come through the
    same resolver (a local server speaking the Hub protocol; no real download)."""
    pytest.importorskip("depth_anything_3", reason="the 'da3' extra is not installed")
    from dvlt_core.backends import create_backend
    from dvlt_core.backends.da3_weights import save_random_da3_checkpoint

    folder = save_random_da3_checkpoint(tmp_path / "da3", seed=5)
    with serve(hub_routes(folder, "depth-anything/DA3-SMALL")) as (server, base):
        point_hub_at(monkeypatch, base)
        backend = create_backend("da3", checkpoint=f"depth-anything/DA3-SMALL@{COMMIT}",
                                 cache_dir=tmp_path / "cache")
    assert backend.model_name == "da3-small"
    assert any(f"DA3-SMALL/resolve/{COMMIT}/model.safetensors" in r for r in server.requests)
    local = create_backend("da3", checkpoint=str(folder))
    for (name, ours), theirs in zip(backend.net.state_dict().items(),
                                    local.net.state_dict().values(), strict=True):
        assert torch.equal(ours, theirs), name
