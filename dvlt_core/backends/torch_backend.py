"""Eager PyTorch backend: encode, a host loop over the model's steps, decode."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import torch

from dvlt_core.backends.base import BackendOutput, InferenceBackend, StageTimings, register_backend
from dvlt_core.device import resolve_device
from dvlt_core.model import PRECISIONS, DVLTModel, autocast_for
from dvlt_core.model.descriptor import place_descriptors


class TorchBackend(InferenceBackend):
    """Runs a :class:`DVLTModel` in eager mode.

    ``precision`` "fp32" runs everything in float32 (TF32 matmuls follow PyTorch's global
    setting). "bf16"/"fp16" run the stages under CUDA autocast; the model's heads keep
    their own float32 parts. Reduced precision is refused on CPU: CPU autocast is slower
    than fp32 on most CPUs and its numerics are untested here.
    """

    name = "torch"

    def __init__(
        self, model: DVLTModel, device: str | torch.device = "cpu", precision: str = "fp32"
    ) -> None:
        if precision not in PRECISIONS:
            raise ValueError(f"precision must be one of {sorted(PRECISIONS)}, got {precision!r}")
        dev = resolve_device(device)
        if dev.type == "cpu" and precision != "fp32":
            raise ValueError(
                f"precision {precision!r} needs a CUDA device; on CPU use precision='fp32'"
            )
        self._device = dev
        self.precision = precision
        self.model = model.eval().to(dev)

    @property
    def device(self) -> torch.device:
        return self._device

    @property
    def img_size(self) -> int:
        return self.model.config.img_size

    @property
    def default_num_steps(self) -> int:
        return self.model.config.default_num_steps

    def _sync(self) -> float:
        if self._device.type == "cuda":
            torch.cuda.synchronize(self._device)
        return time.perf_counter()

    @torch.inference_mode()
    def infer(self, images: torch.Tensor, num_steps: int | None = None) -> BackendOutput:
        if images.dim() != 5 or images.shape[0] != 1:
            raise ValueError(
                f"images must be (1, S, 3, H, W), got {tuple(images.shape)}; "
                "run one scene at a time"
            )
        plan = self.model.inference_plan(num_steps)
        image_hw = (images.shape[-2], images.shape[-1])
        start = self._sync()
        x = images.to(self._device, torch.float32, non_blocking=True)
        t_pairs = plan.t_pairs.to(self._device)
        t_in = self._sync()
        with autocast_for(self.precision, self._device.type):
            tokens = self.model.encode(x)
            descriptors = place_descriptors(tokens, self.model.num_special_tokens)
            t_enc = self._sync()
            step_ms = []
            t_prev = t_enc
            for i, block in enumerate(plan.block_indices):
                tokens = self.model.step(
                    tokens, t_pairs[i, 0], t_pairs[i, 1], block, image_hw=image_hw
                )
                t_now = self._sync()
                step_ms.append((t_now - t_prev) * 1e3)
                t_prev = t_now
            out = self.model.decode(tokens, image_hw)
            t_dec = self._sync()
        host = {k: v.float().cpu() for k, v in {**out, "descriptors": descriptors}.items()}
        end = self._sync()
        timings = StageTimings(
            encode_ms=(t_enc - t_in) * 1e3,
            step_ms=step_ms,
            decode_ms=(t_dec - t_prev) * 1e3,
            transfer_ms=((t_in - start) + (end - t_dec)) * 1e3,
            total_ms=(end - start) * 1e3,
        )
        return BackendOutput.from_outputs(host, timings)


def _create_torch_backend(
    checkpoint: Any = None,
    device: str = "cpu",
    precision: str = "fp32",
    *,
    model: DVLTModel | None = None,
    revision: str | None = None,
    cache_dir: str | Path | None = None,
    allow_pickle: bool = False,
) -> TorchBackend:
    if model is None:
        from dvlt_core.io.checkpoint import load_model

        model = load_model(
            checkpoint, revision=revision, cache_dir=cache_dir, allow_pickle=allow_pickle
        )
    return TorchBackend(model, device=device, precision=precision)


register_backend("torch", _create_torch_backend)
