"""Place recognition: a bounded database of keyframe descriptors and candidate retrieval.

A keyframe's descriptor is one unit vector per camera of its snapshot (the encoder's
pooled patch tokens, :func:`dvlt_core.model.descriptor.place_descriptors`). Two keyframes
are compared camera by camera: each camera of the query takes its best cosine similarity
among the other keyframe's cameras, and the score is the mean over the query's cameras (so
a place seen again by another camera of the rig, e.g. driving the loop the other way,
still matches).

Descriptors are compared after subtracting the mean descriptor of every keyframe added so
far (then renormalised): features of one environment share a large common component
(measured on the synthetic room with the small deterministic-weight model: raw cosine
similarities have a median of 0.91 over all pairs, centred ones 0.11), which would
otherwise drown the differences between places. This is the first step of the usual PCA
whitening of global descriptors, without a training set.

Retrieval leaves out keyframes closer in time than ``exclusion_s`` (the recent past always
looks alike) and scores below ``min_similarity``, and returns the best ``top_k``. The
database holds at most ``capacity`` keyframes; when full, the most redundant one (the
highest similarity to its successor in time, i.e. the robot stood still or saw the same
thing) is dropped, so coverage of distinct places is kept rather than only the newest.

Backends without an encoder (the ground-truth test doubles) return no descriptors:
:class:`EncoderDescriber` computes them from the images with a real DVLT encoder.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from dvlt_core.io.images import preprocess
from dvlt_core.model import DVLTModel
from dvlt_core.model.descriptor import place_descriptors


@dataclass(frozen=True)
class PlaceOptions:
    """``capacity``: keyframes kept; ``exclusion_s``: the temporal exclusion window;
    ``min_similarity``: the score a candidate needs; ``top_k``: candidates returned."""

    capacity: int = 2000
    exclusion_s: float = 10.0
    min_similarity: float = 0.5
    top_k: int = 3

    def __post_init__(self) -> None:
        if self.capacity < 2 or self.top_k < 1:
            raise ValueError(f"capacity must be >= 2 and top_k >= 1, got {self}")
        if not (self.exclusion_s >= 0 and -1.0 <= self.min_similarity <= 1.0):
            raise ValueError(f"exclusion_s must be >= 0 and min_similarity in [-1, 1], got {self}")


@dataclass(frozen=True)
class PlaceMatch:
    """A retrieved keyframe and its score."""

    keyframe: int
    stamp_ns: int
    similarity: float


def keyframe_similarity(query: np.ndarray, other: np.ndarray) -> float:
    """Score of two keyframe descriptors (cameras, C): the mean over ``query``'s cameras
    of the best cosine similarity among ``other``'s."""
    return float((query @ other.T).max(axis=1).mean())


def _unit_rows(descriptor: np.ndarray) -> np.ndarray:
    d = np.atleast_2d(np.asarray(descriptor, dtype=np.float32))
    norms = np.linalg.norm(d, axis=1, keepdims=True)
    if d.ndim != 2 or not np.all(np.isfinite(d)) or np.any(norms == 0):
        raise ValueError("a descriptor must be finite, non-zero rows (cameras, C)")
    return d / norms


class PlaceDatabase:
    """Keyframe descriptors with temporal exclusion and bounded size (module docstring)."""

    def __init__(self, options: PlaceOptions | None = None) -> None:
        self.options = options or PlaceOptions()
        self._ids: list[int] = []
        self._stamps: list[int] = []
        self._descriptors: list[np.ndarray] = []
        # Similarity of each entry to its successor in time (the last has none yet).
        self._redundancy: list[float] = []
        self._sum: np.ndarray | None = None
        self._count = 0
        self._members: set[int] = set()
        self.evicted = 0

    def __len__(self) -> int:
        return len(self._ids)

    def __contains__(self, keyframe: int) -> bool:
        return keyframe in self._members

    def clear(self) -> None:
        self._ids.clear()
        self._stamps.clear()
        self._descriptors.clear()
        self._redundancy.clear()
        self._members.clear()
        self._sum, self._count = None, 0

    def add(self, keyframe: int, stamp_ns: int, descriptor: np.ndarray) -> list[int]:
        """Add a keyframe (stamps non-decreasing); evicts the most redundant one when full.
        Returns the evicted keyframes."""
        if self._stamps and stamp_ns < self._stamps[-1]:
            raise ValueError("keyframes must be added in time order (reset for a new epoch)")
        descriptor = _unit_rows(descriptor)
        if self._descriptors:
            self._redundancy.append(keyframe_similarity(self._descriptors[-1], descriptor))
        self._ids.append(int(keyframe))
        self._members.add(int(keyframe))
        self._stamps.append(int(stamp_ns))
        self._descriptors.append(descriptor)
        total = descriptor.sum(axis=0, dtype=np.float64)
        self._sum = total if self._sum is None else self._sum + total
        self._count += len(descriptor)
        return [self.evict()] if len(self._ids) > self.options.capacity else []

    def query(self, stamp_ns: int, descriptor: np.ndarray) -> list[PlaceMatch]:
        """The best keyframes at least ``exclusion_s`` before ``stamp_ns`` with a score of
        at least ``min_similarity``, best first."""
        opts = self.options
        latest = stamp_ns - round(opts.exclusion_s * 1e9)
        if self._sum is None:
            return []
        mean = (self._sum / self._count).astype(np.float32)
        query = self._centred(_unit_rows(descriptor), mean)
        matches = [
            PlaceMatch(k, s, keyframe_similarity(query, self._centred(d, mean)))
            for k, s, d in zip(self._ids, self._stamps, self._descriptors, strict=True)
            if s <= latest
        ]
        matches = [m for m in matches if m.similarity >= opts.min_similarity]
        return sorted(matches, key=lambda m: -m.similarity)[: opts.top_k]

    @staticmethod
    def _centred(descriptor: np.ndarray, mean: np.ndarray) -> np.ndarray:
        centred = descriptor - mean
        return centred / np.maximum(np.linalg.norm(centred, axis=1, keepdims=True), 1e-12)

    def evict(self) -> int:
        """Drop the most redundant keyframe (never the newest: it has no successor yet;
        needs two keyframes); returns it."""
        if len(self._ids) < 2:
            raise ValueError("evicting needs at least two keyframes in the database")
        victim = int(np.argmax(self._redundancy))
        self._members.discard(self._ids[victim])
        dropped = self._ids[victim]
        for column in (self._ids, self._stamps, self._descriptors, self._redundancy):
            del column[victim]
        if victim > 0:  # its predecessor now precedes its successor
            self._redundancy[victim - 1] = keyframe_similarity(
                self._descriptors[victim - 1], self._descriptors[victim])
        self.evicted += 1
        return dropped


class EncoderDescriber:
    """Descriptors of images from a DVLT model's encoder alone (preprocessed as for
    inference at ``img_size``): for backends that return none, e.g. the ground-truth test
    doubles, which have no encoder."""

    def __init__(self, model: DVLTModel, img_size: int) -> None:
        self.model = model.eval()
        self.img_size = int(img_size)

    @torch.inference_mode()
    def __call__(self, images: Sequence[np.ndarray]) -> np.ndarray:
        """(N, C) unit descriptors of N uint8 RGB images."""
        rows = []
        for image in images:  # one at a time: no padding of differently sized images
            batch = preprocess([image], img_size=self.img_size)
            tokens = self.model.encode(batch.images.to(next(self.model.parameters()).device))
            rows.append(place_descriptors(tokens, self.model.num_special_tokens)[0, 0])
        return torch.stack(rows).cpu().numpy()
