"""What the checkpoint loader and its downloads refuse, and how (docs/usage.md, "What is refused
and why: checkpoints and downloads").

Every refusal is a :class:`CheckpointError` (or :class:`DownloadError`) of one line saying what to
fix; command-line tools turn it into exit status 2 without a traceback. Downloads run against
local servers (``hub_server``) that inject the faults; after each failure the cache holds no
partial or unverified file.
"""

from __future__ import annotations

import http.server
import json
import logging
import math
import os
import re
import subprocess
import sys
import threading
import time
from pathlib import Path

import huggingface_hub.constants as hf_constants
import pytest
import torch
from hub_server import (
    Server,
    SilentEndpoint,
    closed_port,
    hub_routes,
    point_hub_at,
    serve,
)
from PIL import Image
from safetensors.torch import save_file

import dvlt_core.io.checkpoint as checkpoint_module
from dvlt_core.io.checkpoint import (
    CheckpointError,
    check_state_dict,
    default_checkpoint,
    load_model,
    read_state_dict,
    resolve_checkpoint,
)
from dvlt_core.io.download import (
    DownloadError,
    DownloadLimits,
    cached_download,
    check_url,
    display_url,
    download_file,
    url_file_name,
)

REPO_ROOT = Path(__file__).resolve().parents[3]
HUB_WEIGHTS = "/nvidia/dvlt/resolve/main/model.safetensors"


def _files(root: Path) -> list[str]:
    """Every file (or link) under ``root``, relative: what a failed download may not leave."""
    return sorted(str(p.relative_to(root)) for p in root.rglob("*") if not p.is_dir())


def _checkpoint(tmp_path: Path, weights: Path, config: dict | str) -> Path:
    """A checkpoint folder with ``weights`` (linked) and the given config.json."""
    folder = tmp_path / "checkpoint"
    folder.mkdir()
    (folder / "model.safetensors").symlink_to(weights)
    text = config if isinstance(config, str) else json.dumps(config)
    (folder / "config.json").write_text(text)
    return folder


@pytest.fixture
def small_checkpoint(tmp_path, tiny_config) -> Path:
    """A valid config.json with a 16 KB model.safetensors: enough for download tests, which
    fail (or succeed) before any weights are loaded."""
    source = tmp_path / "source"
    source.mkdir()
    save_file({"w": torch.arange(4096, dtype=torch.float32)}, str(source / "model.safetensors"))
    (source / "config.json").write_text(json.dumps(tiny_config))
    return source


# ---- config.json -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("key", "value", "message"),
    [
        ("mlp_ratio", "abc", r"mlp_ratio must be a finite number in \[0.25, 16.0\], got 'abc'"),
        ("patch_embed", ["x"], r"patch_embed must be one of \['dinov2_vitb14_reg', .*got \['x'\]"),
        ("decoder_depth", 4000, r"decoder_depth must be an int in \[1, 32\], got 4000"),
        ("num_steps", 1e9, r"num_steps must be an int in \[1, 64\], got 1000000000.0"),
        ("num_heads", 6.0, r"num_heads must be an int in \[1, 64\], got 6.0"),
        ("camera_head", "yes", "camera_head must be true or false, got 'yes'"),
        ("drop_path", math.nan, r"drop_path must be a finite number in \[0.0, 1.0\], got nan"),
        ("inference_steps", -1, r"inference_steps must be an int in \[1, 1024\] or null"),
        ("freeze", [1], "freeze must be a list of strings or null, got \\[1\\]"),
    ],
)
def test_wrong_types_and_absurd_sizes_are_refused_before_building(
    saved, tmp_path, tiny_config, key, value, message
):
    folder = _checkpoint(tmp_path, saved[1] / "model.safetensors", {**tiny_config, key: value})
    with pytest.raises(CheckpointError, match=message) as info:
        resolve_checkpoint(folder)  # reads and checks the config; builds no model
    text = str(info.value)
    assert "\n" not in text and str(folder / "config.json") in text
    assert text.endswith("correct config.json")


