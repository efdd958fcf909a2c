"""Checkpoint loading from folders, files, URLs (local HTTP server) and the Hub protocol."""

from __future__ import annotations

import hashlib
import http.server
import json
import logging
import shutil
import threading
import urllib.parse
from contextlib import contextmanager
from pathlib import Path

import huggingface_hub.constants as hf_constants
import numpy as np
import pytest
import torch
from safetensors.torch import save_file

from dvlt_core.io.checkpoint import (
    CheckpointError,
    check_state_dict,
    default_checkpoint,
    load_model,
    read_state_dict,
    released_config,
    resolve_checkpoint,
    save_checkpoint,
)
from dvlt_core.io.download import DownloadError, check_url, url_file_name
from dvlt_core.model import DVLTModel
from dvlt_core.testing import load_deterministic_weights

COMMIT = "0123456789abcdef0123456789abcdef01234567"


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


def _same_weights(a: torch.nn.Module, b: torch.nn.Module) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


class _Server(http.server.ThreadingHTTPServer):
    routes: dict[str, Path]
    requests: list[str]


class _Handler(http.server.BaseHTTPRequestHandler):
    """Serves ``server.routes`` (URL path -> file) with the headers the Hub sends."""

    def do_HEAD(self):
        self._serve(send_body=False)

    def do_GET(self):
        self._serve(send_body=True)

    def _serve(self, send_body: bool) -> None:
        path = urllib.parse.unquote(urllib.parse.urlsplit(self.path).path)
        self.server.requests.append(f"{self.command} {path}")
        file = self.server.routes.get(path)
        if file is None:
            self.send_response(404)
            self.send_header("X-Error-Code", "EntryNotFound")
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        data = file.read_bytes()
        self.send_response(200)
        self.send_header("Content-Length", str(len(data)))
        self.send_header("ETag", f'"{hashlib.sha256(data).hexdigest()}"')
        self.send_header("X-Repo-Commit", COMMIT)
        self.end_headers()
        if send_body:
            self.wfile.write(data)

    def log_message(self, *args):
        pass


@contextmanager
def _serve(routes: dict[str, Path]):
    server = _Server(("127.0.0.1", 0), _Handler)
    server.routes, server.requests = routes, []
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server, f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)


@pytest.fixture
def hub(monkeypatch, saved):
    """A local server speaking the Hub's resolve protocol for repo nvidia/dvlt."""
    _, folder = saved
    routes = {}
    for revision in ("main", COMMIT):
        for name in ("model.safetensors", "config.json"):
            routes[f"/nvidia/dvlt/resolve/{revision}/{name}"] = folder / name
    with _serve(routes) as (server, base):
        monkeypatch.setattr(hf_constants, "ENDPOINT", base)
        monkeypatch.setattr(
            hf_constants, "HUGGINGFACE_CO_URL_TEMPLATE",
            base + "/{repo_id}/resolve/{revision}/{filename}",
        )
        monkeypatch.setattr(hf_constants, "HF_HUB_OFFLINE", False)
        yield server


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


def test_key_and_shape_problems_are_named(saved):
    model, _ = saved
    state = dict(model.state_dict())
    state.pop("camera_token")
    state["extra.weight"] = torch.zeros(2)
    state["register_token"] = torch.zeros(1, 1, 3, 7)
    with pytest.raises(CheckpointError) as info:
        check_state_dict(model, state, origin="ckpt")
    message = str(info.value)
    assert "1 missing keys: camera_token" in message
    assert "1 unexpected keys: extra.weight" in message
    assert "register_token: checkpoint (1, 1, 3, 7) vs model (1, 1, 4, 384)" in message


def test_corrupt_and_truncated_files(tmp_path, tiny_config):
    path = tmp_path / "model.safetensors"
    save_file({"a": torch.ones(1000)}, str(path))
    path.write_bytes(path.read_bytes()[:-10])
    with pytest.raises(CheckpointError, match="truncated or corrupt"):
        read_state_dict(path)
    (tmp_path / "config.json").write_text(json.dumps(tiny_config))
    with pytest.raises(CheckpointError, match="truncated or corrupt"):
        load_model(tmp_path)
    (tmp_path / "config.json").write_text("{not json")
    with pytest.raises(CheckpointError, match="cannot parse"):
        load_model(tmp_path)


def test_pickles_need_explicit_permission(tmp_path):
    state = {"w": torch.arange(6.0).reshape(2, 3)}
    path = tmp_path / "model.pt"
    torch.save(state, path)
    with pytest.raises(CheckpointError, match="allow_pickle=True"):
        load_model(path)
    with pytest.raises(CheckpointError, match="allow_pickle=True"):
        load_model(tmp_path)  # a folder with only model.pt
    assert torch.equal(read_state_dict(path, allow_pickle=True)["w"], state["w"])
    torch.save({"w": torch.zeros(1), "note": "text"}, path)
    with pytest.raises(CheckpointError, match="flat state dict"):
        read_state_dict(path, allow_pickle=True)


