"""Helpers of the bag tests: small sample bags, rewriting bags into damaged variants, and
offline processing with the ground-truth backend."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from pathlib import Path

from dvlt_ros.bags.issues import IssueLog
from dvlt_ros.bags.processor import BagProcessor, ProcessOptions
from dvlt_ros.bags.sample import (
    SampleBagConfig,
    camera_names,
    ground_truth_backend,
    read_sample_config,
    write_sample_bag,
)
from dvlt_ros.bags.source import BagMessage, BagSource
from dvlt_ros.bags.writer import BagWriter
from dvlt_ros.pipeline.settings import load_parameters

IMG_SIZE = 112
SAMPLE = SampleBagConfig(frames=6, rate_hz=5.0, num_cameras=2, width=160, height=120)
# Small windows keep the CPU pose fit cheap: 2 cameras x 2 timesteps.
PARAMS = {"img_size": IMG_SIZE, "num_steps": 2, "window_timesteps": 2, "max_views": 4,
          "keyframe_min_spacing": 0.0}


def make_sample(path: Path, storage: str = "mcap", **changes) -> Path:
    config = SampleBagConfig(**{**SAMPLE.__dict__, **changes})
    return write_sample_bag(path, config, storage)


def rewrite_bag(src: Path, dst: Path,
                transform: Callable[[list[BagMessage]], Iterable[BagMessage]],
                storage: str = "mcap") -> Path:
    """Copy ``src`` to ``dst`` through ``transform`` (drop, reorder, repeat messages)."""
    with BagSource(src) as bag:
        messages = list(bag.messages())
        topics = dict(bag.topics)
    with BagWriter(dst, storage) as writer:
        for message in transform(messages):
            info = topics[message.topic]
            writer.add_topic(message.topic, message.msgtype,
                             latched=info.durability == "transient_local")
            writer.write_raw(message.topic, message.raw, message.log_ns)
    return dst


def parameters(bag: BagSource, **overrides) -> dict[str, object]:
    cameras = camera_names(read_sample_config(bag))
    return load_parameters(None, {"cameras": cameras, **PARAMS, **overrides})


def process(bag_path: Path, out: Path, options: ProcessOptions | None = None,
            backend_from: Path | None = None, remap: dict[str, str] | None = None,
            unscaled: bool = False, **overrides) -> tuple[dict, IssueLog]:
    """Process a sample bag with the ground-truth backend (``unscaled``: its up-to-scale,
    noisy variant); (summary, issues)."""
    issues = IssueLog()
    with BagSource(bag_path, issues, remap=remap) as bag:
        params = parameters(bag, **overrides)
        if backend_from is None:
            backend = ground_truth_backend(bag, IMG_SIZE, unscaled)
        else:
            with BagSource(backend_from) as full:
                backend = ground_truth_backend(full, IMG_SIZE, unscaled)
        processor = BagProcessor(bag, backend, params, out, options, issues=issues)
        return processor.run(), issues
