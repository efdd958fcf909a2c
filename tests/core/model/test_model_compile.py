"""Optional torch.compile (dvlt_core.model.compilation): parity with the golden case, refusals."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from dvlt_core.model import DVLTModel
from dvlt_core.model.compilation import compile_model, compiled_modules
from dvlt_core.testing import load_deterministic_weights
from dvlt_core.tools.parity import RAW_OUTPUTS, compare, format_table


def _small_case(reference_dir) -> tuple[DVLTModel, dict[str, np.ndarray]]:
    case = dict(np.load(reference_dir / "case_small_public.npz"))
    model = DVLTModel(**json.loads(str(case["config_json"]))).eval()
    load_deterministic_weights(model, int(case["weights_seed"]), str(case["weights_sha256"]))
    return model, case


@pytest.mark.slow
def test_compiled_model_reproduces_the_small_golden_case(reference_dir):
    """Inductor changes the rounding, not the result: every raw output stays within the same
    reference tolerances as the eager model (compiling ViT-S takes 1-3 min on 2 cores)."""
    model, case = _small_case(reference_dir)
    compile_model(model)
    with torch.inference_mode():
        outputs = model(torch.from_numpy(case["images"]), num_steps=int(case["K"]))
    checks = [
        compare(f"raw_{key}", outputs[key].numpy(), case[f"raw_{key}"])
        for key in RAW_OUTPUTS
        if f"raw_{key}" in case and key in outputs
    ]
    assert len(checks) >= 4
    assert all(c.passed for c in checks), format_table(checks)


def test_compile_covers_backbone_loop_and_decoder_blocks_only(reference_dir):
    model, _ = _small_case(reference_dir)
    modules = compiled_modules(model)
    assert modules[0] is model.patch_embed_encoder
    assert len(modules) == 1 + len(model.recurrent_blocks) + len(model.ray_decoder.blocks) + len(
        model.depth_decoder.blocks
    )
    assert all(not isinstance(m, DVLTModel) for m in modules)


def test_unknown_compile_mode_is_refused(reference_dir):
    model, _ = _small_case(reference_dir)
    with pytest.raises(ValueError, match="compile mode must be one of"):
        compile_model(model, mode="fastest")
