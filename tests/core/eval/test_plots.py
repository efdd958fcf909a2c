"""The PNG plots of the benchmarks: valid images with drawn content, one line per series."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from dvlt_core.eval.plots import write_latency_plots

pytest.importorskip("matplotlib", reason="the 'plots' extra (matplotlib) is not installed")


def test_latency_plots_against_k_and_s_are_valid_pngs_with_lines(tmp_path):
    rows = [{"S": s, "K": k, "ms": 10.0 * s + 3.0 * k} for s in (2, 4, 8) for k in (1, 4, 16)]
    paths = write_latency_plots(tmp_path / "plots", rows, title="test")
    assert [p.name for p in paths] == ["latency_vs_k.png", "latency_vs_s.png"]
    for path in paths:
        with Image.open(path) as image:
            image.verify()
        with Image.open(path) as image:
            assert image.format == "PNG"
            colours = np.asarray(image.convert("RGB")).reshape(-1, 3).astype(int)
        saturated = (colours.max(axis=1) - colours.min(axis=1)) > 80
        assert saturated.sum() > 100  # the coloured data lines
        # three series, three default line colours of matplotlib's cycle
        hues = {tuple(c // 32) for c in colours[saturated]}
        assert len(hues) >= 3
    assert not [p for p in (tmp_path / "plots").iterdir() if p.suffix == ".part"]
