"""ReconstructionSession without DDS: frames in, cycles out, the lossless queue, parameter
changes (each value and across values), reports, the trajectory and the fused cloud."""

from __future__ import annotations

import numpy as np
import pytest
from rig_constants import RIG_IMG_SIZE, RIG_TIMES

from dvlt_ros.pipeline import CameraFrame, Level
from dvlt_ros.pipeline.accumulate import FusedCloud
from dvlt_ros.pipeline.session import LOSSLESS_QUEUE, ReconstructionSession
from dvlt_ros.pipeline.settings import ParameterError, load_parameters


def _params(rig, **changes):
    return load_parameters(None, {
        "cameras": list(rig.names), "img_size": RIG_IMG_SIZE, "num_steps": 3,
        "window_timesteps": 2, "keyframe_min_spacing": 0.0, "camera_timeout": 1e4,
        **changes})


def _frames(rig, t):
    stamp = round(t * 1e9)
    return stamp, [CameraFrame(v.camera, stamp, rig.camera(v.camera).optical_frame, v.image)
                   for v in rig.snapshot(t)]


def _session(rig, backend, **kw):
    params = kw.pop("params", None) or _params(rig)
    session = ReconstructionSession(params, **kw)
    assert session.install_backend(backend) == []
    return session


def _run(session, rig, times, lossless=False):
    """Feed every snapshot at ``times`` and reconstruct what completes; the cycles and
    their reports."""
    done = []
    for t in times:
        stamp, frames = _frames(rig, t)
        for frame in frames:
            assert session.add_frame(frame, stamp) == []
            if lossless:
                session.after_image(stamp)
        if lossless:
            snapshots = []
            while (item := session.next_queued()) is not None:
                snapshots.append(item[0])
            assert snapshots[:-1] == [None] * (len(frames) - 1) and snapshots[-1] is not None
        else:
            snapshot, events = session.poll(stamp)
            assert events == [] and snapshot is not None
            snapshots = [snapshot]
        for snapshot in filter(None, snapshots):
            cycle = session.reconstruct(snapshot, stamp)
            done.append((cycle, session.finish(cycle, publish_ms=1.0, points=len(
                cycle.result.cloud))))
    return done


def test_frames_in_cycles_and_reports_out(pipeline_rig, pipeline_gt_backend):
    session = _session(pipeline_rig, pipeline_gt_backend)
    done = _run(session, pipeline_rig, RIG_TIMES)
    reports = [report for _, report in done]
    assert [r.cycle for r in reports] == list(range(1, len(RIG_TIMES) + 1))
    assert session.cycles == len(RIG_TIMES) and session.last_report is reports[-1]
    assert [r.stamp_ns for r in reports] == [round(t * 1e9) for t in RIG_TIMES]
    for (cycle, report), t in zip(done, RIG_TIMES, strict=True):
        assert report.num_steps == 3 and report.num_steps_mode == "fixed"
        assert report.num_cameras == 3 and report.num_timesteps == (1 if t == 0 else 2)
        assert report.num_views == cycle.result.num_views == 3 * report.num_timesteps
        assert report.points == len(cycle.result.cloud) > 0 and report.units == "m"
        assert report.publish_ms == 1.0 and report.total_ms >= report.inference_ms
        assert report.sync_wait_ms == 0.0  # reconstructed at the clock of its arrival
        assert report.drops == 0 and report.overruns == 0
    # The trajectory is the reference camera's poses, one per cycle.
    path = session.trajectories.path
    results = [cycle.result for cycle, _ in done]
    assert len(path) == len(results)
    np.testing.assert_array_equal([s for s, _ in path], [r.stamp_ns for r in results])
    np.testing.assert_allclose(path[-1][1][:3, 3], results[-1].poses[0].world_from_camera[:3, 3])
    assert all(cycle.path_updated for cycle, _ in done)


