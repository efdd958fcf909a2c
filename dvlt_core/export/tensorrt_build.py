"""Build TensorRT engines from the exported ONNX graphs (TensorRT 10.x and 11.x Python API).

Networks are strongly typed (the only kind TensorRT 11 builds; an option in 10.x): every tensor
runs in the type its graph gives it. ``fp32`` engines parse the float32 export and clear the
TF32 flag, so they are comparable with PyTorch fp32. ``fp16``/``bf16`` engines parse the
mixed-precision graph that :mod:`dvlt_core.export.mixed_precision` derives from the float32
export, with explicit casts around the parts kept in float32 (normalisation, residual
stream, step gates, output heads, camera head, final arithmetic; softmax with
``fp32_softmax``), so one export serves every precision and the precision of every layer is
fixed by the graph, not chosen by the builder.

``tensorrt`` (and ``onnx``, for the typed graphs) are imported only when a build or an engine
is requested; without TensorRT :func:`import_tensorrt` raises an error that names the
``tensorrt`` extra.
"""

from __future__ import annotations

import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any, TextIO

import torch

from dvlt_core.atomic import write_atomic
from dvlt_core.export.engine_cache import (
    ENGINE_PRECISIONS,
    MISMATCH_POLICIES,
    EngineCache,
    EngineCacheError,
    EngineKey,
    EngineMissingError,
)
from dvlt_core.export.manifest import ExportManifest, GraphFile, ViewRange
from dvlt_core.export.stages import VIEW_AXIS

DEFAULT_WORKSPACE_BYTES = 4 << 30
# 10.3 (JetPack 6.1) has every call used here, e.g. IExecutionContext.set_device_memory.
MIN_TENSORRT = (10, 3)


class TensorRTUnavailableError(RuntimeError):
    """TensorRT (or a CUDA GPU) is not available; the message says how to get it."""


class EngineBuildError(RuntimeError):
    """TensorRT could not parse a graph or build an engine."""


def import_tensorrt() -> ModuleType:
    """Import ``tensorrt`` (10.3 or newer) or raise :class:`TensorRTUnavailableError` saying how."""
    try:
        import tensorrt as trt
    except ImportError as exc:
        raise TensorRTUnavailableError(
            "TensorRT is not installed: install the 'tensorrt' extra (pip install "
            "'dvlt_ros[tensorrt]') on a machine with an NVIDIA GPU, or on Jetson use JetPack's "
            "python3-libnvinfer; otherwise choose the 'torch' or 'onnxruntime' backend"
        ) from exc
    if tuple(int(p) for p in trt.__version__.split(".")[:2]) < MIN_TENSORRT:
        raise TensorRTUnavailableError(
            f"TensorRT {trt.__version__} is too old: the DVLT engines need TensorRT "
            f"{'.'.join(map(str, MIN_TENSORRT))} or newer (JetPack 6.1+ on Jetson)"
        )
    return trt


@dataclass(frozen=True)
class GpuInfo:
    """What an engine is specific to: ``name`` holds the model name, SM count and memory,
    because modules such as the Jetson Orin family share name and compute capability."""

    name: str
    compute_capability: str


def current_gpu(device: torch.device | str = "cuda") -> GpuInfo:
    """Identity and compute capability of a CUDA device (raises if there is none)."""
    if not torch.cuda.is_available():
        raise TensorRTUnavailableError(
            "TensorRT engines need a CUDA GPU, but torch.cuda.is_available() is False"
        )
    props = torch.cuda.get_device_properties(torch.device(device))
    gib = round(props.total_memory / (1 << 30))
    name = f"{props.name} ({props.multi_processor_count} SMs, {gib} GiB)"
    return GpuInfo(name, f"{props.major}.{props.minor}")


def check_precision(precision: str, gpu: GpuInfo) -> None:
    """Refuse a precision the GPU has no kernels for, before a long build fails on it."""
    if precision == "bf16" and int(gpu.compute_capability.split(".")[0]) < 8:
        raise TensorRTUnavailableError(
            f"bf16 needs compute capability 8.0 or newer (Ampere, Orin); {gpu.name} has "
            f"{gpu.compute_capability}: use --precision fp16"
        )


