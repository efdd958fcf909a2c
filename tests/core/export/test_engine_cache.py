"""Engine cache: keys, atomic writes, verification before deserialising, mismatch messages."""

from __future__ import annotations

import dataclasses
import hashlib
import json

import pytest

from dvlt_core.atomic import write_atomic
from dvlt_core.export.engine_cache import (
    EngineCache,
    EngineCacheError,
    EngineKey,
    EngineMetadata,
    EngineMissingError,
)
from dvlt_core.export.tensorrt_build import GpuInfo, engine_key, ensure_engine, graph_name

ENGINE = b"serialized-engine-bytes" * 100


def make_key(**changes) -> EngineKey:
    fields = dict(
        graph="step", gpu_name="NVIDIA Jetson AGX Orin", compute_capability="8.7",
        tensorrt_version="10.3.0", precision="fp16", layer_policy="typed-v3", views_min=1,
        views_opt=8, views_max=16, height=378, width=504, checkpoint_sha256="a" * 64,
        onnx_sha256="b" * 64,
    )
    fields.update(changes)
    return EngineKey(**fields)


def test_key_digest_is_stable_and_covers_every_field():
    key = make_key()
    assert key.digest == make_key().digest
    assert key.stem.startswith("step-fp16-") and len(key.stem) == len("step-fp16-") + 16
    changes = dict(graph="decoder", gpu_name="NVIDIA GeForce RTX 4090", compute_capability="8.9",
                   tensorrt_version="10.4.0", precision="bf16",
                   layer_policy="typed-v3-fp32-softmax", views_min=2, views_opt=9,
                   views_max=17, height=392, width=518,
                   checkpoint_sha256="c" * 64, onnx_sha256="d" * 64)
    assert set(changes) == {f.name for f in dataclasses.fields(EngineKey)}
    for name, value in changes.items():
        assert make_key(**{name: value}).digest != key.digest, name


@pytest.mark.parametrize("changes, message", [
    ({"precision": "int8"}, "precision"),
    ({"graph": "../encoder"}, "graph"),
    ({"views_min": 4, "views_opt": 2}, "views"),
    ({"checkpoint_sha256": "xyz"}, "checkpoint_sha256"),
    ({"height": "378"}, "height must be int"),
    ({"views_max": True}, "views_max must be int"),
    ({"layer_policy": "all-fp32"}, "layer_policy"),
])
def test_invalid_keys_are_refused(changes, message):
    with pytest.raises(ValueError, match=message):
        make_key(**changes)


def test_store_then_load_roundtrip_writes_sidecar_last(tmp_path):
    cache = EngineCache(tmp_path / "engines")
    key = make_key()
    path = cache.store(key, ENGINE, build_seconds=12.5)
    assert path == cache.engine_path(key) and path.read_bytes() == ENGINE
    meta = json.loads(cache.metadata_path(key).read_text())
    assert meta["key"] == key.as_dict() and meta["build_seconds"] == 12.5
    assert meta["engine_sha256"] == hashlib.sha256(ENGINE).hexdigest()
    assert cache.load(key) == ENGINE
    assert [m.key for m in cache.entries()] == [key]
    assert sorted(p.name for p in cache.root.iterdir()) == [f"{key.stem}.engine",
                                                            f"{key.stem}.json"]
    cache.remove(key)
    assert list(cache.root.iterdir()) == []


def test_failed_write_leaves_no_file(tmp_path):
    target = tmp_path / "x.engine"

    def crash(path):
        path.write_bytes(b"partial")
        raise OSError("disk full")

    with pytest.raises(OSError, match="disk full"):
        write_atomic(target, crash)
    assert list(tmp_path.iterdir()) == []


def test_engine_without_sidecar_is_not_an_entry(tmp_path):
    cache = EngineCache(tmp_path)
    key = make_key()
    cache.engine_path(key).write_bytes(ENGINE)  # e.g. a crash between the two writes
    with pytest.raises(EngineMissingError, match="no fp16 engine for graph 'step'"):
        cache.load(key)


def test_modified_engine_is_refused_before_deserialising(tmp_path):
    cache = EngineCache(tmp_path)
    key = make_key()
    cache.store(key, ENGINE)
    cache.engine_path(key).write_bytes(ENGINE[:-1] + b"X")
    with pytest.raises(EngineCacheError, match=r"does not match the size/sha256.*refusing"):
        cache.load(key)


def test_symlinked_engine_is_refused(tmp_path):
    cache = EngineCache(tmp_path / "engines")
    key = make_key()
    cache.store(key, ENGINE)
    outside = tmp_path / "elsewhere.engine"
    outside.write_bytes(ENGINE)
    cache.engine_path(key).unlink()
    cache.engine_path(key).symlink_to(outside)
    with pytest.raises(EngineCacheError, match="not a plain file inside"):
        cache.load(key)


