"""The evaluation runner, its report files and the ``dvlt-eval`` command."""

from __future__ import annotations

import csv
import json
import statistics

import pytest
import torch

from dvlt_core.backends import create_backend
from dvlt_core.cli.evaluate import main
from dvlt_core.eval.datasets import REFERENCE_RESULTS, SyntheticEvalDataset
from dvlt_core.eval.runner import (
    BenchmarkReport,
    DatasetResult,
    results_table,
    run_benchmark,
    write_report,
)
from dvlt_core.io import save_checkpoint
from dvlt_core.model import DVLTModel
from dvlt_core.model.dinov2 import BACKBONE_SPECS, BackboneSpec

TINY = {"patch_embed": "dinov2_tiny_test", "embed_dim": 64, "num_heads": 1, "num_steps": 2,
        "min_steps": 1, "decoder_depth": 1, "decoder_embed_dim": 64, "decoder_num_heads": 1,
        "depth_head_type": "linear"}


@pytest.fixture
def model(monkeypatch):
    monkeypatch.setitem(BACKBONE_SPECS, "dinov2_tiny_test", BackboneSpec(64, 1, 1))
    torch.manual_seed(0)
    return DVLTModel(**TINY)


def test_run_benchmark_on_synthetic(model, tmp_path):
    dataset = SyntheticEvalDataset(num_scenes=2, num_views=3, image_size=42)
    report = run_benchmark(create_backend("torch", model=model), {"synthetic": dataset},
                           num_steps=3, progress=False)
    result = report.datasets["synthetic"]
    assert len(result.per_sequence) == 2 and report.settings["num_steps"] == 3
    for key in ("pose/Auc_3", "pose/Auc_30", "pointmap/inlier_depth@3%", "depth/AbsRel"):
        assert key in result.aggregate and f"{key}_std" in result.aggregate
    md = write_report(report, tmp_path)
    assert "| synthetic |" in md.read_text()
    rows = list(csv.reader((tmp_path / "results.csv").open()))
    assert rows[0][0] == "dataset" and rows[1][0] == "synthetic"
    assert len(list(csv.reader((tmp_path / "per_sequence.csv").open()))) == 3
    assert json.loads((tmp_path / "metrics.json").read_text())["settings"]["backend"] == "torch"


def test_table_sits_next_to_the_reference():
    ours = {"pose/Auc_3": 0.8, "pose/Auc_30": 0.99, "pointmap/inlier_depth@3%": 0.97,
            "depth/AbsRel": 0.01}
    table = results_table(BenchmarkReport({"dtu": DatasetResult("dtu", {}, ours)}, {}))
    header, _, row = table.splitlines()
    assert "Pose AUC@3 (ref)" in header
    assert f"{REFERENCE_RESULTS['dtu']['pose/Auc_3']:.4f}" in row
    assert f"{0.8 - REFERENCE_RESULTS['dtu']['pose/Auc_3']:+.4f}" in row


def test_dvlt_eval_command(model, tmp_path, capsys):
    checkpoint = save_checkpoint(model, tmp_path / "ckpt")
    code = main(["--benchmark", "synthetic", "--checkpoint", str(checkpoint), "--num-steps", "2",
                 "--out", str(tmp_path / "out"), "--max-sequences", "2"])
    assert code == 0 and (tmp_path / "out" / "results.md").is_file()
    assert "synthetic" in capsys.readouterr().out
    assert main(["--benchmark", "lite", "--out", str(tmp_path / "x")]) == 2
    assert "--data-root" in capsys.readouterr().err
    assert main(["--benchmark", "lite", "--backend", "nope", "--out", str(tmp_path)]) == 2


