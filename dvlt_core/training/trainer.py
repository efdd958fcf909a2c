"""The training loop on ``accelerate``: one process per GPU, launched alone or by
``accelerate launch`` (multi-GPU, multi-node).

Per iteration: the next token-budget batch (each rank its own share), the loop steps of this
global step (:func:`~dvlt_core.training.forward.training_plan`, identical on every rank), the
forward pass under the configured mixed precision, :class:`MultiTaskLoss`, backward; every
``gradient_accumulation_steps`` micro-batches the gradients are clipped, AdamW steps and the
schedule advances. Checkpoints (:mod:`dvlt_core.training.state`) hold everything needed for a
bit-identical continuation: weights, optimizer, scheduler, the number of batches consumed (the
sampler regenerates the same stream) and every rank's RNG state.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import DataLoader
from tqdm.auto import tqdm

from dvlt_core.io.checkpoint import read_state_dict, resolve_checkpoint, save_checkpoint
from dvlt_core.model import DVLTModel
from dvlt_core.training.config import TrainConfig, save_config
from dvlt_core.training.data import (
    MultiViewDataset,
    Scene,
    TokenBudgetBatchSampler,
    ViewSampling,
    collate_samples,
    scenes_from_sources,
)
from dvlt_core.training.finetune import apply_freezing, optimizer_param_groups
from dvlt_core.training.forward import TrainingForward, training_plan
from dvlt_core.training.losses import MultiTaskLoss
from dvlt_core.training.lr_schedule import build_optimizer, build_scheduler
from dvlt_core.training.state import (
    begin_checkpoint,
    finish_checkpoint,
    load_training_state,
    resolve_resume,
    set_rng_state,
    write_rank_state,
)

logger = logging.getLogger(__name__)
FINAL_MODEL_DIR = "final_model"
BATCH_TENSOR_KEYS = ("images", "depths", "extrinsics_c2w", "intrinsics", "world_points",
                     "point_masks", "scale_factor", "is_synthetic")


def _require_accelerate():
    try:
        import accelerate
    except ImportError as exc:
        raise ImportError(
            "training needs the 'train' extra: pip install 'dvlt_ros[train]' "
            "(accelerate, tensorboard)"
        ) from exc
    return accelerate


@dataclass
class TrainResult:
    """Where the run ended and what it logged (main process)."""

    global_step: int
    output_dir: Path
    final_model: Path | None
    history: list[dict[str, float]] = field(default_factory=list)


def load_initial_weights(model: DVLTModel, source: str, strict: bool) -> None:
    """Load ``source`` into ``model``; non-strict drops mismatched shapes and logs the rest."""
    state = read_state_dict(resolve_checkpoint(source).weights)
    if strict:
        model.load_state_dict(state, strict=True)
        return
    own = model.state_dict()
    mismatched = [k for k, v in state.items() if k in own and v.shape != own[k].shape]
    state = {k: v for k, v in state.items() if k not in mismatched}
    missing, unexpected = model.load_state_dict(state, strict=False)
    logger.info("init from %s: %d loaded, %d missing, %d unexpected, %d shape-mismatched",
                source, len(state) - len(unexpected), len(missing), len(unexpected),
                len(mismatched))


def _flat_hparams(tree: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in tree.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            out.update(_flat_hparams(value, f"{name}/"))
        elif isinstance(value, bool | int | float | str):
            out[name] = value
        else:
            out[name] = str(value)
    return out


class Trainer:
    """Runs a :class:`TrainConfig`; ``scenes`` overrides ``data.sources`` (tests, notebooks)."""

    def __init__(
        self,
        config: TrainConfig,
        output_dir: str | Path | None = None,
        scenes: Sequence[Scene] | None = None,
    ) -> None:
        config.validate()
        self.config = config
        t = config.trainer
        self.output_dir = Path(output_dir or Path(t.output_dir) / t.experiment_name)
        self._scenes = list(scenes) if scenes is not None else None

    # ---- setup --------------------------------------------------------------------------

    def _accelerator(self):
        accelerate = _require_accelerate()
        from accelerate.utils import DistributedDataParallelKwargs, ProjectConfiguration

        t = self.config.trainer
        return accelerate.Accelerator(
            cpu=t.cpu,
            mixed_precision=t.mixed_precision,
            gradient_accumulation_steps=t.gradient_accumulation_steps,
            log_with=list(t.log_with) or None,
            project_config=ProjectConfiguration(
                project_dir=str(self.output_dir), logging_dir=str(self.output_dir / "logs")
            ),
            kwargs_handlers=[
                DistributedDataParallelKwargs(find_unused_parameters=t.find_unused_parameters)
            ],
        )

    def _data_loader(self, rank: int, world: int, start: int) -> DataLoader:
        d = self.config.data
        scenes = self._scenes if self._scenes is not None else scenes_from_sources(d.sources)
        sampling = ViewSampling(d.view_ranking, d.view_ordering, d.window_size,
                                d.window_size_ratio)
        dataset = MultiViewDataset(scenes, d.image_size, d.patch_size, sampling)
        sampler = TokenBudgetBatchSampler(
            len(dataset),
            images_per_batch=d.images_per_batch,
            images_per_element=tuple(d.images_per_element),
            tokens_per_batch=d.tokens_per_batch,
            aspect_ratios=tuple(d.aspect_ratios),
            image_size=d.image_size,
            patch_size=d.patch_size,
            seed=d.seed,
            num_replicas=world,
            rank=rank,
            min_epoch_length=d.min_epoch_length,
        )
        sampler.load_state_dict({"start": start})
        extra = {}
        if d.num_workers > 0:
            extra = {"prefetch_factor": d.prefetch_factor, "persistent_workers": True}
        return DataLoader(dataset, batch_sampler=sampler, collate_fn=collate_samples,
                          num_workers=d.num_workers, pin_memory=d.pin_memory, **extra)

    def _build_model(self) -> DVLTModel:
        model = DVLTModel(**self.config.model_config().to_dict())
        init = self.config.init
        if init.checkpoint:
            load_initial_weights(model, init.checkpoint, init.strict)
        return model

    # ---- run ----------------------------------------------------------------------------

    def fit(self, resume: str | None = None) -> TrainResult:
        """Train to ``trainer.max_train_steps``; ``resume`` is ``latest``, a name or a path."""
        cfg = self.config
        t, o, s = cfg.trainer, cfg.optimizer, cfg.scheduler
        acc = self._accelerator()
        from accelerate.utils import set_seed

        set_seed(t.seed + acc.process_index)
        torch.backends.cuda.matmul.allow_tf32 = t.allow_tf32
        if acc.is_main_process:
            self.output_dir.mkdir(parents=True, exist_ok=True)
            save_config(cfg, self.output_dir / "config.yaml")

        model = self._build_model()
        groups = apply_freezing(model, cfg.finetune.mode, cfg.finetune.freeze)
        trainable = [p for ps in groups.values() for p in ps]
        optimizer = build_optimizer(
            optimizer_param_groups(model, groups, o.learning_rate, o.weight_decay,
                                   o.lr_param_group_multipliers),
            betas=tuple(o.betas), eps=o.eps,
        )
        scheduler = build_scheduler(optimizer, s.name, s.warmup_steps, t.max_train_steps,
                                    s.num_cycles, s.min_lr_ratio)
        global_step, consumed, rng = 0, 0, None
        if resume is not None:
            path = resolve_resume(self.output_dir, resume)
            model.load_state_dict(read_state_dict(path / "model.safetensors"), strict=True)
            state = load_training_state(path, acc.process_index)
            optimizer.load_state_dict(state.optimizer)
            scheduler.load_state_dict(state.scheduler)
            global_step, consumed, rng = state.global_step, state.batches_consumed, state.rng
            logger.info("resumed from %s at step %d", path, global_step)

        loader = self._data_loader(acc.process_index, acc.num_processes, consumed)
        forward = TrainingForward(model, t.gradient_checkpointing).train()
        forward, optimizer = acc.prepare(forward, optimizer)
        loss_fn = MultiTaskLoss(cfg.loss.build())
        model_config = model.config
        if t.log_with:
            acc.init_trackers(t.wandb_project if "wandb" in t.log_with else t.experiment_name,
                              config=_flat_hparams(cfg.to_dict()))

        history: list[dict[str, float]] = []
        bar = tqdm(total=t.max_train_steps, initial=global_step, desc="train",
                   disable=not (t.progress_bar and acc.is_local_main_process))
        batches = iter(loader)
        if rng is not None:  # last: everything above may draw from the global generators
            set_rng_state(rng)
        tic = time.perf_counter()
        while global_step < t.max_train_steps:
            batch = next(batches)
            consumed += 1
            batch = {k: batch[k].to(acc.device, non_blocking=True) for k in BATCH_TENSOR_KEYS}
            plan = training_plan(model_config, global_step)
            with acc.accumulate(forward):
                predictions = forward(batch["images"], plan.t_pairs, plan.blocks)
                out = loss_fn(predictions, batch)
                # One process only: a rank raising alone would leave the others blocked in
                # the gradient all-reduce; with several, the gathered check in _metrics fails
                # on every rank together.
                if acc.num_processes == 1 and not torch.isfinite(out.total):
                    raise FloatingPointError(
                        f"non-finite training loss {out.total.item()} at step {global_step} "
                        f"({ {k: v.item() for k, v in out.per_loss.items()} }); lower the "
                        "learning rate or check the data"
                    )
                acc.backward(out.total)
                grad_norm = None
                if acc.sync_gradients:
                    grad_norm = acc.clip_grad_norm_(trainable, o.max_grad_norm)
                optimizer.step()
                optimizer.zero_grad(set_to_none=True)
            if not acc.sync_gradients:
                continue
            scheduler.step()
            global_step += 1
            bar.update(1)
            record = self._metrics(acc, out, plan.num_steps, grad_norm, scheduler, tic)
            tic = time.perf_counter()
            history.append({"step": global_step, **record})
            if global_step % t.log_every == 0 or global_step == t.max_train_steps:
                acc.log(record, step=global_step)
                bar.set_postfix(loss=f"{record['train/loss']:.4f}", K=plan.num_steps)
            if global_step % t.checkpointing_steps == 0:
                self._save(acc, model, global_step, consumed, optimizer, scheduler)
        bar.close()

        final = None
        acc.wait_for_everyone()
        if acc.is_main_process:
            final = save_checkpoint(model, self.output_dir / FINAL_MODEL_DIR)
        acc.end_training()
        if acc.num_processes == 1:
            # Let a later run in this process choose another precision or accumulation.
            from accelerate.state import AcceleratorState, GradientState

            AcceleratorState._reset_state(reset_partial_state=True)
            GradientState._reset_state()
        return TrainResult(global_step, self.output_dir, final, history)

    def _metrics(self, acc, out, num_steps, grad_norm, scheduler, tic) -> dict[str, float]:
        values = {"train/loss": out.total.detach(),
                  **{f"train/loss_{k}": v.detach() for k, v in out.per_loss.items()}}
        values = {k: acc.gather(v.reshape(1)).mean().item() for k, v in values.items()}
        values["train/K"] = float(num_steps)
        if grad_norm is not None:
            values["train/grad_norm"] = float(grad_norm)
        for group, lr in zip(scheduler.optimizer.param_groups, scheduler.get_last_lr(),
                             strict=True):
            values[f"lr/{group['name']}"] = lr
        values["time/step_s"] = time.perf_counter() - tic
        if not math.isfinite(values["train/loss"]):
            raise FloatingPointError("non-finite loss across ranks")
        return values

    def _save(self, acc, model, global_step, consumed, optimizer, scheduler) -> None:
        tmp = self.output_dir / f".checkpoint-{global_step}.partial"
        if acc.is_main_process:
            begin_checkpoint(self.output_dir, global_step)
        acc.wait_for_everyone()
        write_rank_state(tmp, acc.process_index)
        acc.wait_for_everyone()
        if acc.is_main_process:
            final = finish_checkpoint(
                tmp, model, global_step=global_step, batches_consumed=consumed,
                optimizer=optimizer, scheduler=scheduler,
                keep=self.config.trainer.checkpoints_total_limit,
            )
            logger.info("saved %s", final)
        acc.wait_for_everyone()
