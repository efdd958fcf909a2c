"""Runtime behaviour: K per call, flat memory, shapes/batching, precision, export of stages."""

from __future__ import annotations

import io
import warnings

import pytest
import torch
import torch.nn.functional as F

from dvlt_core.model import DVLTModel, run_model
from dvlt_core.testing import load_deterministic_weights
from dvlt_core.testing.memory import PeakTensorBytes

SMALL = {"patch_embed": "dinov2_vits14_reg", "embed_dim": 384, "num_heads": 6, "img_size": 504}


@pytest.fixture(scope="module")
def model() -> DVLTModel:
    m = DVLTModel(**SMALL).eval()
    load_deterministic_weights(m, seed=3)
    return m


def images(B=1, S=2, H=28, W=42, seed=0) -> torch.Tensor:
    return torch.rand(B, S, 3, H, W, generator=torch.Generator().manual_seed(seed))


def peak_bytes(model: DVLTModel, x: torch.Tensor, K: int, grad: bool) -> int:
    state = [*model.parameters(), *model.buffers()]
    context = torch.enable_grad() if grad else torch.inference_mode()
    with context, PeakTensorBytes(state) as tracker:
        model(x, num_steps=K)
    return tracker.peak


def test_k_is_a_runtime_knob(model):
    x = images()
    with torch.inference_mode():
        outs = {K: model(x, num_steps=K) for K in (1, 2, 5)}
    assert model.inference_t_pairs(1).tolist() == [[0.0, 1.0]]
    assert model.inference_t_pairs(5)[-1].tolist() == [1.0, 1.0]
    assert model.inference_t_pairs().shape == (16, 2)  # default K = num_steps
    assert not torch.allclose(outs[1]["rays"], outs[5]["rays"])
    assert not torch.allclose(outs[2]["rays"], outs[5]["rays"])


def test_memory_is_flat_in_k_without_grad(model):
    x = images()
    flat = [peak_bytes(model, x, K, grad=False) for K in (1, 6)]
    assert flat[1] <= flat[0] * 1.01
    # The probe does see per-step activations when autograd keeps them (~1.6 MB per step).
    grows = [peak_bytes(model, x, K, grad=True) for K in (1, 3)]
    assert grows[1] - grows[0] > 2e6


def test_output_shapes_and_values(model):
    x = images(B=2, S=3, H=42, W=28)
    with torch.inference_mode():
        out = model(x, num_steps=2)
    assert out["rays"].shape == (2, 3, 42, 28, 6)
    assert out["depth"].shape == (2, 3, 42, 28, 1)
    assert out["depth_conf"].shape == out["world_points_conf"].shape == (2, 3, 42, 28)
    assert out["world_points"].shape == (2, 3, 42, 28, 3)
    assert out["pose_enc"].shape == (2, 3, 9)
    assert all(v.dtype == torch.float32 and torch.isfinite(v).all() for v in out.values())
    assert (out["depth"] > 0).all() and (out["depth_conf"] >= 1).all()
    assert (out["pose_enc"][..., 7:] >= 0).all()
    wp = out["rays"][..., 3:] + out["rays"][..., :3] * out["depth"]
    torch.testing.assert_close(out["world_points"], wp, rtol=0, atol=0)


def test_batch_elements_are_independent(model):
    x = images(B=2, S=2, H=28, W=56, seed=1)
    with torch.inference_mode():
        joint = model(x, num_steps=3)
        single = [model(x[i : i + 1], num_steps=3) for i in range(2)]
    for key in joint:
        torch.testing.assert_close(
            joint[key], torch.cat([s[key] for s in single]), rtol=1e-5, atol=1e-5
        )


def test_views_interact_only_through_global_attention(model):
    """View 0 is the reference: reordering the other views permutes their outputs."""
    x = images(S=3, seed=2)
    with torch.inference_mode():
        a = model(x, num_steps=2)["depth"]
        b = model(x[:, [0, 2, 1]], num_steps=2)["depth"]
        single = model(x[:, :1], num_steps=2)["depth"]
    torch.testing.assert_close(b, a[:, [0, 2, 1]], rtol=1e-5, atol=1e-5)
    assert single.shape == (1, 1, 28, 42, 1)


def test_decode_chunking_gives_the_same_result(model):
    x = images(S=3, seed=4)
    chunked = DVLTModel(**SMALL, decode_chunk_size=2).eval()
    chunked.load_state_dict(model.state_dict())
    with torch.inference_mode():
        a, b = model(x, num_steps=1), chunked(x, num_steps=1)
    for key in a:  # conv kernels round differently per batch size: README tolerance
        torch.testing.assert_close(a[key], b[key], rtol=1e-4, atol=1e-4)


