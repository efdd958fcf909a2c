"""Inference backends: one interface (:class:`InferenceBackend`), several runtimes.

Importing this package registers ``"torch"`` (eager PyTorch), ``"onnxruntime"`` and
``"tensorrt"`` (exported graphs) and ``"da3"`` (Depth Anything 3, a second model); their
runtimes and packages are imported only when a backend is created. Other runtimes
register themselves with :func:`register_backend`.
"""

from dvlt_core.backends import (  # noqa: F401 (registers)
    da3_backend,
    onnxruntime_backend,
    tensorrt_backend,
)
from dvlt_core.backends.base import (
    BackendOutput,
    InferenceBackend,
    StageTimings,
    available_backends,
    create_backend,
    register_backend,
)
from dvlt_core.backends.torch_backend import TorchBackend

__all__ = [
    "BackendOutput",
    "InferenceBackend",
    "StageTimings",
    "TorchBackend",
    "available_backends",
    "create_backend",
    "register_backend",
]
