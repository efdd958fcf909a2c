"""Run a backend over benchmark datasets and write the results next to upstream's reference.

Per sequence: ``backend.infer(images, K)`` → :func:`postprocess_raw_predictions` (cameras from
the rays, depth unprojected) → :func:`evaluate_sequence` (GT rescale, Sim(3) alignment, every
metric). Per dataset the metrics are averaged over sequences (:func:`aggregate_metrics`).
:func:`write_report` writes ``results.md`` (the headline table with the reference values and
differences), ``results.csv`` (every aggregated metric), ``per_sequence.csv``,
``metrics.json`` and ``latency.csv`` (the backend's ``infer`` time per dataset and number of
views, :func:`latency_rows`; per sequence it is ``latency/infer_ms`` beside the metrics).
"""

from __future__ import annotations

import contextlib
import csv
import json
import logging
import math
import statistics
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tqdm.auto import tqdm

from dvlt_core.backends import InferenceBackend
from dvlt_core.eval.datasets.base import EvalSequence
from dvlt_core.eval.datasets.benchmarks import REFERENCE_RESULTS, TABLE_COLUMNS
from dvlt_core.eval.postprocess import postprocess_raw_predictions
from dvlt_core.eval.protocol import aggregate_metrics, evaluate_sequence

logger = logging.getLogger(__name__)

#: Per-sequence values that are not accuracy: the backend's ``infer`` wall-clock time (its
#: ``StageTimings.total_ms``, device-synchronised) and the number of views S it was given.
LATENCY_MS = "latency/infer_ms"
NUM_VIEWS = "latency/num_views"


@dataclass
class DatasetResult:
    """Per-sequence and aggregated metrics of one dataset."""

    name: str
    per_sequence: dict[str, dict[str, float]] = field(default_factory=dict)
    aggregate: dict[str, float] = field(default_factory=dict)


@dataclass
class BenchmarkReport:
    """Results of every dataset plus what was run."""

    datasets: dict[str, DatasetResult]
    settings: dict[str, Any]


def evaluate_sequence_with_backend(
    backend: InferenceBackend,
    sequence: EvalSequence,
    num_steps: int | None = None,
    pose_mode: str = "upstream",
) -> dict[str, float]:
    """Flat metrics (``"<group>/<name>"``) of one sequence, with its latency
    (:data:`LATENCY_MS`, :data:`NUM_VIEWS`)."""
    images = sequence.images_tensor()
    out = backend.infer(images, num_steps=num_steps)
    prediction = postprocess_raw_predictions(out.rays, out.depth, out.depth_conf,
                                             pose_mode=pose_mode)[0]
    metrics = evaluate_sequence(prediction, sequence.ground_truth()).flat_metrics()
    metrics[LATENCY_MS] = float(out.timings.total_ms)
    metrics[NUM_VIEWS] = float(images.shape[1])
    return metrics


def evaluate_dataset(
    backend: InferenceBackend,
    name: str,
    sequences: Iterable[EvalSequence],
    num_steps: int | None = None,
    pose_mode: str = "upstream",
    max_sequences: int | None = None,
    progress: bool = True,
) -> DatasetResult:
    """Evaluate up to ``max_sequences`` sequences of one dataset."""
    result = DatasetResult(name)
    total = None if max_sequences is None else max_sequences
    with contextlib.suppress(TypeError):
        total = len(sequences) if total is None else min(total, len(sequences))
    for i, sequence in enumerate(tqdm(sequences, total=total, desc=name, disable=not progress)):
        if max_sequences is not None and i >= max_sequences:
            break
        result.per_sequence[sequence.name] = evaluate_sequence_with_backend(
            backend, sequence, num_steps, pose_mode
        )
    if not result.per_sequence:
        raise ValueError(f"dataset {name} has no sequences to evaluate")
    result.aggregate = aggregate_metrics(list(result.per_sequence.values()))
    return result


