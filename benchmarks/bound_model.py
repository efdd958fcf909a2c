"""How far the forward pass can get ahead of a baseline while its kernels stay the same.

The forward of DVLT is matrix products, attention and convolutions ("dense kernels") plus
everything else (norms, activations, copies, reshapes). For each configuration this script
measures, for ours and for the baseline (upstream from ``--upstream PATH``, otherwise the
previous implementation in ``benchmarks/reference_model.py``):

* the forward time (median of interleaved unprofiled runs, as ``bench_model.py``),
* the time spent in dense kernels (self time of those ops in one profiled forward),
* the dense FLOPs (``torch.utils.flop_counter``) and the rate the dense kernels reach,

and the rate of one large matrix product (2048³, the best this BLAS does here). It then
prints two bounds on the speed-up over the baseline that any change keeping the numbers
(same kernels, same FLOPs) can reach: the baseline's time over our dense-kernel time (if
everything else took no time), and over the dense FLOPs at that best rate (if, in addition,
every kernel ran as fast as the large product).

    python benchmarks/bound_model.py --threads 2 --upstream /tmp/dvlt_upstream/src
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch
from torch.profiler import ProfilerActivity, profile
from torch.utils.flop_counter import FlopCounterMode, sdpa_flop_count

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_model import (
    forward_calls,
    interleaved_medians,
    models_with_same_weights,
    parse_configs,
)

# Ops whose self time is a matrix product, attention or convolution kernel on CPU.
# (oneDNN's transposed convolutions run inside ``aten::_convolution`` itself.)
DENSE_OPS = frozenset({
    "aten::addmm", "aten::mm", "aten::bmm", "aten::baddbmm",
    "aten::_scaled_dot_product_flash_attention_for_cpu",
    "aten::mkldnn_convolution", "aten::_convolution", "aten::_slow_conv2d_forward",
    "aten::slow_conv_transpose2d",
})  # fmt: skip


def _cpu_flash_attention_flop(query, key, value, *args, out_shape=None, **kwargs) -> int:
    return sdpa_flop_count(query, key, value)


FLOP_FORMULAS = {
    torch.ops.aten._scaled_dot_product_flash_attention_for_cpu: _cpu_flash_attention_flop,
}


def dense_profile(forward) -> tuple[float, float]:
    """(dense-kernel ms, dense GFLOP) of one call of ``forward``."""
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        forward()
    dense_us = sum(e.self_cpu_time_total for e in prof.key_averages() if e.key in DENSE_OPS)
    with FlopCounterMode(display=False, custom_mapping=FLOP_FORMULAS) as counter:
        forward()
    return dense_us / 1e3, counter.get_total_flops() / 1e9


def best_gemm_rate(size: int = 2048, repeats: int = 5) -> float:
    """GFLOP/s of the fastest of ``repeats`` float32 ``size``³ matrix products."""
    a, b = torch.randn(size, size), torch.randn(size, size)
    torch.mm(a, b)
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        torch.mm(a, b)
        best = min(best, time.perf_counter() - start)
    return 2 * size**3 / best / 1e9


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--configs", default="2x126x168:12,4x252x336:12",
                        help="SxHxW:K[/K...],...")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--upstream", default=None, help="path to nv-tlabs/dvlt 'src'")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    ours, baseline_name, baseline = models_with_same_weights(args.upstream)

    peak = best_gemm_rate()
    print(f"DVLT forward, released config (ViT-B), fp32, cpu, B=1, {torch.get_num_threads()} "
          f"threads, torch {torch.__version__}, median of {args.repeats} interleaved runs, "
          f"baseline: {baseline_name}; best matrix-product rate here (2048³ sgemm): "
          f"{peak:.0f} GFLOP/s\n")
    print("| S | HxW | K | model | forward ms | dense ms | other ms | dense share | dense GFLOP "
          "| dense GFLOP/s |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    bounds = []
    for S, H, W, K in parse_configs(args.configs):
        images = torch.rand(1, S, 3, H, W, generator=torch.Generator().manual_seed(S))

        run_ours, run_baseline = forward_calls(ours, baseline, baseline_name, images, K)
        times = interleaved_medians([run_ours, run_baseline], args.repeats, time.perf_counter)
        dense = {}
        for name, run, seconds in (("ours", run_ours, times[0]),
                                   (baseline_name, run_baseline, times[1])):
            dense_ms, gflop = dense_profile(run)
            total_ms = seconds * 1e3
            dense[name] = (dense_ms, gflop)
            print(f"| {S} | {H}x{W} | {K} | {name} | {total_ms:.0f} | {dense_ms:.0f} | "
                  f"{total_ms - dense_ms:.0f} | {dense_ms / total_ms:.0%} | {gflop:.0f} | "
                  f"{gflop / dense_ms * 1e3:.0f} |", flush=True)
        ours_dense_ms, ours_gflop = dense["ours"]
        baseline_ms = times[1] * 1e3
        bounds.append((S, H, W, K, times[1] / times[0], baseline_ms / ours_dense_ms,
                       baseline_ms / (ours_gflop / peak * 1e3)))

    print(f"\n| S | HxW | K | speed-up now | bound: {baseline_name} / our dense time | "
          f"bound: {baseline_name} / dense FLOPs at {peak:.0f} GFLOP/s |")
    print("|---|---|---|---|---|---|")
    for S, H, W, K, now, kernel_bound, rate_bound in bounds:
        print(f"| {S} | {H}x{W} | {K} | {now:.2f} | {kernel_bound:.2f} | {rate_bound:.2f} |")


if __name__ == "__main__":
    main()
