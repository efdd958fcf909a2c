"""Mixed-precision graphs for strongly typed TensorRT: typing rules, validity and numerics."""

# ruff: noqa: E402 (the imports below need the export extra, skipped without it)
from __future__ import annotations

import pytest

ml_dtypes = pytest.importorskip("ml_dtypes", reason="needs the export extra (onnx>=1.19)")
onnx = pytest.importorskip("onnx", reason="needs onnx: pip install -e '.[export]'")
ort = pytest.importorskip("onnxruntime", reason="needs onnxruntime: pip install -e '.[export]'")

import numpy as np
from onnx import TensorProto, helper, numpy_helper
from onnx.reference import ReferenceEvaluator

from dvlt_core.backends import create_backend
from dvlt_core.export import ExportError, check_backend, compare_outputs, load_manifest
from dvlt_core.export.mixed_precision import (
    MIXED_PRECISION_VERSION,
    check_typed,
    mixed_precision_bytes,
    mixed_precision_model,
)
from dvlt_core.export.parity_gate import reference_outputs, sample_images
from dvlt_core.export.tensorrt_build import layer_policy, typed_graph
from dvlt_core.model import run_model

FP32, FP16, BF16 = TensorProto.FLOAT, TensorProto.FLOAT16, TensorProto.BFLOAT16
LOW = {"fp16": FP16, "bf16": BF16}
GRAPHS = ("encoder", "step", "decoder")


def _types(model: onnx.ModelProto) -> dict[str, int]:
    """Element type of every tensor of ``model`` (strict inference)."""
    inferred = onnx.shape_inference.infer_shapes(model, strict_mode=True)
    g = inferred.graph
    types = {v.name: v.type.tensor_type.elem_type for v in (*g.input, *g.value_info, *g.output)}
    types.update({i.name: i.data_type for i in g.initializer})
    return types


@pytest.fixture(scope="module")
def typed(small_export):
    """(graph, precision) -> (typed model, report, tensor types) for the small export."""
    out = {}
    for graph in GRAPHS:
        fp32 = onnx.load(str(small_export.out / f"{graph}.onnx"))
        for precision in LOW:
            model, report = mixed_precision_model(fp32, precision)
            out[graph, precision] = (model, report, _types(model))
    return out


@pytest.mark.parametrize("precision", sorted(LOW))
@pytest.mark.parametrize("graph", GRAPHS)
def test_typed_graphs_are_valid_onnx_with_float32_inputs_and_outputs(typed, graph, precision):
    model, report, _ = typed[graph, precision]
    check_typed(model)
    io = (*model.graph.input, *model.graph.output)
    assert all(t.type.tensor_type.elem_type == FP32 for t in io)
    assert report.reduced_nodes > 0 and report.casts > 0 and report.fp32_nodes["normalisation"]
    props = {p.key: p.value for p in model.metadata_props}
    assert props["dvlt.precision"] == precision
    assert props["dvlt.mixed_precision_version"] == str(MIXED_PRECISION_VERSION)


def _out_type(model, types, predicate):
    return {n.name: types[n.output[0]] for n in model.graph.node if predicate(n)}