def graph_name(graph: GraphFile) -> str:
    """``encoder``, ``step``, ``step_blockNN`` or ``decoder`` (the ONNX file stem)."""
    return Path(graph.file).stem


def layer_policy(precision: str, fp32_softmax: bool) -> str:
    """The cache key's ``layer_policy``: ``float32`` for fp32 engines (the untouched graph),
    else the mixed-precision rules' version and softmax choice (``typed-v<N>[-fp32-softmax]``)."""
    if precision == "fp32":
        return "float32"
    from dvlt_core.export.mixed_precision import MIXED_PRECISION_VERSION

    return f"typed-v{MIXED_PRECISION_VERSION}" + ("-fp32-softmax" if fp32_softmax else "")


def engine_key(
    manifest: ExportManifest,
    graph: GraphFile,
    gpu: GpuInfo,
    trt_version: str,
    precision: str,
    *,
    fp32_softmax: bool = False,
) -> EngineKey:
    """The cache key of ``graph``'s engine for this GPU, TensorRT version and precision."""
    return EngineKey(
        graph=graph_name(graph),
        gpu_name=gpu.name,
        compute_capability=gpu.compute_capability,
        tensorrt_version=trt_version,
        precision=precision,
        layer_policy=layer_policy(precision, fp32_softmax),
        views_min=manifest.views.min,
        views_opt=manifest.views.opt,
        views_max=manifest.views.max,
        height=manifest.height,
        width=manifest.width,
        checkpoint_sha256=manifest.checkpoint_sha256,
        onnx_sha256=graph.sha256,
    )


def profile_shapes(
    shape: tuple[int, ...], views: ViewRange
) -> tuple[tuple[int, ...], tuple[int, ...], tuple[int, ...]]:
    """(min, opt, max) shapes for an input whose only dynamic dimension is the view axis."""
    dynamic = [i for i, d in enumerate(shape) if d < 0]
    if dynamic != [VIEW_AXIS]:
        raise EngineBuildError(
            f"input shape {shape}: only axis {VIEW_AXIS} (views) may be dynamic; export again "
            "with dvlt-export"
        )
    def with_views(s: int) -> tuple[int, ...]:
        return tuple(s if i == VIEW_AXIS else d for i, d in enumerate(shape))

    return with_views(views.min), with_views(views.opt), with_views(views.max)


