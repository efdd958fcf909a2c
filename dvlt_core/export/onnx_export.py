"""Export a :class:`DVLTModel` to three ONNX graphs: encoder, one loop step, decoder.

The loop stays on the host, so K is a run-time argument: the step graph takes
``(tokens, t_now, t_next)`` and is called K times. The number of views S is a dynamic axis
(axis 1 of every graph input and output); the batch is fixed at 1 and H x W are fixed per
export. Models with ``recurrence_mode="none"`` and ``k_sampling=None`` apply a different block
at every step: they get one step graph per block (``step_block<i>.onnx``); every other model
gets a single ``step.onnx``.

Graphs are traced with the TorchScript exporter (``dynamo=False``) at opset 17 or later, so
LayerNormalization stays one node (kept in float32 under fp16/bf16) and attention is the plain
MatMul/Softmax/MatMul pattern that TensorRT fuses. :func:`check_graph` scans a written graph
for float64 tensors, data-dependent operators and a missing dynamic S axis.
"""

from __future__ import annotations

import contextlib
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor, nn

from dvlt_core.export.manifest import (
    ExportError,
    ExportManifest,
    GraphFile,
    ViewRange,
    file_sha256,
    model_fingerprint,
    save_manifest,
)
from dvlt_core.export.stages import (
    DECODER_INPUTS,
    ENCODER_INPUTS,
    ENCODER_OUTPUTS,
    MIN_OPSET,
    STEP_INPUTS,
    STEP_OUTPUTS,
    VIEW_AXIS,
    decoder_outputs,
    stage_identity,
    step_blocks,
    step_file_name,
)
from dvlt_core.model import DVLTModel

DEFAULT_OPSET = 17
# Operators whose output shape depends on tensor values, or that hide control flow.
DATA_DEPENDENT_OPS = frozenset(
    {"NonZero", "Unique", "NonMaxSuppression", "Compress", "TopK", "Loop", "If", "Scan"}
)

Progress = Callable[[str], None]


class _Encoder(nn.Module):
    def __init__(self, model: DVLTModel) -> None:
        super().__init__()
        self.model = model

    def forward(self, images: Tensor) -> Tensor:
        return self.model.encode(images)


class _Step(nn.Module):
    def __init__(self, model: DVLTModel, block_index: int, image_hw: tuple[int, int]) -> None:
        super().__init__()
        self.model = model
        self.block_index = block_index
        self.image_hw = image_hw

    def forward(self, tokens: Tensor, t_now: Tensor, t_next: Tensor) -> Tensor:
        return self.model.step(tokens, t_now, t_next, self.block_index, image_hw=self.image_hw)


class _Decoder(nn.Module):
    def __init__(self, model: DVLTModel, image_hw: tuple[int, int], outputs: tuple[str, ...]):
        super().__init__()
        self.model = model
        self.image_hw = image_hw
        self.outputs = outputs

    def forward(self, tokens: Tensor) -> tuple[Tensor, ...]:
        out = self.model.decode(tokens, self.image_hw)
        return tuple(out[name] for name in self.outputs)


def check_exportable(model: DVLTModel, height: int, width: int, views: ViewRange) -> None:
    """Refuse settings the graphs cannot represent, with what to change."""
    p = model.patch_size
    if height % p or width % p or min(height, width) < p:
        raise ExportError(
            f"height and width must be positive multiples of the patch size {p}, got "
            f"{height}x{width}; e.g. 378x504 for 4:3 images at img_size 504"
        )
    chunk = model.config.decode_chunk_size
    if chunk is not None and views.max > chunk:
        raise ExportError(
            f"views max {views.max} exceeds the model's decode_chunk_size {chunk}: the decoder "
            f"graph is traced with a single chunk; export with --views up to {chunk}"
        )


