"""Running the model at a named precision: ``"fp32"`` (default), ``"bf16"`` or ``"fp16"``.

Reduced precision is autocast over the trunk (weights stay float32). The decoder output stages
and the camera head always run in float32 with autocast disabled for the current device type,
so depth/confidence exponentials are computed in float32 and cannot overflow the half range.

On a CPU, ``"bf16"`` pays off only with native bf16 matrix instructions (AMX or AVX512-BF16,
:func:`cpu_has_native_bf16`); elsewhere oneDNN emulates them and bf16 is several times slower
than fp32 (measured 4x on an AVX2 EPYC). Its error against fp32 is bounded by
:data:`BF16_REL_L2_TOLERANCE` on every output.
"""

from __future__ import annotations

import contextlib

import torch
from torch import Tensor, nn

#: The precisions every part of the project accepts, in one spelling.
PRECISIONS = ("fp32", "bf16", "fp16")
#: Relative L2 error of each bf16 output against fp32: 8 units of bf16 rounding (2^-8), room for
#: the error of ~40 trunk blocks growing like a random walk (sqrt(40) ≈ 6.3 units); measured
#: 0.7-1.7 % (3.5 units at most) on the released and small reference cases.
BF16_REL_L2_TOLERANCE = 8 * 2.0**-8
_AUTOCAST_DTYPES: dict[str, torch.dtype | None] = {
    "fp32": None,
    "bf16": torch.bfloat16,
    "fp16": torch.float16,
}


def cpu_has_native_bf16() -> bool:
    """Whether this CPU has bf16 matrix instructions (AMX tiles or AVX512-BF16)."""
    return bool(torch.cpu._is_amx_tile_supported() or torch.cpu._is_avx512_bf16_supported())


def autocast_for(precision: str, device_type: str) -> contextlib.AbstractContextManager:
    """Autocast context for ``precision`` on ``device_type`` (a no-op for ``"fp32"``)."""
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {sorted(PRECISIONS)}, got {precision!r}")
    dtype = _AUTOCAST_DTYPES[precision]
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device_type, dtype=dtype)


def run_model(
    model: nn.Module,
    images: Tensor,
    *,
    precision: str = "fp32",
    device: str | torch.device | None = None,
    num_steps: int | None = None,
) -> dict[str, Tensor]:
    """Inference (``torch.inference_mode``) of ``model`` at ``precision`` on ``device``.

    ``device`` defaults to the model's device; the model (in place) and the images are moved
    there. Outputs are float32 tensors on that device.
    """
    device = torch.device(device) if device is not None else next(model.parameters()).device
    model.to(device)
    with torch.inference_mode(), autocast_for(precision, device.type):
        return model(images.to(device), num_steps=num_steps)