class BuildProgress:
    """Thread-safe progress lines for TensorRT builds (phases, steps, elapsed time).

    TensorRT calls ``phase_start``/``step_complete``/``phase_finish`` from its builder threads
    through the adapter from :func:`progress_monitor`. Phases nested deeper than ``max_depth``
    are not printed; step lines of one phase are at least ``min_interval_s`` apart.
    ``cancel()`` makes the next ``step_complete`` ask TensorRT to stop the build.
    """

    def __init__(
        self,
        label: str = "",
        stream: TextIO | None = None,
        *,
        max_depth: int = 1,
        min_interval_s: float = 2.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.label = label
        self.stream = stream
        self.max_depth = max_depth
        self.min_interval_s = min_interval_s
        self.clock = clock
        self.cancelled = False
        self._lock = threading.Lock()
        self._phases: dict[str, tuple[int, int, float, float]] = {}  # depth, steps, t0, last

    def _write(self, depth: int, text: str) -> None:
        if depth > self.max_depth:
            return
        prefix = f"[{self.label}] " if self.label else ""
        out = self.stream or sys.stderr
        try:
            out.write(f"{prefix}{'  ' * depth}{text}\n")
            out.flush()
        except (OSError, ValueError):  # a closed or broken stream must not cancel the build
            pass

    def note(self, text: str) -> None:
        """Print a top-level line (build settings, results)."""
        self._write(0, text)

    def phase_start(self, phase_name: str, parent_phase: str | None, num_steps: int) -> None:
        with self._lock:
            parent = self._phases.get(parent_phase) if parent_phase else None
            depth = parent[0] + 1 if parent else 0
            now = self.clock()
            self._phases[phase_name] = (depth, int(num_steps), now, now)
            self._write(depth, f"{phase_name} ({num_steps} steps)")

    def step_complete(self, phase_name: str, step: int) -> bool:
        with self._lock:
            if phase_name in self._phases:
                depth, steps, start, last = self._phases[phase_name]
                now = self.clock()
                if now - last >= self.min_interval_s:
                    self._phases[phase_name] = (depth, steps, start, now)
                    percent = 100.0 * (step + 1) / max(steps, 1)
                    self._write(depth, f"{phase_name}: {step + 1}/{steps} ({percent:.0f}%)")
            return not self.cancelled

    def phase_finish(self, phase_name: str) -> None:
        with self._lock:
            entry = self._phases.pop(phase_name, None)
            if entry is not None:
                self._write(entry[0], f"{phase_name} done in {self.clock() - entry[2]:.1f} s")

    def cancel(self) -> None:
        self.cancelled = True


def progress_monitor(trt: ModuleType, progress: BuildProgress) -> Any:
    """A ``trt.IProgressMonitor`` forwarding to ``progress`` (keep it alive during the build)."""

    class _Monitor(trt.IProgressMonitor):
        def __init__(self) -> None:
            trt.IProgressMonitor.__init__(self)

        def phase_start(self, phase_name, parent_phase, num_steps):
            progress.phase_start(phase_name, parent_phase, num_steps)

        def step_complete(self, phase_name, step):
            return progress.step_complete(phase_name, step)

        def phase_finish(self, phase_name):
            progress.phase_finish(phase_name)

    return _Monitor()


def network_flags(trt: ModuleType) -> int:
    """``create_network`` flags: strongly typed (TensorRT 11 always is and ignores the flag)."""
    if int(trt.__version__.split(".")[0]) >= 11:
        return 0
    return 1 << int(trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED)


def typed_graph(onnx_path: Path, precision: str, fp32_softmax: bool) -> tuple[bytes, str]:
    """The ONNX bytes to build ``precision`` from, and a line describing their typing."""
    if precision == "fp32":
        return onnx_path.read_bytes(), "float32 graph"
    from dvlt_core.export.mixed_precision import mixed_precision_bytes

    data, report = mixed_precision_bytes(onnx_path, precision, fp32_softmax=fp32_softmax)
    return data, report.summary()


def build_engine(
    onnx_path: str | Path,
    *,
    precision: str,
    views: ViewRange,
    progress: BuildProgress | None = None,
    timing_cache: Path | None = None,
    workspace_bytes: int = DEFAULT_WORKSPACE_BYTES,
    optimization_level: int = 3,
    fp32_softmax: bool = False,
) -> bytes:
    """Parse ``onnx_path`` and return a serialized engine with one S profile."""
    if precision not in ENGINE_PRECISIONS:
        raise ValueError(f"precision must be one of {ENGINE_PRECISIONS}, got {precision!r}")
    trt = import_tensorrt()
    onnx_path = Path(onnx_path)
    graph_bytes, typing = typed_graph(onnx_path, precision, fp32_softmax)
    logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)
    network = builder.create_network(network_flags(trt))
    parser = trt.OnnxParser(network, logger)
    if not parser.parse(graph_bytes, str(onnx_path)):
        errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
        raise EngineBuildError(f"TensorRT cannot parse {onnx_path} ({precision}): {errors}")
    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, int(workspace_bytes))
    config.builder_optimization_level = optimization_level
    if precision == "fp32":
        config.clear_flag(trt.BuilderFlag.TF32)
    if progress is not None:
        progress.note(f"{onnx_path.name}: {network.num_layers} layers, {precision}: {typing}")
    profile = builder.create_optimization_profile()
    for i in range(network.num_inputs):
        tensor = network.get_input(i)
        shape = tuple(tensor.shape)
        if any(d < 0 for d in shape):
            profile.set_shape(tensor.name, *profile_shapes(shape, views))
    config.add_optimization_profile(profile)
    attach_timing_cache(config, timing_cache, progress)
    monitor = progress_monitor(trt, progress) if progress is not None else None
    if monitor is not None:
        config.progress_monitor = monitor
    serialized = builder.build_serialized_network(network, config)
    if serialized is None:
        if progress is not None and progress.cancelled:
            raise EngineBuildError(f"the build of {onnx_path.name} was cancelled")
        raise EngineBuildError(
            f"TensorRT failed to build an engine from {onnx_path} (see the TensorRT log above); "
            "try another precision or a larger --workspace-gb"
        )
    cache = config.get_timing_cache() if timing_cache is not None else None
    if cache is not None:
        data = bytes(cache.serialize())
        write_atomic(timing_cache, lambda p: p.write_bytes(data))
    return bytes(serialized)


