"""Parsing and checking a torch device name: the one place that turns a user's device
(``cpu``, ``cuda[:N]`` or ``auto``) into a :class:`torch.device`."""

from __future__ import annotations

import torch


def resolve_device(device: str | torch.device) -> torch.device:
    """Parse ``device`` and check that it exists here; ``auto`` is ``cuda`` when PyTorch
    sees a GPU, else ``cpu``."""
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    try:
        dev = torch.device(device)
    except RuntimeError:
        raise ValueError(f"invalid device {device!r}; use 'cpu', 'cuda[:N]' or 'auto'") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(
            f"device {device!r} requested but CUDA is not available in this PyTorch build or "
            "machine; use device='cpu'"
        )
    if dev.type not in ("cpu", "cuda"):
        raise ValueError(f"unsupported device {device!r}; use 'cpu', 'cuda[:N]' or 'auto'")
    return dev
