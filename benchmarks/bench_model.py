"""Forward-pass benchmark of ``DVLTModel`` (released config, fp32, deterministic weights).

Prints, for every (views S, loop steps K), the median forward time of a few runs and the peak
bytes of live tensors during one forward (parameters excluded). With ``--upstream PATH`` (the
``src`` folder of a local nv-tlabs/dvlt checkout; never committed here) the upstream model is
built with the same weights and timed in the same run, and the table shows ours/upstream ratios.

    python benchmarks/bench_model.py                      # 126x168, K 1-16, S 2/4/8
    python benchmarks/bench_model.py --large --views 2    # 378x504
    python benchmarks/bench_model.py --upstream /tmp/dvlt_upstream/src
    python benchmarks/bench_model.py --plot results/bench    # + latency_vs_k/s.png
"""

from __future__ import annotations

import argparse
import importlib.abc
import importlib.machinery
import importlib.util
import statistics
import sys
import time
import types
from collections.abc import Callable

import torch

from dvlt_core.eval.plots import require_matplotlib, write_latency_plots
from dvlt_core.model import DVLTModel
from dvlt_core.testing import deterministic_state_dict
from dvlt_core.testing.det_weights import model_shapes
from dvlt_core.testing.memory import PeakTensorBytes

RELEASED = {"img_size": 504, "depth_head_type": "conv"}
# Packages upstream imports at module level but that its model forward never uses.
UPSTREAM_ONLY_DEPS = (
    "open3d", "accelerate", "omegaconf", "hydra", "cv2", "h5py", "scipy", "rich", "wandb",
    "matplotlib", "plotly", "rerun", "torchvision", "pydantic", "tensorboard", "trimesh",
    "gradio", "requests",
)  # fmt: skip


class _Placeholder(types.ModuleType):
    """Stands in for an upstream-only dependency: any attribute is another placeholder."""

    def __getattr__(self, name: str):
        if name.startswith("__"):
            raise AttributeError(name)
        return _Placeholder(f"{self.__name__}.{name}")

    def __call__(self, *args, **kwargs):
        return _Placeholder(f"{self.__name__}()")

    def __mro_entries__(self, bases):
        return (object,)


class _PlaceholderFinder(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    def __init__(self, roots: set[str]) -> None:
        self.roots = roots

    def find_spec(self, fullname, path, target=None):
        if fullname.split(".")[0] in self.roots:
            return importlib.machinery.ModuleSpec(fullname, self, is_package=True)
        return None

    def create_module(self, spec):
        return _Placeholder(spec.name)

    def exec_module(self, module):
        module.__path__ = []


def upstream_model(src: str, config: dict, state: dict) -> torch.nn.Module:
    """Build upstream ``DVLTModel`` from ``src`` with ``state`` loaded (strict)."""
    missing = {name for name in UPSTREAM_ONLY_DEPS if importlib.util.find_spec(name) is None}
    sys.meta_path.insert(0, _PlaceholderFinder(missing))
    sys.path.insert(0, src)
    from dvlt.model.dvlt.model import DVLTModel as UpstreamDVLTModel

    model = UpstreamDVLTModel(**config, load_patch_embed_weights=False).eval()
    model.load_state_dict(state, strict=True)
    return model


def interleaved_medians(
    fns: list[Callable[[], object]], repeats: int, clock: Callable[[], float]
) -> list[float]:
    """Median time of each function, runs interleaved so that load drift hits all alike."""
    for fn in fns:
        fn()  # warm-up: caches, allocator
    times: list[list[float]] = [[] for _ in fns]
    for _ in range(repeats):
        for fn, bucket in zip(fns, times, strict=True):
            start = clock()
            fn()
            bucket.append(clock() - start)
    return [statistics.median(bucket) for bucket in times]


def peak_mb(model: torch.nn.Module, fn: Callable[[], object]) -> float:
    state = [*model.parameters(), *model.buffers()]
    with PeakTensorBytes(state) as tracker:
        fn()
    return tracker.peak / 2**20


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", default="126x168", help="HxW, multiples of 14")
    parser.add_argument("--large", action="store_true", help="use 378x504 (a 4:3 photo)")
    parser.add_argument("--ks", default="1,4,8,12,16", help="loop steps K")
    parser.add_argument("--views", default="2,4,8", help="views S")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument(
        "--clock",
        choices=("wall", "cpu"),
        default="wall",
        help="wall time, or this process's CPU time (steadier on a shared machine; use it "
        "with --threads 1)",
    )
    parser.add_argument("--no-memory", action="store_true", help="skip the peak-memory runs")
    parser.add_argument("--upstream", default=None, help="path to nv-tlabs/dvlt 'src'")
    parser.add_argument("--plot", default=None, metavar="DIR", help="also write "
                        "latency_vs_k.png and latency_vs_s.png of our times into DIR "
                        "(needs the 'plots' extra)")
    args = parser.parse_args()
    if args.plot:
        require_matplotlib()

    if args.threads:
        torch.set_num_threads(args.threads)
    H, W = (378, 504) if args.large else (int(v) for v in args.size.split("x"))
    clock = time.perf_counter if args.clock == "wall" else time.process_time
    ks = [int(k) for k in args.ks.split(",")]
    views = [int(s) for s in args.views.split(",")]

    ours = DVLTModel(**RELEASED).eval()
    state = deterministic_state_dict(model_shapes(ours), seed=1)
    ours.load_state_dict(state, strict=True)
    upstream = upstream_model(args.upstream, RELEASED, state) if args.upstream else None

    print(
        f"DVLT forward, released config (ViT-B), fp32, {H}x{W}, B=1, "
        f"{torch.get_num_threads()} threads, torch {torch.__version__}, median of "
        f"{args.repeats} interleaved runs, {args.clock} clock"
    )
    header = f"{'S':>2} {'K':>3} {'ours ms':>9}"
    if upstream is not None:
        header += f" {'upstream ms':>12} {'ratio':>6}"
    if not args.no_memory:
        header += f" {'ours MB':>8}" + (f" {'upstream MB':>12}" if upstream is not None else "")
    print(header)
    timings: list[dict[str, float]] = []
    for S in views:
        images = torch.rand(1, S, 3, H, W, generator=torch.Generator().manual_seed(S))
        for K in ks:

            def run_ours(K=K, images=images):
                with torch.inference_mode():
                    return ours(images, num_steps=K)

            def run_upstream(K=K, images=images):
                upstream.inference_steps = K
                with torch.inference_mode():
                    return upstream.forward_inference(images)

            fns = [run_ours] if upstream is None else [run_ours, run_upstream]
            seconds = interleaved_medians(fns, args.repeats, clock)
            row = f"{S:>2} {K:>3} {seconds[0] * 1e3:>9.0f}"
            if upstream is not None:
                row += f" {seconds[1] * 1e3:>12.0f} {seconds[0] / seconds[1]:>6.2f}"
            if not args.no_memory:
                row += f" {peak_mb(ours, run_ours):>8.1f}"
                if upstream is not None:
                    row += f" {peak_mb(upstream, run_upstream):>12.1f}"
            print(row, flush=True)
            timings.append({"S": S, "K": K, "ms": seconds[0] * 1e3})
    if args.plot:
        for path in write_latency_plots(args.plot, timings, title=f"DVLT forward, {H}x{W}"):
            print(f"plot: {path}")


if __name__ == "__main__":
    main()
