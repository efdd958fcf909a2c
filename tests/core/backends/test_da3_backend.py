"""``backend: da3``: the real Depth Anything 3 network (da3-small, random weights saved as the
released checkpoints are) behind the backend interface: its predictions reach the pipeline
unchanged, as rays of its own cameras relative to view 0, all views in one pass."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from dvlt_core.backends import create_backend
from dvlt_core.backends.da3_backend import IMAGE_MEAN, IMAGE_STD
from dvlt_core.inference import Reconstructor

pytest.importorskip("depth_anything_3", reason="the 'da3' extra (depth-anything-3) is not "
                    "installed")
pytest.importorskip("einops", reason="the 'da3' extra (einops) is not installed")


@pytest.fixture(scope="module")
def backend(tmp_path_factory):
    from dvlt_core.backends.da3_weights import save_random_da3_checkpoint

    folder = save_random_da3_checkpoint(tmp_path_factory.mktemp("da3"))
    return create_backend("da3", checkpoint=str(folder), device="cpu")


@pytest.fixture(scope="module")
def images():
    return torch.rand(1, 3, 3, 56, 70, generator=torch.Generator().manual_seed(0))


def _reference(backend, images):
    """The package network's own predictions for ``images`` (normalised as DA3 expects)."""
    mean = torch.tensor(IMAGE_MEAN).view(1, 1, 3, 1, 1)
    std = torch.tensor(IMAGE_STD).view(1, 1, 3, 1, 1)
    with torch.inference_mode():
        return backend.net((images - mean) / std)


def test_outputs_are_the_networks_depth_and_cameras_relative_to_view_0(backend, images):
    out = backend.infer(images, num_steps=7)  # no loop: K is ignored
    ref = _reference(backend, images)
    assert out.timings.num_steps == 1 and backend.default_num_steps == 1 and not backend.metric
    assert out.rays.shape == (1, 3, 56, 70, 6) and out.depth.shape == (1, 3, 56, 70, 1)
    torch.testing.assert_close(out.depth[0, ..., 0], ref["depth"][0], rtol=0, atol=0)
    assert (out.depth_conf >= 1).all()
    torch.testing.assert_close(out.depth_conf[0], ref["depth_conf"][0].clamp_min(1), rtol=0,
                               atol=0)

    bottom = torch.tensor([0.0, 0.0, 0.0, 1.0]).expand(3, 1, 4)
    c2w = torch.linalg.inv(torch.cat([ref["extrinsics"][0], bottom], 1).double())
    relative = torch.linalg.inv(c2w[0]) @ c2w
    origins, directions = out.rays[0, ..., 3:].double(), out.rays[0, ..., :3].double()
    # Origins: each camera's centre in view 0's frame (view 0 at the origin).
    expected = relative[:, None, None, :3, 3].expand_as(origins)
    scale = float(relative[:, :3, 3].abs().max()) + 1.0
    torch.testing.assert_close(origins, expected, rtol=0, atol=1e-5 * scale)
    # Directions in each camera's frame have z = 1 and point through its pixel centres.
    local = torch.einsum("sji,shwj->shwi", relative[:, :3, :3], directions)
    torch.testing.assert_close(local[..., 2], torch.ones_like(local[..., 2]), rtol=0, atol=1e-5)
    k = ref["intrinsics"][0].double()[:, None, None]
    pixel_u = torch.arange(70, dtype=torch.float64) + 0.5
    pixel_v = torch.arange(56, dtype=torch.float64)[:, None] + 0.5
    # float32 directions of magnitude <= |local|: compared in normalised image coordinates.
    tol = 1e-6 * float(local.abs().max())
    torch.testing.assert_close(local[..., 0], ((pixel_u - k[..., 0, 2]) / k[..., 0, 0]).expand(
        3, 56, 70), rtol=0, atol=tol)
    torch.testing.assert_close(local[..., 1], ((pixel_v - k[..., 1, 2]) / k[..., 1, 1]).expand(
        3, 56, 70), rtol=0, atol=tol)
    # World points are the rays carried to their depth.
    world = origins + directions * out.depth[0].double()
    torch.testing.assert_close(out.world_points[0].double(), world, rtol=1e-5, atol=1e-5 * scale)


def test_views_are_reconstructed_together(backend, images):
    """Multi-view: DA3 attends across views, so view 0's depth depends on the others."""
    alone = backend.infer(images[:, :1]).depth[0, 0]
    together = backend.infer(images).depth[0, 0]
    other = images.clone()
    other[:, 1:] = images[:, 1:].flip(-1)
    with_others = backend.infer(other).depth[0, 0]
    assert not torch.equal(alone, together) and not torch.equal(together, with_others)


def test_the_reconstructor_runs_on_da3(backend):
    rng = np.random.default_rng(0)
    views = [rng.integers(0, 256, (60, 80, 3), dtype=np.uint8) for _ in range(3)]
    recon = Reconstructor(backend, img_size=70).reconstruct(views)
    assert recon.num_steps == 1 and len(recon) == 3
    assert all(np.isfinite(v.extrinsics_c2w).all() for v in recon.views)
    assert recon.views[0].depth.shape == (60, 80)


def test_reduced_precision_on_cpu_is_refused(backend):
    from dvlt_core.backends.da3_backend import Da3Backend

    with pytest.raises(ValueError, match="needs a CUDA device"):
        Da3Backend(backend.net, "da3-small", device="cpu", precision="bf16")
