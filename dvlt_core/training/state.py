"""Training checkpoints: weights as safetensors plus optimizer, scheduler, data and RNG state.

A checkpoint is a folder ``checkpoint-<step>/`` holding

* ``model.safetensors`` + ``config.json`` (loadable with :func:`dvlt_core.io.load_model`),
* ``training_state.pt``: global step, batches consumed, optimizer and scheduler state dicts,
* ``rng_state_<rank>.pt``: Python, NumPy, torch CPU (and CUDA) generator states of each rank.

It is written into a hidden ``.checkpoint-<step>.partial`` folder and renamed when complete, so
a crash never leaves a half-written ``checkpoint-*``. Everything is read back with
``torch.load(weights_only=True)`` (plain tensors, numbers, strings and containers only).
"""

from __future__ import annotations

import os
import random
import re
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from dvlt_core.io.checkpoint import save_checkpoint
from dvlt_core.model import DVLTModel

CHECKPOINT_PATTERN = re.compile(r"^checkpoint-(\d+)$")
STATE_FILE = "training_state.pt"
STATE_VERSION = 1


def rng_state() -> dict[str, Any]:
    """The generator states of this process, in weights-only-loadable form."""
    kind, keys, pos, has_gauss, gauss = np.random.get_state()
    state = {
        "python": random.getstate(),
        "numpy": [kind, torch.from_numpy(keys.astype(np.int64)), pos, has_gauss, gauss],
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    """Restore what :func:`rng_state` returned."""
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    kind, keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((kind, keys.numpy().astype(np.uint32), pos, has_gauss, cached))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


@dataclass(frozen=True)
class LoadedState:
    """What :func:`load_training_state` restores besides the RNG."""

    global_step: int
    batches_consumed: int
    optimizer: dict[str, Any]
    scheduler: dict[str, Any]
    rng: dict[str, Any] | None  # this rank's generator states, for :func:`set_rng_state`


def checkpoint_dirs(output_dir: str | Path) -> list[Path]:
    """Completed ``checkpoint-<step>`` folders in ``output_dir``, oldest first."""
    output_dir = Path(output_dir)
    if not output_dir.is_dir():
        return []
    found = [(int(m.group(1)), p) for p in output_dir.iterdir()
             if p.is_dir() and (m := CHECKPOINT_PATTERN.match(p.name))]
    return [p for _, p in sorted(found)]


def resolve_resume(output_dir: str | Path, resume: str) -> Path:
    """``latest`` (newest checkpoint in ``output_dir``), a checkpoint name or a path."""
    if resume == "latest":
        found = checkpoint_dirs(output_dir)
        if not found:
            raise FileNotFoundError(
                f"resume=latest but {output_dir} holds no checkpoint-<step> folder; start without "
                "--resume or point it at a checkpoint"
            )
        return found[-1]
    path = Path(resume)
    if not path.is_absolute() and not path.exists():
        path = Path(output_dir) / resume
    if not (path / STATE_FILE).is_file():
        raise FileNotFoundError(f"{path} is not a training checkpoint (no {STATE_FILE})")
    return path


def begin_checkpoint(output_dir: Path, step: int) -> Path:
    """Create (afresh) the hidden folder a checkpoint is written into."""
    tmp = output_dir / f".checkpoint-{step}.partial"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    return tmp


def write_rank_state(tmp: Path, rank: int) -> None:
    """This rank's RNG state (every rank calls this before :func:`finish_checkpoint`)."""
    torch.save(rng_state(), tmp / f"rng_state_{rank}.pt")


def finish_checkpoint(
    tmp: Path,
    model: DVLTModel,
    *,
    global_step: int,
    batches_consumed: int,
    optimizer: torch.optim.Optimizer,
    scheduler: torch.optim.lr_scheduler.LRScheduler,
    keep: int,
) -> Path:
    """Write weights and state into ``tmp``, publish it as ``checkpoint-<step>``, prune old ones
    (``keep`` < 0 keeps all). Main process only."""
    save_checkpoint(model, tmp)
    torch.save(
        {
            "version": STATE_VERSION,
            "global_step": global_step,
            "batches_consumed": batches_consumed,
            "optimizer": optimizer.state_dict(),
            "scheduler": scheduler.state_dict(),
        },
        tmp / STATE_FILE,
    )
    final = tmp.parent / f"checkpoint-{global_step}"
    if final.exists():
        shutil.rmtree(final)
    os.replace(tmp, final)
    if keep >= 0:
        for old in checkpoint_dirs(tmp.parent)[:-keep or None]:
            if old != final:
                shutil.rmtree(old, ignore_errors=True)
    return final


def load_training_state(path: Path, rank: int) -> LoadedState:
    """Read a checkpoint's training state, including this rank's RNG state.

    Weights are loaded separately (``model.safetensors``). ``rng`` is None for a rank without
    its own file (resuming on more processes than were saved): it keeps its fresh seeding.
    """
    state = torch.load(path / STATE_FILE, map_location="cpu", weights_only=True)
    if state.get("version") != STATE_VERSION:
        raise ValueError(f"{path / STATE_FILE} has version {state.get('version')}, expected "
                         f"{STATE_VERSION}")
    rng_file = path / f"rng_state_{rank}.pt"
    rng = None
    if rng_file.is_file():
        rng = torch.load(rng_file, map_location="cpu", weights_only=True)
    return LoadedState(
        global_step=int(state["global_step"]),
        batches_consumed=int(state["batches_consumed"]),
        optimizer=state["optimizer"],
        scheduler=state["scheduler"],
        rng=rng,
    )