def run_benchmark(
    backend: InferenceBackend,
    datasets: Mapping[str, Iterable[EvalSequence]],
    num_steps: int | None = None,
    pose_mode: str = "upstream",
    max_sequences: int | None = None,
    progress: bool = True,
) -> BenchmarkReport:
    """Evaluate every dataset; ``num_steps`` None is the backend's default K."""
    results = {
        name: evaluate_dataset(backend, name, seqs, num_steps, pose_mode, max_sequences, progress)
        for name, seqs in datasets.items()
    }
    settings = {
        "backend": backend.name,
        "num_steps": num_steps if num_steps is not None else backend.default_num_steps,
        "pose_mode": pose_mode,
        "max_sequences": max_sequences,
    }
    return BenchmarkReport(results, settings)


def latency_rows(report: BenchmarkReport, by_dataset: bool = True) -> list[dict[str, Any]]:
    """Per dataset (or, without ``by_dataset``, over all datasets: ``"all"``) and number of
    views S: ``{"dataset", "S", "K", "ms", "sequences"}``, ``ms`` the median of the sequences'
    :data:`LATENCY_MS` (robust to the first call's warm-up), ``K`` the report's loop count."""
    groups: dict[tuple[str, int], list[float]] = {}
    for name, result in report.datasets.items():
        for metrics in result.per_sequence.values():
            key = (name if by_dataset else "all", int(metrics[NUM_VIEWS]))
            groups.setdefault(key, []).append(metrics[LATENCY_MS])
    return [{"dataset": name, "S": views, "K": report.settings["num_steps"],
             "ms": statistics.median(values), "sequences": len(values)}
            for (name, views), values in sorted(groups.items())]


def write_latency_table(rows: list[dict[str, Any]], path: str | Path) -> Path:
    """Write :func:`latency_rows` (of one or several K) as CSV to ``path``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="") as f:
        writer = csv.DictWriter(f, ["dataset", "S", "K", "ms", "sequences"])
        writer.writeheader()
        writer.writerows(rows)
    return path


def _fmt(value: float | None) -> str:
    return "–" if value is None or math.isnan(value) else f"{value:.4f}"


def results_table(report: BenchmarkReport) -> str:
    """Markdown: per dataset, ours / upstream reference / difference for each headline metric."""
    header = ["Dataset"]
    for _, title in TABLE_COLUMNS:
        header += [title, f"{title} (ref)", "Δ"]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for name, result in report.datasets.items():
        reference = REFERENCE_RESULTS.get(name, {})
        row = [name]
        for key, _ in TABLE_COLUMNS:
            ours, ref = result.aggregate.get(key), reference.get(key)
            delta = None if ours is None or ref is None else ours - ref
            row += [_fmt(ours), _fmt(ref), "–" if delta is None else f"{delta:+.4f}"]
        lines.append("| " + " | ".join(row) + " |")
    return "\n".join(lines)


def write_report(report: BenchmarkReport, out_dir: str | Path) -> Path:
    """Write results.md, results.csv, per_sequence.csv and metrics.json; return results.md."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    settings = ", ".join(f"{k}={v}" for k, v in report.settings.items())
    md = out / "results.md"
    md.write_text(
        f"# DVLT evaluation\n\nSettings: {settings}\n\n{results_table(report)}\n\n"
        "Reference: upstream README (released checkpoint, K = 16, full benchmark). "
        "Depth AbsRel is the depth evaluator's AbsRel after median alignment.\n"
    )
    keys = sorted({k for r in report.datasets.values() for k in r.aggregate})
    with (out / "results.csv").open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["dataset", *keys])
        for name, result in report.datasets.items():
            writer.writerow([name, *(result.aggregate.get(k, "") for k in keys)])
    seq_keys = sorted({k for r in report.datasets.values() for m in r.per_sequence.values()
                       for k in m})
    with (out / "per_sequence.csv").open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["dataset", "sequence", *seq_keys])
        for name, result in report.datasets.items():
            for seq, metrics in result.per_sequence.items():
                writer.writerow([name, seq, *(metrics.get(k, "") for k in seq_keys)])
    (out / "metrics.json").write_text(json.dumps(
        {"settings": report.settings,
         "datasets": {n: {"aggregate": r.aggregate, "per_sequence": r.per_sequence}
                      for n, r in report.datasets.items()}},
        indent=1, allow_nan=True))
    write_latency_table(latency_rows(report), out / "latency.csv")
    return md
