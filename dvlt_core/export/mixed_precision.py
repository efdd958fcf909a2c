"""Mixed-precision (fp16/bf16) versions of the exported float32 ONNX graphs, with explicit casts.

TensorRT 11 builds only strongly typed networks (10.x offers them as an option): every tensor
runs in the type the ONNX graph gives it, and the fp16/bf16 builder flags are gone. So the
precision has to be written into the graph. :func:`mixed_precision_model` derives it from the
float32 export, deterministically, so one export serves every precision:

* Activation nodes (those fed, through any chain of operators other than ``Shape``/``Size``,
  by a graph input) run in the reduced type, except those :func:`fp32_reason` keeps in float32
  (normalisation, the step gates' MLP, the decoders' float32 regions after their last norm,
  the camera head, the top-level arithmetic: the parts the PyTorch precision policy keeps in
  float32; softmax on request), ``Cast`` nodes (an explicit ``.float()`` stays float32, and an
  integer cast to float keeps its integers exact), operators the ONNX schema does not define
  for the type (Conv in bf16), and operators with a constant the type cannot hold.
* The residual stream stays float32, as under PyTorch autocast: the graph inputs and the sums
  a normalisation reads or the graph returns, followed through elementwise and layout
  operators, so the loop's token state is float32 through every step; the attention and MLP
  branches are reduced.
* Shape arithmetic and constant subgraphs (RoPE tables, UV grids, attention scales) stay
  float32: token counts above 2048 are not all exact in fp16 (S·P = 6839 at S = 7 would round
  to 6840). Where such a value feeds a reduced node it is cast at run time without a range
  check; in the DVLT graphs these are attention scales, UV grids and the learned class,
  register and position embeddings.
* Graph inputs and outputs stay float32, so the backends and the host loop are unchanged.
* Constants consumed in the reduced type are converted once (round to nearest even); every
  other type change is a ``Cast`` node named ``<tensor>::to_<type>``.

The result passes ``onnx.checker`` with strict type inference and has unique node names
(:func:`check_typed`).
"""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import ml_dtypes
import numpy as np
import onnx
from onnx import ModelProto, NodeProto, TensorProto, helper, numpy_helper

from dvlt_core.export.manifest import ExportError

# Part of the engine cache key: bump when the rules below change what a graph computes.
MIXED_PRECISION_VERSION = 3
LOW_PRECISIONS = {"fp16": TensorProto.FLOAT16, "bf16": TensorProto.BFLOAT16}
_NUMPY_TYPES = {TensorProto.FLOAT16: np.float16, TensorProto.BFLOAT16: ml_dtypes.bfloat16}
_TYPE_STRS = {TensorProto.FLOAT: "tensor(float)", TensorProto.FLOAT16: "tensor(float16)",
              TensorProto.BFLOAT16: "tensor(bfloat16)"}
_SHORT = {TensorProto.FLOAT: "fp32", TensorProto.FLOAT16: "fp16", TensorProto.BFLOAT16: "bf16"}
_NORMALISATIONS = frozenset(
    {"LayerNormalization", "InstanceNormalization", "GroupNormalization", "BatchNormalization"}
)
_SHAPE_OPS = frozenset({"Shape", "Size"})
_STREAM_OPS = frozenset({"Add", "Sub", "Mul", "Div", "Reshape", "Transpose", "Squeeze",
                         "Unsqueeze", "Identity", "Flatten", "Concat", "Slice"})
_FP32_SCOPES = (
    # Everything of a decoder after its transformer blocks: norm, head, pixel shuffle, UV
    # concatenation, upsampling and output convolutions (the model's float32_region).
    (re.compile(r"^/(ray|depth)_decoder/(?!blocks\.|proj_in/)"), "output head"),
    (re.compile(r"^/camera_head/"), "camera head"),
    (re.compile(r"/depth_scale/"), "step gates"),
    (re.compile(r"^/[^/]+$"), "top-level arithmetic"),
)


@dataclass(frozen=True)
class MixedPrecisionReport:
    """What :func:`mixed_precision_model` did to one graph."""

    precision: str
    reduced_nodes: int
    fp32_nodes: Counter[str] = field(default_factory=Counter)  # reason -> activation nodes
    casts: int = 0
    converted_constants: int = 0

    def summary(self) -> str:
        kept = ", ".join(f"{n} {reason}" for reason, n in sorted(self.fp32_nodes.items()))
        return (f"{self.reduced_nodes} nodes in {self.precision}, "
                f"{sum(self.fp32_nodes.values())} kept in fp32 ({kept or 'none'}), "
                f"{self.casts} casts, {self.converted_constants} constants converted")