def test_sync_wait_is_the_age_of_the_newest_frame(pipeline_rig, pipeline_gt_backend):
    session = _session(pipeline_rig, pipeline_gt_backend)
    _, frames = _frames(pipeline_rig, 0.0)
    for i, frame in enumerate(frames):
        session.add_frame(frame, 1_000_000_000 + i * 1_000_000)  # the last arrives at +2 ms
    snapshot, _ = session.poll(1_000_000_000)
    assert snapshot.arrived_ns == 1_002_000_000
    cycle = session.reconstruct(snapshot, now_ns=1_007_000_000)
    assert session.finish(cycle, 0.0, 0).sync_wait_ms == pytest.approx(5.0)


def test_lossless_queue_keeps_every_snapshot_in_order(pipeline_rig, pipeline_gt_backend):
    session = _session(pipeline_rig, pipeline_gt_backend)
    done = _run(session, pipeline_rig, RIG_TIMES, lossless=True)
    assert [c.result.stamp_ns for c, _ in done] == [round(t * 1e9) for t in RIG_TIMES]
    assert session.images_received == 3 * len(RIG_TIMES)
    # Same frames, same order: the same results as reconstructing at the cycle rate.
    rate = _run(_session(pipeline_rig, pipeline_gt_backend), pipeline_rig, RIG_TIMES)
    for (lossless, _), (polled, _) in zip(done, rate, strict=True):
        np.testing.assert_array_equal(lossless.result.cloud.points, polled.result.cloud.points)


def test_lossless_queue_is_bounded_and_reports_the_overflow(pipeline_rig, pipeline_gt_backend):
    session = _session(pipeline_rig, pipeline_gt_backend)
    events = []
    for i in range(LOSSLESS_QUEUE):  # never drained: 3 images each
        _, frames = _frames(pipeline_rig, RIG_TIMES[i % len(RIG_TIMES)])
        stamp = (i + 1) * 100_000_000
        for frame in frames:
            session.add_frame(CameraFrame(frame.camera, stamp, frame.frame_id, frame.rgb), stamp)
            events += session.after_image(stamp)
    assert len(session.lossless_queue) == LOSSLESS_QUEUE
    warnings = [e.code for e in events if e.level >= Level.WARN]
    # Only dropped snapshots are reported (a dropped None entry loses nothing).
    assert warnings and set(warnings) == {"queue_overflow"}
    counts = [count for _, count in session.lossless_queue]
    assert counts == list(range(session.images_received - LOSSLESS_QUEUE + 1,
                                session.images_received + 1))


def test_parameter_changes_apply_at_the_next_cycle(pipeline_rig, pipeline_gt_backend):
    session = _session(pipeline_rig, pipeline_gt_backend)
    assert session.propose({"num_steps": 5, "cloud_stride": 4}) is None
    assert session.params["num_steps"] == 3  # pending until the cycle applies it
    assert session.apply_pending() == {"num_steps": 5, "cloud_stride": 4}
    assert session.apply_pending() == {}
    assert session.pipeline.config.cloud.stride == 4
    (cycle, report), = _run(session, pipeline_rig, RIG_TIMES[:1])
    assert report.num_steps == cycle.result.num_steps == 5


