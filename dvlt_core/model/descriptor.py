"""Place descriptors from the encoder: one global vector per view, no second network.

The encode stage's patch tokens (DINOv2 after its final LayerNorm without affine
parameters, docs/architecture.md §5) are averaged over the patch grid and L2-normalised.
Mean pooling rather than GeM: the tokens are LayerNorm-centred and signed, and GeM's power
``p`` needs non-negative activations (clamping them would discard half of each token);
the patch-token mean is also what DINOv2's own linear probes pool. Cosine similarity of
two descriptors is their dot product.
"""

from __future__ import annotations

import torch
from torch import Tensor


def place_descriptors(tokens: Tensor, num_special_tokens: int) -> Tensor:
    """Encoder tokens (B, S, P, C) whose first ``num_special_tokens`` per view are the
    camera and register tokens -> (B, S, C) float32 unit-length descriptors."""
    patches = tokens[:, :, num_special_tokens:].float()
    if patches.shape[2] == 0:
        raise ValueError("the tokens hold no patch tokens to pool")
    return torch.nn.functional.normalize(patches.mean(dim=2), dim=-1)
