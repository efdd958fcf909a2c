"""Everything an export folder or engine cache can get wrong, and the one-line refusal each gets.

Folders are copies of the session's small export (conftest.py) with hard-linked graphs; a test
that changes a graph unlinks it first and writes a new file, so the shared export stays intact.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from dvlt_core.backends import create_backend
from dvlt_core.backends.tensorrt_backend import _Engine  # also registers "tensorrt"
from dvlt_core.export import EngineCache, EngineCacheError, ExportError, ViewRange, export_onnx
from dvlt_core.export.manifest import MANIFEST_NAME, file_sha256, load_manifest
from dvlt_core.export.tensorrt_build import ensure_engine
from dvlt_core.model import DVLTModel
from dvlt_core.testing import load_deterministic_weights

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")

HEIGHT, WIDTH = 56, 70  # the image size of the small_export fixture (conftest.py)
ENTRIES = {"encoder.onnx": ("encoder",), "step.onnx": ("steps", "0"),
           "decoder.onnx": ("decoder",)}


@pytest.fixture(scope="module")
def export(small_export) -> Path:
    assert small_export.exit_code == 0, small_export.log
    return small_export.out


@pytest.fixture(scope="module")
def other_export(small_export, tmp_path_factory) -> Path:
    """The same architecture, image size and views with other weights (seed 1)."""
    model = DVLTModel(**small_export.model.config.to_dict()).eval()
    load_deterministic_weights(model, 1)
    out = tmp_path_factory.mktemp("other_export")
    export_onnx(model, out, height=HEIGHT, width=WIDTH, views=ViewRange(1, 2, 4))
    return out


@pytest.fixture
def folder(export, tmp_path) -> Path:
    """A private copy of the small export: graphs hard-linked, manifest copied."""
    copy = tmp_path / "export"
    copy.mkdir()
    for path in export.glob("*.onnx"):
        os.link(path, copy / path.name)
    (copy / MANIFEST_NAME).write_text((export / MANIFEST_NAME).read_text())
    return copy


def edit_manifest(folder: Path, edit: Callable[[dict], object]) -> None:
    data = json.loads((folder / MANIFEST_NAME).read_text())
    edit(data)
    (folder / MANIFEST_NAME).write_text(json.dumps(data))


def replace_graph(folder: Path, name: str, data: bytes, *, rehash: bool = True) -> None:
    """Write ``data`` as graph ``name`` (a new file, never through the hard link); with
    ``rehash`` the manifest's sha256 is updated to match, as a careful forger would."""
    path = folder / name
    path.unlink()
    path.write_bytes(data)
    if rehash:
        set_sha(folder, name, file_sha256(path))


def set_sha(folder: Path, name: str, sha: str) -> None:
    def edit(data):
        entry = data["graphs"]
        for key in ENTRIES[name]:
            entry = entry[key]
        entry["sha256"] = sha

    edit_manifest(folder, edit)


def edit_graph(folder: Path, name: str, edit: Callable[[onnx.ModelProto], object]) -> None:
    model = onnx.load(str(folder / name))
    edit(model)
    replace_graph(folder, name, model.SerializeToString())


def refusal(folder: Path, match: str) -> str:
    """The one-line ExportError ``load_manifest`` gives for ``folder``, matching ``match``."""
    with pytest.raises(ExportError, match=match) as info:
        load_manifest(folder)
    message = str(info.value)
    assert "\n" not in message and "dvlt-export" in message, message
    return message


# ---- the manifest itself ---------------------------------------------------------------------


@pytest.mark.parametrize("content, match", [
    (b"{not json", r"cannot read .*export.json \(Expecting"),
    (b"\xff\xfe\x00garbage", r"cannot read .*export.json \(.*utf-8"),
    (b"[1, 2]", "not a DVLT export manifest"),
    (b'{"format": "something-else", "version": 2}', "not a DVLT export manifest"),
])
def test_a_manifest_that_is_not_one_is_refused(folder, content, match):
    (folder / MANIFEST_NAME).write_bytes(content)
    refusal(folder, match)


