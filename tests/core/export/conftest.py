"""One ONNX export of the small reference model, shared by the export tests of a session."""

from __future__ import annotations

import contextlib
import io
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

from dvlt_core.io.checkpoint import save_checkpoint
from dvlt_core.model import DVLTModel
from dvlt_core.testing import load_deterministic_weights

EXPORT_EXTRA = ("onnx", "onnxruntime")
HEIGHT, WIDTH = 56, 70
VIEWS = "1:2:4"


@dataclass(frozen=True)
class SmallExport:
    model: DVLTModel
    checkpoint: Path
    out: Path
    exit_code: int
    log: str


@pytest.fixture(scope="session")
def small_export(reference_dir, tmp_path_factory) -> SmallExport:
    """``dvlt-export --onnx-only`` of the ViT-S case config (deterministic weights, seed 0)."""
    for name in EXPORT_EXTRA:  # without the export extra, the tests using it are skipped
        pytest.importorskip(name, reason=f"needs {name}: pip install -e '.[export]'")
    from dvlt_core.cli.export import main

    with np.load(reference_dir / "case_small_public.npz") as case:
        config = json.loads(str(case["config_json"]))
    model = DVLTModel(**config).eval()
    load_deterministic_weights(model, 0)
    root = tmp_path_factory.mktemp("dvlt_export")
    checkpoint = save_checkpoint(model, root / "checkpoint")
    out = root / "export"
    log = io.StringIO()
    with contextlib.redirect_stderr(log):
        code = main(["--checkpoint", str(checkpoint), "--out", str(out), "--height", str(HEIGHT),
                     "--width", str(WIDTH), "--views", VIEWS, "--onnx-only"])
    return SmallExport(model, checkpoint, out, code, log.getvalue())
