"""``dvlt-export``: checkpoint → three ONNX graphs → TensorRT engines, with a parity gate.

    dvlt-export --checkpoint SRC --out DIR --height 378 --width 504 --views 1:8:16 \\
        --precision fp16 [--onnx-only] [--no-parity]

Exit status: 0 success, 1 a verification or the parity gate failed, 2 bad arguments or a
missing dependency (GPU, TensorRT, ONNX Runtime, checkpoint).
"""

from __future__ import annotations

import argparse
import importlib.util
import sys
from collections.abc import Sequence
from pathlib import Path

import torch

from dvlt_core.export.engine_cache import ENGINE_PRECISIONS, EngineCache, EngineCacheError
from dvlt_core.export.manifest import ExportError, ViewRange
from dvlt_core.export.onnx_export import DEFAULT_OPSET, MIN_OPSET, export_onnx
from dvlt_core.export.parity_gate import ONNX_FP32, ParityError, check_backend
from dvlt_core.export.tensorrt_build import (
    EngineBuildError,
    TensorRTUnavailableError,
    check_precision,
    current_gpu,
    import_tensorrt,
)

EXIT_FAILED = 1
EXIT_USAGE = 2


def _say(text: str) -> None:
    print(f"[dvlt-export] {text}", file=sys.stderr, flush=True)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="dvlt-export",
        description="Export a DVLT checkpoint to ONNX (encoder, one loop step, decoder) and "
        "build TensorRT engines for this GPU. K stays a run-time argument.",
    )
    parser.add_argument("--checkpoint", required=True,
                        help="checkpoint folder, weights file, URL or Hub id")
    parser.add_argument("--out", required=True, type=Path, help="export folder to write")
    parser.add_argument("--height", type=int, default=378, help="fixed image height (px)")
    parser.add_argument("--width", type=int, default=504, help="fixed image width (px)")
    parser.add_argument("--views", default="1:8:16",
                        help="number of views S as min:opt:max (opt is the tuning target)")
    parser.add_argument("--precision", choices=ENGINE_PRECISIONS, default="fp16")
    parser.add_argument("--opset", type=int, default=DEFAULT_OPSET,
                        help=f"ONNX opset (>= {MIN_OPSET})")
    parser.add_argument("--onnx-only", action="store_true",
                        help="write the ONNX graphs only (no GPU or TensorRT needed)")
    parser.add_argument("--no-parity", action="store_true",
                        help="skip the engine-vs-PyTorch parity gate")
    parser.add_argument("--no-verify-onnx", action="store_true",
                        help="skip the ONNX Runtime (CPU) vs PyTorch check of the graphs")
    parser.add_argument("--parity-steps", type=int, default=None,
                        help="K of the parity gate (default: the model's default K)")
    parser.add_argument("--device", default="cuda", help="CUDA device for the engines")
    parser.add_argument("--engine-dir", type=Path, default=None,
                        help="engine cache folder (default: OUT/engines)")
    parser.add_argument("--rebuild", action="store_true",
                        help="delete every cached engine in the engine folder (also stale or "
                        "invalid ones) and build anew")
    parser.add_argument("--workspace-gb", type=float, default=4.0,
                        help="TensorRT builder workspace limit in GiB")
    parser.add_argument("--fp32-softmax", action="store_true",
                        help="keep softmax in fp32 too (slower; try if the fp16 gate fails)")
    parser.add_argument("--revision", default=None, help="Hub revision of --checkpoint")
    parser.add_argument("--allow-pickle", action="store_true",
                        help="read .pt/.pth/.bin weights with torch.load(weights_only=True)")
    return parser


def _check_environment(args: argparse.Namespace) -> None:
    """Fail before the slow export when the engine build cannot run here."""
    if args.onnx_only:
        return
    import_tensorrt()
    gpu = current_gpu(args.device)
    _say(f"GPU {gpu.name} (compute capability {gpu.compute_capability})")
    check_precision(args.precision, gpu)