def test_a_bad_hub_config_is_refused_before_the_weights_are_fetched(
    monkeypatch, small_checkpoint, tmp_path, tiny_config
):
    bad = {**tiny_config, "decoder_depth": 4000}
    (small_checkpoint / "config.json").write_text(json.dumps(bad))
    with serve(hub_routes(small_checkpoint)) as (server, base):
        point_hub_at(monkeypatch, base)
        with pytest.raises(CheckpointError, match=r"config.json of nvidia/dvlt: decoder_depth"):
            load_model("nvidia/dvlt", cache_dir=tmp_path / "cache")
    assert not [r for r in server.requests if r.endswith("model.safetensors")]


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"embed_dim": 768}, "does not match the dinov2_vits14_reg width 384"),
        ({"num_heads": 7}, "trunk width 384 is not divisible by its 7 heads"),
        ({"k_sampling": None}, "requires k_sampling='linspace'"),
        ({"img_size": 7}, "smaller than one patch"),
    ],
)
def test_contradictory_known_keys_are_errors(saved, tmp_path, tiny_config, changes, message):
    folder = _checkpoint(tmp_path, saved[1] / "model.safetensors", {**tiny_config, **changes})
    with pytest.raises(CheckpointError, match=message):
        load_model(folder)


def test_unknown_hub_keys_are_ignored_with_a_warning_when_the_weights_load(
    monkeypatch, saved, tmp_path, tiny_config, caplog
):
    model, folder = saved
    extra = {"transformers_version": "4.40.0", "architectures": ["DVLTModel"]}
    served = _checkpoint(tmp_path, folder / "model.safetensors", {**tiny_config, **extra})
    with serve(hub_routes(served, "someone/dvlt-finetune")) as (_, base):
        point_hub_at(monkeypatch, base)
        with caplog.at_level(logging.WARNING, logger="dvlt_core.io.checkpoint"):
            loaded = load_model("someone/dvlt-finetune", cache_dir=tmp_path / "cache")
    assert all(torch.equal(a, b) for a, b in zip(loaded.state_dict().values(),
                                                  model.state_dict().values(), strict=True))
    assert "ignored (the weights load with strict=True): architectures, transformers_version" in (
        caplog.text
    )


def test_unknown_keys_are_named_when_the_weights_do_not_load(saved, tmp_path, tiny_config):
    config = {**tiny_config, "decoder_depth": 2, "decoder_layers": 1}
    folder = _checkpoint(tmp_path, saved[1] / "model.safetensors", config)
    with pytest.raises(CheckpointError) as info:
        load_model(folder)
    text = str(info.value)
    assert "missing keys" in text and "keys this version ignores (decoder_layers)" in text
    assert "\n" not in text


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("[1, 2]", "must hold a JSON object"),
        ("{not json", "cannot parse"),
        ("[" * 100_000, "cannot parse"),
        (" " * (1 << 20) + "{}", "more than a config.json of model arguments can be"),
    ],
    ids=["not-an-object", "not-json", "nested-too-deep", "too-large"],
)
def test_config_json_that_cannot_be_a_config(saved, tmp_path, text, message):
    folder = _checkpoint(tmp_path, saved[1] / "model.safetensors", text)
    with pytest.raises(CheckpointError, match=message):
        resolve_checkpoint(folder)


def test_config_json_that_is_not_utf8(saved, tmp_path):
    folder = _checkpoint(tmp_path, saved[1] / "model.safetensors", "{}")
    (folder / "config.json").write_bytes(b'{"img_size": "\xff"}')
    with pytest.raises(CheckpointError, match="cannot parse"):
        resolve_checkpoint(folder)


# ---- weights files and sources -----------------------------------------------------------


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
    assert "\n" not in message


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
    monkeypatch.setenv("DVLT_CHECKPOINT", "")  # empty counts as unset
    assert default_checkpoint() == "nvidia/dvlt"
    monkeypatch.setenv("DVLT_CHECKPOINT", str(tmp_path))
    assert default_checkpoint() == str(tmp_path)


# ---- an empty checkpoint -----------------------------------------------------------------


def test_an_empty_checkpoint_is_refused_without_touching_the_network(monkeypatch, tmp_path):
    endpoint = SilentEndpoint()
    try:
        point_hub_at(monkeypatch, endpoint.url)
        for empty in ("", "  ", "\t\n"):
            with pytest.raises(CheckpointError, match="the checkpoint is empty"):
                load_model(empty, cache_dir=tmp_path)
        monkeypatch.setenv("DVLT_CHECKPOINT", "   ")
        with pytest.raises(CheckpointError, match=r"empty \('   '; check --checkpoint"):
            load_model(cache_dir=tmp_path)
    finally:
        endpoint.close()
    assert endpoint.file_requests == []


