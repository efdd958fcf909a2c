"""TensorRT path: build helpers on any machine; engines, parity and the loop on a GPU."""

from __future__ import annotations

import contextlib
import importlib.util
import io
from types import SimpleNamespace

import pytest
import torch

from dvlt_core.backends import create_backend
from dvlt_core.backends.tensorrt_backend import TensorRTBackend  # registers "tensorrt"
from dvlt_core.cli.export import main as export_main
from dvlt_core.export import EngineCacheError, ViewRange, check_backend, load_manifest
from dvlt_core.export.tensorrt_build import (
    BuildProgress,
    EngineBuildError,
    GpuInfo,
    TensorRTUnavailableError,
    attach_timing_cache,
    check_precision,
    import_tensorrt,
    network_flags,
    profile_shapes,
)

HAS_TRT = importlib.util.find_spec("tensorrt") is not None
HAS_TRT_GPU = HAS_TRT and torch.cuda.is_available()


class FakeClock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_build_progress_prints_phases_steps_and_durations():
    out, clock = io.StringIO(), FakeClock()
    progress = BuildProgress("encoder", out, min_interval_s=1.0, clock=clock)
    progress.note("encoder.onnx: 500 layers")
    progress.phase_start("Building engine", None, 3)
    progress.phase_start("Tactic selection", "Building engine", 100)
    progress.phase_start("Layer 7", "Tactic selection", 4)  # deeper than max_depth: silent
    clock.now = 0.5
    assert progress.step_complete("Tactic selection", 9)  # within min_interval_s: silent
    clock.now = 1.5
    assert progress.step_complete("Tactic selection", 49)
    progress.phase_finish("Layer 7")
    progress.phase_finish("Tactic selection")
    clock.now = 3.0
    progress.phase_finish("Building engine")
    progress.cancel()
    assert not progress.step_complete("Building engine", 2)
    assert out.getvalue().splitlines() == [
        "[encoder] encoder.onnx: 500 layers",
        "[encoder] Building engine (3 steps)",
        "[encoder]   Tactic selection (100 steps)",
        "[encoder]   Tactic selection: 50/100 (50%)",
        "[encoder]   Tactic selection done in 1.5 s",
        "[encoder] Building engine done in 3.0 s",
    ]


def test_a_broken_progress_stream_does_not_cancel_the_build():
    # TensorRT cancels a build when the monitor raises; a closed stderr must not do that.
    out = io.StringIO()
    out.close()
    progress = BuildProgress("decoder", out, min_interval_s=0.0)
    progress.note("decoder.onnx: 300 layers")
    progress.phase_start("Building engine", None, 2)
    assert progress.step_complete("Building engine", 0)
    progress.phase_finish("Building engine")


def test_bf16_is_refused_before_ampere_with_what_to_use():
    check_precision("bf16", GpuInfo("NVIDIA GeForce RTX 4090 (128 SMs, 24 GiB)", "8.9"))
    check_precision("fp16", GpuInfo("NVIDIA GeForce RTX 2080 (46 SMs, 8 GiB)", "7.5"))
    with pytest.raises(TensorRTUnavailableError, match=r"bf16 needs compute capability 8\.0.*"
                                                       r"has 7\.5: use --precision fp16"):
        check_precision("bf16", GpuInfo("NVIDIA GeForce RTX 2080 (46 SMs, 8 GiB)", "7.5"))


class _TimingCacheConfig:
    """Stand-in for TensorRT's builder config at its timing-cache calls: rejects stale data."""

    def __init__(self) -> None:
        self.attached = None

    def create_timing_cache(self, data: bytes):
        return None if data == b"stale" else ("cache", data)

    def set_timing_cache(self, cache, ignore_mismatch: bool) -> bool:
        self.attached = cache
        return True


def test_a_rejected_timing_cache_is_replaced_by_a_new_one(tmp_path):
    path = tmp_path / "timing.cache"
    path.write_bytes(b"stale")
    out = io.StringIO()
    config = _TimingCacheConfig()
    attach_timing_cache(config, path, BuildProgress("encoder", out))
    assert config.attached == ("cache", b"")
    assert "does not fit this GPU/TensorRT; starting anew" in out.getvalue()
    path.write_bytes(b"good")
    attach_timing_cache(config, path, BuildProgress("encoder", out))
    assert config.attached == ("cache", b"good")


def test_networks_are_strongly_typed_on_tensorrt_10_and_11():
    # Stand-ins for the module's version and enum: TensorRT needs a GPU to import fully.
    trt10 = SimpleNamespace(__version__="10.3.0",
                            NetworkDefinitionCreationFlag=SimpleNamespace(STRONGLY_TYPED=5))
    assert network_flags(trt10) == 1 << 5
    assert network_flags(SimpleNamespace(__version__="11.4.0")) == 0  # always strongly typed


