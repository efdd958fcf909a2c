"""The accounting of benchmarks/bound_model.py: which time and FLOPs count as dense kernels."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import torch
import torch.nn.functional as F

SCRIPT = Path(__file__).resolve().parents[3] / "benchmarks" / "bound_model.py"


def load_bound_model():
    spec = importlib.util.spec_from_file_location("bound_model", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_dense_flops_are_the_products_attention_and_convolutions():
    bound = load_bound_model()
    x = torch.randn(37, 48)
    w, b = torch.randn(80, 48), torch.randn(80)
    q, k, v = (torch.randn(2, 3, 29, 16) for _ in range(3))
    image, kernel = torch.randn(1, 4, 11, 13), torch.randn(6, 4, 3, 3)

    def forward():
        with torch.inference_mode():
            F.gelu(F.linear(x, w, b))  # gelu: not dense
            F.scaled_dot_product_attention(q, k, v)
            F.conv2d(image, kernel)

    dense_ms, gflop = bound.dense_profile(forward)
    linear = 2 * 37 * 48 * 80
    attention = 2 * (2 * 2 * 3 * 29 * 29 * 16)
    conv = 2 * (1 * 6 * 9 * 11) * 4 * 3 * 3
    assert gflop * 1e9 == linear + attention + conv
    assert dense_ms > 0


def test_nothing_dense_counts_nothing():
    bound = load_bound_model()
    x = torch.randn(64, 64)
    dense_ms, gflop = bound.dense_profile(lambda: (F.layer_norm(x, (64,)) + x).relu_())
    assert (dense_ms, gflop) == (0.0, 0.0)
