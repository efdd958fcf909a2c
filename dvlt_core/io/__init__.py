"""Checkpoint loading, image/video input and preprocessing, and the preprocessing record."""

from dvlt_core.io.checkpoint import (
    CheckpointError,
    default_checkpoint,
    load_model,
    resolve_checkpoint,
    save_checkpoint,
)
from dvlt_core.io.images import ImageSequence, PreprocessedBatch, load_sequence, preprocess
from dvlt_core.io.view_transforms import ViewTransform

__all__ = [
    "CheckpointError",
    "ImageSequence",
    "PreprocessedBatch",
    "ViewTransform",
    "default_checkpoint",
    "load_model",
    "load_sequence",
    "preprocess",
    "resolve_checkpoint",
    "save_checkpoint",
]