@pytest.mark.parametrize("precision", sorted(LOW))
def test_trunk_runs_reduced_while_norms_gates_and_heads_stay_float32(typed, precision):
    low = LOW[precision]
    step, _, step_types = typed["step", precision]
    trunk = _out_type(step, step_types, lambda n: n.op_type == "MatMul")
    assert trunk and set(trunk.values()) == {low}
    softmax = _out_type(step, step_types, lambda n: n.op_type == "Softmax")
    assert softmax and set(softmax.values()) == {low}
    norms = _out_type(step, step_types, lambda n: n.op_type == "LayerNormalization")
    assert norms and set(norms.values()) == {FP32}
    gates = _out_type(step, step_types, lambda n: "/depth_scale/" in n.name
                      and n.op_type in ("Gemm", "Sin", "Cos", "Sigmoid"))
    assert gates and set(gates.values()) == {FP32}
    # Attention scales come from tensor shapes: that arithmetic stays float32.
    scales = _out_type(step, step_types, lambda n: n.op_type == "Sqrt")
    assert scales and set(scales.values()) == {FP32}

    decoder, _, dec_types = typed["decoder", precision]
    head = _out_type(decoder, dec_types, lambda n: n.op_type in ("Conv", "ConvTranspose"))
    assert head and set(head.values()) == {FP32}
    exps = _out_type(decoder, dec_types, lambda n: n.op_type == "Exp")
    assert len(exps) == 2 and set(exps.values()) == {FP32}
    inorm = _out_type(decoder, dec_types, lambda n: n.op_type == "InstanceNormalization")
    assert inorm and set(inorm.values()) == {FP32}
    blocks = _out_type(decoder, dec_types, lambda n: n.op_type == "MatMul" and "/blocks." in n.name)
    assert blocks and set(blocks.values()) == {low}
    # The decoders' float32 region starts at their final norm: pixel shuffle, UV concatenation
    # and upsampling included, as in the model's float32_region.
    glue = _out_type(decoder, dec_types, lambda n: n.op_type in ("DepthToSpace", "Resize", "Slice")
                     and n.name.startswith(("/ray_decoder/", "/depth_decoder/"))
                     and "/blocks." not in n.name)
    glue = {name: t for name, t in glue.items() if t != TensorProto.INT64}  # not shape slices
    assert {"DepthToSpace", "Resize", "Slice"} <= {n.split("/")[-1].split("_")[0] for n in glue}
    assert set(glue.values()) == {FP32}


def test_bf16_keeps_operators_the_schema_lacks_in_float32(typed):
    encoder, report, types = typed["encoder", "bf16"]
    assert report.fp32_nodes["Conv has no bf16 in opset 17"] == 1
    (conv,) = [n for n in encoder.graph.node if n.op_type == "Conv"]
    assert types[conv.output[0]] == FP32
    _, fp16_report, fp16_types = typed["encoder", "fp16"]
    (conv16,) = [n for n in typed["encoder", "fp16"][0].graph.node if n.op_type == "Conv"]
    assert fp16_types[conv16.output[0]] == FP16 and "Conv" not in str(fp16_report.fp32_nodes)


def test_rays_come_out_of_a_float32_head_unrounded(small_export, typed):
    decoder = typed["decoder", "bf16"][0]
    tokens = np.random.default_rng(0).standard_normal((1, 2, 25, 384)).astype(np.float32)
    (rays,) = ReferenceEvaluator(decoder).run(["rays"], {"tokens": tokens})
    rounded = rays.astype(ml_dtypes.bfloat16).astype(np.float32)
    assert np.mean(rounded != rays) > 0.5  # not bf16 values in float32 clothing


def test_fp32_softmax_keeps_softmax_in_float32(small_export):
    fp32 = onnx.load(str(small_export.out / "step.onnx"))
    model, report = mixed_precision_model(fp32, "fp16", fp32_softmax=True)
    types = _types(model)
    softmax = [n for n in model.graph.node if n.op_type == "Softmax"]
    assert softmax and all(types[n.output[0]] == FP32 for n in softmax)
    assert report.fp32_nodes["softmax"] == len(softmax)
    props = {p.key: p.value for p in model.metadata_props}
    assert props["dvlt.fp32_softmax"] == "true"


def _reference_loop(models: dict[str, onnx.ModelProto], images: np.ndarray, plan
                    ) -> dict[str, np.ndarray]:
    """Encoder, K steps, decoder on ONNX's reference evaluator, which computes every tensor in
    exactly its graph type (fp16 with numpy, bf16 with ml_dtypes)."""
    run = {g: ReferenceEvaluator(m) for g, m in models.items()}
    (tokens,) = run["encoder"].run(None, {"images": images})
    for t_now, t_next in plan.t_pairs.tolist():
        (tokens,) = run["step"].run(None, {"tokens": tokens, "t_now": np.array(t_now, np.float32),
                                           "t_next": np.array(t_next, np.float32)})
    names = [o.name for o in models["decoder"].graph.output]
    return dict(zip(names, run["decoder"].run(None, {"tokens": tokens}), strict=True))