def test_unknown_sources_and_env_default(tmp_path, monkeypatch):
    with pytest.raises(CheckpointError, match="neither an existing file"):
        resolve_checkpoint("not a repo id")
    with pytest.raises(CheckpointError, match="unknown weights format"):
        (tmp_path / "w.npz").write_bytes(b"")
        resolve_checkpoint(tmp_path / "w.npz")
    monkeypatch.delenv("DVLT_CHECKPOINT", raising=False)
    assert default_checkpoint() == "nvidia/dvlt"
    monkeypatch.setenv("DVLT_CHECKPOINT", str(tmp_path))
    assert default_checkpoint() == str(tmp_path)


def test_save_is_atomic_and_leaves_no_temporaries(saved, tmp_path):
    model, _ = saved
    save_checkpoint(model, tmp_path)
    save_checkpoint(model, tmp_path)  # overwrite in place
    assert sorted(p.name for p in tmp_path.iterdir()) == ["config.json", "model.safetensors"]


# ---- URLs --------------------------------------------------------------------------------


def test_url_folder_download_is_cached(saved, tmp_path):
    model, folder = saved
    routes = {f"/ckpt/{p.name}": p for p in folder.iterdir()}
    with _serve(routes) as (server, base):
        loaded = load_model(base + "/ckpt/", cache_dir=tmp_path)
        assert _same_weights(loaded, model)
        assert server.requests == ["GET /ckpt/model.safetensors", "GET /ckpt/config.json"]
    # The server is gone: the cached copy is used.
    resolved = resolve_checkpoint(base + "/ckpt/", cache_dir=tmp_path)
    assert resolved.config == json.loads((folder / "config.json").read_text())
    assert not list(tmp_path.rglob("*.part"))


def test_url_of_a_file_and_missing_files(saved, tmp_path):
    _, folder = saved
    with _serve({"/w/model.safetensors": folder / "model.safetensors"}) as (_, base):
        resolved = resolve_checkpoint(base + "/w/model.safetensors", cache_dir=tmp_path)
        assert resolved.config is None and resolved.weights.name == "model.safetensors"
        with pytest.raises(CheckpointError, match="HTTP 404"):
            resolve_checkpoint(base + "/other/", cache_dir=tmp_path)
    # A folder URL without config.json falls back to explicit/released config.
    with _serve({"/f/model.safetensors": folder / "model.safetensors"}) as (_, base):
        assert resolve_checkpoint(base + "/f", cache_dir=tmp_path / "c2").config is None


def test_only_https_except_for_localhost():
    check_url("https://example.org/model.safetensors")
    check_url("http://localhost:8000/model.safetensors")
    with pytest.raises(DownloadError, match="only https"):
        check_url("http://example.org/model.safetensors")
    with pytest.raises(CheckpointError, match="only https"):
        resolve_checkpoint("http://example.org/ckpt/")


class _RedirectHandler(http.server.BaseHTTPRequestHandler):
    """Redirects every request to ``server.location``."""

    def do_GET(self):
        self.server.requests.append(self.path)
        self.send_response(302)
        self.send_header("Location", self.server.location)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *args):
        pass


def test_redirects_may_not_leave_https(tmp_path):
    server = _Server(("127.0.0.1", 0), _RedirectHandler)
    server.requests, server.location = [], "http://example.org/model.safetensors"
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        base = f"http://127.0.0.1:{server.server_address[1]}"
        with pytest.raises(CheckpointError, match="only https"):
            resolve_checkpoint(base + "/w/model.safetensors", cache_dir=tmp_path)
        assert server.requests == ["/w/model.safetensors"]
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)
    assert not list(tmp_path.rglob("*.part")) and not list(tmp_path.rglob("*.safetensors"))


def test_pickled_url_is_refused_before_downloading(saved, tmp_path):
    _, folder = saved
    with _serve({"/w/model.pt": folder / "model.safetensors"}) as (server, base):
        with pytest.raises(CheckpointError, match="allow_pickle=True"):
            resolve_checkpoint(base + "/w/model.pt", cache_dir=tmp_path)
        assert server.requests == []


def test_url_file_names_stay_inside_the_cache():
    assert url_file_name("https://h/a/model.safetensors?x=1") == "model.safetensors"
    for url in ("https://h/a/..", "https://h/", "https://h"):
        assert url_file_name(url) == "download"


def test_unreachable_url_says_what_to_do(tmp_path):
    with _serve({}) as (_, base):
        pass  # closed: nothing listens on that port any more
    with pytest.raises(CheckpointError, match="DVLT_CHECKPOINT"):
        resolve_checkpoint(base + "/ckpt/", cache_dir=tmp_path)


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


def test_hub_missing_repo_file(hub, tmp_path):
    with pytest.raises(CheckpointError, match=r"has no model\.safetensors"):
        resolve_checkpoint("someone/else", cache_dir=tmp_path)


def test_hub_offline_without_cache_says_what_to_do(monkeypatch, tmp_path):
    monkeypatch.setattr(hf_constants, "HF_HUB_OFFLINE", True)
    with pytest.raises(CheckpointError) as info:
        load_model("nvidia/dvlt", cache_dir=tmp_path)
    assert "set DVLT_CHECKPOINT to a local directory or file" in str(info.value)
