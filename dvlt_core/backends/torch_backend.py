"""Eager PyTorch backend: encode, a host loop over the model's steps, decode."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from dvlt_core.backends.base import (
    BackendOutput,
    InferenceBackend,
    StageTimings,
    check_one_scene,
    device_clock,
    register_backend,
)
from dvlt_core.device import resolve_device
from dvlt_core.model import PRECISIONS, DVLTModel, autocast_for
from dvlt_core.model.compilation import compile_model
from dvlt_core.model.descriptor import place_descriptors
from dvlt_core.model.precision import cpu_has_native_bf16


class TorchBackend(InferenceBackend):
    """Runs a :class:`DVLTModel` in eager mode.

    ``precision`` "fp32" runs everything in float32 (TF32 matmuls follow PyTorch's global
    setting). "bf16"/"fp16" run the stages under CUDA autocast; the model's heads keep
    their own float32 parts. On CPU, "bf16" (CPU autocast, within
    ``BF16_REL_L2_TOLERANCE`` of fp32) is accepted only where the CPU has bf16 matrix
    instructions (AMX or AVX512-BF16): elsewhere it is emulated and several times slower
    than fp32. "fp16" is refused on CPU.

    ``torch_compile`` (default off) compiles the model's transformer parts in place with
    :func:`dvlt_core.model.compilation.compile_model`; each new input shape then compiles
    once (minutes on a small CPU). It measured no faster than eager on the project's CPU.
    """

    name = "torch"

    def __init__(
        self,
        model: DVLTModel,
        device: str | torch.device = "cpu",
        precision: str = "fp32",
        *,
        torch_compile: bool = False,
    ) -> None:
        if precision not in PRECISIONS:
            raise ValueError(f"precision must be one of {sorted(PRECISIONS)}, got {precision!r}")
        dev = resolve_device(device)
        if dev.type == "cpu" and precision != "fp32":
            if precision != "bf16":
                raise ValueError(
                    f"precision {precision!r} needs a CUDA device; on CPU use precision='fp32'"
                )
            if not cpu_has_native_bf16():
                raise ValueError(
                    "precision 'bf16' needs a CUDA device or a CPU with bf16 matrix "
                    "instructions (AMX or AVX512-BF16), which this CPU lacks; use "
                    "precision='fp32'"
                )
        self._device = dev
        self.precision = precision
        self.model = model.eval().to(dev)
        self.torch_compile = torch_compile
        if torch_compile:
            compile_model(self.model)

    @property
    def device(self) -> torch.device:
        return self._device

    @property
    def img_size(self) -> int:
        return self.model.config.img_size

    @property
    def default_num_steps(self) -> int:
        return self.model.config.default_num_steps

    @torch.inference_mode()
    def infer(self, images: torch.Tensor, num_steps: int | None = None) -> BackendOutput:
        check_one_scene(images)
        plan = self.model.inference_plan(num_steps)
        image_hw = (images.shape[-2], images.shape[-1])
        start = device_clock(self._device)
        x = images.to(self._device, torch.float32, non_blocking=True)
        t_pairs = plan.t_pairs.to(self._device)
        t_in = device_clock(self._device)
        with autocast_for(self.precision, self._device.type):
            tokens = self.model.encode(x)
            descriptors = place_descriptors(tokens, self.model.num_special_tokens)
            t_enc = device_clock(self._device)
            step_ms = []
            t_prev = t_enc
            for i, block in enumerate(plan.block_indices):
                tokens = self.model.step(
                    tokens, t_pairs[i, 0], t_pairs[i, 1], block, image_hw=image_hw
                )
                t_now = device_clock(self._device)
                step_ms.append((t_now - t_prev) * 1e3)
                t_prev = t_now
            out = self.model.decode(tokens, image_hw)
            t_dec = device_clock(self._device)
        host = {k: v.float().cpu() for k, v in {**out, "descriptors": descriptors}.items()}
        end = device_clock(self._device)
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
    torch_compile: bool = False,
) -> TorchBackend:
    if model is None:
        from dvlt_core.io.checkpoint import load_model

        model = load_model(
            checkpoint, revision=revision, cache_dir=cache_dir, allow_pickle=allow_pickle
        )
    return TorchBackend(model, device=device, precision=precision, torch_compile=torch_compile)


register_backend("torch", _create_torch_backend)
