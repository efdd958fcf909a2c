"""Geometric verification of loop candidates on the synthetic loop (ground-truth-unscaled
backend through the real reconstructor)."""

from __future__ import annotations

import numpy as np
import pytest
from loop_keyframes import IMG_SIZE, make_keyframes

from dvlt_core.backends.ground_truth_unscaled import GroundTruthUnscaledBackend
from dvlt_core.geometry import rotation_angle
from dvlt_core.inference import Reconstructor
from dvlt_core.mapping import PlaceDatabase, PlaceOptions, verify_loop
from dvlt_core.synthetic import default_rig, repeated_texture_scene


def _true_relative_rotation(rig, t_current, t_candidate):
    ref = rig.names[0]
    return rig.camera_pose(ref, t_current)[:3, :3].T @ rig.camera_pose(ref, t_candidate)[:3, :3]


@pytest.mark.parametrize("num_cameras", [1, 2, 3, 4])
def test_a_true_revisit_is_accepted_and_a_distant_place_refused(num_cameras):
    rig = default_rig(160, 120, num_cameras=num_cameras)
    lap = rig.trajectory.lap_time
    times = [0.0, lap / 2, lap + 0.2]  # the start, the far side of the room, the start again
    reconstructor, (start, opposite, revisit), _ = make_keyframes(rig, times)
    verdict = verify_loop(reconstructor, revisit, start)
    assert verdict.accepted, verdict
    # Rotation is scale-free: the measured one matches the truth within the injected pose
    # noise (0.05 degrees per view per axis, a few views) and the pose fit.
    measured = verdict.current_from_candidate.rotation
    error = np.degrees(rotation_angle(measured, _true_relative_rotation(rig, times[2], 0.0)))
    assert error < 0.5
    assert verdict.sigmas.rotation > 0 and verdict.stats["overlap"] > 0.5
    far = verify_loop(reconstructor, revisit, opposite)
    assert not far.accepted and "not seen" in far.reason


def test_a_candidate_the_model_places_at_the_wrong_place_is_refused():
    """A model confused by a look-alike predicts the candidate's images as if taken at the
    current place: its depth there contradicts its own earlier depth of the same images."""
    rig = default_rig(160, 120, num_cameras=2)
    lap = rig.trajectory.lap_time
    times = [lap / 3, lap + 0.2]
    _, (candidate, current), _ = make_keyframes(rig, times)
    confused = GroundTruthUnscaledBackend(rig.scene, img_size=IMG_SIZE)
    for view in rig.snapshot(times[1]):
        confused.register_view(view)
    for view, here in zip(rig.snapshot(times[0]), rig.snapshot(times[1]), strict=True):
        confused.register(view.image, view.k, here.c2w)
    verdict = verify_loop(Reconstructor(confused, img_size=IMG_SIZE), current, candidate)
    assert not verdict.accepted
    assert "contradicts" in verdict.reason


def test_look_alike_places_are_neither_retrieved_nor_accepted(describer):
    """The repeated-texture room: places a quarter turn apart look alike. Retrieval
    proposes only the true revisits; verification refuses the look-alikes."""
    rig = default_rig(160, 120, num_cameras=2, scene=repeated_texture_scene())
    lap = rig.trajectory.lap_time
    times = [i * lap / 24 for i in range(27)]
    reconstructor, keyframes, _ = make_keyframes(rig, times)
    ref = rig.names[0]

    def distance(i, j):
        return np.linalg.norm(rig.camera_pose(ref, times[i])[:3, 3]
                              - rig.camera_pose(ref, times[j])[:3, 3])

    db = PlaceDatabase(PlaceOptions(exclusion_s=8.0, top_k=3))
    retrieved = []
    for kf in keyframes:
        descriptor = describer(kf.images)
        retrieved += [(kf.node, m.keyframe) for m in db.query(kf.stamp_ns, descriptor)]
        db.add(kf.node, kf.stamp_ns, descriptor)
    assert retrieved and all(distance(i, j) < 0.5 for i, j in retrieved), retrieved
    for i, j in retrieved[:2]:
        assert verify_loop(reconstructor, keyframes[i], keyframes[j]).accepted
    for i in (0, 7, 13):  # a quarter turn on: the same room, the boxes and tiles alike
        look_alike = verify_loop(reconstructor, keyframes[i + 6], keyframes[i])
        assert not look_alike.accepted, look_alike