def test_pos_embed_resampling_is_torch_bicubic_antialias(model):
    backbone = model.patch_embed_encoder
    table = backbone.pos_embed
    assert backbone.positional_embedding(37, 37) is not None
    torch.testing.assert_close(backbone.positional_embedding(37, 37), table, rtol=0, atol=0)
    grid = table[:, 1:].reshape(1, 37, 37, -1).permute(0, 3, 1, 2)
    for h, w in ((2, 3), (27, 36), (40, 30)):
        ref = F.interpolate(grid, size=(h, w), mode="bicubic", antialias=True)
        ours = backbone.positional_embedding(h, w)[0, 1:].reshape(h, w, -1).permute(2, 0, 1)
        torch.testing.assert_close(ours, ref[0], rtol=1e-5, atol=1e-6)


def test_rope_leaves_special_tokens_and_uses_offset_positions():
    from dvlt_core.model.rope import apply_rope, rope_positions, rope_tables

    pos = rope_positions(2, 3, num_special=5)
    assert pos[:5].eq(0).all() and pos[5].tolist() == [1, 1] and pos[-1].tolist() == [2, 3]
    cos, sin = rope_tables(2, 3, 5, 64)
    assert cos.dtype == sin.dtype == torch.float32 and cos.shape == (11, 64)
    q = torch.randn(1, 2, 11, 64)
    rotated = apply_rope(q, cos, sin)
    torch.testing.assert_close(rotated[:, :, :5], q[:, :, :5], rtol=0, atol=0)
    # rotate-half within each 32-channel axis half: norms of (k, k+16) pairs are preserved
    pairs = q.unflatten(-1, (2, 2, 16)).pow(2).sum(-2)
    torch.testing.assert_close(rotated.unflatten(-1, (2, 2, 16)).pow(2).sum(-2), pairs)


def test_rope_in_place_quarters_are_bit_identical_to_the_swapped_copy():
    """The eager path adds swap(x)·sin quarter by quarter in place; a trace takes the copy."""
    from dvlt_core.model.rope import apply_rope, rope_tables

    cos, sin = rope_tables(3, 4, 5, 64)
    qkv = torch.randn(2, 17, 3, 6, 64, generator=torch.Generator().manual_seed(0))
    q = F.layer_norm(qkv.permute(2, 0, 3, 1, 4)[0], (64,))  # as in Attention: strided input
    swapped = q.unflatten(-1, (2, 2, 16)).flip(-2).flatten(-3)
    expected = torch.addcmul(q * cos, swapped, sin)
    assert torch.equal(apply_rope(q, cos, sin), expected)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # torch.jit.trace, as ONNX export
        traced = torch.jit.trace(lambda x: apply_rope(x, cos, sin), (q,), check_trace=False)
    assert "addcmul_" not in str(traced.graph)
    assert torch.equal(traced(q), expected)


def test_conv_head_weights_are_channels_last_and_the_state_dict_is_unchanged(model):
    conv_types = (torch.nn.Conv2d, torch.nn.ConvTranspose2d)
    convs = [m for m in model.depth_decoder.modules() if isinstance(m, conv_types)]
    assert len(convs) > 10
    assert all(m.weight.is_contiguous(memory_format=torch.channels_last) for m in convs)
    fresh = DVLTModel(**SMALL).eval()
    fresh.load_state_dict(model.state_dict(), strict=True)
    conv = next(m for m in fresh.depth_decoder.modules() if isinstance(m, torch.nn.Conv2d))
    assert conv.weight.is_contiguous(memory_format=torch.channels_last)  # copy_ keeps it
    for key, value in model.state_dict().items():
        assert torch.equal(value.contiguous(), fresh.state_dict()[key].contiguous()), key


def test_recurrence_none_runs_each_block_once():
    m = DVLTModel(**SMALL, recurrence_mode="none", num_steps=3, min_steps=3, k_sampling=None)
    m.eval()
    calls = []
    for i, block in enumerate(m.recurrent_blocks):
        block.register_forward_hook(lambda mod, args, out, i=i: calls.append(i))
    with torch.inference_mode():
        m(images(S=1), num_steps=None)
    assert calls == [0, 1, 2]
    with pytest.raises(ValueError, match="always runs its num_steps=3"):
        m(images(S=1), num_steps=4)