@pytest.mark.parametrize("edit, match", [
    (lambda d: d.pop("graphs"), r"graphs is missing"),
    (lambda d: d["views"].pop("max"), r"views.max is missing"),
    (lambda d: d.update(height="56"), r"height must be an integer, got '56'"),
    (lambda d: d.update(opset=True), r"opset must be an integer, got True"),
    (lambda d: d.update(width=0), r"expected a positive integer, got 0"),
    (lambda d: d.update(views=3), r"views must be an object, got 3"),
    (lambda d: d["views"].update(min=4), r"1 <= min <= opt <= max"),
    (lambda d: d["graphs"].update(steps=[]), r"graphs.steps must be an object, got \[\]"),
    (lambda d: d["graphs"].update(steps={}), r"graphs.steps is empty"),
    (lambda d: d["graphs"]["steps"].update(x=d["graphs"]["steps"]["0"]), r"key 'x' is not a"),
    (lambda d: d["graphs"].update(encoder="encoder.onnx"), r"graphs.encoder must be an object"),
    (lambda d: d["graphs"]["decoder"].update(sha256=5), r"graph.sha256 must be a string, got 5"),
    (lambda d: d["graphs"]["decoder"].update(file="../decoder.onnx"), r"plain \*\.onnx name"),
    (lambda d: d.update(outputs="rays"), r"outputs must be a list"),
    (lambda d: d.update(checkpoint_sha256="abc"), r"expected a sha256 hex digest"),
    (lambda d: d["config"].update(mlp_ratio=-1.0),
     r"config: mlp_ratio must be a finite number in \[0.25, 16.0\], got -1.0"),
    (lambda d: d["config"].update(colour="red"), r"config: unknown DVLT argument"),
])
def test_manifest_fields_missing_or_of_the_wrong_type_are_refused(folder, edit, match):
    edit_manifest(folder, edit)
    message = refusal(folder, match)
    assert "is not a valid version-2 manifest" in message


@pytest.mark.parametrize("version, match", [
    (1, r"written by an older dvlt-export \(manifest version 1; this one reads 2"),
    (99, r"manifest version 99, this dvlt_ros reads 2.*or update dvlt_ros"),
    ("2", r"manifest version '2'"),
])
def test_other_manifest_versions_are_refused(folder, version, match):
    edit_manifest(folder, lambda d: d.update(version=version))
    refusal(folder, match)


@pytest.mark.parametrize("edit, match", [
    (lambda d: d.update(num_tokens=26), r"num_tokens is 26, 56x70 images give 25"),
    (lambda d: d.update(embed_dim=768), r"embed_dim is 768, the model's is 384"),
    (lambda d: d.update(height=50), r"50x70 is not a multiple of the patch size 14"),
    (lambda d: d["views"].update(max=200), r"views max 200 exceeds the decode_chunk_size 128"),
    (lambda d: d.update(opset=16), r"opset 16 is below 17"),
    (lambda d: d["outputs"].pop(), r"outputs are \['rays', 'depth', 'depth_conf', 'world_p"),
    (lambda d: d["graphs"]["steps"].update({"1": d["graphs"]["steps"].pop("0")}),
     r"step graphs for blocks \[1\], the model's loop uses \[0\]"),
    (lambda d: d["graphs"]["encoder"].update(file="my.onnx"),
     r"the encoder graph is 'my.onnx', expected 'encoder.onnx'"),
])
def test_manifest_sizes_its_model_config_contradicts_are_refused(folder, edit, match):
    edit_manifest(folder, edit)
    assert "contradicts its model config" in refusal(folder, match)


def test_swapped_manifest_entries_are_refused(folder):
    def swap(data):
        graphs = data["graphs"]
        graphs["encoder"], graphs["decoder"] = graphs["decoder"], graphs["encoder"]

    edit_manifest(folder, swap)
    refusal(folder, r"the encoder graph is 'decoder.onnx', expected 'encoder.onnx'")