# ---- URL downloads -----------------------------------------------------------------------


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
    server = Server(("127.0.0.1", 0), _RedirectHandler)
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
    assert _files(tmp_path) == []


def test_pickled_url_is_refused_before_downloading(saved, tmp_path):
    _, folder = saved
    with serve({"/w/model.pt": folder / "model.safetensors"}) as (server, base):
        with pytest.raises(CheckpointError, match="allow_pickle=True"):
            resolve_checkpoint(base + "/w/model.pt", cache_dir=tmp_path)
        assert server.requests == []


def test_url_file_names_stay_inside_the_cache():
    assert url_file_name("https://h/a/model.safetensors?x=1") == "model.safetensors"
    for url in ("https://h/a/..", "https://h/", "https://h"):
        assert url_file_name(url) == "download"


def test_unreachable_url_says_what_to_do(tmp_path):
    with pytest.raises(CheckpointError, match="DVLT_CHECKPOINT"):
        resolve_checkpoint(f"http://127.0.0.1:{closed_port()}/ckpt/", cache_dir=tmp_path)


@pytest.mark.parametrize(
    ("fault", "limits", "message"),
    [
        ("truncate", {}, r"stopped after 8\d+ of 16\d+ bytes"),
        ("stall", {"stall_s": 0.3}, r"stalled: no data for 0 s after 8\d+ bytes"),
        ("trickle", {"deadline_s": 0.3, "stall_s": 5.0}, "did not finish within 0 s"),
        ("chunked", {"max_bytes": 40_000}, "passed the 40000-byte limit"),
        (None, {"max_bytes": 1000}, r"it is 16\d+ bytes, more than the 1000-byte limit"),
    ],
    ids=["truncated", "stalled", "past-deadline", "grows-past-cap", "announced-past-cap"],
)
def test_failed_downloads_leave_the_cache_clean(small_checkpoint, tmp_path, fault, limits,
                                                message):
    route = "/w/model.safetensors"
    limits = DownloadLimits(**{"max_bytes": 1 << 20, **limits})
    faults = {route: fault} if fault else None
    with serve({route: small_checkpoint / "model.safetensors"}, faults) as (_, base), \
            pytest.raises(DownloadError, match=message) as info:
        cached_download(base + route, tmp_path / "cache", limits)
    assert "\n" not in str(info.value)
    assert _files(tmp_path / "cache") == []


def test_an_interrupted_download_leaves_the_cache_clean(small_checkpoint, tmp_path):
    route = "/w/model.safetensors"
    faults = {route: "interrupt"}
    with serve({route: small_checkpoint / "model.safetensors"}, faults) as (_, base), \
            pytest.raises(KeyboardInterrupt):
        cached_download(base + route, tmp_path / "cache", DownloadLimits(max_bytes=1 << 20))
    assert _files(tmp_path / "cache") == []


def test_index_announcements_are_enforced(small_checkpoint, tmp_path):
    route = "/w/model.safetensors"
    tmp_path = tmp_path / "cache"
    size = (small_checkpoint / "model.safetensors").stat().st_size
    limits = DownloadLimits(max_bytes=1 << 20)
    with serve({route: small_checkpoint / "model.safetensors"}) as (server, base):
        with pytest.raises(DownloadError, match=f"more than the {size - 1}-byte limit"):
            download_file(base + route, tmp_path / "a", DownloadLimits(max_bytes=size - 1),
                          expected_size=size)
        assert server.requests == []  # refused on the announcement alone
        with pytest.raises(DownloadError, match=f"sends {size} bytes but the index announced"):
            download_file(base + route, tmp_path / "b", limits, expected_size=size + 1)
        with pytest.raises(DownloadError, match="is corrupt: sha256 "):
            download_file(base + route, tmp_path / "c", limits, sha256="0" * 64)
        assert _files(tmp_path) == []
        download_file(base + route, tmp_path / "d", limits, expected_size=size)
    assert _files(tmp_path) == ["d"]


