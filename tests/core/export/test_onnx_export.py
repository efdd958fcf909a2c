"""ONNX export: the three graphs, their checks, and ONNX Runtime (CPU) against PyTorch."""

# ruff: noqa: E402 (the imports below need the export extra, skipped without it)
from __future__ import annotations

import pytest

onnx = pytest.importorskip("onnx", reason="needs onnx: pip install -e '.[export]'")
ort = pytest.importorskip("onnxruntime", reason="needs onnxruntime: pip install -e '.[export]'")

import json

import numpy as np
import torch

from dvlt_core.backends import InferenceBackend, create_backend
from dvlt_core.backends.onnxruntime_backend import (
    OnnxRuntimeBackend,
    check_provider,
    provider_chain,
)
from dvlt_core.export import (
    ONNX_FP32,
    ExportError,
    ViewRange,
    check_graph,
    compare_outputs,
    export_onnx,
    load_manifest,
)
from dvlt_core.export.onnx_signature import read_signature
from dvlt_core.model import DVLTModel
from dvlt_core.testing import load_deterministic_weights

HEIGHT, WIDTH = 56, 70  # the image size of the small_export fixture (conftest.py)
RAW = ("rays", "depth", "depth_conf", "world_points", "pose_enc")


@pytest.fixture(scope="module")
def backend(small_export):
    assert small_export.exit_code == 0, small_export.log
    return OnnxRuntimeBackend(small_export.out, threads=2)


def torch_outputs(model, images, K):
    with torch.inference_mode():
        out = model(images, num_steps=K)
    return {k: out[k] for k in RAW}


