"""ONNX Runtime backend: the exported encoder, a host loop over the step graph, the decoder.

Runs an export folder written by ``dvlt-export`` (``checkpoint`` of :func:`create_backend` is
that folder). Providers: ``cpu`` (default on CPU), ``cuda`` (``onnxruntime-gpu``) and
``tensorrt`` (ONNX Runtime's TensorRT execution provider, which builds and caches its own
engines). ``fp16``/``bf16`` run the mixed-precision graphs derived from the float32 export
(:mod:`dvlt_core.export.mixed_precision`); on the CPU provider fp16 is for checking those graphs
(ONNX Runtime has few fp16 CPU kernels and casts around the rest), and bf16 needs the TensorRT
provider. A session that ONNX Runtime moved to another provider is refused. Tokens
stay in ONNX Runtime values on the run device between steps (I/O binding), so the loop makes no
host round trips. K changes per call.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from dvlt_core.backends.base import BackendOutput, StageTimings, register_backend
from dvlt_core.backends.exported import ExportedGraphsBackend, export_folder
from dvlt_core.export.manifest import GraphFile, load_manifest
from dvlt_core.export.stages import ENCODER_OUTPUTS, STEP_OUTPUTS
from dvlt_core.model.precision import PRECISIONS

EXECUTION_PROVIDERS = {
    "cpu": "CPUExecutionProvider",
    "cuda": "CUDAExecutionProvider",
    "tensorrt": "TensorrtExecutionProvider",
}


class OnnxRuntimeUnavailableError(RuntimeError):
    """ONNX Runtime is not installed; the message says how to get it."""


def import_onnxruntime() -> Any:
    try:
        import onnxruntime
    except ImportError as exc:
        raise OnnxRuntimeUnavailableError(
            "the onnxruntime backend needs ONNX Runtime: install the 'export' extra "
            "(pip install 'dvlt_ros[export]'), or onnxruntime-gpu for the CUDA/TensorRT providers"
        ) from exc
    return onnxruntime


def _shape_text(shape: tuple[int, ...]) -> str:
    return "x".join(str(d) for d in shape)


def provider_chain(
    execution_provider: str,
    *,
    device: torch.device,
    precision: str,
    available: list[str],
    profiles: dict[str, tuple[tuple[int, ...], ...]] | None = None,
    cache_dir: Path | None = None,
) -> list[tuple[str, dict[str, Any]]]:
    """ONNX Runtime providers (with options) for one session, best first, CPU last.

    ``profiles`` maps each dynamic input to its (min, opt, max) shapes for the TensorRT
    provider. Raises ``ValueError`` naming what to install or change.
    """
    if execution_provider not in EXECUTION_PROVIDERS:
        raise ValueError(
            f"execution_provider must be one of {sorted(EXECUTION_PROVIDERS)}, "
            f"got {execution_provider!r}"
        )
    wanted = EXECUTION_PROVIDERS[execution_provider]
    if wanted not in available:
        raise ValueError(
            f"{wanted} is not available in this ONNX Runtime (available: {', '.join(available)});"
            " install onnxruntime-gpu (CUDA/TensorRT) or use execution_provider='cpu'"
        )
    on_gpu = execution_provider != "cpu"
    if on_gpu != (device.type == "cuda"):
        raise ValueError(
            f"execution_provider {execution_provider!r} runs on "
            f"{'a CUDA device' if on_gpu else 'the CPU'}, but device is {device}"
        )
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {PRECISIONS}, got {precision!r}")
    if precision == "bf16" and execution_provider != "tensorrt":
        raise ValueError(
            "bf16 with ONNX Runtime needs execution_provider='tensorrt' (the CPU and CUDA "
            "providers lack bf16 kernels for parts of the graphs): use precision='fp32', or "
            "'fp16' (on the CPU only to check the reduced-precision graphs)"
        )
    cpu = ("CPUExecutionProvider", {})
    if not on_gpu:
        return [cpu]
    device_id = device.index or 0
    cuda = ("CUDAExecutionProvider", {"device_id": device_id})
    if execution_provider == "cuda":
        return [cuda, cpu]
    options: dict[str, Any] = {
        "device_id": device_id,
        "trt_engine_cache_enable": cache_dir is not None,
        "trt_timing_cache_enable": cache_dir is not None,
    }
    if precision != "fp32":  # only then: ONNX Runtime before 1.23 rejects trt_bf16_enable
        options[f"trt_{precision}_enable"] = True
    if cache_dir is not None:
        options["trt_engine_cache_path"] = str(cache_dir)
        options["trt_timing_cache_path"] = str(cache_dir)
    if profiles:
        for i, key in enumerate(("trt_profile_min_shapes", "trt_profile_opt_shapes",
                                 "trt_profile_max_shapes")):
            options[key] = ",".join(f"{n}:{_shape_text(s[i])}" for n, s in profiles.items())
    providers = [("TensorrtExecutionProvider", options)]
    if "CUDAExecutionProvider" in available:
        providers.append(cuda)
    return [*providers, cpu]


def check_provider(session: Any, wanted: str, graph: str) -> None:
    """Raise if ONNX Runtime fell back from ``wanted`` to another provider for ``graph``.

    ONNX Runtime prints an "EP Error" and silently retries with the remaining providers when
    the first one fails to initialise (a bad option, a missing library, an engine build error).
    """
    used = session.get_providers()
    if not used or used[0] != wanted:
        raise RuntimeError(
            f"ONNX Runtime could not use {wanted} for {graph} (it runs on {', '.join(used)}); "
            "see the ONNX Runtime error printed above, check the onnxruntime-gpu, CUDA and "
            "TensorRT installation, or choose another execution_provider"
        )


class OnnxRuntimeBackend(ExportedGraphsBackend):
    """Host loop over the ONNX graphs of an export folder (see the module docstring)."""

    name = "onnxruntime"

    def __init__(
        self,
        export_dir: str | Path,
        *,
        device: str | torch.device = "cpu",
        precision: str = "fp32",
        execution_provider: str | None = None,
        threads: int | None = None,
        trt_cache_dir: str | Path | None = None,
    ) -> None:
        ort = import_onnxruntime()
        self._ort = ort
        self.manifest = load_manifest(export_dir)
        self._device = torch.device(device)
        self.precision = precision
        provider = execution_provider or ("cuda" if self._device.type == "cuda" else "cpu")
        self.execution_provider = provider
        self._ort_device = ("cuda", self._device.index or 0) if provider != "cpu" else ("cpu", 0)
        cache_root = Path(trt_cache_dir) if trt_cache_dir else self.manifest.root / "ort_trt_cache"
        variant = precision
        if precision != "fp32":  # the typed graph also depends on the rules' version
            from dvlt_core.export.mixed_precision import MIXED_PRECISION_VERSION

            variant = f"{precision}-typed-v{MIXED_PRECISION_VERSION}"
        options = ort.SessionOptions()
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        if threads:
            options.intra_op_num_threads = int(threads)
        available = ort.get_available_providers()

        def session(graph: GraphFile, dynamic_input: str, shape: tuple[int, ...]):
            views = self.manifest.views
            profiles = {dynamic_input: tuple((1, s, *shape) for s in (views.min, views.opt,
                                                                       views.max))}
            # The TensorRT provider names its cached engines after tensor names only, so each
            # graph content and typing gets its own folder (created here: it makes one level).
            cache = cache_root / variant / graph.sha256[:16]
            if provider == "tensorrt":
                cache.mkdir(parents=True, exist_ok=True)
            providers = provider_chain(provider, device=self._device, precision=precision,
                                       available=available, profiles=profiles, cache_dir=cache)
            names = [p for p, _ in providers]
            opts = [o for _, o in providers]
            created = ort.InferenceSession(self._graph_source(graph), options,
                                           providers=names, provider_options=opts)
            check_provider(created, names[0], graph.file)
            return created

        m = self.manifest
        token_shape = (m.num_tokens, m.embed_dim)
        self._encoder = session(m.encoder, "images", (3, m.height, m.width))
        self._steps = {block: session(g, "tokens", token_shape) for block, g in m.steps.items()}
        self._decoder = session(m.decoder, "tokens", token_shape)

    def _graph_source(self, graph: GraphFile) -> str | bytes:
        """The float32 graph's path, or the bytes of its mixed-precision version."""
        path = self.manifest.path(graph)
        if self.precision == "fp32":
            return str(path)
        from dvlt_core.export.mixed_precision import mixed_precision_bytes

        return mixed_precision_bytes(path, self.precision)[0]

    @property
    def sessions(self) -> dict[str, Any]:
        """The ONNX Runtime sessions by graph (``encoder``, ``step<block>``, ``decoder``)."""
        steps = {f"step{block}": s for block, s in self._steps.items()}
        return {"encoder": self._encoder, **steps, "decoder": self._decoder}

    def _run(self, session: Any, feeds: dict[str, Any], outputs: tuple[str, ...]) -> list[Any]:
        binding = session.io_binding()
        wanted = {i.name for i in session.get_inputs()}
        for name, value in feeds.items():
            if name in wanted:  # a step graph without gates has no t inputs
                binding.bind_ortvalue_input(name, value)
        for name in outputs:
            binding.bind_output(name, *self._ort_device)
        session.run_with_iobinding(binding)
        return binding.get_outputs()

    def _scalar(self, value: float) -> Any:
        return self._ort.OrtValue.ortvalue_from_numpy(np.array(value, dtype=np.float32))

    def infer(self, images: torch.Tensor, num_steps: int | None = None) -> BackendOutput:
        self.manifest.check_images(images)
        plan = self.manifest.plan(num_steps)
        start = time.perf_counter()
        host = np.ascontiguousarray(images.detach().to("cpu", torch.float32).numpy())
        x = self._ort.OrtValue.ortvalue_from_numpy(host, *self._ort_device)
        t_in = time.perf_counter()
        (tokens,) = self._run(self._encoder, {"images": x}, ENCODER_OUTPUTS)
        t_enc = time.perf_counter()
        step_ms = []
        t_prev = t_enc
        for (t_now, t_next), block in zip(plan.t_pairs.tolist(), plan.block_indices, strict=True):
            feeds = {"tokens": tokens, "t_now": self._scalar(t_now), "t_next": self._scalar(t_next)}
            (tokens,) = self._run(self._steps[block], feeds, STEP_OUTPUTS)
            now = time.perf_counter()
            step_ms.append((now - t_prev) * 1e3)
            t_prev = now
        values = self._run(self._decoder, {"tokens": tokens}, self.manifest.outputs)
        t_dec = time.perf_counter()
        out = {n: torch.from_numpy(v.numpy()) for n, v in zip(self.manifest.outputs, values,
                                                              strict=True)}
        end = time.perf_counter()
        return BackendOutput.from_outputs(
            out,
            StageTimings(
                encode_ms=(t_enc - t_in) * 1e3,
                step_ms=step_ms,
                decode_ms=(t_dec - t_prev) * 1e3,
                transfer_ms=((t_in - start) + (end - t_dec)) * 1e3,
                total_ms=(end - start) * 1e3,
            ),
        )


def _create_onnxruntime_backend(
    checkpoint: Any = None,
    device: str = "cpu",
    precision: str = "fp32",
    *,
    export_dir: str | Path | None = None,
    execution_provider: str | None = None,
    threads: int | None = None,
    trt_cache_dir: str | Path | None = None,
) -> OnnxRuntimeBackend:
    folder = export_folder("onnxruntime", checkpoint, export_dir)
    return OnnxRuntimeBackend(folder, device=device, precision=precision,
                              execution_provider=execution_provider, threads=threads,
                              trt_cache_dir=trt_cache_dir)


register_backend("onnxruntime", _create_onnxruntime_backend)