def test_part_files_of_killed_downloads_are_removed(small_checkpoint, tmp_path):
    route = "/w/model.safetensors"
    tmp_path = tmp_path / "cache"
    tmp_path.mkdir()
    target = tmp_path / "model.safetensors"
    stale, live = (tmp_path / f".model.safetensors.{k}.part" for k in ("killed", "running"))
    stale.write_bytes(b"half")
    live.write_bytes(b"half")
    hours_ago = time.time() - 7200
    os.utime(stale, (hours_ago, hours_ago))
    with serve({route: small_checkpoint / "model.safetensors"}) as (_, base):
        download_file(base + route, target, DownloadLimits(max_bytes=1 << 20))
    # A .part untouched for longer than the deadline belongs to no running download.
    assert _files(tmp_path) == [live.name, target.name]


# ---- Hub downloads -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("fault", "message"),
    [("bad_sha", "is corrupt: sha256"), ("truncate", "stopped after"),
     ("interrupt", None)],
)
def test_failed_hub_downloads_leave_no_weights_in_the_cache(
    monkeypatch, small_checkpoint, tmp_path, fault, message
):
    cache = tmp_path / "cache"
    with serve(hub_routes(small_checkpoint), {HUB_WEIGHTS: fault}) as (_, base):
        point_hub_at(monkeypatch, base)
        expected = KeyboardInterrupt if message is None else CheckpointError
        with pytest.raises(expected, match=message):
            resolve_checkpoint("nvidia/dvlt", cache_dir=cache)
    # config.json came through (verified); nothing of the weights stays, not even a .part.
    files = _files(cache)
    assert not [f for f in files if f.endswith(".part") or f.endswith("model.safetensors")]
    assert len([f for f in files if "blobs" in f]) == 1


def test_hub_weights_over_the_size_cap_are_refused_before_downloading(
    monkeypatch, small_checkpoint, tmp_path
):
    size = (small_checkpoint / "model.safetensors").stat().st_size
    monkeypatch.setattr(checkpoint_module, "WEIGHTS_LIMITS", DownloadLimits(max_bytes=size - 1))
    with serve(hub_routes(small_checkpoint)) as (server, base):
        point_hub_at(monkeypatch, base)
        with pytest.raises(CheckpointError, match=f"it is {size} bytes, more than the"):
            resolve_checkpoint("nvidia/dvlt", cache_dir=tmp_path)
    assert f"HEAD {HUB_WEIGHTS}" in server.requests
    assert f"GET {HUB_WEIGHTS}" not in server.requests


def test_hub_missing_repo_file(hub, tmp_path):
    with pytest.raises(CheckpointError, match=r"has no model\.safetensors"):
        resolve_checkpoint("someone/else", cache_dir=tmp_path)


# ---- offline -----------------------------------------------------------------------------

OVERRIDE = "set DVLT_CHECKPOINT (or --checkpoint) to a local directory holding config.json"


def test_hf_hub_offline_answers_at_once_with_the_override(monkeypatch, tmp_path):
    endpoint = SilentEndpoint()
    try:
        point_hub_at(monkeypatch, endpoint.url)
        monkeypatch.setattr(hf_constants, "HF_HUB_OFFLINE", True)
        with pytest.raises(CheckpointError) as info:
            load_model("nvidia/dvlt", cache_dir=tmp_path)
    finally:
        endpoint.close()
    assert "HF_HUB_OFFLINE is set" in str(info.value) and OVERRIDE in str(info.value)
    assert endpoint.file_requests == []


def test_an_unreachable_hub_is_probed_once(monkeypatch, tmp_path):
    endpoint = SilentEndpoint()
    try:
        point_hub_at(monkeypatch, endpoint.url)
        with pytest.raises(CheckpointError, match=r"no answer from 127\.0\.0\.1") as info:
            load_model("nvidia/dvlt", cache_dir=tmp_path)
    finally:
        endpoint.close()
    assert OVERRIDE in str(info.value)
    assert len(endpoint.file_requests) == 1  # one probe, no retry loop
    point_hub_at(monkeypatch, f"http://127.0.0.1:{closed_port()}")
    with pytest.raises(CheckpointError, match=re.escape(OVERRIDE)):
        load_model("nvidia/dvlt", cache_dir=tmp_path)