def attach_timing_cache(config: Any, path: Path | None, progress: BuildProgress | None) -> None:
    """Use the timing cache at ``path``; start an empty one if TensorRT rejects the file
    (another GPU or TensorRT build wrote it), so a bad cache never blocks a build."""
    data = path.read_bytes() if path is not None and path.is_file() else b""
    cache = config.create_timing_cache(data)
    if cache is not None and config.set_timing_cache(cache, False):
        return
    if progress is not None:
        progress.note(f"timing cache {path} does not fit this GPU/TensorRT; starting anew")
    config.set_timing_cache(config.create_timing_cache(b""), False)


def ensure_engine(
    cache: EngineCache,
    key: EngineKey,
    build: Callable[[], bytes],
    *,
    on_mismatch: str = "rebuild",
    say: Callable[[str], None] = lambda _msg: None,
) -> bytes:
    """Verified engine bytes for ``key``: from the cache, or built with ``build`` and stored.

    With ``on_mismatch="refuse"`` a missing, stale or corrupt entry raises
    :class:`EngineCacheError` with the reason instead of building.
    """
    if on_mismatch not in MISMATCH_POLICIES:
        raise ValueError(f"on_mismatch must be one of {MISMATCH_POLICIES}, got {on_mismatch!r}")
    try:
        return cache.load(key)
    except EngineCacheError as exc:
        if on_mismatch == "refuse":
            raise EngineCacheError(
                f"{exc}. Build the engines on this machine with `dvlt-export --checkpoint SRC "
                f"--out DIR --precision {key.precision} ...` or select on_mismatch='rebuild'"
            ) from exc
        if not isinstance(exc, EngineMissingError):
            cache.remove(key)
        say(f"building the {key.graph} engine ({exc})")
    start = time.monotonic()
    data = build()
    seconds = time.monotonic() - start
    cache.store(key, data, build_seconds=seconds)
    say(f"{key.graph} engine built in {seconds:.0f} s, cached as {cache.engine_path(key).name}")
    return data


def ensure_engines(
    manifest: ExportManifest,
    cache: EngineCache,
    *,
    precision: str,
    device: torch.device | str = "cuda",
    on_mismatch: str = "rebuild",
    workspace_bytes: int = DEFAULT_WORKSPACE_BYTES,
    fp32_softmax: bool = False,
    say: Callable[[str], None] = lambda _msg: None,
    progress_stream: TextIO | None = None,
) -> dict[str, tuple[EngineKey, bytes]]:
    """Engines of every graph of ``manifest`` for the current GPU: graph name → (key, bytes)."""
    trt = import_tensorrt()
    gpu = current_gpu(device)
    check_precision(precision, gpu)
    timing = cache.timing_cache_path(gpu.name, gpu.compute_capability, trt.__version__)
    engines = {}
    for graph in (manifest.encoder, *manifest.steps.values(), manifest.decoder):
        key = engine_key(manifest, graph, gpu, trt.__version__, precision,
                         fp32_softmax=fp32_softmax)

        def build(graph: GraphFile = graph) -> bytes:
            return build_engine(
                manifest.path(graph),
                precision=precision,
                views=manifest.views,
                progress=BuildProgress(graph_name(graph), progress_stream),
                timing_cache=timing,
                workspace_bytes=workspace_bytes,
                fp32_softmax=fp32_softmax,
            )

        engines[key.graph] = (key, ensure_engine(cache, key, build, on_mismatch=on_mismatch,
                                                 say=say))
    return engines
