"""The interface every inference backend implements, and the registry that builds them."""

from __future__ import annotations

import time
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch


@dataclass
class StageTimings:
    """Wall-clock milliseconds of one inference, measured with device synchronisation."""

    encode_ms: float
    step_ms: list[float]
    decode_ms: float
    total_ms: float
    transfer_ms: float = 0.0

    @property
    def num_steps(self) -> int:
        return len(self.step_ms)

    def as_dict(self) -> dict[str, Any]:
        return {
            "encode_ms": self.encode_ms,
            "step_ms": list(self.step_ms),
            "decode_ms": self.decode_ms,
            "transfer_ms": self.transfer_ms,
            "total_ms": self.total_ms,
        }


@dataclass
class BackendOutput:
    """Raw network predictions as float32 CPU tensors (shapes for B=1, S views, H×W input).

    ``rays`` (1,S,H,W,6), ``depth`` (1,S,H,W,1), ``depth_conf`` (1,S,H,W),
    ``world_points`` (1,S,H,W,3) (rays unprojected with depth), ``pose_enc`` (1,S,9) (None
    for a model without a camera head). ``descriptors`` (1,S,C): unit-length place
    descriptors of the encoder's patch tokens (:func:`dvlt_core.model.descriptor.place_descriptors`)
    from backends that have an encoder and expose it (``torch``), else None.
    """

    rays: torch.Tensor
    depth: torch.Tensor
    depth_conf: torch.Tensor
    world_points: torch.Tensor
    pose_enc: torch.Tensor | None
    timings: StageTimings
    descriptors: torch.Tensor | None = None

    @classmethod
    def from_outputs(cls, outputs: dict[str, torch.Tensor], timings: StageTimings) -> BackendOutput:
        """From the network's named outputs (``pose_enc``, ``descriptors`` optional) already
        on the CPU."""
        return cls(
            rays=outputs["rays"],
            depth=outputs["depth"],
            depth_conf=outputs["depth_conf"],
            world_points=outputs["world_points"],
            pose_enc=outputs.get("pose_enc"),
            timings=timings,
            descriptors=outputs.get("descriptors"),
        )


class InferenceBackend(ABC):
    """Runs the DVLT network on one batch of views with K loop steps."""

    name: str = "abstract"
    #: True when the backend's geometry is in metres (a model trained for metric scale, or
    #: the ground truth of a synthetic scene). DVLT predicts up to scale: False.
    metric: bool = False

    @property
    @abstractmethod
    def device(self) -> torch.device:
        """Where the network runs."""

    @property
    @abstractmethod
    def img_size(self) -> int:
        """The longer image side the network was trained for (preprocessing target)."""

    @property
    @abstractmethod
    def default_num_steps(self) -> int:
        """K used when ``infer`` is called without ``num_steps``."""

    @abstractmethod
    def infer(self, images: torch.Tensor, num_steps: int | None = None) -> BackendOutput:
        """Run the network on ``images`` (1, S, 3, H, W) float32 in [0, 1], H and W
        multiples of 14, looping ``num_steps`` times (default :attr:`default_num_steps`)."""


def check_one_scene(images: torch.Tensor) -> None:
    """Refuse anything but one scene of views, (1, S, 3, H, W)."""
    if images.dim() != 5 or images.shape[0] != 1:
        raise ValueError(
            f"images must be (1, S, 3, H, W), got {tuple(images.shape)}; "
            "run one scene at a time"
        )


def device_clock(device: torch.device) -> float:
    """``time.perf_counter()`` after the work queued on ``device`` has finished."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return time.perf_counter()


BackendFactory = Callable[..., InferenceBackend]
_REGISTRY: dict[str, BackendFactory] = {}


def register_backend(name: str, factory: BackendFactory) -> None:
    """Make ``create_backend(name, ...)`` call ``factory(checkpoint=..., device=...,
    precision=..., **options)``."""
    _REGISTRY[name] = factory


def available_backends() -> list[str]:
    return sorted(_REGISTRY)


def create_backend(
    name: str,
    checkpoint: Any = None,
    device: str = "cpu",
    precision: str | None = None,
    **options: Any,
) -> InferenceBackend:
    """Build a registered backend; ``checkpoint`` is whatever that backend loads from
    (for ``torch``: a checkpoint source for :func:`dvlt_core.io.load_model`). ``precision``
    defaults to the backend's own default (fp32; fp16 for ``tensorrt``)."""
    try:
        factory = _REGISTRY[name]
    except KeyError:
        raise ValueError(
            f"unknown backend {name!r}; available: {', '.join(available_backends())}"
        ) from None
    if precision is not None:
        options["precision"] = precision
    return factory(checkpoint=checkpoint, device=device, **options)
