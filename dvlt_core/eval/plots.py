"""PNG plots beside the evaluation and benchmark tables: each headline metric against K, one
line per dataset, and latency against K (one line per number of views S) and against S (one
line per K) (matplotlib, the ``plots`` extra, drawn off-screen with the Agg canvas)."""

from __future__ import annotations

import importlib
import math
from collections.abc import Mapping
from pathlib import Path
from types import ModuleType

from dvlt_core.atomic import write_atomic
from dvlt_core.eval.datasets.benchmarks import TABLE_COLUMNS


class PlotPackageMissingError(ImportError):
    """A plot was asked for but matplotlib (the ``plots`` extra) is not installed."""


def require_matplotlib() -> ModuleType:
    """matplotlib, or :class:`PlotPackageMissingError` saying how to install it."""
    try:
        return importlib.import_module("matplotlib")
    except ImportError as exc:
        raise PlotPackageMissingError(
            "the plots need matplotlib, which is not installed: pip install 'dvlt_ros[plots]' "
            "(or pip install matplotlib)"
        ) from exc


def write_metric_plot(
    path: str | Path,
    x_label: str,
    series: Mapping[str, Mapping[float, Mapping[str, float]]],
    metrics: tuple[tuple[str, str], ...] = TABLE_COLUMNS,
    title: str = "",
) -> None:
    """Write a PNG with one panel per ``(key, title)`` of ``metrics``: for each named series
    (e.g. a dataset), the metric ``key`` of ``series[name][x]`` against ``x``. Missing or
    non-finite values are left out. Written atomically."""
    require_matplotlib()
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    columns = min(len(metrics), 2)
    rows = math.ceil(len(metrics) / columns)
    figure = Figure(figsize=(5.0 * columns, 3.6 * rows), dpi=100, layout="constrained")
    FigureCanvasAgg(figure)
    for panel, (key, label) in enumerate(metrics):
        axes = figure.add_subplot(rows, columns, panel + 1)
        for name, by_x in series.items():
            points = sorted((x, values[key]) for x, values in by_x.items()
                            if key in values and math.isfinite(values[key]))
            if points:
                xs, ys = zip(*points, strict=True)
                axes.plot(xs, ys, marker="o", label=name)
        axes.set_xlabel(x_label)
        axes.set_ylabel(label)
        axes.grid(True, alpha=0.3)
        if axes.lines:
            axes.legend(fontsize="small")
    if title:
        figure.suptitle(title)
    write_atomic(path, lambda tmp: figure.savefig(tmp, format="png"))


def write_latency_plots(
    folder: str | Path, rows: list[dict[str, float]], value: str = "ms",
    label: str = "latency (ms)", title: str = "",
) -> list[Path]:
    """Write ``latency_vs_k.png`` (one line per S) and ``latency_vs_s.png`` (one line per K)
    into ``folder`` from benchmark ``rows``, each holding ``S``, ``K`` and ``value``;
    returns the two paths."""
    folder = Path(folder)
    metric = ((value, label),)
    by_s: dict[str, dict[float, dict[str, float]]] = {}
    by_k: dict[str, dict[float, dict[str, float]]] = {}
    for row in rows:
        by_s.setdefault(f"S={int(row['S'])}", {})[row["K"]] = {value: row[value]}
        by_k.setdefault(f"K={int(row['K'])}", {})[row["S"]] = {value: row[value]}
    paths = [folder / "latency_vs_k.png", folder / "latency_vs_s.png"]
    write_metric_plot(paths[0], "K (loop steps)", by_s, metric, title)
    write_metric_plot(paths[1], "S (views)", by_k, metric, title)
    return paths