# ---- the graph files ------------------------------------------------------------------------


def test_a_missing_graph_is_refused(folder):
    (folder / "step.onnx").unlink()
    refusal(folder, r"step.onnx is missing; export again with dvlt-export")


def test_a_graph_that_is_a_folder_is_refused(folder):
    (folder / "decoder.onnx").unlink()
    (folder / "decoder.onnx").mkdir()
    refusal(folder, r"decoder.onnx is not a file; export again with dvlt-export")


def test_a_truncated_graph_is_refused_by_its_sha256(folder):
    data = (folder / "decoder.onnx").read_bytes()
    replace_graph(folder, "decoder.onnx", data[: len(data) // 2], rehash=False)
    refusal(folder, r"decoder.onnx does not match the sha256 in .*\(modified or truncated\)")


@pytest.mark.parametrize("cut", [0.5, 0.999])
def test_a_truncated_graph_with_a_matching_sha256_is_refused(folder, cut):
    data = (folder / "encoder.onnx").read_bytes()
    replace_graph(folder, "encoder.onnx", data[: int(len(data) * cut)])
    refusal(folder, r"encoder.onnx is not a complete ONNX graph \(the file ends inside")


@pytest.mark.parametrize("data, match", [
    (b"", "the file is empty"),
    (b'{"graph": "encoder"}', "not an ONNX model"),
    (b"\x08\x07", "holds no ONNX graph"),  # a valid ModelProto with only ir_version
])
def test_a_file_that_is_no_onnx_graph_is_refused(folder, data, match):
    replace_graph(folder, "step.onnx", data)
    refusal(folder, rf"step.onnx is not a complete ONNX graph \(.*{match}")


def test_swapped_graph_files_with_their_hashes_are_refused(folder):
    encoder, decoder = folder / "encoder.onnx", folder / "decoder.onnx"
    swap = folder / "swap"
    encoder.rename(swap)
    decoder.rename(encoder)
    swap.rename(decoder)
    for name in ("encoder.onnx", "decoder.onnx"):
        set_sha(folder, name, file_sha256(folder / name))
    refusal(folder, r"encoder.onnx does not fit .*export.json: it is the decoder graph, not the "
                    r"encoder \(graphs swapped\?\)")


def test_a_graph_from_another_export_is_refused_even_with_the_same_signature(folder,
                                                                            other_export):
    replace_graph(folder, "step.onnx", (other_export / "step.onnx").read_bytes())
    refusal(folder, r"step.onnx does not fit .*: it was exported from other weights, not from the "
                    r"export its manifest describes \(copied from another export\?\)")


def test_a_manifest_edited_for_other_image_sizes_is_refused(folder):
    def resize(data):  # consistent for the config: 56x84 gives 1 + 4 + 4 * 6 tokens
        data.update(width=84, num_tokens=29)

    edit_manifest(folder, resize)
    refusal(folder, r"encoder.onnx does not fit .*: it was exported for 56x70 images")


def test_a_manifest_edited_for_another_model_config_is_refused(folder):
    edit_manifest(folder, lambda d: d["config"].update(num_steps=12))
    refusal(folder, r"encoder.onnx does not fit .*: it was exported from another model config")


def test_a_manifest_with_another_opset_than_its_graphs_is_refused(folder):
    edit_manifest(folder, lambda d: d.update(opset=18))
    refusal(folder, r"encoder.onnx does not fit .*: opset 17, the manifest says 18")


def _dims(value_info):
    return value_info.type.tensor_type.shape.dim


@pytest.mark.parametrize("name, edit, match", [
    ("step.onnx", lambda m: _dims(m.graph.output[0])[3].__setattr__("dim_value", 385),
     r"output 'tokens_out' is float32 1xSx25x385, expected float32 1xSx25x384"),
    ("step.onnx", lambda m: _dims(m.graph.input[0])[1].__setattr__("dim_value", 2),
     r"input 'tokens' is float32 1x2x25x384, expected float32 1xSx25x384"),
    ("encoder.onnx", lambda m: m.graph.input[0].type.tensor_type.__setattr__("elem_type", 10),
     r"input 'images' is float16 1xSx3x56x70, expected float32 1xSx3x56x70"),
    ("decoder.onnx", lambda m: m.graph.output[0].__setattr__("name", "rays_out"),
     r"outputs \['rays_out', 'depth', .*\], expected \['rays', 'depth', "),
    ("decoder.onnx", lambda m: m.graph.output[1].type.tensor_type.ClearField("shape"),
     r"output 'depth' is float32 unknown shape, expected float32 1xSx56x70x1"),
    ("step.onnx", lambda m: m.graph.input.append(m.graph.input[0]),
     r"inputs \['tokens', 't_now', 't_next', 'tokens'\], expected"),
])
def test_graphs_declaring_other_inputs_or_outputs_are_refused(folder, name, edit, match):
    edit_graph(folder, name, edit)
    refusal(folder, rf"{name} does not fit .*: {match}.*; export again with dvlt-export")


def test_a_graph_without_its_stage_metadata_is_refused(folder):
    edit_graph(folder, "decoder.onnx", lambda m: m.ClearField("metadata_props"))
    refusal(folder, r"decoder.onnx does not fit .*: it records no DVLT stage")


def test_a_mixed_precision_graph_in_place_of_the_float32_one_is_refused(folder):
    from dvlt_core.export.mixed_precision import mixed_precision_bytes

    typed, _ = mixed_precision_bytes(folder / "step.onnx", "fp16")
    replace_graph(folder, "step.onnx", typed)
    refusal(folder, r"step.onnx does not fit .*: it is a fp16 mixed-precision graph; an export "
                    r"holds the float32 graphs")


# ---- what the commands and backends do with a bad folder -------------------------------------


@pytest.fixture
def swapped(folder) -> Path:
    """An export whose step.onnx is its decoder, with the manifest's hash updated."""
    replace_graph(folder, "step.onnx", (folder / "decoder.onnx").read_bytes())
    return folder


def test_backends_refuse_a_bad_folder_before_creating_any_session(swapped, monkeypatch):
    def no_session(*args, **kwargs):
        raise AssertionError("a session was created for an invalid export")

    monkeypatch.setattr(ort, "InferenceSession", no_session)
    for backend, device in (("onnxruntime", "cpu"), ("tensorrt", "cuda")):
        with pytest.raises(ExportError, match="it is the decoder graph, not the step"):
            create_backend(backend, checkpoint=swapped, device=device)


def test_reconstruct_exits_2_with_one_line_for_a_bad_export(swapped, tmp_path, capsys):
    from PIL import Image

    from dvlt_core.cli.reconstruct import main

    image = tmp_path / "v0.png"
    Image.fromarray(np.zeros((40, 50, 3), dtype=np.uint8)).save(image)
    argv = [str(image), "--backend", "onnxruntime", "--checkpoint", str(swapped),
            "--device", "cpu", "--out", str(tmp_path / "out")]
    assert main(argv) == 2
    err = capsys.readouterr().err
    errors = [line for line in err.splitlines() if "error" in line.lower()]
    assert len(errors) == 1 and "Traceback" not in err, err
    assert errors[0].startswith("dvlt-reconstruct: error: ") and "step.onnx" in errors[0]
    assert errors[0].endswith("export again with dvlt-export (same --out)")
    assert not (tmp_path / "out").exists()


def test_backend_refuses_inputs_the_export_does_not_cover(export):
    backend = create_backend("onnxruntime", checkpoint=export)
    with pytest.raises(ValueError, match=r"fixed to 56x70.*--height 84 --width 70"):
        backend.infer(torch.rand(1, 2, 3, 84, 70))
    with pytest.raises(ValueError, match=r"accepts 1..4 views, got 5"):
        backend.infer(torch.rand(1, 5, 3, HEIGHT, WIDTH))
    with pytest.raises(ValueError, match="num_steps must be >= 1"):
        backend.infer(torch.rand(1, 1, 3, HEIGHT, WIDTH), num_steps=0)
    with pytest.raises(ValueError, match=r"\(1, S, 3, H, W\)"):
        backend.infer(torch.rand(2, 1, 3, HEIGHT, WIDTH))


def test_export_refuses_settings_the_graphs_cannot_hold(small_export, tmp_path):
    model = small_export.model
    with pytest.raises(ExportError, match="multiples of the patch size 14"):
        export_onnx(model, tmp_path, height=50, width=70, views=ViewRange(1, 1, 2))
    with pytest.raises(ExportError, match="decode_chunk_size 128"):
        export_onnx(model, tmp_path, height=56, width=70, views=ViewRange(1, 8, 200))
    with pytest.raises(ExportError, match="opset 16 is too old"):
        export_onnx(model, tmp_path, height=56, width=70, views=ViewRange(1, 1, 2), opset=16)


# ---- the TensorRT engine cache (up to the GPU: no TensorRT needed) ---------------------------

ENGINE = b"serialized-engine-bytes" * 100


def engine_key(export: Path, graph: str = "step", precision: str = "fp16"):
    from dvlt_core.export.tensorrt_build import GpuInfo
    from dvlt_core.export.tensorrt_build import engine_key as key_for

    manifest = load_manifest(export)
    entry = {"encoder": manifest.encoder, "step": manifest.steps[0],
             "decoder": manifest.decoder}[graph]
    return key_for(manifest, entry, GpuInfo("NVIDIA H100 80GB HBM3", "9.0"), "10.3.0", precision)


def cache_refusal(cache: EngineCache, key, match: str) -> None:
    """``load`` and the ``refuse`` policy both refuse with one line; nothing is built."""
    with pytest.raises(EngineCacheError, match=match):
        cache.load(key)
    with pytest.raises(EngineCacheError, match=match) as info:
        ensure_engine(cache, key, lambda: pytest.fail("built"), on_mismatch="refuse")
    assert "\n" not in str(info.value) and "dvlt-export" in str(info.value)


def test_a_truncated_engine_is_refused_then_rebuilt(export, tmp_path):
    cache, key = EngineCache(tmp_path), engine_key(export)
    cache.store(key, ENGINE)
    cache.engine_path(key).write_bytes(ENGINE[: len(ENGINE) // 2])
    cache_refusal(cache, key, r"does not match the size/sha256 in its metadata \(truncated")
    assert ensure_engine(cache, key, lambda: ENGINE) == ENGINE and cache.load(key) == ENGINE


def test_a_foreign_engine_is_refused(export, tmp_path):
    cache = EngineCache(tmp_path)
    key, other = engine_key(export, "step"), engine_key(export, "decoder")
    cache.store(key, ENGINE)
    cache.store(other, b"another-engine" * 50)
    cache.engine_path(key).write_bytes(cache.engine_path(other).read_bytes())
    cache_refusal(cache, key, r"does not match the size/sha256")
    # The other entry's engine and sidecar both renamed to this key's names:
    cache.engine_path(other).replace(cache.engine_path(key))
    cache.metadata_path(other).replace(cache.metadata_path(key))
    cache_refusal(cache, key, r"describes another engine \(graph: cached 'decoder', wanted "
                              r"'step'.*delete it")


def test_an_engine_tensorrt_cannot_deserialise_is_a_cache_error():
    runtime = SimpleNamespace(deserialize_cuda_engine=lambda data: None)  # TensorRT's answer
    with pytest.raises(EngineCacheError, match="could not deserialise the step engine; delete"):
        _Engine(SimpleNamespace(), runtime, ENGINE, "step")
