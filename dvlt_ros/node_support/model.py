"""Loading the inference backend from the node's parameters, and what to say about it
(identity and licence) in diagnostics."""

from __future__ import annotations

import time
from dataclasses import dataclass

from dvlt_core.backends import InferenceBackend, create_backend
from dvlt_core.io.checkpoint import LICENCE_NOTICE, RELEASED_REPO

OTHER_LICENCE = "weights from a user checkpoint: see that checkpoint's licence"
NO_WEIGHTS = "no checkpoint: the backend was built without released weights"


@dataclass(frozen=True)
class ModelSettings:
    """The parameters that select the model; a change of any of them reloads it."""

    backend: str
    checkpoint: str
    device: str
    precision: str


@dataclass(frozen=True)
class LoadedModel:
    backend: InferenceBackend
    identity: str
    licence: str
    load_ms: float


def resolve_device(device: str) -> str:
    """``auto`` -> ``cuda`` when PyTorch sees a GPU, else ``cpu``; other names unchanged."""
    if device != "auto":
        return device
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def is_released(checkpoint: str) -> bool:
    """Whether ``checkpoint`` names the released weights (non-commercial licence)."""
    return checkpoint.split("@")[0].strip().lower() == RELEASED_REPO or (
        f"/{RELEASED_REPO}/" in checkpoint.lower()
    )


def describe(backend: InferenceBackend, checkpoint: str) -> tuple[str, str]:
    """(identity, licence) of a backend: checkpoint, runtime, architecture, device."""
    parts = [checkpoint or "(no checkpoint)", backend.name, f"device {backend.device}"]
    model = getattr(backend, "model", None)
    config = getattr(model, "config", None)
    if config is not None:
        parts.insert(2, f"{config.patch_embed}, img_size {config.img_size}")
    precision = getattr(backend, "precision", None)
    if precision:
        parts.append(precision)
    if not checkpoint:
        licence = NO_WEIGHTS
    else:
        licence = LICENCE_NOTICE if is_released(checkpoint) else OTHER_LICENCE
    return ", ".join(parts), licence


def load_backend(settings: ModelSettings) -> LoadedModel:
    """Build the backend; raises (CheckpointError, ValueError, OSError, ...) with the
    loader's message when it cannot."""
    start = time.perf_counter()
    backend = create_backend(
        settings.backend,
        checkpoint=settings.checkpoint or None,
        device=resolve_device(settings.device),
        precision=settings.precision,
    )
    identity, licence = describe(backend, settings.checkpoint)
    return LoadedModel(backend, identity, licence, (time.perf_counter() - start) * 1e3)
