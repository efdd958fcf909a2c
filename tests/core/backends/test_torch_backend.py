"""The eager PyTorch backend: golden parity of the host loop, timings, options, factory."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from dvlt_core.backends import (
    InferenceBackend,
    TorchBackend,
    available_backends,
    create_backend,
)
from dvlt_core.io.checkpoint import save_checkpoint
from dvlt_core.model import DVLTModel
from dvlt_core.testing import load_deterministic_weights


@pytest.fixture(scope="module")
def case(reference_dir):
    with np.load(reference_dir / "case_small_public.npz") as z:
        return {k: z[k] for k in z.files}


@pytest.fixture(scope="module")
def model(case):
    m = DVLTModel(**json.loads(str(case["config_json"])))
    load_deterministic_weights(m, int(case["weights_seed"]), str(case["weights_sha256"]))
    return m


def test_host_loop_reproduces_the_golden_outputs(model, case):
    backend = TorchBackend(model)
    assert isinstance(backend, InferenceBackend) and backend.name == "torch"
    out = backend.infer(torch.from_numpy(case["images"]), num_steps=int(case["K"]))
    tol = {"rays": 5e-5, "pose_enc": 5e-5, "depth": 1e-4, "depth_conf": 1e-4,
           "world_points": 1e-4}
    for key, atol in tol.items():
        ours = getattr(out, key)
        assert ours.dtype == torch.float32 and ours.device.type == "cpu"
        np.testing.assert_allclose(ours.numpy(), case[f"raw_{key}"], atol=atol, rtol=1e-4,
                                   err_msg=key)
    t = out.timings
    assert t.num_steps == int(case["K"]) and all(ms > 0 for ms in t.step_ms)
    assert t.encode_ms > 0 and t.decode_ms > 0
    assert t.encode_ms + sum(t.step_ms) + t.decode_ms <= t.total_ms + 1e-6
    assert set(t.as_dict()) == {"encode_ms", "step_ms", "decode_ms", "transfer_ms", "total_ms"}


def test_defaults_come_from_the_model_config(model):
    backend = TorchBackend(model)
    assert backend.default_num_steps == 3  # the case config sets inference_steps=3
    assert backend.img_size == 504 and backend.device == torch.device("cpu")
    out = backend.infer(torch.rand(1, 2, 3, 28, 42))
    assert out.timings.num_steps == 3 and out.depth.shape == (1, 2, 28, 42, 1)


def test_bad_options_are_refused(model):
    with pytest.raises(ValueError, match="needs a CUDA device"):
        TorchBackend(model, device="cpu", precision="bf16")
    with pytest.raises(ValueError, match="precision must be one of"):
        TorchBackend(model, precision="int8")
    with pytest.raises(ValueError, match="run one scene at a time"):
        TorchBackend(model).infer(torch.rand(2, 1, 3, 28, 28))
    with pytest.raises(ValueError, match="num_steps"):
        TorchBackend(model).infer(torch.rand(1, 1, 3, 28, 28), num_steps=0)
    with pytest.raises(ValueError, match="invalid device 'gpu0'"):
        TorchBackend(model, device="gpu0")
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="CUDA is not available"):
            TorchBackend(model, device="cuda")


def test_bf16_on_cpu_only_with_native_bf16_instructions(model, case, monkeypatch):
    import dvlt_core.backends.torch_backend as torch_backend
    from dvlt_core.model.precision import BF16_REL_L2_TOLERANCE

    monkeypatch.setattr(torch_backend, "cpu_has_native_bf16", lambda: False)
    with pytest.raises(ValueError, match="AMX or AVX512-BF16"):
        TorchBackend(model, device="cpu", precision="bf16")
    with pytest.raises(ValueError, match="needs a CUDA device"):
        TorchBackend(model, device="cpu", precision="fp16")
    # Where the CPU has them (the probe answers True), bf16 runs under CPU autocast; here it
    # is emulated, so only the numbers are checked, against bf16's own tolerance.
    monkeypatch.setattr(torch_backend, "cpu_has_native_bf16", lambda: True)
    images = torch.from_numpy(case["images"])
    bf16 = TorchBackend(model, device="cpu", precision="bf16").infer(images, 3)
    fp32 = TorchBackend(model).infer(images, 3)
    for key in ("rays", "depth", "world_points", "pose_enc"):
        ours, ref = getattr(bf16, key), getattr(fp32, key)
        assert ours.dtype == torch.float32, key
        error = torch.linalg.vector_norm(ours - ref) / torch.linalg.vector_norm(ref)
        assert 0 < error <= BF16_REL_L2_TOLERANCE, f"{key}: {error:.3g}"


def test_torch_compile_option_compiles_the_model_in_place(model, monkeypatch):
    import dvlt_core.backends.torch_backend as torch_backend

    compiled = []
    monkeypatch.setattr(torch_backend, "compile_model", compiled.append)
    assert not TorchBackend(model).torch_compile
    assert compiled == []
    backend = create_backend("torch", model=model, torch_compile=True)
    assert compiled == [backend.model] and backend.torch_compile


def test_factory_builds_registered_backends(model, tmp_path):
    assert "torch" in available_backends()
    assert create_backend("torch", model=model).model is model
    save_checkpoint(model, tmp_path)
    loaded = create_backend("torch", tmp_path, device="cpu", precision="fp32")
    assert isinstance(loaded, TorchBackend)
    assert loaded.model.config == model.config
    assert {"onnxruntime", "tensorrt"} <= set(available_backends())
    with pytest.raises(ValueError, match=r"unknown backend 'openvino'; available: .*torch"):
        create_backend("openvino", tmp_path)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_fp32_matches_cpu(model, case):
    images = torch.from_numpy(case["images"])
    cpu = TorchBackend(model).infer(images, 3)
    gpu_model = DVLTModel(**model.config.to_dict())
    gpu_model.load_state_dict(model.state_dict())
    out = TorchBackend(gpu_model, "cuda", "fp32").infer(images, 3)
    assert out.rays.device.type == "cpu"
    np.testing.assert_allclose(out.rays.numpy(), cpu.rays.numpy(), atol=1e-3, rtol=1e-2)
