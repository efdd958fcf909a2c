"""Parity gate: ONNX Runtime outputs against PyTorch pass; drifted outputs fail loudly."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from dvlt_core.backends.onnxruntime_backend import OnnxRuntimeBackend
from dvlt_core.export import ONNX_FP32, TOLERANCES, ParityError, Tolerance, compare_outputs
from dvlt_core.export.parity_gate import check_backend, compare_output, sample_images


@pytest.fixture(scope="module")
def backend(small_export):
    assert small_export.exit_code == 0, small_export.log
    return OnnxRuntimeBackend(small_export.out)


def test_onnxruntime_passes_the_fp32_gate(small_export, backend):
    report = check_backend(backend, small_export.model, num_views=2, height=56, width=70,
                           num_steps=3, tolerance=ONNX_FP32)
    assert report.passed, report.table()
    assert [o.name for o in report.outputs] == ["world_points", "depth", "depth_conf", "rays",
                                                "pose_enc"]
    assert all(o.max_scaled_error < 1 for o in report.outputs)
    report.raise_on_failure()


def test_outputs_of_another_k_fail_the_gate_with_a_table(small_export, backend):
    images = sample_images(2, 56, 70, seed=5)
    out = backend.infer(images, num_steps=2)
    with torch.inference_mode():
        ref = small_export.model(images, num_steps=3)
    candidate = {k: getattr(out, k) for k in ("rays", "depth", "depth_conf", "pose_enc")}
    report = compare_outputs(candidate, {k: ref[k] for k in candidate}, precision="fp16")
    assert not report.passed
    with pytest.raises(ParityError, match=r"(?s)parity fp16.*rays .*FAIL.*--no-parity"):
        report.raise_on_failure()


def test_element_rule_and_violation_budget():
    ref = np.linspace(1.0, 10.0, 1000, dtype=np.float32)
    tol = Tolerance(rtol=1e-2, atol_scale=0.0, max_violation_fraction=0.002)
    near = ref * (1 + 5e-3)
    assert compare_output("x", near, ref, tol).passed
    two_bad = near.copy()
    two_bad[:2] *= 1.5
    result = compare_output("x", two_bad, ref, tol)
    assert result.passed and result.violation_fraction == pytest.approx(0.002)
    two_bad[2] *= 1.5
    assert not compare_output("x", two_bad, ref, tol).passed
    strict = Tolerance(rtol=1e-2, atol_scale=0.0)
    assert not compare_output("x", two_bad[:2].tolist() + near[2:].tolist(), ref, strict).passed
    # the absolute part scales with the output's range: zeros in the reference are fine
    zeros = np.array([0.0, 100.0], dtype=np.float32)
    shifted = zeros + np.array([1e-3, 0.0], dtype=np.float32)
    assert compare_output("z", shifted, zeros, Tolerance(0, 1e-4)).passed


def test_shape_nan_and_missing_outputs_fail():
    ref = {"depth": torch.ones(1, 2, 4, 4, 1), "rays": torch.zeros(1, 2, 4, 4, 6)}
    bad_shape = compare_outputs({"depth": torch.ones(1, 2, 4, 4), "rays": ref["rays"]}, ref)
    assert not bad_shape.passed and "shape" in bad_shape.outputs[0].note
    nan = ref["depth"].clone()
    nan[0, 0, 0, 0, 0] = float("nan")
    result = compare_outputs({"depth": nan, "rays": ref["rays"]}, ref)
    assert [o.passed for o in result.outputs] == [False, True]
    assert "non-finite" in result.outputs[0].note
    missing = compare_outputs({"depth": ref["depth"], "rays": None}, ref)
    assert missing.outputs[1].note == "missing"
    with pytest.raises(ValueError, match="precision must be one of"):
        compare_outputs(ref, ref, precision="int8")


def test_tolerances_loosen_with_precision():
    fp32, fp16, bf16 = (TOLERANCES[p] for p in ("fp32", "fp16", "bf16"))
    assert fp32.max_violation_fraction == 0
    assert ONNX_FP32.rtol <= fp32.rtol < fp16.rtol < bf16.rtol
    assert fp32.atol_scale < fp16.atol_scale < bf16.atol_scale


def test_sample_images_are_deterministic_and_in_range():
    a, b = sample_images(3, 28, 42, seed=7), sample_images(3, 28, 42, seed=7)
    assert a.shape == (1, 3, 3, 28, 42) and torch.equal(a, b)
    assert float(a.min()) >= 0 and float(a.max()) <= 1
    assert not torch.equal(a, sample_images(3, 28, 42, seed=8))