def test_parameter_changes_are_refused_alone_and_together(pipeline_rig, pipeline_gt_backend):
    session = _session(pipeline_rig, pipeline_gt_backend)
    assert "one of" in session.propose({"precision": "int8"})
    assert ">= 14" in session.propose({"img_size": 7})
    assert "must not be empty" in session.propose({"checkpoint": " "})
    # Across values: with the running ones, and with those accepted but not yet applied.
    assert "budget_min_num_steps (20) must be <= budget_max_num_steps (16)" in (
        session.propose({"budget_min_num_steps": 20}))
    assert session.propose({"budget_max_num_steps": 4}) is None
    assert "budget_min_num_steps (6)" in session.propose({"budget_min_num_steps": 6})
    assert session.propose({"budget_min_num_steps": 6, "budget_max_num_steps": 8}) is None
    assert session.apply_pending() == {"budget_max_num_steps": 8, "budget_min_num_steps": 6}
    assert (session.k_policy.config.k_min, session.k_policy.config.k_max) == (6, 8)
    assert "torch_threads must be >= 0, got -1" in session.propose({"torch_threads": -1})
    # torch_compile is the torch backend's: refused with another one, whichever comes first.
    compile_elsewhere = "torch_compile applies to backend torch only, the backend is 'onnxruntime'"
    assert compile_elsewhere in session.propose({"torch_compile": True, "backend": "onnxruntime"})
    assert session.propose({"torch_compile": True}) is None
    assert compile_elsewhere in session.propose({"backend": "onnxruntime"})
    assert session.propose({"torch_compile": False, "backend": "onnxruntime"}) is None
    # A caller-supplied backend: the checkpoint only labels it and may be empty.
    labelled = ReconstructionSession(_params(pipeline_rig), checkpoint_required=False)
    assert labelled.propose({"checkpoint": ""}) is None


def test_loading_refuses_values_and_combinations(pipeline_rig):
    with pytest.raises(ParameterError, match="budget_min_num_steps"):
        _params(pipeline_rig, budget_min_num_steps=9, budget_max_num_steps=8)
    with pytest.raises(ParameterError, match="unknown parameter 'num_step'"):
        _params(pipeline_rig, num_step=3)
    with pytest.raises(ParameterError, match=r"cameras must be a list of strings, got \[1, 2\]"):
        load_parameters(None, ["cameras:=[1,2]"])
    for name, value in (("world_frame", ""), ("world_frame", "/odom"), ("frame_suffix", ""),
                        ("torch_threads", -2), ("torch_threads", 1.5)):
        with pytest.raises(ParameterError, match=name):
            _params(pipeline_rig, **{name: value})
    with pytest.raises(ParameterError, match="torch_compile applies to backend torch only"):
        _params(pipeline_rig, torch_compile=True, backend="da3")


def test_trajectory_is_bounded_and_restarts_with_a_new_model(pipeline_rig,
                                                            pipeline_gt_backend):
    session = _session(pipeline_rig, pipeline_gt_backend,
                       params=_params(pipeline_rig, trajectory_length=2), keep_all_poses=True)
    done = _run(session, pipeline_rig, RIG_TIMES)
    assert [s for s, _ in session.trajectories.path] == [c.result.stamp_ns for c, _ in done[-2:]]
    # Every camera's poses are kept whole for offline TUM files.
    stamps, poses = session.trajectories.arrays(0, pipeline_rig.names[1])
    assert len(stamps) == len(RIG_TIMES) and poses.shape == (len(RIG_TIMES), 4, 4)
    session.install_backend(pipeline_gt_backend)  # a replaced model starts a new world
    assert session.trajectories.path == []


def test_fused_cloud_is_fed_every_cycle(pipeline_rig, pipeline_gt_backend):
    fused = FusedCloud(0.0)
    session = _session(pipeline_rig, pipeline_gt_backend, fused=fused)
    done = _run(session, pipeline_rig, RIG_TIMES[:2])
    assert fused.epochs == [0]
    # Voxel 0 keeps every point of the newest views of each window.
    newest = sum(int((np.asarray(c.window.timesteps) == 0).sum()) for c, _ in done)
    assert newest == 6 and len(fused) > 0
    bounded = FusedCloud(0.05, max_points=500)
    _run(_session(pipeline_rig, pipeline_gt_backend, fused=bounded), pipeline_rig, RIG_TIMES)
    assert 0 < len(bounded) <= 500


def test_session_and_settings_import_no_ros():
    import subprocess
    import sys

    code = ("import sys, dvlt_ros.pipeline.session, dvlt_ros.pipeline.settings; "
            "print(sorted(m for m in sys.modules if m.split('.')[0] in "
            "('rclpy', 'rcl_interfaces', 'std_msgs', 'sensor_msgs')))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True).stdout
    assert out.strip() == "[]"
