"""What the backends that run an export folder (``onnxruntime``, ``tensorrt``) share."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from dvlt_core.backends.base import InferenceBackend
from dvlt_core.export.manifest import ExportManifest


class ExportedGraphsBackend(InferenceBackend):
    """An :class:`InferenceBackend` whose sizes and default K come from an export manifest.

    Subclasses set ``manifest`` and ``_device`` before use."""

    manifest: ExportManifest
    _device: torch.device

    @property
    def device(self) -> torch.device:
        return self._device

    @property
    def img_size(self) -> int:
        return self.manifest.img_size

    @property
    def default_num_steps(self) -> int:
        return self.manifest.model_config.default_num_steps


def export_folder(backend: str, checkpoint: Any, export_dir: str | Path | None) -> Any:
    """The export folder a factory was given (``export_dir`` or ``checkpoint``), or a
    ``ValueError`` saying what to pass."""
    folder = export_dir or checkpoint
    if folder is None:
        raise ValueError(
            f"the {backend} backend runs an export folder: pass checkpoint=<folder written by "
            "`dvlt-export` (--onnx-only is enough for onnxruntime)>"
        )
    return folder
