"""Typed training configuration, read from YAML with ``base:`` inheritance and dotted overrides.

A config file has the sections ``model`` (``DVLTModel`` constructor arguments), ``init``,
``finetune``, ``loss``, ``data``, ``optimizer``, ``scheduler`` and ``trainer``; every key is
checked against the dataclasses below, so a typo fails loudly. ``base: other.yaml`` (relative to
the file) is loaded first and deep-merged under the file. Overrides are ``section.key=value``
strings whose value is parsed as YAML (``trainer.max_train_steps=10``,
``data.images_per_element=[2,4]``, ``init.checkpoint=null``).
"""

from __future__ import annotations

import copy
import dataclasses
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from dvlt_core.model import DVLTConfig
from dvlt_core.model.config import PATCH_SIZE
from dvlt_core.training.losses import LossConfig

TRAINING_ONLY_MODEL_KEYS = ("finetune_mode", "freeze", "loss")
LOSS_PRESETS = ("upstream", "corrected", "depth_finetune")
MIXED_PRECISIONS = ("no", "fp16", "bf16")
LOGGERS = ("tensorboard", "wandb")


class ConfigError(ValueError):
    """A training config is malformed."""


@dataclass
class InitConfig:
    """Weights to start from: a checkpoint folder, file, URL or Hub id (None = random init).

    ``strict=False`` loads what matches and leaves mismatching keys at their initialisation
    (upstream's stage 2 starts the conv depth head from a stage-1 linear-head checkpoint).
    """

    checkpoint: str | None = None
    strict: bool = True


@dataclass
class FinetuneConfig:
    """``mode``: None, ``depth_output``, ``depth_decoder``, ``depth_decoder_recurrent`` or
    ``all_heads``; ``freeze``: extra dotted module/parameter paths to freeze."""

    mode: str | None = None
    freeze: list[str] = field(default_factory=list)


@dataclass
class LossSection:
    """``preset`` (upstream / corrected / depth_finetune) with per-term field overrides."""

    preset: str = "upstream"
    pmap: dict[str, Any] = field(default_factory=dict)
    depth: dict[str, Any] = field(default_factory=dict)
    ray: dict[str, Any] = field(default_factory=dict)
    cam: dict[str, Any] = field(default_factory=dict)
    normalize: bool | None = None
    detach_pred_scale: bool | None = None

    def build(self) -> LossConfig:
        if self.preset not in LOSS_PRESETS:
            raise ConfigError(f"loss.preset must be one of {LOSS_PRESETS}, got {self.preset!r}")
        base = getattr(LossConfig, self.preset)()
        changes: dict[str, Any] = {}
        for term in ("pmap", "depth", "ray", "cam"):
            overrides = getattr(self, term)
            if overrides:
                try:
                    changes[term] = dataclasses.replace(getattr(base, term), **overrides)
                except TypeError as exc:
                    raise ConfigError(f"loss.{term}: {exc}") from None
        for flag in ("normalize", "detach_pred_scale"):
            if getattr(self, flag) is not None:
                changes[flag] = getattr(self, flag)
        return dataclasses.replace(base, **changes)


@dataclass
class DataConfig:
    """Training data and upstream's token-budget batching (``DataModule`` arguments)."""

    sources: list[dict[str, Any]] = field(default_factory=list)
    image_size: int = 518
    patch_size: int = PATCH_SIZE
    tokens_per_batch: int | None = None
    images_per_batch: int = 48
    images_per_element: list[int] = field(default_factory=lambda: [2, 24])
    aspect_ratios: list[float] = field(default_factory=lambda: [0.33, 1.0])
    view_ranking: str = "pose"
    view_ordering: str = "random_ordered"
    window_size: int | None = None
    window_size_ratio: float | None = 10.0
    min_epoch_length: int = 1000
    num_workers: int = 2
    prefetch_factor: int = 2
    pin_memory: bool = False
    seed: int = 42


@dataclass
class OptimizerConfig:
    """AdamW with per-group learning-rate multipliers and gradient clipping."""

    learning_rate: float = 1e-5
    weight_decay: float = 1e-2
    betas: list[float] = field(default_factory=lambda: [0.9, 0.999])
    eps: float = 1e-8
    max_grad_norm: float = 1.0
    lr_param_group_multipliers: dict[str, float] = field(default_factory=dict)


@dataclass
class SchedulerConfig:
    """Learning-rate schedule per optimizer step (see :mod:`dvlt_core.training.lr_schedule`)."""

    name: str = "constant"
    warmup_steps: int = 500
    num_cycles: float = 0.5
    min_lr_ratio: float = 0.01


@dataclass
class TrainerConfig:
    """Loop, precision, checkpointing and logging."""

    experiment_name: str = "unnamed"
    output_dir: str = "outputs"
    max_train_steps: int = 50_000
    gradient_accumulation_steps: int = 1
    gradient_checkpointing: bool = False
    mixed_precision: str = "no"
    cpu: bool = False  # train on the CPU even where CUDA is available
    allow_tf32: bool = False
    seed: int = 42
    checkpointing_steps: int = 5000
    checkpoints_total_limit: int = 2
    log_with: list[str] = field(default_factory=lambda: ["tensorboard"])
    log_every: int = 10
    progress_bar: bool = True
    wandb_project: str = "dvlt"
    find_unused_parameters: bool = False