def test_continuous_gates_see_step_times():
    m = DVLTModel(**SMALL, time_conditioning="continuous", k_sampling=None, num_steps=4).eval()
    seen = []
    m.recurrent_blocks[0].global_attn.depth_scale.register_forward_hook(
        lambda mod, args, out: seen.append(float(args[0]))
    )
    with torch.inference_mode():
        m(images(S=1))
    assert seen == pytest.approx([0.0, 1 / 3, 2 / 3, 1.0])


def test_bad_images_are_refused_with_a_hint(model):
    with pytest.raises(ValueError, match=r"\(B, S, 3, H, W\)"):
        model(torch.rand(2, 3, 28, 28))
    with pytest.raises(ValueError, match="divide uint8 by 255"):
        model(torch.zeros(1, 1, 3, 28, 28, dtype=torch.uint8))
    with pytest.raises(ValueError, match="multiples of the patch size 14"):
        model(torch.rand(1, 1, 3, 30, 28))


def test_reduced_precision_keeps_heads_in_float32(model):
    dtypes = {}

    def record(name):
        def hook(mod, args, out):
            dtypes[name] = (args[0].dtype, out.dtype)

        return hook

    handles = [
        model.ray_decoder.head.register_forward_hook(record("ray_head")),
        model.depth_decoder.output_block.register_forward_hook(record("depth_out")),
        model.camera_head.fc_pose.register_forward_hook(record("fc_pose")),
        model.recurrent_blocks[0].frame_attn.mlp.fc1.register_forward_hook(record("trunk")),
    ]
    try:
        out = run_model(model, images(), precision="bf16", num_steps=2)
    finally:
        for h in handles:
            h.remove()
    assert dtypes["trunk"][1] == torch.bfloat16
    for name in ("ray_head", "depth_out", "fc_pose"):
        assert dtypes[name] == (torch.float32, torch.float32), name
    assert all(v.dtype == torch.float32 and torch.isfinite(v).all() for v in out.values())
    with torch.inference_mode():
        fp32 = model(images(), num_steps=2)
    torch.testing.assert_close(run_model(model, images(), num_steps=2)["rays"], fp32["rays"])
    with pytest.raises(ValueError, match="precision must be one of"):
        run_model(model, images(), precision="int8")


def test_each_stage_exports_to_onnx_opset17(model):
    pytest.importorskip("onnx")
    ort = pytest.importorskip("onnxruntime")
    hw = (28, 42)

    class Stage(torch.nn.Module):
        def __init__(self, name: str) -> None:
            super().__init__()
            self.model = model
            self.name = name

        def forward(self, *args):
            if self.name == "encode":
                return self.model.encode(*args)
            if self.name == "step":
                return self.model.step(*args, 0, image_hw=hw)
            out = self.model.decode(*args, hw)
            return tuple(out[k] for k in sorted(out))

    x = images()
    with torch.inference_mode():
        tokens = model.encode(x)
    # eval(): the exporter restores each wrapper's mode (recursively) after tracing.
    stages = [
        (Stage("encode").eval(), (x,)),
        (Stage("step").eval(), (tokens, torch.tensor(0.0), torch.tensor(0.5))),
        (Stage("decode").eval(), (tokens,)),
    ]
    for stage, args in stages:
        buffer = io.BytesIO()
        with torch.no_grad(), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            torch.onnx.export(stage, args, buffer, opset_version=17, dynamo=False)
            expected = stage(*args)
        session = ort.InferenceSession(buffer.getvalue())
        feeds = {i.name: a.numpy() for i, a in zip(session.get_inputs(), args, strict=True)}
        got = session.run(None, feeds)
        expected = expected if isinstance(expected, tuple) else (expected,)
        for g, e in zip(got, expected, strict=True):
            torch.testing.assert_close(torch.from_numpy(g), e, rtol=1e-4, atol=1e-4)


def test_drop_path_only_in_training(model):
    """Training mode drops whole gated branches per sample; eval mode is deterministic."""
    x = images()
    with torch.inference_mode():
        reference = model(x, num_steps=2)["depth"]
        model.train()
        try:
            torch.manual_seed(0)
            dropped = model(x, num_steps=2)["depth"]
            torch.manual_seed(0)
            again = model(x, num_steps=2)["depth"]
        finally:
            model.eval()
        assert torch.equal(model(x, num_steps=2)["depth"], reference)
    assert model.config.drop_path == pytest.approx(0.1)
    assert torch.equal(dropped, again)
    assert not torch.allclose(dropped, reference)
