"""Preprocessing (docs/architecture.md §3.1) and the per-view transform record that maps
results back."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from dvlt_core.io.images import preprocess, resize_antialiased


def _noise(h: int, w: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)


def _blob(h: int, w: int, u: float, v: float, sigma: float) -> np.ndarray:
    vv, uu = np.mgrid[0:h, 0:w]
    g = np.exp(-((uu - u) ** 2 + (vv - v) ** 2) / (2 * sigma**2))
    return np.repeat((g * 255).round().astype(np.uint8)[..., None], 3, axis=-1)


def _centroid(channel: np.ndarray) -> np.ndarray:
    vv, uu = np.mgrid[0 : channel.shape[0], 0 : channel.shape[1]]
    w = channel / channel.sum()
    return np.array([(uu * w).sum(), (vv * w).sum()])


@pytest.mark.parametrize("size", [(40, 53), (200, 301), (60, 200)])
def test_resize_matches_pil_antialiased_bilinear(size):
    # PIL's float bilinear resize is an independent implementation of the same
    # antialiased triangle filter that torchvision's tensor resize uses.
    a = np.random.default_rng(1).random((97, 131)).astype(np.float32)
    ours = resize_antialiased(torch.from_numpy(a)[None], size)[0].numpy()
    pil = np.asarray(Image.fromarray(a, mode="F").resize(size[::-1], Image.BILINEAR))
    np.testing.assert_allclose(ours, pil, atol=2e-5)


def test_sizes_follow_the_upstream_rules():
    batch = preprocess([_noise(480, 640)], img_size=504)
    assert batch.images.shape == (1, 1, 3, 378, 504)  # 4:3 -> 27x36 patches
    t = batch.transforms[0]
    assert t.resized_hw == (378, 504) and t.crop_offset == (0, 0) and t.pad_offset == (0, 0)
    assert batch.valid.all()
    # 333x1000: new = (round(333 * 0.504), 504) = (168, 504), already multiples of 14
    t2 = preprocess([_noise(333, 1000)]).transforms[0]
    assert t2.resized_hw == (168, 504) and t2.crop_hw == (168, 504)
    # Python round is half to even: 250 * 0.504 = 126.0 exactly, 17 * 0.504 = 8.568 -> 9.
    assert preprocess([_noise(250, 1000)]).transforms[0].resized_hw == (126, 504)
    with pytest.raises(ValueError, match="too elongated"):
        preprocess([_noise(17, 1000)])


def test_pixels_equal_resize_then_centre_crop():
    img = _noise(300, 451, seed=3)
    batch = preprocess([img], img_size=140)
    t = batch.transforms[0]
    full = resize_antialiased(torch.from_numpy(img).permute(2, 0, 1).float() / 255, t.resized_hw)
    top, left = t.crop_offset
    expected = full[:, top : top + t.crop_hw[0], left : left + t.crop_hw[1]]
    assert t.resized_hw == (93, 140) and t.crop_hw == (84, 140) and t.crop_offset == (4, 0)
    assert torch.equal(batch.images[0, 0], expected)


def test_mixed_sizes_are_zero_padded_centred_with_a_valid_mask():
    batch = preprocess([_noise(480, 640), _noise(640, 480, seed=2)], img_size=504)
    assert batch.images.shape == (1, 2, 3, 504, 504)
    land, port = batch.transforms
    assert land.pad_offset == (63, 0) and land.crop_hw == (378, 504)
    assert port.pad_offset == (0, 63) and port.crop_hw == (504, 378)
    assert batch.valid[0, 0].sum() == 378 * 504 and batch.valid[0, 1].sum() == 504 * 378
    assert batch.images[0, 0, :, :63].abs().sum() == 0
    assert batch.images[0, 1, :, :, :63].abs().sum() == 0
    assert not batch.valid[0, 0, :63].any() and batch.valid[0, 0, 63:441].all()


def test_rotate_portrait_turns_only_portrait_views():
    batch = preprocess([_noise(640, 480), _noise(480, 640)], img_size=504, rotate_portrait=True)
    assert [t.rotation_k for t in batch.transforms] == [1, 0]
    assert batch.images.shape == (1, 2, 3, 378, 504)
    assert batch.valid.all()


@pytest.mark.parametrize("rotate", [False, True])
@pytest.mark.parametrize("shape", [(300, 451), (451, 300), (257, 257)])
def test_record_maps_image_content_exactly(shape, rotate):
    # A smooth blob at a known original position must land where the record says.
    h, w = shape
    u, v = 0.37 * w, 0.61 * h
    images = [_blob(h, w, u, v, sigma=12.0), _noise(200, 200)]
    batch = preprocess(images, 140, rotate_portrait=rotate)
    t = batch.transforms[0]
    net = batch.images[0, 0, 0].numpy()
    found = _centroid(net)
    np.testing.assert_allclose(found, t.original_to_network(np.array([u, v])), atol=0.05)
    np.testing.assert_allclose(t.network_to_original(found), [u, v], atol=0.05 / min(t.scale_xy))
