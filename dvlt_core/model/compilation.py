"""Optional ``torch.compile`` of the model's transformer parts (off by default).

:func:`compile_model` compiles, in place and for static shapes, the modules that are only
tensor arithmetic: the DINOv2 backbone, every looped block and every decoder transformer block.
The rest (stage plumbing, cached constants, the conv head, whose convolutions are oneDNN
kernels either way) stays eager, so ``encode`` / ``step`` / ``decode`` keep their signatures.
Each new (B, S, H, W) compiles once more (minutes on a small CPU). Inductor fuses the
element-wise work and reorders some reductions, so the outputs move by a few float32 ulps:
within the reference tolerances (``tests/core/model/test_model_compile.py``) but no longer
bit-identical to eager. A compiled model is for inference; export the eager model.

Measured on the project's 2-core AVX2 CPU (docs/model.md, "CPU speed"): no faster than eager,
hence off by default everywhere.
"""

from __future__ import annotations

from torch import nn

from dvlt_core.model.dvlt import DVLTModel

#: ``mode`` values of ``torch.compile`` accepted here (None: inductor's default).
COMPILE_MODES = (None, "default", "reduce-overhead", "max-autotune")


def compiled_modules(model: DVLTModel) -> list[nn.Module]:
    """The modules :func:`compile_model` compiles, in call order."""
    decoder_blocks = [block for d in (model.ray_decoder, model.depth_decoder) for block in d.blocks]
    return [model.patch_embed_encoder, *model.recurrent_blocks, *decoder_blocks]


def compile_model(model: DVLTModel, *, mode: str | None = None) -> DVLTModel:
    """Compile ``model``'s transformer modules in place (``dynamic=False``); returns ``model``.

    ``mode`` is passed to ``torch.compile``; on CUDA ``"reduce-overhead"`` also records
    each compiled module's kernels as a CUDA graph.
    """
    if mode not in COMPILE_MODES:
        raise ValueError(f"compile mode must be one of {list(COMPILE_MODES)}, got {mode!r}")
    for module in compiled_modules(model):
        module.compile(dynamic=False, mode=mode)
    return model
