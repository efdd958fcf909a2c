"""Test support of the ``da3`` backend: a Depth Anything 3 checkpoint with random weights,
laid out as the released ones are (``config.json`` naming the model, ``model.safetensors`` of
the package's wrapper, keys ``model.<...>``, shared tensors stored once), for running the
backend without a download. Needs the depth-anything-3 package (the ``da3`` extra)."""

from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors.torch import save_model

from dvlt_core.backends.da3_backend import build_da3


def save_random_da3_checkpoint(folder: str | Path, model_name: str = "da3-small",
                               seed: int = 0) -> Path:
    """Write a ``model_name`` network with PyTorch's default initialisation under
    ``torch.manual_seed(seed)`` into ``folder``; returns the folder."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        wrapper = torch.nn.Module()
        wrapper.model = build_da3(model_name)
    save_model(wrapper, str(folder / "model.safetensors"))
    (folder / "config.json").write_text(json.dumps({"model_name": model_name}))
    return folder
