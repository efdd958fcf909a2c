"""Deterministic DVLT weights for parity tests, from key names and shapes only.

Every tensor comes from its own ``numpy.random.RandomState(seed + crc32(key) % 2**31)`` with one
``standard_normal(shape)`` call (float64), mapped by the first matching rule below and cast to
float32. No torch RNG is involved, so any implementation can rebuild the exact tensors that the
golden cases were produced with.

=====  ====================================================  ==============================
rule   key                                                   value
=====  ====================================================  ==============================
1      ``*.freqs`` (1-D, length n)                           ``exp(-ln(1e4)·arange(n)/n)``
                                                             in float64 (no RNG)
2      ``*.gamma`` (LayerScale)                              ``0.05 + 0.01·z``
3      ``*depth_scale.proj.2.weight``                        ``0.2/sqrt(shape[1])·z``
4      ``*depth_scale.proj.2.bias``                          ``0.02·z``
5      ``camera_token``, ``register_token`` or ``*.cls_token``,  ``0.5·z``
       ``*.register_tokens``, ``*.mask_token``, ``*.camera_token``,
       ``*.register_token``
6      ``*.pos_embed``                                       ``0.1·z``
7      1-D ``*.weight`` (norm scales)                        ``1 + 0.02·z``
8      ``*.bias``                                            ``0.02·z``
9      4-D ``*upsample_blocks.<i>.0.0.weight`` (ConvTranspose2d, (in, out, k, k))
                                                             ``z/sqrt(shape[0])``
10     any other tensor of rank ≥ 2                          ``z/sqrt(prod(shape[1:]))``
11     anything else                                         ``0.02·z``
=====  ====================================================  ==============================
"""

from __future__ import annotations

import hashlib
import math
import re
import zlib
from collections.abc import Mapping, Sequence

import numpy as np
import torch

_CONV_TRANSPOSE_KEY = re.compile(r"(^|\.)upsample_blocks\.\d+\.0\.0\.weight$")
_TOKEN_KEYS = ("camera_token", "register_token")
_TOKEN_SUFFIXES = (
    ".cls_token",
    ".register_tokens",
    ".mask_token",
    ".camera_token",
    ".register_token",
)


def key_rng(key: str, seed: int) -> np.random.RandomState:
    """The generator of one key: ``RandomState(seed + crc32(key) % 2**31)``."""
    if not 0 <= int(seed) < 2**31:
        raise ValueError(f"seed must be in [0, 2**31), got {seed}")
    return np.random.RandomState(int(seed) + zlib.crc32(key.encode("utf-8")) % 2**31)


def _value(key: str, shape: tuple[int, ...], seed: int) -> np.ndarray:
    if key == "freqs" or key.endswith(".freqs"):
        if len(shape) != 1:
            raise ValueError(f"{key}: a freqs buffer must be 1-D, got shape {shape}")
        n = shape[0]
        return np.exp(-math.log(10000.0) * np.arange(n, dtype=np.float64) / n)
    z = key_rng(key, seed).standard_normal(size=shape)
    if key.endswith(".gamma"):
        return 0.05 + 0.01 * z
    if key.endswith("depth_scale.proj.2.weight"):
        return 0.2 / math.sqrt(shape[1]) * z
    if key.endswith("depth_scale.proj.2.bias"):
        return 0.02 * z
    if key in _TOKEN_KEYS or key.endswith(_TOKEN_SUFFIXES):
        return 0.5 * z
    if key == "pos_embed" or key.endswith(".pos_embed"):
        return 0.1 * z
    if len(shape) == 1 and key.endswith(".weight"):
        return 1.0 + 0.02 * z
    if key.endswith(".bias"):
        return 0.02 * z
    if len(shape) == 4 and _CONV_TRANSPOSE_KEY.search(key):
        return z / math.sqrt(shape[0])
    if len(shape) >= 2:
        return z / math.sqrt(math.prod(shape[1:]))
    return 0.02 * z


def deterministic_state_dict(
    shapes: Mapping[str, Sequence[int]], seed: int
) -> dict[str, torch.Tensor]:
    """float32 state dict for ``shapes`` (key → shape), keys in sorted order."""
    out: dict[str, torch.Tensor] = {}
    for key in sorted(shapes):
        shape = tuple(int(s) for s in shapes[key])
        array = np.ascontiguousarray(_value(key, shape, seed), dtype=np.float32)
        out[key] = torch.from_numpy(array.reshape(shape))
    return out


def model_shapes(model: torch.nn.Module) -> dict[str, tuple[int, ...]]:
    """key → shape of a module's state dict."""
    return {k: tuple(v.shape) for k, v in model.state_dict().items()}


def state_dict_sha256(state_dict: Mapping[str, torch.Tensor]) -> str:
    """sha256 over the sorted keys, each key's UTF-8 name then its float32 C-order bytes."""
    digest = hashlib.sha256()
    for key in sorted(state_dict):
        digest.update(key.encode("utf-8"))
        tensor = state_dict[key].detach().to("cpu", torch.float32).contiguous()
        digest.update(tensor.numpy().tobytes())
    return digest.hexdigest()


def load_deterministic_weights(
    model: torch.nn.Module, seed: int, expected_sha256: str | None = None
) -> str:
    """Fill ``model`` (strict) with the deterministic weights of ``seed``; return their sha256.

    Raises ``ValueError`` if ``expected_sha256`` is given and differs (the model's key set or
    shapes differ from the configuration the hash was made for).
    """
    state = deterministic_state_dict(model_shapes(model), seed)
    sha = state_dict_sha256(state)
    if expected_sha256 is not None and sha != expected_sha256:
        raise ValueError(
            f"deterministic weights (seed {seed}) hash to {sha}, expected {expected_sha256}: "
            "the model's state-dict keys/shapes differ from the configuration of the reference"
        )
    model.load_state_dict(state, strict=True)
    return sha
