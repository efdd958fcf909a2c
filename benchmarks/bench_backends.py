"""Latency of the inference backends per K and S: PyTorch, ONNX Runtime (CPU), TensorRT (GPU).

    python benchmarks/bench_backends.py                       # CPU: torch vs onnxruntime
    python benchmarks/bench_backends.py --checkpoint DIR --height 378 --width 504 \\
        --views 8 --steps 12 --device cuda --torch-precision bf16 --trt-precision fp16 --gate

Without ``--checkpoint`` the model is the ViT-S reference configuration
(``case_small_public.npz``) with deterministic weights, which is enough for timing. The model
is exported once into ``--export-dir`` (a temporary folder by default). Backends are timed
interleaved per (S, K): one warm-up call each, then ``--repeats`` calls; the table shows the
median total milliseconds (transfers included) and the speed-up over PyTorch measured in the
same run. ``--gate`` runs the TensorRT parity gate at the largest S and K first.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
from pathlib import Path

import numpy as np
import torch

from dvlt_core.backends import InferenceBackend, TorchBackend
from dvlt_core.export import ViewRange, check_backend, export_onnx
from dvlt_core.model import PRECISIONS, DVLTModel
from dvlt_core.testing import load_deterministic_weights

REPO = Path(__file__).resolve().parents[1]


def small_reference_model() -> DVLTModel:
    reference = Path(os.environ.get("DVLT_REFERENCE_DIR", REPO.parent / "shared" / "reference"))
    with np.load(reference / "case_small_public.npz") as case:
        model = DVLTModel(**json.loads(str(case["config_json"])))
    load_deterministic_weights(model, 0)
    return model.eval()


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--checkpoint", default=None, help="checkpoint source (default: ViT-S)")
    parser.add_argument("--height", type=int, default=126)
    parser.add_argument("--width", type=int, default=168)
    parser.add_argument("--views", default="1,2,4", help="comma-separated S values")
    parser.add_argument("--steps", default="1,4,12", help="comma-separated K values")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=None,
                        help="CPU threads for torch and onnxruntime (default: torch's setting)")
    parser.add_argument("--device", default="cpu", help="cpu or cuda[:N]")
    parser.add_argument("--backends", default=None,
                        help="comma-separated subset of torch,onnxruntime,tensorrt (default: "
                        "torch,onnxruntime on CPU; torch,tensorrt on CUDA)")
    parser.add_argument("--torch-precision", default="fp32", choices=PRECISIONS)
    parser.add_argument("--trt-precision", default="fp16", choices=PRECISIONS)
    parser.add_argument("--export-dir", type=Path, default=None)
    parser.add_argument("--gate", action="store_true", help="run the TensorRT parity gate")
    return parser.parse_args()


def build_backends(args, model, export_dir: Path, names: list[str]) -> dict[str, InferenceBackend]:
    backends: dict[str, InferenceBackend] = {}
    for name in names:
        if name == "torch":
            backends[name] = TorchBackend(model, device=args.device,
                                          precision=args.torch_precision)
        elif name == "onnxruntime":
            from dvlt_core.backends.onnxruntime_backend import OnnxRuntimeBackend

            backends[name] = OnnxRuntimeBackend(export_dir, threads=torch.get_num_threads())
        elif name == "tensorrt":
            from dvlt_core.backends.tensorrt_backend import TensorRTBackend

            backends[name] = TensorRTBackend(export_dir, device=args.device,
                                             precision=args.trt_precision,
                                             say=lambda m: print(m, file=sys.stderr))
        else:
            raise SystemExit(f"unknown backend {name!r}")
    return backends


def describe(args, names: list[str]) -> str:
    parts = [f"torch {torch.__version__}", f"{torch.get_num_threads()} threads",
             platform.processor() or platform.machine()]
    if args.device.startswith("cuda"):
        parts.append(torch.cuda.get_device_name(torch.device(args.device)))
    if "onnxruntime" in names:
        import onnxruntime

        parts.append(f"onnxruntime {onnxruntime.__version__}")
    if "tensorrt" in names:
        import tensorrt

        parts.append(f"tensorrt {tensorrt.__version__}")
    return ", ".join(parts)


def main() -> None:
    args = parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    views = [int(v) for v in args.views.split(",")]
    steps = [int(k) for k in args.steps.split(",")]
    on_gpu = args.device.startswith("cuda")
    names = (args.backends.split(",") if args.backends
             else (["torch", "tensorrt"] if on_gpu else ["torch", "onnxruntime"]))
    if args.checkpoint:
        from dvlt_core.io.checkpoint import load_model

        model = load_model(args.checkpoint)
    else:
        model = small_reference_model()
    with tempfile.TemporaryDirectory() as tmp:
        export_dir = args.export_dir or Path(tmp)
        if not (export_dir / "export.json").is_file():
            print(f"exporting to {export_dir} ...", file=sys.stderr)
            export_onnx(model, export_dir, height=args.height, width=args.width,
                        views=ViewRange(min(views), max(views), max(views)))
        backends = build_backends(args, model, export_dir, names)
        if args.gate and "tensorrt" in backends:
            report = check_backend(backends["tensorrt"], model, num_views=max(views),
                                   height=args.height, width=args.width, num_steps=max(steps),
                                   precision=args.trt_precision)
            print(report.table())
            print("engine activation memory (MiB):", {
                k: round(v / 2**20) for k, v in backends["tensorrt"].memory_report().items()})
        run(args, backends, views, steps, names)


def run(args, backends: dict[str, InferenceBackend], views, steps, names) -> None:
    print(f"# {args.height}x{args.width}, {describe(args, names)}; torch {args.torch_precision}"
          + (f", tensorrt {args.trt_precision}" if "tensorrt" in names else ""))
    header = f"{'S':>3} {'K':>3}" + "".join(f"{n + ' ms':>16}" for n in names)
    header += "".join(f"{n + ' speed-up':>21}" for n in names if n != "torch")
    print(header)
    for S in views:
        for K in steps:
            images = torch.rand(1, S, 3, args.height, args.width,
                                generator=torch.Generator().manual_seed(S * 100 + K))
            times: dict[str, list[float]] = {n: [] for n in names}
            for n in names:  # warm-up (lazy caches, CUDA graph capture)
                backends[n].infer(images, num_steps=K)
            for _ in range(args.repeats):
                for n in names:
                    times[n].append(backends[n].infer(images, num_steps=K).timings.total_ms)
            med = {n: statistics.median(t) for n, t in times.items()}
            row = f"{S:>3} {K:>3}" + "".join(f"{med[n]:>16.1f}" for n in names)
            if "torch" in med:
                row += "".join(f"{med['torch'] / med[n]:>20.2f}x" for n in names if n != "torch")
            print(row, flush=True)


if __name__ == "__main__":
    main()
