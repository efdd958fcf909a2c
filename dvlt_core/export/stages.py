"""The stages of an export (encoder, loop step, decoder): the file of each graph, what it takes
and returns, and the identity it records in its ONNX ``metadata_props``.

``dvlt-export`` writes the identity into every graph (:func:`stage_identity`) and
:func:`stage_problems` compares a graph's declared signature with what its manifest entry
says it is: the stage and block, the image size, the weights and model config it was exported
from, float32 inputs and outputs with these names and static shapes (only the view axis S is
symbolic), and the opset. A graph swapped with another stage or copied from another export
therefore fails even when its sha256 was written into the manifest.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from typing import Any

from dvlt_core.export.onnx_signature import FLOAT32, GraphSignature, TensorSignature, shape_text
from dvlt_core.model.config import DVLTConfig
from dvlt_core.model.schedule import inference_plan

MIN_OPSET = 17
VIEW_AXIS = 1
VIEWS = "S"  # the symbolic view axis in the shapes below

ENCODER_INPUTS = ("images",)
ENCODER_OUTPUTS = ("tokens",)
STEP_INPUTS = ("tokens", "t_now", "t_next")
STEP_OUTPUTS = ("tokens_out",)
DECODER_INPUTS = ("tokens",)
DECODER_OUTPUTS = ("rays", "depth", "depth_conf", "world_points", "pose_enc")
#: The step's time inputs: the exporter drops the ones a model without gates does not read.
OPTIONAL_STEP_INPUTS = frozenset({"t_now", "t_next"})

STAGE_KEY = "dvlt.stage"
BLOCK_KEY = "dvlt.block"
IMAGE_KEY = "dvlt.image_hw"
WEIGHTS_KEY = "dvlt.checkpoint_sha256"
CONFIG_KEY = "dvlt.config_sha256"
PRECISION_KEY = "dvlt.precision"  # set by mixed_precision on the derived fp16/bf16 graphs


@dataclass(frozen=True)
class ExportSizes:
    """The sizes every graph of one export shares: image H x W, tokens per view P, token
    width C, and the decoder's outputs."""

    height: int
    width: int
    num_tokens: int
    embed_dim: int
    outputs: tuple[str, ...]


def step_blocks(config: DVLTConfig) -> list[int]:
    """Block indices the loop can use: all blocks for a fixed per-step-block plan, else [0]."""
    if config.k_sampling is None:
        plan = inference_plan(config.k_sampling, config.recurrence_mode, config.num_steps,
                              config.default_num_steps)
        return sorted(set(plan.block_indices))
    return [0]


def step_file_name(block_index: int, num_blocks: int) -> str:
    return "step.onnx" if num_blocks == 1 else f"step_block{block_index:02d}.onnx"


def decoder_outputs(config: DVLTConfig) -> tuple[str, ...]:
    return DECODER_OUTPUTS if config.camera_head else DECODER_OUTPUTS[:-1]


def config_sha256(config: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(config, sort_keys=True).encode()).hexdigest()


def stage_identity(
    stage: str, block: int | None, height: int, width: int, checkpoint_sha256: str,
    config: dict[str, Any],
) -> dict[str, str]:
    """The ``metadata_props`` that name a graph's stage and the export it belongs to."""
    identity = {STAGE_KEY: stage, IMAGE_KEY: f"{height}x{width}",
                WEIGHTS_KEY: checkpoint_sha256, CONFIG_KEY: config_sha256(config)}
    if block is not None:
        identity[BLOCK_KEY] = str(block)
    return identity


def stage_io(stage: str, sizes: ExportSizes) -> tuple[dict[str, tuple], dict[str, tuple]]:
    """(inputs, outputs) of ``stage``: name -> shape, with :data:`VIEWS` for the view axis."""
    H, W = sizes.height, sizes.width
    tokens = (1, VIEWS, sizes.num_tokens, sizes.embed_dim)
    if stage == "encoder":
        return {"images": (1, VIEWS, 3, H, W)}, {"tokens": tokens}
    if stage == "step":
        return {"tokens": tokens, "t_now": (), "t_next": ()}, {"tokens_out": tokens}
    per_pixel = {"rays": (6,), "depth": (1,), "depth_conf": (), "world_points": (3,)}
    outputs = {name: (1, VIEWS, 9) if name == "pose_enc" else (1, VIEWS, H, W, *per_pixel[name])
               for name in sizes.outputs}
    return {"tokens": tokens}, outputs


def stage_problems(
    signature: GraphSignature, stage: str, block: int | None, sizes: ExportSizes,
    identity: dict[str, str], opset: int,
) -> list[str]:
    """What in ``signature`` contradicts the manifest's entry for ``stage`` (empty: nothing).

    A wrong identity is reported alone: the I/O of another stage differ everywhere."""
    found = signature.metadata
    if PRECISION_KEY in found:
        return [f"it is a {found[PRECISION_KEY]} mixed-precision graph; an export holds the "
                "float32 graphs"]
    if STAGE_KEY not in found:
        return ["it records no DVLT stage (not written by this version of dvlt-export)"]
    what = f"{stage} (block {block})" if block is not None else stage
    if found.get(STAGE_KEY) != stage or found.get(BLOCK_KEY) != identity.get(BLOCK_KEY):
        block_text = f" (block {found[BLOCK_KEY]})" if BLOCK_KEY in found else ""
        return [f"it is the {found[STAGE_KEY]}{block_text} graph, not the {what} "
                "(graphs swapped?)"]
    labels = {IMAGE_KEY: "for {} images", WEIGHTS_KEY: "from other weights",
              CONFIG_KEY: "from another model config"}
    for key, label in labels.items():
        if found.get(key) != identity[key]:
            return [f"it was exported {label.format(found.get(key, '?'))}, not from the export its "
                    "manifest describes (copied from another export?)"]
    problems = []
    declared = signature.opsets.get("", signature.opsets.get("ai.onnx", 0))  # default domain
    if declared != opset:
        problems.append(f"opset {declared}, the manifest says {opset}")
    inputs, outputs = stage_io(stage, sizes)
    optional = OPTIONAL_STEP_INPUTS if stage == "step" else frozenset()
    problems += _io_problems("input", signature.inputs, inputs, optional)
    problems += _io_problems("output", signature.outputs, outputs, frozenset())
    return problems


def _io_problems(kind: str, declared: tuple[TensorSignature, ...], expected: dict[str, tuple],
                 optional: frozenset[str]) -> list[str]:
    names = [t.name for t in declared]
    wanted = [n for n in expected if n in names or n not in optional]
    if names != wanted:
        return [f"{kind}s {names}, expected {wanted}"]
    problems = []
    for tensor in declared:
        shape = expected[tensor.name]
        if tensor.elem_type != FLOAT32 or not _same_shape(tensor.shape, shape):
            problems.append(f"{kind} {tensor.name!r} is {tensor.describe()}, expected float32 "
                            f"{shape_text(shape)}")
    return problems


def _same_shape(declared: tuple[int | str, ...] | None, expected: tuple) -> bool:
    if declared is None or len(declared) != len(expected):
        return False
    return all(isinstance(d, str) if e == VIEWS else d == e
               for d, e in zip(declared, expected, strict=True))
