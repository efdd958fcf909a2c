"""LoopCloser over many windows: what it holds stays bounded, and windows it cannot trust
(views without a pose, too few depth pixels) neither crash it nor become loop candidates;
verification reruns the model with the keyframes' calibrated intrinsics."""

from __future__ import annotations

import numpy as np
import pytest
from loop_keyframes import IMG_SIZE

from dvlt_core.backends.ground_truth_unscaled import GroundTruthUnscaledBackend
from dvlt_core.geometry import Sim3
from dvlt_core.inference import Reconstructor
from dvlt_core.mapping import Keyframe, PlaceOptions, verify_loop
from dvlt_core.mapping.loop_closer import LoopCloser, LoopOptions
from dvlt_core.synthetic import default_rig

pytest.importorskip("gtsam")


def colour_describer(images):
    """Place descriptors of a test double: mean colour of a 4x4 grid of blocks (enough to
    tell the synthetic room's places apart roughly; the real encoder is tested elsewhere)."""
    rows = []
    for image in images:
        h, w = image.shape[:2]
        blocks = image[: h - h % 4, : w - w % 4].reshape(4, h // 4, 4, w // 4, 3)
        rows.append(blocks.mean(axis=(1, 3)).ravel() - 127.5)
    return np.array(rows, np.float32)


class RecordingReconstructor(Reconstructor):
    """The real reconstructor, recording the intrinsics of each call."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.intrinsics = []

    def reconstruct(self, images, num_steps=None, **kwargs):
        self.intrinsics.append(kwargs.get("intrinsics"))
        return super().reconstruct(images, num_steps, **kwargs)


def _windows(rig, times):
    """(keys, images) of windows of each snapshot and the one before, newest first."""
    for i, t in enumerate(times):
        views = rig.snapshot(t) + (rig.snapshot(times[i - 1]) if i else [])
        stamps = [round(t * 1e9)] * len(rig.names) + (
            [round(times[i - 1] * 1e9)] * len(rig.names) if i else [])
        yield [(v.camera, s) for v, s in zip(views, stamps, strict=True)], [v.image for v in views]


def _add(closer, reconstructor, keys, images, mutate=None, intrinsics=None):
    recon = reconstructor.reconstruct(images, 1)
    if mutate is not None:
        mutate(recon)
    newest = [i for i, (_, s) in enumerate(keys) if s == keys[0][1]]
    # Placements do not matter here (identity): these tests are about what is kept.
    return closer.add_window(keys, images, recon, newest, Sim3(), intrinsics)


def test_what_the_loop_closer_holds_stays_bounded_over_many_windows():
    rig = default_rig(160, 120, num_cameras=2)
    times = [i * rig.trajectory.lap_time * 1.5 / 36 for i in range(36)]
    backend = GroundTruthUnscaledBackend.for_rig(rig, times, img_size=IMG_SIZE)
    reconstructor = Reconstructor(backend, img_size=IMG_SIZE)
    snapshot_bytes = sum(v.image.nbytes for v in rig.snapshot(0.0))
    # Every earlier keyframe is a candidate (min_similarity -1), so verification runs too.
    places = PlaceOptions(capacity=5, exclusion_s=2.0, min_similarity=-1.0, top_k=2)
    by_count = LoopCloser(reconstructor, colour_describer,
                          LoopOptions(places=places, history=3, verdict_history=4))
    by_bytes = LoopCloser(reconstructor, colour_describer, LoopOptions(
        places=PlaceOptions(exclusion_s=2.0, min_similarity=-1.0), history=3,
        max_image_bytes=4 * snapshot_bytes))
    for keys, images in _windows(rig, times):
        for closer in (by_count, by_bytes):
            _add(closer, reconstructor, keys, images)
            closer.verify_pending(limit=1)
            held = closer.keyframes
            assert set(held) >= set(closer._recent)
            assert all(n in held for n in closer.places._ids)
            assert closer.image_bytes == sum(k.image_bytes for k in held.values())
        assert len(by_count.keyframes) <= 5 + 3 and len(by_count.places) <= 5
        assert len(by_count.verdicts) <= 4
        assert by_bytes.image_bytes <= 4 * snapshot_bytes
    assert by_count.counts.keyframes == len(times) == len(by_count.graph)
    assert by_count.counts.verified > 4 and by_count.places.evicted > 0
    # Only kept keyframes' ids are queued or verified; the graph keeps every node.
    assert by_bytes.places.evicted > 0 and len(by_bytes.graph) == len(times)


def test_windows_without_enough_depth_or_poses_are_left_out_without_a_crash():
    rig = default_rig(160, 120, num_cameras=2)
    times = [0.0, 0.5, 1.0, 1.5]
    backend = GroundTruthUnscaledBackend.for_rig(rig, times, img_size=IMG_SIZE)
    reconstructor = Reconstructor(backend, img_size=IMG_SIZE)
    closer = LoopCloser(reconstructor, colour_describer)
    windows = list(_windows(rig, times))

    def no_depth(recon):  # the views shared with keyframe 0 have no valid depth pixel
        for view in recon.views[2:]:
            view.valid = np.zeros_like(view.valid)

    def no_pose(recon):  # the newest views' pose fit failed
        for view in recon.views[:2]:
            view.pose_valid = False

    _add(closer, reconstructor, *windows[0])
    # Scale unmeasurable from the shared views: no window edge (its log-scale spread
    # would be infinite), the node tied to the previous one by its chained pose.
    _add(closer, reconstructor, *windows[1], mutate=no_depth)
    assert closer.counts.unmeasured_links == 1
    (edge,) = [e for e in closer.graph.edges if e.b == 1]
    assert edge.a == 0 and edge.sigmas.translation > 0.5  # the wide unlinked sigmas
    # A keyframe without poses is a node but no loop candidate, and no window edge ends
    # at its geometry.
    _add(closer, reconstructor, *windows[2], mutate=no_pose)
    assert closer.counts.without_pose == 1 and 2 in closer.graph
    assert 2 not in closer.places and 2 not in closer.keyframes
    _add(closer, reconstructor, *windows[3])
    (edge,) = [e for e in closer.graph.edges if e.b == 3]
    assert edge.a == 2 and edge.sigmas.translation > 0.5
    assert len(closer.places) == 3 and closer.graph.optimise().nodes == 4


def test_verification_refuses_keyframes_without_depth_to_measure_the_scale():
    rig = default_rig(160, 120, num_cameras=2)
    times = [0.0, rig.trajectory.lap_time]
    backend = GroundTruthUnscaledBackend.for_rig(rig, times, img_size=IMG_SIZE)
    reconstructor = Reconstructor(backend, img_size=IMG_SIZE)
    keyframes = []
    for node, t in enumerate(times):
        views = rig.snapshot(t)
        recon = reconstructor.reconstruct([v.image for v in views], 1)
        keyframes.append(Keyframe.from_reconstruction(
            node, round(t * 1e9), [v.camera for v in views], [v.image for v in views], recon,
            range(len(views))))
    assert verify_loop(reconstructor, keyframes[1], keyframes[0]).accepted  # a true revisit
    blind = Keyframe(0, keyframes[0].stamp_ns, keyframes[0].cameras, keyframes[0].images,
                     tuple(type(v)(v.c2w, np.zeros_like(v.depth)) for v in keyframes[0].views))
    verdict = verify_loop(reconstructor, keyframes[1], blind)
    assert not verdict.accepted and "too few depth pixels" in verdict.reason


def test_verification_reruns_the_model_with_the_keyframes_calibrated_intrinsics():
    rig = default_rig(160, 120, num_cameras=2)
    lap = rig.trajectory.lap_time
    times = [0.0, 0.5, lap, lap + 0.5]
    backend = GroundTruthUnscaledBackend.for_rig(rig, times, img_size=IMG_SIZE)
    reconstructor = RecordingReconstructor(backend, img_size=IMG_SIZE)
    closer = LoopCloser(reconstructor, colour_describer, LoopOptions(
        places=PlaceOptions(exclusion_s=2.0, min_similarity=-1.0, top_k=1)))
    known = {name: rig.intrinsics(name) for name in rig.names}
    for keys, images in _windows(rig, times):
        _add(closer, reconstructor, keys, images, intrinsics=[known[c] for c, _ in keys])
    assert closer.pending
    reconstructor.intrinsics.clear()
    (verdict,) = closer.verify_pending(limit=1)
    (used,) = reconstructor.intrinsics
    expected = [known[c] for c in (*closer.keyframes[verdict.current].cameras,
                                   *closer.keyframes[verdict.candidate].cameras)]
    assert used is not None and len(used) == len(expected)
    for k, truth in zip(used, expected, strict=True):
        np.testing.assert_array_equal(k, truth)


def test_recent_keyframes_that_share_no_window_are_verified_as_local_edges():
    rig = default_rig(160, 120, num_cameras=2)
    times = [0.0, 0.4, 0.8, 1.2]
    backend = GroundTruthUnscaledBackend.for_rig(rig, times, img_size=IMG_SIZE)
    reconstructor = Reconstructor(backend, img_size=IMG_SIZE)
    # No place is similar enough to be a loop candidate: only local pairs are queued.
    closer = LoopCloser(reconstructor, colour_describer,
                        LoopOptions(places=PlaceOptions(exclusion_s=0.0, min_similarity=1.0)))
    for keys, images in _windows(rig, times):
        _add(closer, reconstructor, keys, images)
    assert not closer.pending and sorted(closer.local_pending) == [(2, 0), (3, 0), (3, 1)]
    verdicts = closer.verify_pending(limit=3)
    assert [(v.current, v.candidate, v.kind) for v in verdicts] == [
        (3, 0, "local"), (3, 1, "local"), (2, 0, "local")]
    assert all(v.accepted for v in verdicts), [v.reason for v in verdicts]
    local = [(e.a, e.b) for e in closer.graph.edges if e.kind == "local"]
    assert sorted(local) == [(2, 0), (3, 0), (3, 1)]
    # They are not loops: the loop counts and the loop verdicts do not include them.
    counts = closer.counts
    assert (counts.local_verified, counts.local_accepted, counts.verified) == (3, 3, 0)
    assert not closer.verdicts and not closer.has_pending
