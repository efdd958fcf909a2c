"""What building a backend raises when the user's setup is wrong (a bad checkpoint, a failed
download, a damaged export folder or engine, a runtime that is not installed): commands turn
these into one line and exit status 2; anything else is a bug and keeps its traceback."""

from dvlt_core.backends.da3_backend import Da3UnavailableError
from dvlt_core.backends.onnxruntime_backend import OnnxRuntimeUnavailableError
from dvlt_core.export.engine_cache import EngineCacheError
from dvlt_core.export.manifest import ExportError
from dvlt_core.export.tensorrt_build import TensorRTUnavailableError
from dvlt_core.io.checkpoint import CheckpointError
from dvlt_core.io.download import DownloadError

BACKEND_SETUP_ERRORS: tuple[type[Exception], ...] = (
    CheckpointError,
    DownloadError,
    ExportError,
    EngineCacheError,
    OnnxRuntimeUnavailableError,
    TensorRTUnavailableError,
    Da3UnavailableError,
)