@pytest.mark.parametrize("edit, message", [
    (lambda m: m.update(extra=1), "exactly the fields"),
    (lambda m: m.update(schema="other"), "schema"),
    (lambda m: m.update(engine_file="../../etc/evil.engine"), "engine_file"),
    (lambda m: m.update(engine_bytes=-1), "engine_bytes"),
    (lambda m: m["key"].update(precision="int8"), "precision"),
    (lambda m: m["key"].pop("onnx_sha256"), "exactly the fields"),
])
def test_metadata_outside_the_schema_is_refused(tmp_path, edit, message):
    cache = EngineCache(tmp_path)
    key = make_key()
    cache.store(key, ENGINE)
    meta = json.loads(cache.metadata_path(key).read_text())
    edit(meta)
    cache.metadata_path(key).write_text(json.dumps(meta))
    with pytest.raises(EngineCacheError, match="invalid engine metadata") as info:
        cache.load(key)
    assert message in str(info.value)
    with pytest.raises(ValueError, match=message):
        EngineMetadata.from_json(meta)


def test_sidecar_of_another_key_is_refused(tmp_path):
    cache = EngineCache(tmp_path)
    key, other = make_key(), make_key(precision="fp32")
    cache.store(other, ENGINE)
    cache.metadata_path(other).rename(cache.metadata_path(key))
    with pytest.raises(EngineCacheError, match=r"describes another engine.*precision"):
        cache.load(key)


def test_mismatch_message_names_the_fields_that_differ(tmp_path):
    cache = EngineCache(tmp_path)
    cache.store(make_key(precision="fp32", tensorrt_version="10.1.0"), ENGINE)
    cache.store(make_key(graph="encoder"), ENGINE)
    with pytest.raises(EngineMissingError) as info:
        cache.load(make_key())
    text = str(info.value)
    assert "precision: cached 'fp32', wanted 'fp16'" in text
    assert "tensorrt_version: cached '10.1.0', wanted '10.3.0'" in text
    assert "graph" not in text.split("differs in:")[1]


def test_refuse_policy_raises_with_the_reason_and_builds_nothing(tmp_path):
    cache = EngineCache(tmp_path)
    cache.store(make_key(height=392), ENGINE)
    calls = []
    with pytest.raises(EngineCacheError, match=r"height: cached 392, wanted 378.*dvlt-export"):
        ensure_engine(cache, make_key(), lambda: calls.append(1) or ENGINE,
                      on_mismatch="refuse")
    assert calls == []


def test_rebuild_policy_builds_once_then_reuses(tmp_path):
    cache = EngineCache(tmp_path)
    key = make_key()
    built, said = [], []
    def build():
        built.append(1)
        return ENGINE

    assert ensure_engine(cache, key, build, say=said.append) == ENGINE
    assert ensure_engine(cache, key, build, say=said.append) == ENGINE
    assert built == [1] and "building the step engine" in said[0]
    cache.engine_path(key).write_bytes(b"corrupt")
    assert ensure_engine(cache, key, build) == ENGINE and built == [1, 1]
    assert cache.load(key) == ENGINE
    with pytest.raises(ValueError, match="on_mismatch"):
        ensure_engine(cache, key, build, on_mismatch="ignore")


def test_clear_deletes_valid_and_stale_entries_but_nothing_else(tmp_path):
    cache = EngineCache(tmp_path)
    cache.store(make_key(), ENGINE)
    stale = cache.store(make_key(graph="decoder"), ENGINE)
    sidecar = stale.with_suffix(".json")
    sidecar.write_text(sidecar.read_text().replace('"typed-v3"', '"default"'))  # old schema
    assert len(cache.entries()) == 1  # the stale entry is invisible to entries()
    (tmp_path / "notes.txt").write_text("mine")
    (tmp_path / "timing-0123456789abcdef.cache").write_bytes(b"t")
    assert cache.clear() == 4
    assert sorted(p.name for p in tmp_path.iterdir()) == ["notes.txt",
                                                          "timing-0123456789abcdef.cache"]


def test_engine_key_from_an_export_manifest(small_export):
    from dvlt_core.export import load_manifest

    manifest = load_manifest(small_export.out)
    gpu = GpuInfo("NVIDIA H100 80GB HBM3", "9.0")
    keys = [engine_key(manifest, g, gpu, "10.3.0", "fp16")
            for g in (manifest.encoder, manifest.steps[0], manifest.decoder)]
    assert [k.graph for k in keys] == ["encoder", "step", "decoder"]
    assert {k.checkpoint_sha256 for k in keys} == {manifest.checkpoint_sha256}
    assert keys[1].onnx_sha256 == manifest.steps[0].sha256
    assert (keys[0].views_min, keys[0].views_opt, keys[0].views_max) == (1, 2, 4)
    assert graph_name(manifest.steps[0]) == "step"
    cache = EngineCache(small_export.out / "engines")
    assert cache.timing_cache_path(gpu.name, "9.0", "10.3.0") != cache.timing_cache_path(
        gpu.name, "9.0", "10.4.0")