def _verify_onnx(args: argparse.Namespace, model: torch.nn.Module, views: ViewRange) -> bool:
    if args.no_verify_onnx:
        return True
    if importlib.util.find_spec("onnxruntime") is None:
        _say("onnxruntime not installed: skipping the ONNX check (install the 'export' extra)")
        return True
    from dvlt_core.backends.onnxruntime_backend import OnnxRuntimeBackend

    num_views = min(max(2, views.min), views.max)
    _say(f"checking the graphs with ONNX Runtime (CPU) against PyTorch, S={num_views}, K=2")
    report = check_backend(OnnxRuntimeBackend(args.out), model, num_views=num_views,
                           height=args.height, width=args.width, num_steps=2,
                           tolerance=ONNX_FP32, label="onnxruntime cpu fp32")
    print(report.table(), file=sys.stderr)
    return report.passed


def _check_typed_graphs(args: argparse.Namespace) -> bool:
    """Derive and check the fp16/bf16 graphs the engines are built from (strict typing)."""
    from dvlt_core.export.manifest import load_manifest
    from dvlt_core.export.mixed_precision import LOW_PRECISIONS, mixed_precision_bytes

    manifest = load_manifest(args.out)
    for precision in LOW_PRECISIONS:
        for graph in (manifest.encoder, *manifest.steps.values(), manifest.decoder):
            try:
                _, report = mixed_precision_bytes(manifest.path(graph), precision,
                                                  fp32_softmax=args.fp32_softmax)
            except (ExportError, ValueError) as exc:
                _say(f"{graph.file} {precision}: {exc}")
                return False
            _say(f"{graph.file} {precision}: {report.summary()}")
    return True


def _build_and_gate(args: argparse.Namespace, model: torch.nn.Module, views: ViewRange) -> bool:
    from dvlt_core.backends.tensorrt_backend import TensorRTBackend

    engine_dir = args.engine_dir or args.out / "engines"
    if args.rebuild:
        _say(f"--rebuild: deleted {EngineCache(engine_dir).clear()} cached engine files")
    backend = TensorRTBackend(args.out, device=args.device, precision=args.precision,
                              engine_dir=engine_dir, on_mismatch="rebuild",
                              workspace_bytes=int(args.workspace_gb * (1 << 30)),
                              fp32_softmax=args.fp32_softmax, say=_say)
    if args.no_parity:
        _say("parity gate skipped (--no-parity)")
        return True
    steps = args.parity_steps or model.config.default_num_steps
    _say(f"parity gate: TensorRT {args.precision} vs PyTorch fp32, S={views.opt}, K={steps}")
    report = check_backend(backend, model, num_views=views.opt, height=args.height,
                           width=args.width, num_steps=steps, precision=args.precision)
    print(report.table(), file=sys.stderr)
    if not report.passed:
        for key in backend.engine_keys.values():
            backend.cache.remove(key)
        _say("parity gate failed: the engines were removed from the cache")
    return report.passed


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from dvlt_core.io.checkpoint import CheckpointError, load_model

    try:
        views = ViewRange.parse(args.views)
        _check_environment(args)
        _say(f"loading {args.checkpoint}")
        model = load_model(args.checkpoint, revision=args.revision,
                           allow_pickle=args.allow_pickle)
        export_onnx(model, args.out, height=args.height, width=args.width, views=views,
                    opset=args.opset, progress=_say)
        if not _verify_onnx(args, model, views):
            _say("the ONNX graphs do not reproduce PyTorch; please report this")
            return EXIT_FAILED
        if not _check_typed_graphs(args):
            _say("the fp16/bf16 graphs are not valid ONNX; please report this")
            return EXIT_FAILED
        if args.onnx_only:
            _say(f"done: ONNX graphs in {args.out}")
            return 0
        if not _build_and_gate(args, model, views):
            return EXIT_FAILED
    except (ValueError, ExportError, CheckpointError, TensorRTUnavailableError) as exc:
        _say(f"error: {exc}")
        return EXIT_USAGE
    except (EngineBuildError, EngineCacheError, ParityError) as exc:
        _say(f"error: {exc}")
        return EXIT_FAILED
    _say(f"done: ONNX graphs and {args.precision} engines in {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