def test_offline_the_cache_serves_after_one_probe(monkeypatch, small_checkpoint, tmp_path,
                                                  caplog):
    cache = tmp_path / "cache"
    with serve(hub_routes(small_checkpoint)) as (_, base):
        point_hub_at(monkeypatch, base)
        online = resolve_checkpoint("nvidia/dvlt", cache_dir=cache)
    endpoint = SilentEndpoint()
    try:
        point_hub_at(monkeypatch, endpoint.url)
        with caplog.at_level(logging.WARNING, logger="dvlt_core.io.hub"):
            offline = resolve_checkpoint("nvidia/dvlt", cache_dir=cache)
    finally:
        endpoint.close()
    assert offline.weights == online.weights and offline.config == online.config
    assert len(endpoint.file_requests) == 1 and "using the local cache only" in caplog.text


# ---- command-line tools ------------------------------------------------------------------


@pytest.fixture
def image_file(tmp_path) -> Path:
    path = tmp_path / "view.png"
    Image.new("RGB", (56, 42), (120, 80, 40)).save(path)
    return path


def _error_line(stderr: str, prefix: str) -> str:
    """The tool's error message, checked to be one line at the end, with no traceback."""
    assert "Traceback" not in stderr
    message = stderr[stderr.index(prefix):].strip()
    assert "\n" not in message, message
    return message


def test_reconstruct_with_a_bad_config_exits_2_with_one_line(
    saved, tmp_path, tiny_config, image_file, capsys
):
    from dvlt_core.cli.reconstruct import main

    folder = _checkpoint(tmp_path, saved[1] / "model.safetensors",
                         {**tiny_config, "decoder_depth": 4000})
    assert main([str(image_file), "--checkpoint", str(folder), "--out", str(tmp_path / "o")]) == 2
    line = _error_line(capsys.readouterr().err, "dvlt-reconstruct: error: ")
    assert "decoder_depth must be an int in [1, 32], got 4000" in line


def test_reconstruct_with_an_empty_checkpoint_exits_2(image_file, tmp_path, capsys):
    from dvlt_core.cli.reconstruct import main

    for backend in ("torch", "onnxruntime"):
        args = [str(image_file), "--checkpoint", "", "--backend", backend, "--out", str(tmp_path)]
        assert main(args) == 2
        line = _error_line(capsys.readouterr().err, "dvlt-reconstruct: error: ")
        assert "empty" in line or "pass --checkpoint <folder written by dvlt-export>" in line


def test_eval_with_a_bad_config_exits_2_with_one_line(saved, tmp_path, tiny_config, capsys):
    from dvlt_core.cli.evaluate import main

    folder = _checkpoint(tmp_path, saved[1] / "model.safetensors",
                         {**tiny_config, "mlp_ratio": "abc"})
    args = ["--benchmark", "synthetic", "--checkpoint", str(folder), "--out", str(tmp_path / "o")]
    assert main(args) == 2
    line = _error_line(capsys.readouterr().err, "dvlt-eval: ")
    assert "mlp_ratio must be a finite number" in line


@pytest.mark.parametrize("offline_flag", [False, True], ids=["unreachable-hub", "HF_HUB_OFFLINE"])
def test_reconstruct_offline_answers_at_once_with_the_override(image_file, tmp_path,
                                                               offline_flag):
    endpoint = SilentEndpoint()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("HF_", "DVLT_CHECKPOINT"))}
    env.update(HF_ENDPOINT=endpoint.url, HF_HOME=str(tmp_path / "hf"), PYTHONPATH=str(REPO_ROOT))
    if offline_flag:
        env["HF_HUB_OFFLINE"] = "1"
    try:
        run = subprocess.run(
            [sys.executable, "-m", "dvlt_core.cli.reconstruct", str(image_file), "--out",
             str(tmp_path / "o")],
            env=env, capture_output=True, text=True, timeout=300,  # a hang, not a speed check
        )
    finally:
        endpoint.close()
    assert run.returncode == 2, run.stderr
    assert OVERRIDE in _error_line(run.stderr, "dvlt-reconstruct: error: ")
    assert len(endpoint.file_requests) == (0 if offline_flag else 1)