def fp32_reason(node: NodeProto, *, fp32_softmax: bool = False) -> str | None:
    """Why an activation node stays float32 by policy (``None``: it may run in fp16/bf16).

    Node names are the PyTorch module paths the exporter writes (e.g.
    ``/depth_decoder/output_block/output_block.0/Conv``). Softmax is free by default: TensorRT
    fuses MatMul-Softmax-MatMul into attention kernels that keep the softmax statistics in
    float32, and a float32 softmax between casts would break that fusion.
    """
    if node.op_type in _NORMALISATIONS:
        return "normalisation"
    if node.op_type == "Softmax":
        return "softmax" if fp32_softmax else None
    for pattern, reason in _FP32_SCOPES:
        if pattern.search(node.name):
            return reason
    return None


def _float_params(schema: onnx.defs.OpSchema) -> dict[str, list[str]]:
    """Type parameters of ``schema`` that admit float32, with their allowed types."""
    return {c.type_param_str: list(c.allowed_type_strs) for c in schema.type_constraints
            if "tensor(float)" in c.allowed_type_strs}


def _type_str(params: list[onnx.defs.OpSchema.FormalParameter], index: int) -> str | None:
    """Type string of the formal parameter at ``index`` (the last one if it is variadic)."""
    if index < len(params):
        return params[index].type_str
    variadic = params and params[-1].option == onnx.defs.OpSchema.FormalParameterOption.Variadic
    return params[-1].type_str if variadic else None


def _constant_problem(array: np.ndarray, elem_type: int) -> str | None:
    """Why converting ``array`` to ``elem_type`` would change what the node computes.

    Any value beyond the type's range is a problem. Below the smallest normal number
    (6.1e-5 in fp16) values lose precision or vanish: that matters for scalars and vectors made
    mostly of such values (an epsilon whose reciprocal would overflow, a LayerScale of 1e-5),
    not for weight matrices, of which a trained layer always has a few tiny elements.
    """
    finite = np.abs(array[np.isfinite(array)].astype(np.float64))
    if finite.size == 0:
        return None
    info = ml_dtypes.finfo(_NUMPY_TYPES[elem_type])
    if finite.max() > float(info.max):
        return "constant out of range"
    nonzero = finite[finite != 0]
    if array.ndim <= 1 and nonzero.size and np.median(nonzero) < float(info.tiny):
        return "constant underflows"
    return None


def _constant_value(node: NodeProto) -> np.ndarray | None:
    """The value of a ``Constant`` node given as a tensor, float or list of floats."""
    for attr in node.attribute:
        if attr.name == "value":
            return numpy_helper.to_array(attr.t)
        if attr.name == "value_float":
            return np.array(attr.f, np.float32)
        if attr.name == "value_floats":
            return np.array(attr.floats, np.float32)
    return None


