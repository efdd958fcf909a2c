"""Forward-pass benchmark of ``DVLTModel`` against a baseline (released config, fixed weights).

For every configuration (views S, image size, loop steps K) it prints the median forward time of
interleaved runs of ours and of a baseline, the speed-up (baseline time / ours) and the peak
bytes of live tensors during one forward (parameters excluded). The baseline is upstream's
``DVLTModel`` built from ``--upstream PATH`` (the ``src`` folder of a local nv-tlabs/dvlt
checkout; nothing is fetched) with the same weights, or otherwise the previous implementation
kept in ``benchmarks/reference_model.py``.

    python benchmarks/bench_model.py --threads 2                     # the issue-15 configurations
    python benchmarks/bench_model.py --upstream /tmp/dvlt_upstream/src --threads 2
    python benchmarks/bench_model.py --configs 2x126x168:1/4/8/12/16 --clock cpu --threads 1
    python benchmarks/bench_model.py --device cuda --precision bf16  # on a GPU machine
    python benchmarks/bench_model.py --compile --configs 4x252x336:12  # ours torch.compile'd
    python benchmarks/bench_model.py --plot results/bench  # + <HxW>/latency_vs_k.png, _vs_s.png
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
from pathlib import Path

import torch

from dvlt_core.eval.plots import require_matplotlib, write_latency_plots
from dvlt_core.model import DVLTModel, autocast_for
from dvlt_core.model.compilation import COMPILE_MODES, compile_model
from dvlt_core.testing import deterministic_state_dict
from dvlt_core.testing.det_weights import model_shapes
from dvlt_core.testing.memory import PeakTensorBytes

RELEASED = {"img_size": 504, "depth_head_type": "conv"}
# S x H x W : K (several K separated by "/"), the configurations of issue 15.
DEFAULT_CONFIGS = "2x126x168:12,4x252x336:12,8x252x336:12,16x252x336:12,4x378x504:12"
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


def parse_configs(text: str) -> list[tuple[int, int, int, int]]:
    """``"SxHxW:K1/K2,..."`` → [(S, H, W, K), ...]."""
    configs = []
    for item in text.split(","):
        shape, _, ks = item.partition(":")
        S, H, W = (int(v) for v in shape.split("x"))
        configs.extend((S, H, W, int(k)) for k in (ks or "12").split("/"))
    return configs


def models_with_same_weights(upstream: str | None) -> tuple[DVLTModel, str, torch.nn.Module]:
    """(ours, baseline name, baseline): released config, the same deterministic weights;
    upstream's model from the ``upstream`` checkout, else the previous implementation."""
    ours = DVLTModel(**RELEASED).eval()
    state = deterministic_state_dict(model_shapes(ours), seed=1)
    ours.load_state_dict(state, strict=True)
    if upstream:
        return ours, "upstream", upstream_model(upstream, RELEASED, state)
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from reference_model import reference_model

    baseline = reference_model(**RELEASED).eval()
    baseline.load_state_dict(state, strict=True)
    return ours, "previous", baseline


def forward_calls(
    ours: torch.nn.Module, baseline: torch.nn.Module, baseline_name: str, images: torch.Tensor,
    K: int, precision: str = "fp32", device_type: str = "cpu",
) -> tuple[Callable[[], object], Callable[[], object]]:
    """One forward of ours and one of the baseline (upstream's ``forward_inference``) at K."""

    def run_ours():
        with torch.inference_mode(), autocast_for(precision, device_type):
            return ours(images, num_steps=K)

    def run_baseline():
        with torch.inference_mode(), autocast_for(precision, device_type):
            if baseline_name == "upstream":
                baseline.inference_steps = K
                return baseline.forward_inference(images)
            return baseline(images, num_steps=K)

    return run_ours, run_baseline


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
    parser.add_argument("--configs", default=DEFAULT_CONFIGS, help="SxHxW:K[/K...],...")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--precision", default="fp32", help="fp32, bf16 or fp16 (autocast)")
    parser.add_argument(
        "--clock",
        choices=("wall", "cpu"),
        default="wall",
        help="wall time, or this process's CPU time (steadier on a shared machine; use it "
        "with --threads 1)",
    )
    parser.add_argument("--no-memory", action="store_true", help="skip the peak-memory runs")
    parser.add_argument("--compile", action="store_true",
                        help="torch.compile ours (dvlt_core.model.compilation; the warm-up run "
                        "of each shape then includes the compile; no memory columns)")
    parser.add_argument("--compile-mode", default=None, choices=COMPILE_MODES[1:],
                        help="torch.compile mode with --compile (reduce-overhead: CUDA graphs)")
    parser.add_argument("--upstream", default=None, help="path to nv-tlabs/dvlt 'src'")
    parser.add_argument("--plot", default=None, metavar="DIR", help="also write latency "
                        "against K and against S as PNG, per image size, into DIR/<H>x<W>/ "
                        "(needs the 'plots' extra)")
    args = parser.parse_args()
    if args.plot:
        require_matplotlib()

    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    if args.clock == "cpu":
        clock = time.process_time
    elif device.type == "cuda":
        clock = _synchronized(time.perf_counter)
    else:
        clock = time.perf_counter

    ours, baseline_name, baseline = models_with_same_weights(args.upstream)
    ours.to(device)
    baseline.to(device)
    if args.compile:
        compile_model(ours, mode=args.compile_mode)
        # Compiled kernels allocate outside the dispatcher, where the tracker cannot see them.
        args.no_memory = True

    print(
        f"DVLT forward, released config (ViT-B), {args.precision}, {device}, B=1, "
        f"{torch.get_num_threads()} threads, torch {torch.__version__}, median of "
        f"{args.repeats} interleaved runs, {args.clock} clock, baseline: {baseline_name}"
        f"{', ours compiled' if args.compile else ''}\n"
    )
    header = f"| S | HxW | K | ours ms | {baseline_name} ms | speed-up |"
    rule = "|---|---|---|---|---|---|"
    if not args.no_memory:
        header += f" ours peak MB | {baseline_name} peak MB |"
        rule += "---|---|"
    print(header)
    print(rule)
    timings: dict[str, list[dict[str, float]]] = {}  # per image size
    for S, H, W, K in parse_configs(args.configs):
        images = torch.rand(1, S, 3, H, W, generator=torch.Generator().manual_seed(S)).to(device)

        run_ours, run_baseline = forward_calls(ours, baseline, baseline_name, images, K,
                                               args.precision, device.type)
        mine, theirs = interleaved_medians([run_ours, run_baseline], args.repeats, clock)
        row = f"| {S} | {H}x{W} | {K} | {mine * 1e3:.0f} | {theirs * 1e3:.0f} |"
        row += f" {theirs / mine:.2f} |"
        if not args.no_memory:
            row += f" {peak_mb(ours, run_ours):.1f} | {peak_mb(baseline, run_baseline):.1f} |"
        print(row, flush=True)
        timings.setdefault(f"{H}x{W}", []).append({"S": S, "K": K, "ms": mine * 1e3})
    if args.plot:
        for size, rows in timings.items():
            for path in write_latency_plots(Path(args.plot) / size, rows,
                                            title=f"DVLT forward, {size}"):
                print(f"plot: {path}")


def _synchronized(clock: Callable[[], float]) -> Callable[[], float]:
    def read() -> float:
        torch.cuda.synchronize()
        return clock()

    return read


if __name__ == "__main__":
    main()
