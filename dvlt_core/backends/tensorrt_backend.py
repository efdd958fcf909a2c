"""TensorRT backend: encoder engine, a host loop over the step engine, decoder engine.

Engines come from the export folder's engine cache (built on first use, or refused with the
reason when ``on_mismatch="refuse"``); see :mod:`dvlt_core.export.engine_cache`. All tensors are
torch CUDA tensors whose addresses are handed to TensorRT (``set_tensor_address``) once per
number of views S, so the stages exchange no host copies. A step reads the token buffer and
writes a second one, which is copied back on the device (one copy of the tokens per step):
every engine keeps a single binding per S, so a step captured into a CUDA graph never runs
with addresses rebound after its capture. The step times are written into two device scalars
before each step, so K changes per call without a rebuild. The engines run in turn on one
stream, so they share one activation buffer (the largest any of them needs) instead of
holding one each. With ``cuda_graphs=True`` each block's step (engine and copy) is captured
once per S and replayed, which removes the per-step launch overhead. Stage times come from
CUDA events, so timing does not stall the loop.
"""

from __future__ import annotations

import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from dvlt_core.backends.base import BackendOutput, StageTimings, register_backend
from dvlt_core.backends.exported import ExportedGraphsBackend, export_folder
from dvlt_core.export.engine_cache import ENGINE_PRECISIONS, EngineCache, EngineCacheError
from dvlt_core.export.manifest import load_manifest
from dvlt_core.export.tensorrt_build import (
    DEFAULT_WORKSPACE_BYTES,
    TensorRTUnavailableError,
    ensure_engines,
    graph_name,
    import_tensorrt,
)


def _torch_dtype(trt: Any, dtype: Any) -> torch.dtype:
    table = {trt.float32: torch.float32, trt.float16: torch.float16, trt.int32: torch.int32,
             trt.int64: torch.int64, trt.bool: torch.bool, trt.bfloat16: torch.bfloat16}
    return table[dtype]


class _Engine:
    """One deserialised engine with its execution context and I/O names."""

    def __init__(self, trt: Any, runtime: Any, data: bytes, name: str) -> None:
        self.name = name
        self.engine = runtime.deserialize_cuda_engine(data)
        if self.engine is None:
            raise EngineCacheError(
                f"TensorRT could not deserialise the {name} engine; delete the engine cache "
                "folder and let it rebuild"
            )
        # Activation memory comes from the backend, shared by all engines (they run in turn).
        self.context = self.engine.create_execution_context(
            trt.ExecutionContextAllocationStrategy.USER_MANAGED)
        if self.context is None:
            raise RuntimeError(f"TensorRT could not create an execution context for the {name} "
                               "engine; free GPU memory or use fewer views")
        names = [self.engine.get_tensor_name(i) for i in range(self.engine.num_io_tensors)]
        mode = trt.TensorIOMode.INPUT
        self.inputs = [n for n in names if self.engine.get_tensor_mode(n) == mode]
        self.outputs = [n for n in names if self.engine.get_tensor_mode(n) != mode]
        self.dtypes = {n: _torch_dtype(trt, self.engine.get_tensor_dtype(n)) for n in names}

    def bind(self, tensors: dict[str, torch.Tensor]) -> None:
        """Set shapes and addresses of the inputs and outputs this engine has."""
        for name, tensor in tensors.items():
            if name not in self.dtypes:
                continue  # e.g. t_next of a step without interval conditioning
            if tensor.dtype != self.dtypes[name] or not tensor.is_contiguous():
                raise RuntimeError(
                    f"{self.name}: tensor {name} must be contiguous {self.dtypes[name]}, got "
                    f"{tensor.dtype}"
                )
            if name in self.inputs and not self.context.set_input_shape(name, tuple(tensor.shape)):
                raise RuntimeError(f"{self.name}: shape {tuple(tensor.shape)} of {name} is "
                                   "outside the engine's profile")
            if name in self.outputs and self.output_shape(name) != tuple(tensor.shape):
                raise RuntimeError(f"{self.name}: output {name} has shape "
                                   f"{self.output_shape(name)}, its buffer {tuple(tensor.shape)}")
            if not self.context.set_tensor_address(name, tensor.data_ptr()):
                raise RuntimeError(f"{self.name}: TensorRT refused the address of {name}")

    @property
    def device_memory_bytes(self) -> int:
        """Activation memory the context needs at the largest profile shape."""
        return int(self.engine.device_memory_size_v2)

    def use_memory(self, buffer: torch.Tensor) -> None:
        """Run on ``buffer`` (at least :attr:`device_memory_bytes` bytes) as activation memory."""
        self.context.set_device_memory(buffer.data_ptr(), buffer.numel() * buffer.element_size())

    def output_shape(self, name: str) -> tuple[int, ...]:
        return tuple(self.context.get_tensor_shape(name))

    def run(self, stream: torch.cuda.Stream) -> None:
        if not self.context.execute_async_v3(stream.cuda_stream):
            raise RuntimeError(f"TensorRT failed to run the {self.name} engine")


