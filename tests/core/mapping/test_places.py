"""Place descriptors from the real encoder, the bounded database and retrieval on a loop."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from loop_keyframes import IMG_SIZE

from dvlt_core.backends import TorchBackend
from dvlt_core.inference import Reconstructor
from dvlt_core.io.images import preprocess
from dvlt_core.mapping import PlaceDatabase, PlaceOptions, keyframe_similarity
from dvlt_core.model.descriptor import place_descriptors
from dvlt_core.synthetic import default_rig


def test_the_torch_backend_returns_pooled_encoder_descriptors(small_model, describer):
    rig = default_rig(160, 120, num_cameras=2)
    images = [v.image for v in rig.snapshot(0.0)]
    recon = Reconstructor(TorchBackend(small_model), img_size=IMG_SIZE).reconstruct(images, 1)
    d = recon.descriptors
    assert d.shape == (2, small_model.config.embed_dim)
    np.testing.assert_allclose(np.linalg.norm(d, axis=1), 1.0, rtol=1e-5)
    with torch.inference_mode():
        tokens = small_model.encode(preprocess(images, img_size=IMG_SIZE).images)
    patches = tokens[0, :, small_model.num_special_tokens:]
    expected = patches.mean(dim=1) / patches.mean(dim=1).norm(dim=-1, keepdim=True)
    # float32 mean over the patch grid of O(1) values: a few ulps of 1.
    np.testing.assert_allclose(d, expected.numpy(), atol=1e-5)
    # The encoder alone (a backend without one) gives the same vectors.
    np.testing.assert_allclose(describer(images), d, atol=1e-5)


def test_place_descriptors_refuse_tokens_without_patches():
    with pytest.raises(ValueError, match="no patch tokens"):
        place_descriptors(torch.zeros(1, 2, 5, 8), 5)


def _unit(v):
    v = np.asarray(v, dtype=np.float32)
    return v / np.linalg.norm(v, axis=-1, keepdims=True)


def test_retrieval_excludes_the_recent_past_and_low_scores():
    rng = np.random.default_rng(0)
    places = _unit(rng.normal(size=(6, 1, 16)))
    db = PlaceDatabase(PlaceOptions(exclusion_s=5.0, min_similarity=0.5, top_k=2))
    for i, d in enumerate(places):
        db.add(i, i * 1_000_000_000, d)
    # Place 1 again at t = 5.5 s: only keyframes up to 0.5 s are outside the exclusion.
    assert db.query(5_500_000_000, places[1]) == []
    matches = db.query(20_000_000_000, places[1] + 0.01)
    assert matches[0].keyframe == 1 and len(matches) == 1
    # The rig's cameras swapped (driving the other way round) still match.
    db.add(6, 21_000_000_000, np.concatenate([places[2], places[4]]))
    swapped = np.concatenate([places[4], places[2]])
    assert db.query(40_000_000_000, swapped)[0].keyframe == 6


def test_the_bounded_database_drops_the_most_redundant_keyframe():
    rng = np.random.default_rng(1)
    places = _unit(rng.normal(size=(4, 1, 16)))
    db = PlaceDatabase(PlaceOptions(capacity=4))
    for i, d in enumerate([places[0], places[1], places[1] + 1e-3, places[2], places[3]]):
        db.add(i, i, d)
    assert len(db) == 4 and db.evicted == 1
    assert 1 not in db and all(k in db for k in (0, 2, 3, 4))


def test_the_database_refuses_bad_input():
    db = PlaceDatabase()
    db.add(0, 10, _unit(np.ones((1, 4))))
    with pytest.raises(ValueError, match="time order"):
        db.add(1, 5, _unit(np.ones((1, 4))))
    with pytest.raises(ValueError, match="finite, non-zero"):
        db.add(2, 20, np.zeros((1, 4)))
    with pytest.raises(ValueError, match="capacity"):
        PlaceOptions(capacity=1)


def test_retrieval_finds_the_true_revisit_after_a_lap(describer):
    rig = default_rig(160, 120, num_cameras=2)
    lap = rig.trajectory.lap_time
    step = lap / 40
    times = [i * step for i in range(44)]  # a lap and 4 keyframes more
    db = PlaceDatabase(PlaceOptions(exclusion_s=10.0, top_k=3))
    found = []
    for i, t in enumerate(times):
        descriptor = describer([v.image for v in rig.snapshot(t)])
        if i >= 40:
            found.append((i - 40, [m.keyframe for m in db.query(round(t * 1e9), descriptor)]))
        db.add(i, round(t * 1e9), descriptor)
    # The place one lap back (0.26 m and 9 degrees of travel per keyframe) is among the
    # candidates, within one keyframe.
    for revisit, candidates in found:
        assert any(abs(c - revisit) <= 1 for c in candidates), (revisit, candidates)
    assert keyframe_similarity(_unit(np.ones((1, 3))), _unit(np.ones((2, 3)))) == pytest.approx(1)