class _Rewriter:
    """One pass over a topologically sorted graph (see :func:`mixed_precision_model`)."""

    def __init__(self, model: ModelProto, low: int, fp32_softmax: bool) -> None:
        self.graph = model.graph
        self.low = low
        self.fp32_softmax = fp32_softmax
        self.opset = next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")),
                          None)
        if self.opset is None:
            raise ExportError("the graph imports no default ONNX opset")
        inferred = onnx.shape_inference.infer_shapes(model)
        self.types: dict[str, int] = {}
        for info in (*inferred.graph.input, *inferred.graph.value_info, *inferred.graph.output):
            self.types[info.name] = info.type.tensor_type.elem_type
        self.constants: dict[str, np.ndarray] = {}
        for init in self.graph.initializer:
            self.types[init.name] = init.data_type
            self.constants[init.name] = numpy_helper.to_array(init)
        for node in self.graph.node:
            value = _constant_value(node) if node.op_type == "Constant" else None
            if value is not None:
                self.constants[node.output[0]] = value
        self.residual = self._residual_stream()
        self.current: dict[str, int] = {}  # float tensor -> its type after the rewrite
        self.casts: dict[tuple[str, int], str] = {}
        self.converted: dict[str, str] = {}
        self.new_nodes: list[NodeProto] = []
        self.new_initializers: list[TensorProto] = []
        self.report_fp32: Counter[str] = Counter()
        self.reduced = 0
        self.output_casts = 0

    def _residual_stream(self) -> set[str]:
        """Tensors of the residual stream, which PyTorch autocast keeps in float32 (it reduces
        only matmuls and convolutions): the graph inputs and the sums a normalisation reads
        or the graph returns, followed through elementwise and layout operators (the gated
        blocks scale the stream, the loop block reshapes it between frame and global
        attention)."""
        nodes = self.graph.node
        ends = {n.input[0] for n in nodes if n.op_type in _NORMALISATIONS}
        ends |= {o.name for o in self.graph.output}
        stream = {i.name for i in self.graph.input}
        stream |= {n.output[0] for n in nodes if n.op_type == "Add" and n.output[0] in ends
                   and not any(i in self.constants for i in n.input)}  # not a bias
        for node in nodes:
            if node.op_type in _STREAM_OPS and any(i in stream for i in node.input):
                stream.update(node.output)
        return stream

    def is_float(self, name: str) -> bool:
        if name not in self.types:
            raise ExportError(f"cannot infer the type of tensor {name!r}; export the graph again")
        return self.types[name] == TensorProto.FLOAT

    def type_now(self, name: str) -> int:
        return self.current.get(name, TensorProto.FLOAT)

    def as_type(self, name: str, elem_type: int) -> str:
        """``name`` in ``elem_type``: itself, a converted constant, or a (shared) Cast."""
        if self.type_now(name) == elem_type:
            return name
        if elem_type != TensorProto.FLOAT and name in self.constants:
            if name not in self.converted:
                new = f"{name}::{_SHORT[elem_type]}"
                array = self.constants[name].astype(_NUMPY_TYPES[elem_type])
                self.new_initializers.append(numpy_helper.from_array(array, new))
                self.converted[name] = new
                self.current[new] = elem_type
            return self.converted[name]
        key = (name, elem_type)
        if key not in self.casts:
            new = f"{name}::to_{_SHORT[elem_type]}"
            self.new_nodes.append(helper.make_node("Cast", [name], [new], name=new, to=elem_type))
            self.casts[key] = new
            self.current[new] = elem_type
        return self.casts[key]

    def compute_type(self, node: NodeProto, schema: onnx.defs.OpSchema | None) -> int:
        """The type a node fed by activations computes in, counting why it stays float32."""
        reason = fp32_reason(node, fp32_softmax=self.fp32_softmax)
        if reason is None and node.output[0] in self.residual:
            reason = "residual stream"
        if reason is None and schema is None:
            reason = f"{node.op_type} outside the ONNX opset"
        if reason is None:
            low_str = _TYPE_STRS[self.low]
            params = _float_params(schema)
            used = {_type_str(schema.inputs, i) for i, n in enumerate(node.input) if n}
            used |= {_type_str(schema.outputs, i) for i in range(len(node.output))}
            if any(p in params and low_str not in params[p] for p in used):
                reason = f"{node.op_type} has no {_SHORT[self.low]} in opset {self.opset}"
            for i, name in enumerate(node.input):
                if reason is None and name in self.constants and self.is_float(name) \
                        and _type_str(schema.inputs, i) in params:
                    reason = _constant_problem(self.constants[name], self.low)
        if reason is not None:
            self.report_fp32[reason] += 1
            return TensorProto.FLOAT
        self.reduced += 1
        return self.low

    def rewrite(self) -> None:
        activations = {i.name for i in self.graph.input}
        for node in self.graph.node:
            fed = node.op_type not in _SHAPE_OPS and any(n in activations for n in node.input)
            if fed:
                activations.update(node.output)
            try:
                schema = onnx.defs.get_schema(node.op_type, self.opset, node.domain)
            except onnx.defs.SchemaError:
                schema = None
            if node.op_type == "Cast":
                # Its target type stays: an explicit .float() marks a float32 region, and
                # integers cast to float stay exact.
                if fed and self.is_float(node.output[0]):
                    self.report_fp32["explicit float32 cast"] += 1
            elif fed:
                self.retype_inputs(node, schema, self.compute_type(node, schema))
            else:
                self.retype_inputs(node, schema, TensorProto.FLOAT)
            self.type_outputs(node, schema)
            self.new_nodes.append(node)
        self.restore_float_outputs()
        used = {n for node in self.new_nodes for n in node.input}
        used |= {o.name for o in self.graph.output}
        del self.graph.node[:]
        self.graph.node.extend(n for n in self.new_nodes
                               if n.op_type != "Constant" or n.output[0] in used)
        kept = [i for i in self.graph.initializer if i.name in used]
        del self.graph.initializer[:]
        self.graph.initializer.extend(kept + self.new_initializers)
        del self.graph.value_info[:]

    def retype_inputs(self, node: NodeProto, schema: onnx.defs.OpSchema | None,
                      compute: int) -> None:
        """Give every float input whose type parameter admits float the compute type."""
        if node.op_type in _SHAPE_OPS:
            return  # the shape of a reduced tensor needs no cast
        params = _float_params(schema) if schema is not None else {}
        inputs = schema.inputs if schema is not None else []
        for i, name in enumerate(node.input):
            if name and self.is_float(name):
                wanted = compute if _type_str(inputs, i) in params else TensorProto.FLOAT
                node.input[i] = self.as_type(name, wanted)

    def type_outputs(self, node: NodeProto, schema: onnx.defs.OpSchema | None) -> None:
        """Record the output types ONNX type inference gives the (retyped) node, so operators
        typed by an attribute (ConstantOfShape, EyeLike, ...) keep theirs."""
        floats = [n for n in node.output if n and self.is_float(n)]
        if not floats:
            return
        if schema is None:
            return  # an operator outside the opset keeps float32 outputs
        given = {n: helper.make_tensor_type_proto(self.current.get(n) or self.types[n], None)
                 for n in node.input if n}
        try:
            inferred = onnx.shape_inference.infer_node_outputs(schema, node, given)
        except onnx.shape_inference.InferenceError as exc:
            raise ExportError(f"type inference failed for node {node.name!r}: {exc}") from exc
        for name in floats:
            if name in inferred:
                self.current[name] = inferred[name].tensor_type.elem_type

    def restore_float_outputs(self) -> None:
        """Graph outputs stay float32: rename a reduced output and cast it back."""
        for output in self.graph.output:
            name = output.name
            if self.type_now(name) == TensorProto.FLOAT:
                continue
            inner = f"{name}::{_SHORT[self.type_now(name)]}"
            for node in self.new_nodes:
                node.input[:] = [inner if n == name else n for n in node.input]
                node.output[:] = [inner if n == name else n for n in node.output]
            self.new_nodes.append(helper.make_node("Cast", [inner], [name],
                                                   name=f"{name}::output_to_fp32",
                                                   to=TensorProto.FLOAT))
            self.current[inner] = self.type_now(name)
            self.current[name] = TensorProto.FLOAT
            self.output_casts += 1


