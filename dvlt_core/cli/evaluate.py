"""``dvlt-eval``: evaluate a checkpoint with any backend on benchmark_lite / full / synthetic.

Examples::

    dvlt-eval --benchmark lite --data-root datasets --checkpoint nvidia/dvlt --out results/
    dvlt-eval --benchmark full --data-root datasets --num-steps 12 --device cuda --precision bf16
    dvlt-eval --benchmark synthetic --checkpoint outputs/run/final_model --out results/
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence
from pathlib import Path

from dvlt_core.backends import available_backends, create_backend
from dvlt_core.backends.errors import BACKEND_SETUP_ERRORS
from dvlt_core.eval.datasets import BENCHMARKS, DATASETS, SyntheticEvalDataset, build_dataset
from dvlt_core.eval.plots import (
    PlotPackageMissingError,
    require_matplotlib,
    write_latency_plots,
    write_metric_plot,
)
from dvlt_core.eval.runner import (
    latency_rows,
    results_table,
    run_benchmark,
    write_latency_table,
    write_report,
)
from dvlt_core.model.precision import PRECISIONS


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="dvlt-eval", description=__doc__.splitlines()[0])
    parser.add_argument("--benchmark", choices=[*BENCHMARKS, "synthetic"], default="lite")
    parser.add_argument("--datasets", help=f"comma-separated subset of {sorted(DATASETS)}")
    parser.add_argument("--data-root", help="folder holding test/<dataset> (upstream layout)")
    parser.add_argument("--dataset-root", action="append", default=[], metavar="NAME=DIR",
                        help="root of one dataset, overriding <data-root>/test/<name>")
    parser.add_argument("--checkpoint", help="checkpoint folder/file/URL/Hub id "
                        "(default $DVLT_CHECKPOINT or nvidia/dvlt)")
    parser.add_argument("--backend", default="torch", help="inference backend: torch, "
                        "onnxruntime, tensorrt, or da3 (Depth Anything 3, --checkpoint a DA3 "
                        "folder or Hub id; the 'da3' extra)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--precision", default="fp32", choices=PRECISIONS)
    parser.add_argument("--num-steps", type=_k_list,
                        help="loop steps K (default: the model's); several, comma-separated "
                        "(e.g. 2,4,8,16), evaluate each into <out>/K<k>/ and plot the metrics "
                        "against K in <out>/accuracy_vs_k.png and the latency against K and "
                        "the number of views S in latency_vs_k.png, latency_vs_s.png (needs "
                        "the 'plots' extra)")
    parser.add_argument("--img-size", type=int, default=504, help="benchmark image width")
    parser.add_argument("--pose-mode", default="upstream", choices=["upstream", "robust"])
    parser.add_argument("--max-sequences", type=int, help="evaluate at most N per dataset")
    parser.add_argument("--out", required=True, help="output folder for the results")
    return parser.parse_args(argv)


def _k_list(text: str) -> list[int]:
    """argparse type of --num-steps: one K or a comma-separated list, each >= 1."""
    try:
        values = [int(part) for part in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not K or a list like 2,4,8") from None
    if any(k < 1 for k in values) or len(set(values)) != len(values):
        raise argparse.ArgumentTypeError(f"{text!r}: each K must be >= 1 and given once")
    return values


def _datasets(args: argparse.Namespace) -> dict:
    if args.benchmark == "synthetic":
        return {"synthetic": SyntheticEvalDataset()}
    names = args.datasets.split(",") if args.datasets else list(BENCHMARKS[args.benchmark])
    roots = dict(item.split("=", 1) for item in args.dataset_root)
    missing = [n for n in names if n not in roots and args.data_root is None]
    if missing:
        raise ValueError(f"no data for {missing}: pass --data-root or --dataset-root NAME=DIR")
    return {n: build_dataset(n, args.data_root, roots.get(n), args.img_size) for n in names}


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    if args.num_steps and len(args.num_steps) > 1:
        try:
            require_matplotlib()
        except PlotPackageMissingError as exc:
            print(f"dvlt-eval: {exc}", file=sys.stderr)
            return 2
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    if args.backend not in available_backends():
        print(f"dvlt-eval: unknown backend {args.backend!r}; available: "
              f"{', '.join(available_backends())}", file=sys.stderr)
        return 2
    try:
        datasets = _datasets(args)
    except (ValueError, FileNotFoundError) as exc:
        print(f"dvlt-eval: {exc}", file=sys.stderr)
        return 2
    try:
        backend = create_backend(args.backend, checkpoint=args.checkpoint, device=args.device,
                                 precision=args.precision)
    except (*BACKEND_SETUP_ERRORS, ValueError) as exc:
        print(f"dvlt-eval: {exc}", file=sys.stderr)
        return 2
    ks = args.num_steps or [None]
    if len(ks) == 1:
        report = run_benchmark(backend, datasets, ks[0], args.pose_mode, args.max_sequences)
        path = write_report(report, args.out)
        print(results_table(report))
        print(f"written to {path.parent}")
        return 0
    by_dataset: dict[str, dict[float, dict[str, float]]] = {}
    latency, latency_all = [], []
    for k in ks:
        report = run_benchmark(backend, datasets, k, args.pose_mode, args.max_sequences)
        write_report(report, Path(args.out) / f"K{k}")
        print(f"K={k}\n{results_table(report)}")
        for name, result in report.datasets.items():
            by_dataset.setdefault(name, {})[k] = result.aggregate
        latency += latency_rows(report)
        latency_all += latency_rows(report, by_dataset=False)
    out = Path(args.out)
    plots = [out / "accuracy_vs_k.png"]
    write_metric_plot(plots[0], "K (loop steps)", by_dataset,
                      title=f"{args.backend}: accuracy vs K")
    write_latency_table(latency, out / "latency.csv")
    plots += write_latency_plots(out, latency_all, title=f"{args.backend}: infer latency "
                                 "(median over sequences)")
    print(f"written to {args.out} (one folder per K, latency.csv, "
          f"{', '.join(p.name for p in plots)})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
