"""Loop closure in ReconstructionSession: a drifting loop of the unscaled ground-truth
backend driven through the real session (synchroniser, window selector, world chain), its
keyframes into the map, loops closed in spare cycles, the corrected products; the refusals
(no descriptors, a map frame equal to the world frame) and the reset."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from rig_constants import RIG_IMG_SIZE, RIG_TIMES

from dvlt_core.backends.ground_truth_unscaled import GroundTruthUnscaledBackend
from dvlt_core.eval.alignment import umeyama_alignment
from dvlt_core.geometry import Sim3, TfTree, rotation_from_vector
from dvlt_core.inference import Reconstructor
from dvlt_core.mapping import EncoderDescriber
from dvlt_core.mapping.loop_closer import LoopOptions
from dvlt_core.model import DVLTModel
from dvlt_core.synthetic import default_rig
from dvlt_core.testing import load_deterministic_weights
from dvlt_ros.pipeline import CameraFrame, CameraInfoData, Level
from dvlt_ros.pipeline.accumulate import FusedCloud
from dvlt_ros.pipeline.loop_map import UNAVAILABLE, LoopMap, correction_tf
from dvlt_ros.pipeline.products import CloudConfig
from dvlt_ros.pipeline.session import ReconstructionSession
from dvlt_ros.pipeline.settings import ParameterError, load_parameters

LOOP_IMG_SIZE = 112


def _params(rig, img_size, **changes):
    return load_parameters(None, {
        "cameras": list(rig.names), "img_size": img_size, "num_steps": 1,
        "window_timesteps": 2, "keyframe_min_spacing": 0.0, "camera_timeout": 1e4,
        "loop_closure": True, "loop_verify_per_cycle": 2, **changes})


def _cycle(session, rig, t, camera_info=False):
    stamp = round(t * 1e9)
    for view in rig.snapshot(t):
        h, w = view.image.shape[:2]
        info = CameraInfoData(rig.intrinsics(view.camera), w, h) if camera_info else None
        frame = CameraFrame(view.camera, stamp, rig.camera(view.camera).optical_frame,
                            view.image, info)
        assert session.add_frame(frame, stamp) == []
    snapshot, _ = session.poll(stamp)
    cycle = session.reconstruct(snapshot, stamp)
    return cycle, session.finish(cycle, publish_ms=0.0, points=0)


def _ate(positions, truth):
    r, t, c = (x.numpy() for x in umeyama_alignment(torch.from_numpy(positions.T),
                                                    torch.from_numpy(truth.T)))
    return float(np.sqrt(np.mean(np.sum((c * positions @ r.T + t - truth) ** 2, axis=1))))


@pytest.fixture(scope="module")
def describer(reference_dir):
    case = np.load(reference_dir / "case_small_public.npz")
    model = DVLTModel(**json.loads(str(case["config_json"])))
    load_deterministic_weights(model, int(case["weights_seed"]), str(case["weights_sha256"]))
    return EncoderDescriber(model.eval(), LOOP_IMG_SIZE)


def test_a_drifting_loop_is_closed_in_spare_cycles_and_its_products_corrected(describer):
    pytest.importorskip("gtsam")
    rig = default_rig(160, 120, num_cameras=2)
    # 44 windows over 1.1 laps at four times the default pose noise: the chain drifts more
    # than a loop measurement errs (with fewer windows it does not, and closing cannot help).
    times = [i * rig.trajectory.lap_time * 1.1 / 44 for i in range(44)]
    after_reset = times[-1] + times[1]
    backend = GroundTruthUnscaledBackend.for_rig(rig, [*times, after_reset],
                                                 img_size=LOOP_IMG_SIZE,
                                                 rotation_noise_deg=0.2, position_noise=0.008)
    session = ReconstructionSession(_params(rig, LOOP_IMG_SIZE), describer=describer)
    assert session.install_backend(backend) == []
    moved_cloud = False
    for t in times:
        cycle, report = _cycle(session, rig, t)
        assert cycle.loop_events == ()
        before = session.map_cloud.arrays(0)[0].copy()
        verdicts = session.close_loops()
        assert len(verdicts) <= 2  # loop_verify_per_cycle bounds the model runs
        if any(v.accepted for v in verdicts):
            after = session.map_cloud.arrays(0)[0]
            moved_cloud |= len(after) != len(before) or not np.array_equal(after, before)
    assert report.loop_closure == "on" and report.loop_keyframes == len(times)
    stats = session.loop_stats
    assert stats.accepted >= 1 and moved_cloud
    assert stats.verified == stats.accepted + stats.rejected
    assert 0 < len(session.map_cloud) <= int(session.params["map_max_points"])
    # Corrections are remembered only for keyframes that still have points in the map.
    assert set(session.loop_map._applied) <= set(session.map_cloud.labels(0).tolist())

    # The corrected path is the reference camera at every keyframe; it is closer to the
    # truth than the chained path (same run, both Sim(3)-aligned).
    ref = rig.names[0]
    truth = np.array([rig.camera_pose(ref, t)[:3, 3] for t in times])
    chained = np.array([pose[:3, 3] for _, pose in session.trajectories.path])
    corrected = session.map_path()
    assert [s for s, _ in corrected] == [s for s, _ in session.trajectories.path]
    optimised = np.array([pose[:3, 3] for _, pose in corrected])
    assert _ate(optimised, truth) < 0.9 * _ate(chained, truth)

    # map -> world is rigid and puts the newest reference camera where the map has it.
    map_from_world = session.map_from_world()
    rotation = map_from_world[:3, :3]
    np.testing.assert_allclose(rotation.T @ rotation, np.eye(3), atol=1e-9)
    newest = session.trajectories.path[-1][1]
    placed = map_from_world @ newest
    scale = np.linalg.norm(corrected[-1][1][:3, 3]) + 1.0
    np.testing.assert_allclose(placed[:3, 3], corrected[-1][1][:3, 3], atol=1e-9 * scale)
    np.testing.assert_allclose(placed[:3, :3], corrected[-1][1][:3, :3], atol=1e-9)

    session.reset_map()
    assert len(session.map_cloud) == 0 and session.map_path() == []
    assert session.map_from_world() is None and session.loop_stats.keyframes == 0
    _, report = _cycle(session, rig, after_reset)  # the next window: a new map
    assert report.loop_keyframes == 1


def test_the_live_map_keeps_a_bounded_path_and_verifies_with_the_calibrated_intrinsics(
        describer):
    pytest.importorskip("gtsam")
    rig = default_rig(160, 120, num_cameras=2)
    times = [i * 0.5 for i in range(9)]
    backend = GroundTruthUnscaledBackend.for_rig(rig, times, img_size=LOOP_IMG_SIZE)
    session = ReconstructionSession(_params(rig, LOOP_IMG_SIZE, trajectory_length=4,
                                            use_input_camera_info=True), describer=describer)
    session.install_backend(backend)
    for t in times:
        _cycle(session, rig, t, camera_info=True)
    loop_map = session.loop_map
    # The node keeps the reference camera of the last trajectory_length keyframes only.
    assert len(loop_map.keyframes) == 4 and all(len(k.poses) == 1 for k in loop_map.keyframes)
    assert loop_map.closer.counts.keyframes == len(times)
    path = session.map_path()
    assert [s for s, _ in path] == [s for s, _ in session.trajectories.path] == [
        round(t * 1e9) for t in times[-4:]]
    # A keyframe's map pose is the mean over the windows that reconstructed its image: its
    # own and the next one (windows of two snapshots).
    second, newest_poses = loop_map.keyframes[-2], loop_map.keyframes[-1]
    ((node, camera, pose),) = second.seen_again
    assert node == newest_poses.node and camera == rig.names[0] == second.poses[0][0]
    own = loop_map.correction(second.node).apply_c2w(second.poses[0][2])
    again = loop_map.correction(node).apply_c2w(pose)
    assert np.linalg.norm(own[:3, 3] - again[:3, 3]) > 1e-6  # two noisy reconstructions
    np.testing.assert_allclose(path[-2][1][:3, 3], (own[:3, 3] + again[:3, 3]) / 2, atol=1e-9)
    assert not newest_poses.seen_again
    np.testing.assert_allclose(path[-1][1], loop_map.correction(node).apply_c2w(
        newest_poses.poses[0][2]), atol=1e-12)
    # Keyframes remember the calibrated K their window used, for verification.
    newest = loop_map.closer.keyframes[len(times) - 1]
    assert newest.intrinsics is not None
    for camera, k in zip(newest.cameras, newest.intrinsics, strict=True):
        np.testing.assert_array_equal(k, rig.intrinsics(camera))


def test_offline_maps_keep_every_loop_verdict_and_live_ones_a_bounded_history(
        pipeline_gt_backend):
    pytest.importorskip("gtsam")
    reconstructor = Reconstructor(pipeline_gt_backend, img_size=RIG_IMG_SIZE)
    live = LoopMap(reconstructor, 0, FusedCloud(0.1), CloudConfig())
    offline = LoopMap(reconstructor, 0, FusedCloud(0.1), CloudConfig(), keep_all=True)
    assert live.closer.verdicts.maxlen == LoopOptions().verdict_history == 256
    assert offline.closer.verdicts.maxlen is None  # dvlt-ros process lists every loop


def test_without_descriptors_loop_closure_is_reported_once_and_the_run_goes_on(
        pipeline_rig, pipeline_gt_backend):
    session = ReconstructionSession(_params(pipeline_rig, RIG_IMG_SIZE))
    assert session.install_backend(pipeline_gt_backend) == []
    events, reports = [], []
    for t in RIG_TIMES:
        cycle, report = _cycle(session, pipeline_rig, t)
        events += cycle.loop_events
        reports.append(report)
        assert session.close_loops() == []
    assert [e.code for e in events] == [UNAVAILABLE] and events[0].level == Level.WARN
    assert "no place descriptors" in events[0].message
    assert {r.loop_closure for r in reports} == {"unavailable"}
    assert session.map_from_world() is None and session.map_path() == []
    assert len(session.trajectories.path) == len(RIG_TIMES)  # the chain is unaffected


def test_loop_closure_is_off_by_default(pipeline_rig, pipeline_gt_backend):
    session = ReconstructionSession(_params(pipeline_rig, RIG_IMG_SIZE, loop_closure=False))
    session.install_backend(pipeline_gt_backend)
    cycle, report = _cycle(session, pipeline_rig, RIG_TIMES[0])
    assert cycle.loop_events == () and report.loop_closure == "off"
    assert session.map_from_world() is None and load_parameters()["loop_closure"] is False


def test_a_map_frame_equal_to_the_world_frame_is_refused(pipeline_rig):
    with pytest.raises(ParameterError, match="map_frame and world_frame must differ"):
        _params(pipeline_rig, RIG_IMG_SIZE, map_frame="dvlt_world")


def test_fused_cloud_moves_the_points_of_a_label_and_merges_them_again():
    cloud = FusedCloud(0.1)
    grid = np.stack(np.meshgrid(np.arange(4), np.arange(4), [0], indexing="ij"), -1)
    points = grid.reshape(-1, 3) * 0.1 + 0.05
    colors = np.zeros((len(points), 3), np.uint8)
    cloud.add(0, points, colors, np.ones(len(points)), label=1)
    lifted = points + np.array([0, 0, 1.0])
    cloud.add(0, lifted, colors + 9, np.ones(len(points)), label=2)
    assert len(cloud) == 32
    # Label 2 moved onto label 1's voxels: they merge (16 voxels), label 1 stays put.
    shift = Sim3(rotation_from_vector(np.zeros(3)), np.array([0, 0, -1.0]), 1.0)
    assert cloud.move(0, {2: shift}) == 16
    merged, _ = cloud.arrays(0)
    assert len(merged) == 16
    np.testing.assert_allclose(np.sort(merged, axis=0), np.sort(points, axis=0), atol=1e-6)
    unbounded = FusedCloud(0.0)
    unbounded.add(0, points, colors, np.ones(len(points)), label=3)
    assert unbounded.move(0, {3: shift}) == 16
    np.testing.assert_allclose(unbounded.arrays(0)[0] + np.array([0, 0, 1.0]), points,
                               atol=1e-6)
    assert cloud.labels(0).tolist() == [1]  # label 2's points merged into label 1's voxels
    cloud.clear()
    assert len(cloud) == 0


def test_fused_cloud_moves_interleaved_labels_each_by_its_own_similarity():
    rng = np.random.default_rng(0)
    points = rng.uniform(-1, 1, (300, 3))
    labels = rng.integers(0, 5, 300)
    cloud = FusedCloud(0.0)  # every point kept, in the order added
    for label in range(5):
        ours = labels == label
        cloud.add(0, points[ours], np.zeros((ours.sum(), 3), np.uint8), np.ones(ours.sum()),
                  label=label)
    moves = {label: Sim3(rotation_from_vector(rng.normal(0, 0.3, 3)), rng.normal(0, 1, 3),
                         float(rng.uniform(0.5, 2))) for label in (1, 3, 7)}
    assert cloud.move(0, moves) == int(np.isin(labels, [1, 3]).sum())
    expected = np.concatenate([moves[label].apply_points(points[labels == label])
                               if label in moves else points[labels == label]
                               for label in range(5)])
    np.testing.assert_allclose(cloud.arrays(0)[0], expected, atol=1e-5)
    assert cloud.labels(0).tolist() == [0, 1, 2, 3, 4]


def test_the_tf_correction_is_rigid_and_exact_at_the_anchor():
    correction = Sim3(rotation_from_vector(np.array([0.1, -0.2, 0.3])),
                      np.array([1.0, 2.0, -0.5]), 1.3)
    anchor = np.array([0.4, -1.0, 2.0])
    tf = correction_tf(correction, anchor)
    np.testing.assert_allclose(tf[:3, :3] @ tf[:3, :3].T, np.eye(3), atol=1e-12)
    np.testing.assert_allclose(tf[:3, :3] @ anchor + tf[:3, 3],
                               correction.apply_points(anchor), atol=1e-12)


def _rig_tf(rig, times, odometry_until=None):
    """The rig's TF: static camera mounts and ``odom -> base_link`` at every snapshot time
    up to ``odometry_until`` (exact: the truth)."""
    tree = TfTree()
    for name in rig.names:
        tree.set_transform("base_link", rig.camera(name).optical_frame,
                           np.array(rig.camera(name).base_from_camera))
    for t in times:
        if odometry_until is None or t <= odometry_until:
            tree.set_transform("odom", "base_link", rig.world_from_base(t), round(t * 1e9))
    return tree


def test_tf_odometry_edges_pull_a_drifting_chain_towards_the_truth(describer):
    pytest.importorskip("gtsam")
    rig = default_rig(160, 120, num_cameras=2)
    times = [i * 0.25 for i in range(16)]
    ref = rig.names[0]
    truth = np.array([rig.camera_pose(ref, t)[:3, 3] for t in times])

    def run(transforms):
        backend = GroundTruthUnscaledBackend.for_rig(rig, times, img_size=LOOP_IMG_SIZE,
                                                     rotation_noise_deg=0.2,
                                                     position_noise=0.008)
        session = ReconstructionSession(
            _params(rig, LOOP_IMG_SIZE, loop_verify_per_cycle=0, scale_source="rig"),
            describer=describer, transforms=transforms)
        session.install_backend(backend)
        reports = [_cycle(session, rig, t)[1] for t in times]
        assert all(r.metric for r in reports[1:])
        return session, reports[-1]

    # Exact odometry: every keyframe after the first gets an odometry edge, and the
    # corrected path is closer to the truth than the chained one of the same run (not by
    # much more: the world's metres come from the rig scale estimate, whose noise the
    # odometry cannot remove; measured 0.66x with this seed).
    session, report = run(_rig_tf(rig, times))
    counts = session.loop_map.closer.counts
    assert counts.odometry_edges == len(times) - 1 and counts.odometry_missing == 0
    assert report.loop_odometry_edges == len(times) - 1
    chained = np.array([pose[:3, 3] for _, pose in session.trajectories.path])
    corrected = np.array([pose[:3, 3] for _, pose in session.map_path()])
    assert _ate(corrected, truth) < 0.8 * _ate(chained, truth)

    # Odometry TF that stops half way: its lookups fail from then on (no crash), those
    # keyframes get no odometry edge and are counted.
    half = len(times) // 2
    session, report = run(_rig_tf(rig, times, odometry_until=times[half - 1]))
    counts = session.loop_map.closer.counts
    assert counts.odometry_edges == half - 1
    assert counts.odometry_missing == len(times) - half
    assert report.loop_keyframes == len(times)


def test_no_odometry_edges_without_a_metric_scale(describer):
    pytest.importorskip("gtsam")
    rig = default_rig(160, 120, num_cameras=2)
    times = [i * 0.5 for i in range(4)]
    backend = GroundTruthUnscaledBackend.for_rig(rig, times, img_size=LOOP_IMG_SIZE)
    # TF odometry is there but nothing grounds the scale: the edge would have no units.
    session = ReconstructionSession(
        _params(rig, LOOP_IMG_SIZE, loop_verify_per_cycle=0, loop_odometry_rotation_sigma=0.05,
                loop_odometry_min_translation_sigma=0.01),
        describer=describer, transforms=_rig_tf(rig, times))
    session.install_backend(backend)
    for t in times:
        _, report = _cycle(session, rig, t)
        assert not report.metric
    counts = session.loop_map.closer.counts
    assert counts.odometry_edges == 0 and counts.odometry_missing == len(times) - 1
    options = session.loop_map.closer.options  # the settings reach the loop closer
    assert options.odometry_rates == (0.05, 0.02)
    assert options.odometry_min_sigmas[:2] == (0.002, 0.01)