def mixed_precision_model(
    model: ModelProto, precision: str, *, fp32_softmax: bool = False
) -> tuple[ModelProto, MixedPrecisionReport]:
    """A copy of the float32 graph ``model`` computing in ``precision`` (``fp16``/``bf16``)."""
    if precision not in LOW_PRECISIONS:
        raise ValueError(f"precision must be one of {sorted(LOW_PRECISIONS)}, got {precision!r}")
    _check_source(model)
    typed = ModelProto()
    typed.CopyFrom(model)
    rewriter = _Rewriter(typed, LOW_PRECISIONS[precision], fp32_softmax)
    rewriter.rewrite()
    helper.set_model_props(typed, {
        **{p.key: p.value for p in typed.metadata_props},
        "dvlt.precision": precision,
        "dvlt.mixed_precision_version": str(MIXED_PRECISION_VERSION),
        "dvlt.fp32_softmax": str(fp32_softmax).lower(),
    })
    report = MixedPrecisionReport(
        precision=precision,
        reduced_nodes=rewriter.reduced,
        fp32_nodes=rewriter.report_fp32,
        casts=len(rewriter.casts) + rewriter.output_casts,
        converted_constants=len(rewriter.converted),
    )
    return typed, report


def _check_source(model: ModelProto) -> None:
    """Refuse graphs the rewrite does not handle, with the reason."""
    graph = model.graph
    if any(p.key == "dvlt.precision" for p in model.metadata_props):
        raise ExportError("the graph is already a mixed-precision graph; start from the "
                          "float32 export")
    for tensor in (*graph.input, *graph.output):
        if tensor.type.tensor_type.elem_type != TensorProto.FLOAT:
            raise ExportError(f"graph input/output {tensor.name!r} is not float32; "
                              "mixed precision starts from the float32 export")
    overridable = {i.name for i in graph.initializer} & {i.name for i in graph.input}
    if overridable:
        raise ExportError(f"initializers listed as graph inputs ({', '.join(sorted(overridable))})"
                          " are not supported; export without keep_initializers_as_inputs")
    for node in graph.node:
        if any(a.type in (onnx.AttributeProto.GRAPH, onnx.AttributeProto.GRAPHS)
               for a in node.attribute):
            raise ExportError(f"node {node.name or node.op_type!r} has a subgraph; the DVLT "
                              "export has none (check_graph refuses control flow)")


def check_typed(model: ModelProto) -> None:
    """Raise :class:`ExportError` unless ``model`` passes the checker with strict typing and
    names every node differently (ONNX Runtime refuses duplicates; the checker does not)."""
    try:
        onnx.checker.check_model(model, full_check=True)
    except (onnx.checker.ValidationError, onnx.shape_inference.InferenceError) as exc:
        raise ExportError(f"the mixed-precision graph is not valid ONNX: {exc}") from exc
    names = Counter(n.name for n in model.graph.node if n.name)
    duplicated = sorted(name for name, count in names.items() if count > 1)
    if duplicated:
        raise ExportError(f"the mixed-precision graph names several nodes {duplicated[0]!r}")


def mixed_precision_bytes(
    path: str | Path, precision: str, *, fp32_softmax: bool = False
) -> tuple[bytes, MixedPrecisionReport]:
    """Serialized, checked mixed-precision graph of the float32 ONNX file at ``path``."""
    typed, report = mixed_precision_model(onnx.load(str(path)), precision,
                                          fp32_softmax=fp32_softmax)
    check_typed(typed)
    return typed.SerializeToString(), report