@dataclass
class TrainConfig:
    """The whole training configuration."""

    model: dict[str, Any] = field(default_factory=dict)
    init: InitConfig = field(default_factory=InitConfig)
    finetune: FinetuneConfig = field(default_factory=FinetuneConfig)
    loss: LossSection = field(default_factory=LossSection)
    data: DataConfig = field(default_factory=DataConfig)
    optimizer: OptimizerConfig = field(default_factory=OptimizerConfig)
    scheduler: SchedulerConfig = field(default_factory=SchedulerConfig)
    trainer: TrainerConfig = field(default_factory=TrainerConfig)

    def model_config(self) -> DVLTConfig:
        """The ``DVLTConfig`` the ``model`` section describes."""
        bad = [k for k in TRAINING_ONLY_MODEL_KEYS if k in self.model]
        if bad:
            raise ConfigError(
                f"model.{bad[0]} is a training setting: use finetune.mode, finetune.freeze or "
                "the loss section instead"
            )
        try:
            return DVLTConfig.from_kwargs(self.model)
        except ValueError as exc:
            raise ConfigError(f"model: {exc}") from None

    def validate(self) -> None:
        """Raise :class:`ConfigError` on inconsistent settings."""
        self.model_config()
        self.loss.build()
        t, d = self.trainer, self.data
        if t.mixed_precision not in MIXED_PRECISIONS:
            raise ConfigError(f"trainer.mixed_precision must be one of {MIXED_PRECISIONS}")
        unknown = sorted(set(t.log_with) - set(LOGGERS))
        if unknown:
            raise ConfigError(f"trainer.log_with: unknown logger(s) {unknown}; use {LOGGERS}")
        for name in ("max_train_steps", "gradient_accumulation_steps", "checkpointing_steps",
                     "log_every"):
            if getattr(t, name) < 1:
                raise ConfigError(f"trainer.{name} must be >= 1")
        if len(d.images_per_element) != 2 or len(d.aspect_ratios) != 2:
            raise ConfigError("data.images_per_element and data.aspect_ratios are [min, max]")
        if d.image_size % d.patch_size:
            raise ConfigError(f"data.image_size {d.image_size} is not a multiple of the patch "
                              f"size {d.patch_size}")
        if not d.sources:
            raise ConfigError("data.sources is empty: add a folder, scannetpp or synthetic source")

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


_SECTIONS = {
    "init": InitConfig,
    "finetune": FinetuneConfig,
    "loss": LossSection,
    "data": DataConfig,
    "optimizer": OptimizerConfig,
    "scheduler": SchedulerConfig,
    "trainer": TrainerConfig,
}


def deep_merge(base: Mapping[str, Any], update: Mapping[str, Any]) -> dict[str, Any]:
    """``update`` merged into a copy of ``base`` (nested mappings merged, other values replaced)."""
    out = copy.deepcopy(dict(base))
    for key, value in update.items():
        if isinstance(value, Mapping) and isinstance(out.get(key), Mapping):
            out[key] = deep_merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def read_yaml_tree(path: str | Path, _seen: tuple[Path, ...] = ()) -> dict[str, Any]:
    """A YAML config with its ``base:`` chain resolved (the file wins over its base)."""
    path = Path(path).resolve()
    if path in _seen:
        raise ConfigError(f"circular base: chain through {path}")
    if not path.is_file():
        raise ConfigError(f"config file {path} not found")
    data = yaml.safe_load(path.read_text()) or {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path} must hold a mapping of sections")
    base = data.pop("base", None)
    if base is None:
        return data
    return deep_merge(read_yaml_tree(path.parent / base, (*_seen, path)), data)


def apply_overrides(tree: Mapping[str, Any], overrides: Sequence[str]) -> dict[str, Any]:
    """Apply ``a.b.c=value`` strings (values parsed as YAML) to a config tree."""
    out = copy.deepcopy(dict(tree))
    for item in overrides:
        key, sep, raw = item.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"override {item!r} must look like section.key=value")
        parts = key.strip().split(".")
        node = out
        for part in parts[:-1]:
            child = node.setdefault(part, {})
            if not isinstance(child, dict):
                raise ConfigError(f"override {item!r}: {part!r} is not a section")
            node = child
        node[parts[-1]] = yaml.safe_load(raw)
    return out


def _build_section(name: str, cls: type, values: Any) -> Any:
    if values is None:
        return cls()
    if not isinstance(values, Mapping):
        raise ConfigError(f"section {name!r} must be a mapping")
    known = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(values) - known)
    if unknown:
        raise ConfigError(f"unknown key(s) {unknown} in section {name!r}; known: {sorted(known)}")
    return cls(**values)


def config_from_dict(tree: Mapping[str, Any]) -> TrainConfig:
    """A validated :class:`TrainConfig` from a plain config tree."""
    unknown = sorted(set(tree) - {"model", *_SECTIONS})
    if unknown:
        raise ConfigError(f"unknown section(s) {unknown}; known: model, {', '.join(_SECTIONS)}")
    model = tree.get("model") or {}
    if not isinstance(model, Mapping):
        raise ConfigError("section 'model' must be a mapping of DVLTModel arguments")
    config = TrainConfig(
        model=dict(model),
        **{name: _build_section(name, cls, tree.get(name)) for name, cls in _SECTIONS.items()},
    )
    config.validate()
    return config


def load_config(path: str | Path, overrides: Sequence[str] = ()) -> TrainConfig:
    """Read ``path`` (with its ``base:`` chain), apply ``overrides`` and validate."""
    return config_from_dict(apply_overrides(read_yaml_tree(path), overrides))


def save_config(config: TrainConfig, path: str | Path) -> None:
    """Write the resolved config as YAML (re-loadable with :func:`load_config`)."""
    Path(path).write_text(yaml.safe_dump(config.to_dict(), sort_keys=False))
