"""Export to ONNX (encoder, one loop step, decoder) and TensorRT engines, with K kept a
run-time argument. ``tensorrt`` and ``onnx`` are imported only where they are used."""

from dvlt_core.export.engine_cache import EngineCache, EngineCacheError, EngineKey
from dvlt_core.export.manifest import (
    ExportError,
    ExportManifest,
    ViewRange,
    load_manifest,
    model_fingerprint,
)
from dvlt_core.export.onnx_export import check_graph, export_onnx
from dvlt_core.export.parity_gate import (
    ONNX_FP32,
    TOLERANCES,
    ParityError,
    ParityReport,
    Tolerance,
    check_backend,
    compare_outputs,
)

__all__ = [
    "ONNX_FP32",
    "TOLERANCES",
    "EngineCache",
    "EngineCacheError",
    "EngineKey",
    "ExportError",
    "ExportManifest",
    "ParityError",
    "ParityReport",
    "Tolerance",
    "ViewRange",
    "check_backend",
    "check_graph",
    "compare_outputs",
    "export_onnx",
    "load_manifest",
    "model_fingerprint",
]
