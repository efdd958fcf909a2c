"""Parity gate: compare a runtime's raw outputs with PyTorch's and fail when they drift.

Each output is compared element-wise with ``|a - b| <= atol_scale * max|b| + rtol * |b|``:
the absolute part scales with the output's range, so one table serves checkpoints with
different depth scales. Reduced precisions may have a small fraction of violating elements
(isolated pixels at depth edges); fp32 may have none. Non-finite values where the reference
is finite always fail.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
import torch

ArrayLike = np.ndarray | torch.Tensor


@dataclass(frozen=True)
class Tolerance:
    rtol: float
    atol_scale: float
    max_violation_fraction: float = 0.0


# Engine vs PyTorch fp32. fp32 engines are built without TF32; the reduced precisions run the
# typed graphs of dvlt_core.export.mixed_precision (norms, residual stream, gates and output
# heads in float32), so their error comes from the fp16/bf16 branches and grows slowly with K.
TOLERANCES: dict[str, Tolerance] = {
    "fp32": Tolerance(rtol=1e-3, atol_scale=1e-4),
    "fp16": Tolerance(rtol=3e-2, atol_scale=1e-2, max_violation_fraction=1e-3),
    "bf16": Tolerance(rtol=8e-2, atol_scale=3e-2, max_violation_fraction=2e-3),
}
# ONNX Runtime (CPU, fp32) against eager PyTorch on the same CPU.
ONNX_FP32 = Tolerance(rtol=1e-4, atol_scale=1e-5)


class ParityError(RuntimeError):
    """The parity gate failed; the message holds the comparison table."""


@dataclass(frozen=True)
class OutputParity:
    name: str
    max_abs_error: float
    max_scaled_error: float
    violation_fraction: float
    passed: bool
    note: str = ""


@dataclass(frozen=True)
class ParityReport:
    label: str
    tolerance: Tolerance
    outputs: tuple[OutputParity, ...]

    @property
    def passed(self) -> bool:
        return all(o.passed for o in self.outputs)

    def table(self) -> str:
        tol = self.tolerance
        lines = [
            f"parity {self.label}: rtol {tol.rtol:g}, atol {tol.atol_scale:g} x max|ref|, "
            f"allowed violations {tol.max_violation_fraction:g}",
            f"{'output':<14}{'max abs err':>14}{'err/tol':>10}{'violations':>12}  result",
        ]
        for o in self.outputs:
            verdict = "ok" if o.passed else f"FAIL{': ' + o.note if o.note else ''}"
            lines.append(
                f"{o.name:<14}{o.max_abs_error:>14.3e}{o.max_scaled_error:>10.3f}"
                f"{o.violation_fraction:>12.2e}  {verdict}"
            )
        return "\n".join(lines)

    def raise_on_failure(self) -> None:
        if not self.passed:
            raise ParityError(
                self.table() + "\nthe runtime's outputs differ from PyTorch beyond the "
                "tolerance: try precision fp32 (or bf16), another TensorRT version, or rerun "
                "with --no-parity to keep the engines anyway"
            )


def _array(value: ArrayLike) -> np.ndarray:
    if isinstance(value, torch.Tensor):
        return value.detach().float().cpu().numpy()
    return np.asarray(value, dtype=np.float32)


def compare_output(
    name: str, candidate: ArrayLike, reference: ArrayLike, tolerance: Tolerance
) -> OutputParity:
    """Compare one output; see the module docstring for the rule."""
    a, b = _array(candidate), _array(reference)
    if a.shape != b.shape:
        return OutputParity(name, float("inf"), float("inf"), 1.0, False,
                            f"shape {a.shape} vs reference {b.shape}")
    ref_finite = np.isfinite(b)
    if not np.isfinite(a[ref_finite]).all():
        return OutputParity(name, float("inf"), float("inf"), 1.0, False, "non-finite values")
    a, b = a[ref_finite], b[ref_finite]
    if a.size == 0:
        return OutputParity(name, 0.0, 0.0, 0.0, True)
    err = np.abs(a.astype(np.float64) - b)
    bound = tolerance.atol_scale * float(np.abs(b).max()) + tolerance.rtol * np.abs(b)
    scaled = err / np.maximum(bound, np.finfo(np.float32).tiny)
    fraction = float(np.mean(scaled > 1.0))
    return OutputParity(
        name=name,
        max_abs_error=float(err.max()),
        max_scaled_error=float(scaled.max()),
        violation_fraction=fraction,
        passed=fraction <= tolerance.max_violation_fraction,
    )


def compare_outputs(
    candidate: Mapping[str, ArrayLike],
    reference: Mapping[str, ArrayLike],
    *,
    precision: str = "fp32",
    tolerance: Tolerance | None = None,
    label: str = "",
) -> ParityReport:
    """Compare every output present in ``reference``; a missing candidate output fails."""
    if tolerance is None:
        if precision not in TOLERANCES:
            raise ValueError(f"precision must be one of {sorted(TOLERANCES)}, got {precision!r}")
        tolerance = TOLERANCES[precision]
    results = []
    for name, ref in reference.items():
        if name not in candidate or candidate[name] is None:
            results.append(OutputParity(name, float("inf"), float("inf"), 1.0, False, "missing"))
            continue
        results.append(compare_output(name, candidate[name], ref, tolerance))
    return ParityReport(label=label or precision, tolerance=tolerance, outputs=tuple(results))


def sample_images(num_views: int, height: int, width: int, seed: int = 0) -> torch.Tensor:
    """(1, S, 3, H, W) smooth random images in [0, 1]: coarse noise upsampled bilinearly,
    closer to natural image statistics than white noise."""
    gen = torch.Generator().manual_seed(seed)
    coarse = torch.rand(num_views, 3, max(2, height // 28), max(2, width // 28), generator=gen)
    fine = 0.1 * torch.rand(num_views, 3, height, width, generator=gen)
    smooth = torch.nn.functional.interpolate(coarse, size=(height, width), mode="bilinear",
                                             align_corners=False)
    return (0.9 * smooth + fine).clamp(0, 1)[None]


def reference_outputs(
    model: torch.nn.Module, images: torch.Tensor, num_steps: int, device: torch.device | str
) -> dict[str, torch.Tensor]:
    """PyTorch fp32 outputs on ``device`` with TF32 disabled (restored afterwards)."""
    from dvlt_core.model import run_model

    matmul, cudnn = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
    try:
        out = run_model(model, images, precision="fp32", device=device, num_steps=num_steps)
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = matmul, cudnn
    return {k: v.float().cpu() for k, v in out.items()}


def check_backend(
    backend: object,
    model: torch.nn.Module,
    *,
    num_views: int,
    height: int,
    width: int,
    num_steps: int,
    precision: str = "fp32",
    tolerance: Tolerance | None = None,
    label: str = "",
    seed: int = 0,
) -> ParityReport:
    """Run ``backend`` (an :class:`~dvlt_core.backends.InferenceBackend`) and ``model`` on the
    same :func:`sample_images` and compare the raw outputs."""
    images = sample_images(num_views, height, width, seed)
    out = backend.infer(images, num_steps=num_steps)
    device = getattr(backend, "device", torch.device("cpu"))
    reference = reference_outputs(model, images, num_steps, device)
    candidate = {name: getattr(out, name) for name in
                 ("rays", "depth", "depth_conf", "world_points", "pose_enc")}
    wanted = {k: v for k, v in reference.items() if k in candidate}
    return compare_outputs(candidate, wanted, precision=precision, tolerance=tolerance,
                           label=label or f"{precision}, S={num_views}, K={num_steps}")