@dataclass
class _ViewState:
    """Device buffers (and captured step graphs) for one number of views S."""

    num_views: int
    images: torch.Tensor
    tokens: torch.Tensor
    tokens_next: torch.Tensor
    t_now: torch.Tensor
    t_next: torch.Tensor
    outputs: dict[str, torch.Tensor]
    graphs: dict[int, torch.cuda.CUDAGraph] = field(default_factory=dict)  # by block


class TensorRTBackend(ExportedGraphsBackend):
    """Runs the engines of an export folder on one CUDA device (see the module docstring)."""

    name = "tensorrt"

    def __init__(
        self,
        export_dir: str | Path,
        *,
        device: str | torch.device = "cuda",
        precision: str = "fp16",
        engine_dir: str | Path | None = None,
        on_mismatch: str = "rebuild",
        cuda_graphs: bool = True,
        workspace_bytes: int = DEFAULT_WORKSPACE_BYTES,
        fp32_softmax: bool = False,
        say: Callable[[str], None] = lambda _msg: None,
    ) -> None:
        if precision not in ENGINE_PRECISIONS:
            raise ValueError(f"precision must be one of {ENGINE_PRECISIONS}, got {precision!r}")
        self.manifest = load_manifest(export_dir)  # a bad folder is refused on any machine
        trt = import_tensorrt()
        dev = torch.device(device)
        if dev.type != "cuda" or not torch.cuda.is_available():
            raise TensorRTUnavailableError(
                f"the tensorrt backend runs on a CUDA device, got device={device!r} "
                f"(CUDA available: {torch.cuda.is_available()}); use the 'onnxruntime' or "
                "'torch' backend on the CPU"
            )
        self._device = torch.device("cuda", dev.index if dev.index is not None
                                    else torch.cuda.current_device())
        self.precision = precision
        self.cuda_graphs = cuda_graphs
        self.cache = EngineCache(engine_dir or self.manifest.root / "engines")
        self._trt = trt
        # TensorRT builds and deserialises on the calling thread's current CUDA device.
        with torch.cuda.device(self._device):
            engines = ensure_engines(self.manifest, self.cache, precision=precision,
                                     device=self._device, on_mismatch=on_mismatch,
                                     workspace_bytes=workspace_bytes, fp32_softmax=fp32_softmax,
                                     say=say)
            self.engine_keys = {name: key for name, (key, _) in engines.items()}
            self._runtime = trt.Runtime(trt.Logger(trt.Logger.WARNING))
            loaded = {name: _Engine(trt, self._runtime, data, name)
                      for name, (_, data) in engines.items()}
            self._stream = torch.cuda.Stream(self._device)
            scratch = max(e.device_memory_bytes for e in loaded.values())
            self._activations = torch.empty(max(scratch, 1), dtype=torch.uint8,
                                            device=self._device)
            for engine in loaded.values():
                engine.use_memory(self._activations)
        m = self.manifest
        self._encoder = loaded[graph_name(m.encoder)]
        self._steps = {block: loaded[graph_name(g)] for block, g in m.steps.items()}
        self._decoder = loaded[graph_name(m.decoder)]
        self._state: _ViewState | None = None

    def memory_report(self) -> dict[str, int]:
        """Bytes of activation memory per engine (by graph name: ``encoder``, ``step`` or
        ``step_blockNN``, ``decoder``) at the largest S, and ``shared``: the one buffer all
        engines run on (the largest of them)."""
        engines = (self._encoder, *self._steps.values(), self._decoder)
        report = {e.name: e.device_memory_bytes for e in engines}
        return {**report, "shared": self._activations.numel()}

    def _state_for(self, num_views: int) -> _ViewState:
        """Buffers for ``num_views``, bound to every engine (once per S)."""
        if self._state is not None and self._state.num_views == num_views:
            return self._state
        self._state = None  # free the old buffers and graphs first
        m = self.manifest
        dev = self._device
        images = torch.empty(1, num_views, 3, m.height, m.width, device=dev)
        token_dtype = self._encoder.dtypes["tokens"]
        tokens, tokens_next = (torch.empty(1, num_views, m.num_tokens, m.embed_dim,
                                           dtype=token_dtype, device=dev) for _ in range(2))
        t_now, t_next = torch.zeros((), device=dev), torch.zeros((), device=dev)
        self._encoder.bind({"images": images, "tokens": tokens})
        for engine in self._steps.values():
            engine.bind({"tokens": tokens, "t_now": t_now, "t_next": t_next,
                         "tokens_out": tokens_next})
        self._decoder.bind({"tokens": tokens})
        outputs = {
            name: torch.empty(self._decoder.output_shape(name),
                              dtype=self._decoder.dtypes[name], device=dev)
            for name in m.outputs
        }
        self._decoder.bind(outputs)
        self._state = _ViewState(num_views, images, tokens, tokens_next, t_now, t_next, outputs)
        return self._state

    def _step(self, state: _ViewState, block: int) -> None:
        """One loop step on the current stream: the engine, then the tokens copied back."""
        self._steps[block].run(self._stream)
        state.tokens.copy_(state.tokens_next)

    def _run_step(self, state: _ViewState, block: int) -> None:
        graph = state.graphs.get(block)
        if graph is not None:
            graph.replay()
            return
        self._step(state, block)  # the first run also does TensorRT's deferred setup
        if self.cuda_graphs:
            self._capture(state, block)

    def _capture(self, state: _ViewState, block: int) -> None:
        """Capture ``block``'s step (already run once for this S) into a CUDA graph."""
        graph = torch.cuda.CUDAGraph()
        try:
            self._stream.synchronize()
            with torch.cuda.graph(graph, stream=self._stream, capture_error_mode="thread_local"):
                self._step(state, block)
        except RuntimeError as exc:
            warnings.warn(
                f"CUDA graph capture of the TensorRT step failed ({exc}); running the loop "
                "without CUDA graphs",
                stacklevel=3,
            )
            self.cuda_graphs = False
            return
        state.graphs[block] = graph

    @torch.inference_mode()
    def infer(self, images: torch.Tensor, num_steps: int | None = None) -> BackendOutput:
        num_views = self.manifest.check_images(images)
        plan = self.manifest.plan(num_steps)
        start = time.perf_counter()
        # CUDA images may still be written on the caller's stream.
        self._stream.wait_stream(torch.cuda.current_stream(self._device))
        with torch.cuda.device(self._device), torch.cuda.stream(self._stream):
            state = self._state_for(num_views)
            state.images.copy_(images.to(torch.float32), non_blocking=False)
            t_pairs = plan.t_pairs.to(self._device)
            events = [torch.cuda.Event(enable_timing=True) for _ in range(len(plan) + 3)]
            events[0].record(self._stream)
            self._encoder.run(self._stream)
            events[1].record(self._stream)
            for i, block in enumerate(plan.block_indices):
                state.t_now.copy_(t_pairs[i, 0])
                state.t_next.copy_(t_pairs[i, 1])
                self._run_step(state, block)
                events[i + 2].record(self._stream)
            self._decoder.run(self._stream)
            events[-1].record(self._stream)
            host = {name: t.float().cpu() for name, t in state.outputs.items()}
        end = time.perf_counter()
        gpu_ms = [events[i].elapsed_time(events[i + 1]) for i in range(len(events) - 1)]
        total_ms = (end - start) * 1e3
        return BackendOutput.from_outputs(
            host,
            StageTimings(
                encode_ms=gpu_ms[0],
                step_ms=gpu_ms[1:-1],
                decode_ms=gpu_ms[-1],
                transfer_ms=max(0.0, total_ms - sum(gpu_ms)),
                total_ms=total_ms,
            ),
        )


def _create_tensorrt_backend(
    checkpoint: Any = None,
    device: str = "cuda",
    precision: str = "fp16",
    *,
    export_dir: str | Path | None = None,
    engine_dir: str | Path | None = None,
    on_mismatch: str = "rebuild",
    cuda_graphs: bool = True,
    fp32_softmax: bool = False,
) -> TensorRTBackend:
    folder = export_folder("tensorrt", checkpoint, export_dir)
    return TensorRTBackend(folder, device=device, precision=precision, engine_dir=engine_dir,
                           on_mismatch=on_mismatch, cuda_graphs=cuda_graphs,
                           fp32_softmax=fp32_softmax)


register_backend("tensorrt", _create_tensorrt_backend)