def test_profile_shapes_vary_only_the_view_axis():
    views = ViewRange(1, 8, 16)
    assert profile_shapes((1, -1, 3, 378, 504), views) == (
        (1, 1, 3, 378, 504), (1, 8, 3, 378, 504), (1, 16, 3, 378, 504))
    with pytest.raises(EngineBuildError, match="only axis 1"):
        profile_shapes((-1, -1, 3, 378, 504), views)


@pytest.mark.skipif(HAS_TRT, reason="TensorRT is installed here")
def test_missing_tensorrt_is_reported_with_the_extra(small_export):
    with pytest.raises(TensorRTUnavailableError, match=r"'tensorrt' extra.*dvlt_ros\[tensorrt\]"):
        import_tensorrt()
    with pytest.raises(TensorRTUnavailableError, match="'tensorrt' extra"):
        create_backend("tensorrt", checkpoint=small_export.out, device="cuda")


@pytest.mark.skipif(HAS_TRT_GPU, reason="TensorRT and a GPU are present here")
def test_cli_fails_fast_without_tensorrt_or_gpu(tmp_path):
    log = io.StringIO()
    with contextlib.redirect_stderr(log):
        code = export_main(["--checkpoint", str(tmp_path / "absent"), "--out", str(tmp_path)])
    assert code == 2
    assert "TensorRT" in log.getvalue() and "loading" not in log.getvalue()


# ---- GPU + TensorRT ----------------------------------------------------------------------


@pytest.fixture(scope="module")
def engines(small_export, tmp_path_factory):
    assert small_export.exit_code == 0, small_export.log
    engine_dir = tmp_path_factory.mktemp("engines")
    return small_export, engine_dir


@pytest.mark.tensorrt
def test_fp32_engines_match_pytorch_for_several_k_and_s(engines):
    export, engine_dir = engines
    backend = create_backend("tensorrt", checkpoint=export.out, device="cuda", precision="fp32",
                             engine_dir=engine_dir)
    assert isinstance(backend, TensorRTBackend) and backend.name == "tensorrt"
    for num_views in (1, 2, 4):
        for K in (1, 3, 8):
            report = check_backend(backend, export.model, num_views=num_views, height=56,
                                   width=70, num_steps=K, precision="fp32")
            assert report.passed, report.table()
    assert len(list(engine_dir.glob("*.engine"))) == 3


@pytest.mark.tensorrt
def test_cuda_graph_loop_equals_the_plain_loop_and_k_changes_per_call(engines):
    export, engine_dir = engines
    kwargs = dict(checkpoint=export.out, device="cuda", precision="fp32", engine_dir=engine_dir)
    graphs = create_backend("tensorrt", cuda_graphs=True, **kwargs)
    plain = create_backend("tensorrt", cuda_graphs=False, **kwargs)
    images = torch.rand(1, 2, 3, 56, 70)
    for K in (2, 5, 2, 12):
        a, b = graphs.infer(images, num_steps=K), plain.infer(images, num_steps=K)
        torch.testing.assert_close(a.depth, b.depth, rtol=0, atol=0)
        assert a.timings.num_steps == K and all(ms > 0 for ms in a.timings.step_ms)
    assert graphs.cuda_graphs


@pytest.mark.tensorrt
@pytest.mark.parametrize("precision", ["fp16", "bf16"])
def test_reduced_precision_engines_pass_the_parity_gate(engines, precision):
    if precision == "bf16" and torch.cuda.get_device_capability()[0] < 8:
        pytest.skip("bf16 needs compute capability 8.0 or newer")
    export, engine_dir = engines
    backend = create_backend("tensorrt", checkpoint=export.out, device="cuda",
                             precision=precision, engine_dir=engine_dir)
    report = check_backend(backend, export.model, num_views=2, height=56, width=70,
                           num_steps=8, precision=precision)
    assert report.passed, report.table()


@pytest.mark.tensorrt
def test_refuse_policy_names_the_missing_engine(engines, tmp_path):
    export, _ = engines
    with pytest.raises(EngineCacheError, match="no fp16 engine for graph 'encoder'"):
        create_backend("tensorrt", checkpoint=export.out, device="cuda", precision="fp16",
                       engine_dir=tmp_path, on_mismatch="refuse")


@pytest.mark.tensorrt
def test_cli_builds_engines_and_passes_the_gate(engines, tmp_path):
    export, _ = engines
    log = io.StringIO()
    with contextlib.redirect_stderr(log):
        code = export_main(["--checkpoint", str(export.checkpoint), "--out", str(tmp_path),
                            "--height", "56", "--width", "70", "--views", "1:2:4",
                            "--precision", "fp16"])
    assert code == 0, log.getvalue()
    assert "parity fp16" in log.getvalue() and "engine built" in log.getvalue()
    assert load_manifest(tmp_path).views == ViewRange(1, 2, 4)