def test_dvlt_eval_sweeps_k_and_plots_accuracy_against_it(model, tmp_path, capsys):
    pytest.importorskip("matplotlib", reason="the 'plots' extra (matplotlib) is not installed")
    import numpy as np
    from PIL import Image

    checkpoint = save_checkpoint(model, tmp_path / "ckpt")
    out = tmp_path / "out"
    assert main(["--benchmark", "synthetic", "--checkpoint", str(checkpoint), "--num-steps",
                 "1,2", "--out", str(out), "--max-sequences", "1"]) == 0
    assert (out / "K1" / "results.md").is_file() and (out / "K2" / "results.csv").is_file()
    with Image.open(out / "accuracy_vs_k.png") as image:
        image.verify()  # a complete, valid PNG
    with Image.open(out / "accuracy_vs_k.png") as image:
        assert image.format == "PNG" and image.size == (1000, 720)
        rgb = np.asarray(image.convert("RGB"))
    # Content: mostly white paper, black axes and text, and coloured data lines.
    colours = rgb.reshape(-1, 3).astype(int)
    saturated = (colours.max(axis=1) - colours.min(axis=1)) > 80
    assert (colours.min(axis=1) < 60).mean() > 0.005 and saturated.sum() > 100
    assert "K=1" in capsys.readouterr().out
    # Latency beside the tables: per K folder and for the sweep, and its two plots.
    for table in (out / "K1" / "latency.csv", out / "latency.csv"):
        rows = list(csv.DictReader(table.open()))
        assert {(r["dataset"], r["S"]) for r in rows} == {("synthetic", "3")}
        assert all(float(r["ms"]) > 0 and r["sequences"] == "1" for r in rows)
    assert sorted(r["K"] for r in csv.DictReader((out / "latency.csv").open())) == ["1", "2"]
    for name in ("latency_vs_k.png", "latency_vs_s.png"):
        with Image.open(out / name) as image:
            image.verify()
        with Image.open(out / name) as image:
            colours = np.asarray(image.convert("RGB")).reshape(-1, 3).astype(int)
        assert ((colours.max(axis=1) - colours.min(axis=1)) > 80).sum() > 20  # drawn data


@pytest.mark.parametrize("value", ["0", "2,2", "two"])
def test_dvlt_eval_refuses_bad_k_lists(value, tmp_path, capsys):
    with pytest.raises(SystemExit) as stop:
        main(["--benchmark", "synthetic", "--num-steps", value, "--out", str(tmp_path)])
    assert stop.value.code == 2 and "--num-steps" in capsys.readouterr().err


def test_dvlt_eval_runs_the_da3_backend(tmp_path, capsys):
    """The second model through the same evaluation: random DA3 weights saved as released."""
    pytest.importorskip("depth_anything_3", reason="the 'da3' extra is not installed")
    from dvlt_core.backends.da3_weights import save_random_da3_checkpoint

    checkpoint = save_random_da3_checkpoint(tmp_path / "da3")
    out = tmp_path / "out"
    assert main(["--benchmark", "synthetic", "--backend", "da3", "--checkpoint",
                 str(checkpoint), "--out", str(out),
                 "--max-sequences", "1"]) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["settings"]["backend"] == "da3" and metrics["settings"]["num_steps"] == 1
    assert "pose/Auc_30" in metrics["datasets"]["synthetic"]["aggregate"]


def test_dvlt_eval_da3_without_a_usable_checkpoint_is_one_line(tmp_path, capsys):
    assert main(["--benchmark", "synthetic", "--backend", "da3", "--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "the da3 backend needs a checkpoint" in err


def test_latency_is_recorded_per_sequence_and_plotted_against_k_and_s(model, tmp_path):
    """Latency rows group the sequences by dataset and number of views; the plots draw one
    line per S against K and one per K against S."""
    pytest.importorskip("matplotlib", reason="the 'plots' extra (matplotlib) is not installed")
    from matplotlib.image import imread

    from dvlt_core.eval.plots import write_latency_plots
    from dvlt_core.eval.runner import LATENCY_MS, NUM_VIEWS, latency_rows

    datasets = {"two": SyntheticEvalDataset(num_scenes=2, num_views=2, image_size=42),
                "three": SyntheticEvalDataset(num_scenes=1, num_views=3, image_size=42)}
    backend = create_backend("torch", model=model)
    rows = []
    for k in (1, 3):
        report = run_benchmark(backend, datasets, num_steps=k, progress=False)
        for result in report.datasets.values():
            for metrics in result.per_sequence.values():
                assert metrics[LATENCY_MS] > 0 and metrics[NUM_VIEWS] in (2.0, 3.0)
        by_dataset = latency_rows(report)
        assert [(r["dataset"], r["S"], r["K"], r["sequences"]) for r in by_dataset] == [
            ("three", 3, k, 1), ("two", 2, k, 2)]
        assert by_dataset[1]["ms"] == statistics.median(
            m[LATENCY_MS] for m in report.datasets["two"].per_sequence.values())
        rows += latency_rows(report, by_dataset=False)
    assert [(r["dataset"], r["S"], r["K"]) for r in rows] == [
        ("all", 2, 1), ("all", 3, 1), ("all", 2, 3), ("all", 3, 3)]
    paths = write_latency_plots(tmp_path, rows, title="latency")
    for path in paths:
        pixels = imread(path)  # matplotlib's own PNG reader: a complete image
        assert pixels.shape[2] in (3, 4) and pixels.shape[0] > 100
        rgb = (pixels[..., :3] * 255).astype(int).reshape(-1, 3)
        saturated = rgb[(rgb.max(axis=1) - rgb.min(axis=1)) > 80]
        assert len(saturated) > 100
        assert len({tuple(c // 32) for c in saturated}) >= 2  # two series, two colours