@contextlib.contextmanager
def _quiet_tracing() -> Iterator[None]:
    """Silence the exporter's expected warnings.

    The model's input checks read shapes as Python values; H, W are fixed per export and the
    checks are re-done by the backends, so the tracer's constant-folding warnings are expected.
    """
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", torch.jit.TracerWarning)
        warnings.filterwarnings("ignore", message=".*legacy TorchScript-based ONNX export.*")
        warnings.filterwarnings("ignore", message=".*Constant folding - Only steps=1.*")
        warnings.filterwarnings("ignore", message="The feature will be removed",
                                category=DeprecationWarning)
        yield


def _finish_graph(path: Path, shapes: dict[str, tuple[int, ...]],
                  identity: dict[str, str]) -> None:
    """Write the static output dimensions into the graph (the exporter leaves some symbolic;
    S stays symbolic) and its stage identity into ``metadata_props``. Weights in external data
    files are left untouched."""
    import onnx

    model = onnx.load(str(path), load_external_data=False)
    onnx.helper.set_model_props(model, identity)
    for output in model.graph.output:
        dims = output.type.tensor_type.shape.dim
        for axis, size in enumerate(shapes[output.name]):
            if axis == VIEW_AXIS:
                dims[axis].dim_param = "S"
            else:
                dims[axis].dim_value = size
    onnx.save(model, str(path))


def _export_graph(
    module: nn.Module,
    args: tuple[Tensor, ...],
    path: Path,
    input_names: tuple[str, ...],
    output_names: tuple[str, ...],
    opset: int,
    identity: dict[str, str],
) -> GraphFile:
    dynamic = {name: {VIEW_AXIS: "S"} for name in (*input_names, *output_names)}
    for name, arg in zip(input_names, args, strict=True):
        if arg.dim() == 0:
            dynamic.pop(name)
    # The exporter restores the wrapper's mode afterwards, recursively: a wrapper left in
    # training mode would switch the model's drop-path on for the outputs computed below.
    module.eval()
    with _quiet_tracing(), torch.no_grad():
        torch.onnx.export(
            module,
            args,
            str(path),
            input_names=list(input_names),
            output_names=list(output_names),
            dynamic_axes=dynamic,
            opset_version=opset,
            do_constant_folding=True,
            dynamo=False,
        )
        outputs = module(*args)
    outputs = outputs if isinstance(outputs, tuple) else (outputs,)
    _finish_graph(path, {n: tuple(o.shape) for n, o in zip(output_names, outputs, strict=True)},
                  identity)
    return GraphFile(file=path.name, sha256=file_sha256(path))