def test_messages_never_show_a_signed_url_query(tmp_path):
    """Signed storage URLs carry their signature in the query: errors (which reach logs and
    /diagnostics) show scheme, host and path only."""
    signed = "https://user:pw@cdn.example.org:8443/repo/model.safetensors?X-Amz-Signature=s3cr3t"
    assert display_url(signed) == "https://cdn.example.org:8443/repo/model.safetensors"
    with pytest.raises(DownloadError) as refused:
        download_file(signed, tmp_path / "model.safetensors", DownloadLimits(max_bytes=10),
                      expected_size=11)
    assert "s3cr3t" not in str(refused.value) and "pw@" not in str(refused.value)
    assert "cdn.example.org:8443/repo/model.safetensors" in str(refused.value)


# ---- Depth Anything 3 checkpoints (backend da3) --------------------------------------------

DA3_PROBE = "dvlt_probe_named_by_a_da3_config"


@pytest.mark.parametrize(
    ("config", "message"),
    [
        ({}, "is not a Depth Anything 3 checkpoint (a config.json without model_name)"),
        (None, "is not a Depth Anything 3 checkpoint (no config.json)"),
        ({"model_name": "da3nested-giant-large"},
         "unknown Depth Anything 3 model 'da3nested-giant-large'; the da3 backend builds "
         "da3-small, da3-base, da3-large, da3-giant"),
        # The package's configs name classes by import path: never followed from a checkpoint.
        ({"model_name": {"__object__": {"path": DA3_PROBE, "name": "Net"}}},
         "a config.json without model_name"),
        ({"model_name": f"{DA3_PROBE}.Net"}, f"unknown Depth Anything 3 model '{DA3_PROBE}.Net'"),
    ],
)
def test_a_da3_checkpoint_must_name_one_of_our_architectures(tmp_path, config, message):
    from dvlt_core.backends.da3_backend import load_da3

    folder = tmp_path / "da3"
    folder.mkdir()
    save_file({"w": torch.zeros(2)}, str(folder / "model.safetensors"))
    if config is not None:
        (folder / "config.json").write_text(json.dumps(config))
    with pytest.raises(CheckpointError) as info:
        load_da3(folder)
    assert message in str(info.value) and "\n" not in str(info.value)
    assert DA3_PROBE not in sys.modules


def test_the_da3_backend_needs_a_checkpoint():
    from dvlt_core.backends import create_backend

    with pytest.raises(CheckpointError, match="the da3 backend needs a checkpoint: a folder"):
        create_backend("da3", checkpoint=None)


def test_da3_without_its_package_says_what_to_install(tmp_path, monkeypatch):
    from dvlt_core.backends.da3_backend import Da3UnavailableError, load_da3
    from dvlt_core.backends.errors import BACKEND_SETUP_ERRORS

    for name in {"depth_anything_3", *(n for n in sys.modules if n.startswith(
            "depth_anything_3."))}:
        monkeypatch.setitem(sys.modules, name, None)  # not installed (or not importable)
    folder = tmp_path / "da3"
    folder.mkdir()
    save_file({"w": torch.zeros(2)}, str(folder / "model.safetensors"))
    (folder / "config.json").write_text(json.dumps({"model_name": "da3-small"}))
    with pytest.raises(Da3UnavailableError) as info:
        load_da3(folder)
    assert "pip install 'dvlt_ros[da3]' && pip install --no-deps depth-anything-3" in str(
        info.value)
    assert issubclass(Da3UnavailableError, BACKEND_SETUP_ERRORS)  # CLIs: one line, exit 2


def test_da3_weights_of_another_size_are_named(tmp_path):
    pytest.importorskip("depth_anything_3", reason="the 'da3' extra is not installed")
    from dvlt_core.backends.da3_backend import load_da3
    from dvlt_core.backends.da3_weights import save_random_da3_checkpoint

    folder = save_random_da3_checkpoint(tmp_path / "small", "da3-small")
    (folder / "config.json").write_text(json.dumps({"model_name": "da3-base"}))
    with pytest.raises(CheckpointError, match="does not match the model built from its "
                       r"config: .*shape mismatches: .*backbone"):
        load_da3(folder)