def test_typed_graphs_computed_exactly_pass_their_parity_gates(small_export, typed):
    manifest = load_manifest(small_export.out)
    plan = manifest.plan(4)
    images = sample_images(2, 56, 70)
    reference = reference_outputs(small_export.model, images, 4, "cpu")
    worst = {}
    for precision in LOW:
        models = {g: typed[g, precision][0] for g in GRAPHS}
        out = _reference_loop(models, images.numpy(), plan)
        report = compare_outputs(out, {k: v for k, v in reference.items() if k in out},
                                 precision=precision)
        assert report.passed, report.table()
        # PyTorch's own autocast in the same precision, on the same CPU, is the yardstick.
        autocast = run_model(small_export.model, images, precision=precision, device="cpu",
                             num_steps=4)
        torch_report = compare_outputs({k: autocast[k].float() for k in out},
                                       {k: reference[k] for k in out}, precision=precision)
        worst[precision] = max(o.max_scaled_error for o in report.outputs)
        assert worst[precision] < 2 * max(o.max_scaled_error for o in torch_report.outputs)
    # The graphs really compute in their types: bf16 (8 mantissa bits) errs more than fp16.
    assert 0.01 < worst["fp16"] < worst["bf16"]


def test_onnxruntime_backend_runs_the_fp16_graphs(small_export):
    backend = create_backend("onnxruntime", checkpoint=small_export.out, precision="fp16")
    assert backend.precision == "fp16"
    for num_views, K in ((1, 1), (2, 4)):
        report = check_backend(backend, small_export.model, num_views=num_views, height=56,
                               width=70, num_steps=K, precision="fp16")
        assert report.passed, report.table()
        # It runs the typed graphs: the float32 ones stay below 0.001 of this tolerance.
        assert max(o.max_scaled_error for o in report.outputs) > 0.005