def export_onnx(
    model: DVLTModel,
    out_dir: str | Path,
    *,
    height: int,
    width: int,
    views: ViewRange,
    opset: int = DEFAULT_OPSET,
    progress: Progress | None = None,
) -> ExportManifest:
    """Write ``encoder.onnx``, the step graph(s), ``decoder.onnx`` and ``export.json``.

    ``model`` is exported in float32 on the CPU (it is moved there and put in eval mode).
    Every written graph passes :func:`check_graph`, else :class:`ExportError` is raised.
    """
    if opset < MIN_OPSET:
        raise ExportError(
            f"opset {opset} is too old: LayerNormalization needs opset >= {MIN_OPSET} (below it "
            "the norm is decomposed and overflows in fp16 under TensorRT)"
        )
    check_exportable(model, height, width, views)
    say = progress or (lambda _msg: None)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    model = model.eval().float().cpu()
    image_hw = (height, width)
    trace_views = min(2, views.max)
    gen = torch.Generator().manual_seed(0)
    images = torch.rand(1, trace_views, 3, height, width, generator=gen)
    config, fingerprint = model.config.to_dict(), model_fingerprint(model)

    def identity(stage: str, block: int | None = None) -> dict[str, str]:
        return stage_identity(stage, block, height, width, fingerprint, config)

    say(f"exporting encoder ({height}x{width}, S traced at {trace_views}, dynamic {views})")
    encoder = _export_graph(_Encoder(model), (images,), out / "encoder.onnx",
                            ENCODER_INPUTS, ENCODER_OUTPUTS, opset, identity("encoder"))
    with torch.no_grad():
        tokens = model.encode(images)
    blocks = step_blocks(model.config)
    t_now, t_next = (torch.tensor(v, dtype=torch.float32) for v in (0.25, 0.5))
    steps = {}
    for block in blocks:
        name = step_file_name(block, len(blocks))
        say(f"exporting loop step {name} (block {block})")
        steps[block] = _export_graph(_Step(model, block, image_hw), (tokens, t_now, t_next),
                                     out / name, STEP_INPUTS, STEP_OUTPUTS, opset,
                                     identity("step", block))
    outputs = decoder_outputs(model.config)
    say("exporting decoder and heads")
    decoder = _export_graph(_Decoder(model, image_hw, outputs), (tokens,), out / "decoder.onnx",
                            DECODER_INPUTS, outputs, opset, identity("decoder"))
    manifest = ExportManifest(
        root=out,
        config=config,
        checkpoint_sha256=fingerprint,
        height=height,
        width=width,
        views=views,
        opset=opset,
        num_tokens=int(tokens.shape[2]),
        embed_dim=int(tokens.shape[3]),
        encoder=encoder,
        steps=steps,
        decoder=decoder,
        outputs=outputs,
    )
    for graph in (encoder, *steps.values(), decoder):
        say(f"checking {graph.file}")
        problems = check_graph(out / graph.file, min_opset=opset).problems
        if problems:
            raise ExportError(f"{graph.file} failed the graph checks: " + "; ".join(problems))
    save_manifest(manifest)
    say(f"wrote {len(blocks) + 2} graphs and export.json to {out}")
    return manifest


@dataclass(frozen=True)
class GraphCheck:
    """Result of :func:`check_graph`: the opset, the operator counts and any problems."""

    opset: int
    op_counts: dict[str, int]
    problems: list[str]


def check_graph(path: str | Path, *, min_opset: int = MIN_OPSET) -> GraphCheck:
    """Validate an exported graph: ONNX checker, opset, no float64, no data-dependent ops,
    and a symbolic S axis on every non-scalar input and output."""
    import onnx

    onnx.checker.check_model(str(path))
    model = onnx.load(str(path), load_external_data=False)
    inferred = onnx.shape_inference.infer_shapes(model)
    graph = inferred.graph
    problems: list[str] = []
    opset = max((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), default=0)
    if opset < min_opset:
        problems.append(f"opset {opset} < {min_opset}")
    double = onnx.TensorProto.DOUBLE
    typed = [*graph.input, *graph.output, *graph.value_info]
    problems += [f"float64 tensor {v.name!r}" for v in typed
                 if v.type.tensor_type.elem_type == double]
    problems += [f"float64 initializer {t.name!r}" for t in graph.initializer
                 if t.data_type == double]
    counts: dict[str, int] = {}
    for node in graph.node:
        counts[node.op_type] = counts.get(node.op_type, 0) + 1
        if node.op_type in DATA_DEPENDENT_OPS:
            problems.append(f"data-dependent operator {node.op_type} ({node.name})")
        for attr in node.attribute:
            if node.op_type == "Cast" and attr.name == "to" and attr.i == double:
                problems.append(f"cast to float64 ({node.name})")
            if attr.name == "value" and attr.t.data_type == double:
                problems.append(f"float64 constant ({node.name})")
    for value in (*graph.input, *graph.output):
        dims = value.type.tensor_type.shape.dim
        if dims and dims[VIEW_AXIS].dim_param != "S":
            problems.append(f"{value.name!r} has no dynamic S axis at position {VIEW_AXIS}")
        fixed = [d for i, d in enumerate(dims) if i != VIEW_AXIS and not d.dim_value]
        if fixed:
            problems.append(f"{value.name!r} has unexpected symbolic dimensions")
    return GraphCheck(opset=opset, op_counts=counts, problems=problems)