def test_cli_writes_three_checked_graphs_and_reports_progress(small_export):
    assert small_export.exit_code == 0, small_export.log
    for phrase in ("exporting encoder", "exporting loop step", "exporting decoder",
                   "checking the graphs with ONNX Runtime", "encoder.onnx fp16: ",
                   "decoder.onnx bf16: ", "done:"):
        assert phrase in small_export.log
    manifest = load_manifest(small_export.out)
    files = sorted(p.name for p in small_export.out.glob("*.onnx"))
    assert files == ["decoder.onnx", "encoder.onnx", "step.onnx"]
    assert (manifest.height, manifest.width, str(manifest.views)) == (HEIGHT, WIDTH, "1:2:4")
    assert list(manifest.steps) == [0] and manifest.outputs == RAW
    assert manifest.num_tokens == 1 + 4 + (HEIGHT // 14) * (WIDTH // 14)


@pytest.mark.parametrize("name", ["encoder.onnx", "step.onnx", "decoder.onnx"])
def test_graphs_have_opset_17_no_float64_no_data_dependent_ops_and_dynamic_views(
    small_export, name
):
    check = check_graph(small_export.out / name)
    assert check.problems == [] and check.opset >= 17
    if name != "step.onnx":
        assert check.op_counts.get("LayerNormalization", 0) > 0
    graph = onnx.load(str(small_export.out / name), load_external_data=False).graph
    for value in (*graph.input, *graph.output):
        dims = [d.dim_param or d.dim_value for d in value.type.tensor_type.shape.dim]
        if dims:
            assert dims[0] == 1 and dims[1] == "S" and all(isinstance(d, int) for d in dims[2:])


@pytest.mark.parametrize("name", ["encoder.onnx", "step.onnx", "decoder.onnx"])
def test_graphs_record_their_stage_and_their_signature_reads_without_weights(small_export, name):
    manifest = load_manifest(small_export.out)
    model = onnx.load(str(small_export.out / name), load_external_data=False)
    signature = read_signature(small_export.out / name)
    for declared, values in ((signature.inputs, model.graph.input),
                             (signature.outputs, model.graph.output)):
        assert [(t.name, t.elem_type, t.shape) for t in declared] == [
            (v.name, v.type.tensor_type.elem_type,
             tuple(d.dim_value if d.HasField("dim_value") else d.dim_param
                   for d in v.type.tensor_type.shape.dim)) for v in values]
    assert signature.opsets == {o.domain: o.version for o in model.opset_import}
    stage = name.removesuffix(".onnx")
    identity = manifest.identity(stage, 0 if stage == "step" else None)
    assert signature.metadata == {p.key: p.value for p in model.metadata_props} == identity
    assert identity["dvlt.stage"] == stage and identity["dvlt.image_hw"] == "56x70"


def test_step_graph_takes_tokens_and_both_step_times(small_export):
    session = ort.InferenceSession(str(small_export.out / "step.onnx"))
    assert [i.name for i in session.get_inputs()] == ["tokens", "t_now", "t_next"]
    tokens = np.random.default_rng(0).standard_normal((1, 2, 25, 384)).astype(np.float32)

    def run(t_now, t_next):
        feeds = {"tokens": tokens, "t_now": np.array(t_now, dtype=np.float32),
                 "t_next": np.array(t_next, dtype=np.float32)}
        return session.run(None, feeds)[0]

    base = run(0.0, 0.5)
    assert not np.allclose(base, run(0.5, 0.5)) and not np.allclose(base, run(0.0, 1.0))
    np.testing.assert_array_equal(base, run(0.0, 0.5))


@pytest.mark.parametrize("num_views", [1, 2, 4])
def test_onnxruntime_matches_pytorch_for_several_k(small_export, backend, num_views):
    images = torch.rand(1, num_views, 3, HEIGHT, WIDTH, generator=torch.Generator().manual_seed(1))
    for K in (1, 3, 8):
        out = backend.infer(images, num_steps=K)
        report = compare_outputs({k: getattr(out, k) for k in RAW},
                                 torch_outputs(small_export.model, images, K),
                                 tolerance=ONNX_FP32, label=f"S={num_views} K={K}")
        assert report.passed, report.table()
        assert out.timings.num_steps == K


def test_k_changes_between_calls_on_the_same_sessions(backend):
    sessions = dict(backend.sessions)
    images = torch.rand(1, 2, 3, HEIGHT, WIDTH, generator=torch.Generator().manual_seed(2))
    first = backend.infer(images, num_steps=2)
    other = backend.infer(images, num_steps=5)
    again = backend.infer(images, num_steps=2)
    assert backend.sessions == sessions
    assert not torch.allclose(first.depth, other.depth)
    torch.testing.assert_close(first.depth, again.depth, rtol=0, atol=0)
    torch.testing.assert_close(first.rays, again.rays, rtol=0, atol=0)


def test_backend_through_the_common_interface(small_export):
    backend = create_backend("onnxruntime", checkpoint=small_export.out)
    assert isinstance(backend, InferenceBackend) and backend.name == "onnxruntime"
    assert backend.default_num_steps == 3 and backend.img_size == WIDTH
    assert backend.device == torch.device("cpu")
    out = backend.infer(torch.rand(1, 3, 3, HEIGHT, WIDTH))
    assert out.rays.shape == (1, 3, HEIGHT, WIDTH, 6) and out.pose_enc.shape == (1, 3, 9)
    assert out.depth_conf.dtype == torch.float32 and bool((out.depth_conf >= 1).all())
    t = out.timings
    assert t.num_steps == 3 and t.encode_ms > 0 and t.decode_ms > 0
    assert t.encode_ms + sum(t.step_ms) + t.decode_ms <= t.total_ms + 1e-6


def test_reconstruct_cli_runs_an_export_folder(small_export, tmp_path, capsys):
    from PIL import Image

    from dvlt_core.cli.reconstruct import main

    rng = np.random.default_rng(0)
    inputs = []
    for i in range(2):  # 40x50 scales to the export's fixed 56x70 canvas
        inputs.append(tmp_path / f"v{i}.png")
        Image.fromarray(rng.integers(0, 256, (40, 50, 3), dtype=np.uint8)).save(inputs[-1])
    out = tmp_path / "out"
    argv = [*map(str, inputs), "--backend", "onnxruntime", "--checkpoint", str(small_export.out),
            "--device", "cpu", "--num-steps", "2", "--out", str(out)]
    assert main(argv) == 0, capsys.readouterr().err
    with np.load(out / "reconstruction.npz") as z:
        assert z["depth"].shape == (2, 40, 50) and int(z["num_steps"]) == 2
    # A checkpoint instead of an export folder: a clear error and exit code 2.
    argv[argv.index(str(small_export.out))] = str(small_export.checkpoint)
    assert main(argv) == 2
    assert "not a DVLT export" in capsys.readouterr().err


def test_backend_options_are_checked(small_export):
    with pytest.raises(ValueError, match="runs an export folder"):
        create_backend("onnxruntime")
    with pytest.raises(ValueError, match="bf16 with ONNX Runtime needs execution_provider='tens"):
        create_backend("onnxruntime", checkpoint=small_export.out, precision="bf16")
    with pytest.raises(ValueError, match="precision must be one of"):
        create_backend("onnxruntime", checkpoint=small_export.out, precision="int8")
    with pytest.raises(ValueError, match=r"not available in this ONNX Runtime.*onnxruntime-gpu"):
        create_backend("onnxruntime", checkpoint=small_export.out, device="cuda",
                       execution_provider="cuda")
    with pytest.raises(ExportError, match="not a DVLT export"):
        create_backend("onnxruntime", checkpoint=small_export.checkpoint)


def test_tensorrt_provider_options_carry_precision_and_view_profile(tmp_path):
    chain = provider_chain(
        "tensorrt", device=torch.device("cuda", 1), precision="fp16",
        available=["TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider"],
        profiles={"images": ((1, 1, 3, 56, 70), (1, 2, 3, 56, 70), (1, 4, 3, 56, 70))},
        cache_dir=tmp_path,
    )
    assert [name for name, _ in chain] == ["TensorrtExecutionProvider", "CUDAExecutionProvider",
                                           "CPUExecutionProvider"]
    options = chain[0][1]
    assert options["device_id"] == 1 and options["trt_fp16_enable"]
    assert "trt_bf16_enable" not in options  # ONNX Runtime < 1.23 rejects the key itself
    assert options["trt_profile_min_shapes"] == "images:1x1x3x56x70"
    assert options["trt_profile_max_shapes"] == "images:1x4x3x56x70"
    assert options["trt_engine_cache_path"] == str(tmp_path)


def test_tensorrt_provider_options_for_fp32_and_bf16():
    available = ["TensorrtExecutionProvider", "CPUExecutionProvider"]
    fp32, bf16 = (provider_chain("tensorrt", device=torch.device("cuda"), precision=p,
                                 available=available)[0][1] for p in ("fp32", "bf16"))
    assert not any(key.endswith("16_enable") for key in fp32)
    assert bf16["trt_bf16_enable"] and "trt_fp16_enable" not in bf16
    with pytest.raises(ValueError, match="bf16 with ONNX Runtime needs"):
        provider_chain("cuda", device=torch.device("cuda"), precision="bf16",
                       available=["CUDAExecutionProvider", "CPUExecutionProvider"])


def test_a_session_moved_to_another_provider_is_refused(small_export):
    session = ort.InferenceSession(str(small_export.out / "step.onnx"),
                                   providers=["CPUExecutionProvider"])
    check_provider(session, "CPUExecutionProvider", "step.onnx")
    with pytest.raises(RuntimeError, match=r"could not use TensorrtExecutionProvider for "
                                           r"step.onnx \(it runs on CPUExecutionProvider\)"):
        check_provider(session, "TensorrtExecutionProvider", "step.onnx")


def test_the_backend_refuses_sessions_onnx_runtime_moved(small_export, monkeypatch):
    # As if ONNX Runtime had fallen back from the requested provider to another one.
    monkeypatch.setattr(ort.InferenceSession, "get_providers",
                        lambda self: ["CUDAExecutionProvider", "CPUExecutionProvider"])
    with pytest.raises(RuntimeError, match="could not use CPUExecutionProvider for encoder"):
        create_backend("onnxruntime", checkpoint=small_export.out)


def test_view_range_parsing():
    assert ViewRange.parse("8") == ViewRange(8, 8, 8)
    assert ViewRange.parse("1:16") == ViewRange(1, 16, 16)
    assert ViewRange.parse("1:8:16") == ViewRange(1, 8, 16)
    assert 8 in ViewRange(1, 8, 16) and 17 not in ViewRange(1, 8, 16)
    for bad in ("", "a:b", "1:2:3:4", "4:2:8", "0:1:1"):
        with pytest.raises(ValueError):
            ViewRange.parse(bad)


def test_distinct_blocks_per_step_get_one_step_graph_each(reference_dir, tmp_path):
    """recurrence_mode='none' with k_sampling=None: step k applies block k."""
    with np.load(reference_dir / "case_small_public.npz") as case:
        config = json.loads(str(case["config_json"]))
    config.update(recurrence_mode="none", k_sampling=None, num_steps=3, inference_steps=None,
                  decoder_depth=1, camera_head=False)
    model = DVLTModel(**config).eval()
    load_deterministic_weights(model, 3)
    manifest = export_onnx(model, tmp_path, height=28, width=42, views=ViewRange(1, 2, 2))
    assert sorted(p.name for p in tmp_path.glob("step*.onnx")) == [
        "step_block00.onnx", "step_block01.onnx", "step_block02.onnx"]
    assert manifest.outputs == RAW[:-1]
    backend = OnnxRuntimeBackend(tmp_path)
    images = torch.rand(1, 2, 3, 28, 42, generator=torch.Generator().manual_seed(4))
    out = backend.infer(images)
    with torch.inference_mode():
        ref = model(images)
    report = compare_outputs({k: getattr(out, k) for k in RAW[:-1]},
                             {k: ref[k] for k in RAW[:-1]}, tolerance=ONNX_FP32)
    assert report.passed, report.table()
    assert out.pose_enc is None and out.timings.num_steps == 3
    with pytest.raises(ValueError, match="always runs its num_steps=3 steps"):
        backend.infer(images, num_steps=4)