def _tiny(op: str, constant: float) -> onnx.ModelProto:
    """x -> Relu -> r -> op(r, constant) -> y -> Relu -> z; y and z are graph outputs.

    The first Relu keeps ``op`` off the residual stream, which starts at the graph input."""
    nodes = [
        helper.make_node("Relu", ["x"], ["r"], name="/block/Relu_in"),
        helper.make_node(op, ["r", "c"], ["y"], name=f"/block/{op}"),
        helper.make_node("Relu", ["y"], ["z"], name="/block/Relu"),
    ]
    graph = helper.make_graph(
        nodes, "tiny",
        [helper.make_tensor_value_info("x", FP32, [2, 3])],
        [helper.make_tensor_value_info("y", FP32, [2, 3]),
         helper.make_tensor_value_info("z", FP32, [2, 3])],
        [numpy_helper.from_array(np.array(constant, np.float32), "c")],
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def _run(model: onnx.ModelProto, x: np.ndarray) -> list[np.ndarray]:
    return ReferenceEvaluator(model).run(None, {"x": x})


def test_sums_read_by_a_norm_or_returned_carry_the_residual_stream_in_float32(typed):
    encoder, report, types = typed["encoder", "fp16"]
    norm_inputs = {n.input[0] for n in encoder.graph.node if n.op_type == "LayerNormalization"}
    sums = [n for n in encoder.graph.node if n.op_type == "Add" and n.output[0] in norm_inputs]
    assert len(sums) == report.fp32_nodes["residual stream"] == 24  # 2 per block, 12 blocks
    assert {types[n.output[0]] for n in sums} == {FP32}
    # The loop state stays float32 from input to output: the gated blocks' sums and scales
    # and the reshapes between frame and global attention.
    step, step_report, step_types = typed["step", "fp16"]
    (last,) = [n for n in step.graph.node if "tokens_out" in n.output]
    assert last.op_type == "Reshape" and step_types[last.input[0]] == FP32
    stream = [n for n in step.graph.node if n.op_type in ("Add", "Mul") and "/depth_scale/" not in
              n.name and step_types[n.output[0]] == FP32 and "attn/Add" in n.name]
    assert len(stream) >= 4 and step_report.fp32_nodes["residual stream"] >= 8


def test_reduced_outputs_are_cast_back_and_internal_uses_follow():
    model, report = mixed_precision_model(_tiny("Mul", 3.0), "fp16")
    check_typed(model)
    types = _types(model)
    assert types["y"] == FP32 and types["z"] == FP32
    relu = next(n for n in model.graph.node if n.name == "/block/Relu")
    assert types[relu.input[0]] == FP16 and types[relu.output[0]] == FP16
    assert report.reduced_nodes == 3 and report.converted_constants == 1
    x = np.array([[1.0, -2.0, 3.0], [0.1, 0.2, -0.3]], np.float32)
    y, z = _run(model, x)
    r = np.maximum(x.astype(np.float16), 0).astype(np.float32)
    expected = (r * 3).astype(np.float16)
    np.testing.assert_array_equal(y, expected.astype(np.float32))
    np.testing.assert_allclose(z, np.maximum(y, 0), rtol=0)


@pytest.mark.parametrize(("op", "constant", "precision", "reason"), [
    ("Mul", 1e5, "fp16", "constant out of range"),
    ("Sub", 1e-9, "fp16", "constant underflows"),
    ("Sub", 1e-6, "fp16", "constant underflows"),  # 1 / (0 - 1e-6) would overflow fp16
    ("Sub", 1e-39, "bf16", "constant underflows"),
])
def test_constants_the_type_cannot_hold_keep_their_node_in_float32(op, constant, precision,
                                                                   reason):
    model, report = mixed_precision_model(_tiny(op, constant), precision)
    assert report.fp32_nodes == {reason: 1}
    assert _types(model)["y"] == FP32
    x = np.zeros((2, 3), np.float32) if op == "Sub" else np.ones((2, 3), np.float32)
    expected = x * constant if op == "Mul" else x - np.float32(constant)
    with np.errstate(over="ignore"):  # 1e5 overflows fp16 in the Relu after the Mul
        y = _run(model, x)[0]
    np.testing.assert_allclose(y, expected, rtol=1e-6)


def test_bf16_holds_constants_beyond_fp16():
    _, report = mixed_precision_model(_tiny("Mul", 1e5), "bf16")
    assert not report.fp32_nodes and report.reduced_nodes == 3


def _graph(nodes, inputs, outputs, initializers=(), opset=17, domains=()):
    graph = helper.make_graph(nodes, "g", inputs, outputs, list(initializers))
    imports = [helper.make_opsetid("", opset), *(helper.make_opsetid(d, 1) for d in domains)]
    return helper.make_model(graph, opset_imports=imports)


def _info(name, elem=FP32, shape=(2, 3)):
    return helper.make_tensor_value_info(name, elem, list(shape))


def test_value_float_constants_are_checked_like_tensor_constants():
    c = helper.make_node("Constant", [], ["c"], name="/c", value_float=1e5)
    model = _graph([c, helper.make_node("Relu", ["x"], ["r"], name="/block/Relu"),
                    helper.make_node("Mul", ["r", "c"], ["y"], name="/block/Mul")],
                   [_info("x")], [_info("y")])
    typed, report = mixed_precision_model(model, "fp16")
    assert report.fp32_nodes == {"constant out of range": 1}
    np.testing.assert_allclose(_run(typed, np.ones((2, 3), np.float32))[0], 1e5)


def test_a_reduced_output_also_read_in_float32_gets_uniquely_named_casts():
    nodes = [helper.make_node("Relu", ["x"], ["r"], name="/block/Relu"),
             helper.make_node("Mul", ["r", "r"], ["y"], name="/block/Mul"),
             helper.make_node("Sigmoid", ["y"], ["z"], name="/camera_head/Sigmoid")]
    typed, _ = mixed_precision_model(_graph(nodes, [_info("x")], [_info("y"), _info("z")]),
                                     "fp16")
    check_typed(typed)
    names = [n.name for n in typed.graph.node]
    assert len(names) == len(set(names))
    x = np.full((2, 3), 0.5, np.float32)
    session = ort.InferenceSession(typed.SerializeToString(), providers=["CPUExecutionProvider"])
    y, z = session.run(None, {"x": x})
    np.testing.assert_allclose(z, 1 / (1 + np.exp(-y)), rtol=1e-6)


def test_attribute_typed_outputs_and_integer_casts_keep_their_types():
    nodes = [
        helper.make_node("Relu", ["x"], ["r"], name="/block/Relu"),
        helper.make_node("EyeLike", ["r"], ["eye"], name="/block/EyeLike", dtype=FP32),
        helper.make_node("Add", ["r", "eye"], ["y"], name="/block/Add"),
        helper.make_node("ArgMax", ["x"], ["index"], name="/block/ArgMax", axis=1),
        helper.make_node("Cast", ["index"], ["index_f"], name="/block/Cast", to=FP32),
        helper.make_node("Mul", ["index_f", "index_f"], ["z"], name="/block/Mul"),
    ]
    model = _graph(nodes, [_info("x", shape=(2, 3))], [_info("y"), _info("z", shape=(2, 1))])
    typed, report = mixed_precision_model(model, "fp16")
    check_typed(typed)
    types = _types(typed)
    assert types["eye"] == FP32 and types["index_f"] == FP32
    assert report.fp32_nodes["explicit float32 cast"] == 1


def test_operators_outside_the_opset_stay_float32():
    nodes = [helper.make_node("Relu", ["x"], ["a"], name="/block/Relu_in"),
             helper.make_node("Custom", ["a"], ["b"], name="/block/Custom", domain="vendor"),
             helper.make_node("Relu", ["b"], ["y"], name="/block/Relu")]
    model = _graph(nodes, [_info("x")], [_info("y")], domains=["vendor"])
    model.graph.value_info.append(_info("b"))
    typed, report = mixed_precision_model(model, "fp16")
    assert report.fp32_nodes == {"Custom outside the ONNX opset": 1}
    custom = next(n for n in typed.graph.node if n.op_type == "Custom")
    assert custom.input[0] == "a::to_fp32"


def test_bad_requests_are_refused(small_export):
    with pytest.raises(ValueError, match="precision must be one of"):
        mixed_precision_model(_tiny("Mul", 1.0), "fp8")
    model = _tiny("Mul", 1.0)
    model.graph.input[0].type.tensor_type.elem_type = FP16
    with pytest.raises(ExportError, match="not float32"):
        mixed_precision_model(model, "fp16")
    typed, _ = mixed_precision_model(_tiny("Mul", 1.0), "fp16")
    with pytest.raises(ExportError, match="already a mixed-precision graph"):
        mixed_precision_model(typed, "bf16")
    overridable = _tiny("Mul", 1.0)
    overridable.graph.input.append(_info("c", shape=()))
    with pytest.raises(ExportError, match=r"initializers listed as graph inputs \(c\)"):
        mixed_precision_model(overridable, "fp16")
    branch = helper.make_graph([helper.make_node("Relu", ["x"], ["r"])], "then", [], [_info("r")])
    nodes = [helper.make_node("ReduceMax", ["x"], ["m"], keepdims=0),
             helper.make_node("Greater", ["m", "c"], ["cond"]),
             helper.make_node("If", ["cond"], ["y"], name="/if", then_branch=branch,
                              else_branch=branch)]
    model = _graph(nodes, [_info("x")], [_info("y")],
                   [numpy_helper.from_array(np.array(0.0, np.float32), "c")])
    with pytest.raises(ExportError, match="'/if' has a subgraph"):
        mixed_precision_model(model, "fp16")
    broken, _ = mixed_precision_model(_tiny("Mul", 1.0), "fp16")
    broken.graph.node[-1].attribute[0].i = TensorProto.INT64  # output Cast now lies about z
    with pytest.raises(ExportError, match="not valid ONNX"):
        check_typed(broken)
    twice, _ = mixed_precision_model(_tiny("Mul", 1.0), "fp16")
    twice.graph.node[1].name = twice.graph.node[0].name
    with pytest.raises(ExportError, match="names several nodes"):
        check_typed(twice)


def test_engine_builds_read_typed_bytes_and_key_the_rules_version(small_export):
    path = small_export.out / "decoder.onnx"
    data, typing = typed_graph(path, "fp32", False)
    assert data == path.read_bytes() and typing == "float32 graph"
    data, typing = typed_graph(path, "bf16", False)
    assert data == mixed_precision_bytes(path, "bf16")[0]  # deterministic
    assert "nodes in bf16" in typing and "normalisation" in typing
    assert layer_policy("fp16", False) == f"typed-v{MIXED_PRECISION_VERSION}"
    assert layer_policy("bf16", True) == f"typed-v{MIXED_PRECISION_VERSION}-fp32-softmax"
    assert layer_policy("fp32", True) == "float32"  # the float32 graph, whatever the rules
