"""Grounding through the real ReconstructionSession: metric scale from rig, odometry and
depth, TF anchoring, and what happens when TF is missing, stale or contradicts a sensor.

The backend is ``ground_truth_unscaled`` (a random scale per window, pose noise
``position_noise`` per axis, 1 % depth noise); the robot's TF is a ``TfTree`` holding the
synthetic rig's true mounts (static ``base_link -> <optical frame>``) and motion
(``odom -> base_link``), so the truth of every window is known.

Tolerances, from the backend's noise (σ_p = 2 mm per axis on each camera centre):
a distance between two centres is off by √2·σ_p along it, so a constraint of length L has
a relative error √2·σ_p / L; the median of several is no worse than one, so 3√2·σ_p / L_min
bounds a window's scale error (L_min = 0.25 m between the forward pair, 0.12 m of motion
between snapshots). The depth ratio is a median over thousands of pixels with 1 % noise
each: its error is far under one pixel's 3 %. Anchored positions: 3σ_p per axis plus the
scale error times the cameras' lever arm about their centroid (< 0.3 m).
"""

from __future__ import annotations

import math

import numpy as np
import pytest

from dvlt_core.backends.ground_truth_unscaled import GroundTruthUnscaledBackend
from dvlt_core.geometry import TfTree
from dvlt_ros.node_support.diagnostics import pipeline_values, session_statuses
from dvlt_ros.node_support.health import OK, WARN, EventReporter, ProblemBoard
from dvlt_ros.pipeline import CameraFrame
from dvlt_ros.pipeline.scale import MeasuredDepth
from dvlt_ros.pipeline.session import ReconstructionSession
from dvlt_ros.pipeline.settings import ParameterError, load_parameters
from dvlt_ros.pipeline.world import WorldAligner

TIMES = tuple(0.4 * i for i in range(5))
IMG_SIZE = 112
POSITION_NOISE = 0.002
RIG_TOLERANCE = 3 * math.sqrt(2) * POSITION_NOISE / 0.25
ODOMETRY_TOLERANCE = 3 * math.sqrt(2) * POSITION_NOISE / 0.12
DEPTH_TOLERANCE = 0.03
LEVER = 0.3


@pytest.fixture(scope="module")
def unscaled(pipeline_rig):
    return GroundTruthUnscaledBackend.for_rig(pipeline_rig, TIMES, img_size=IMG_SIZE, seed=7)


def rig_tf(rig, *, mounts=True, skip=(), mount_scale=1.0, until=None) -> TfTree:
    """The rig's TF: static mounts (translations times ``mount_scale``, cameras in
    ``skip`` left out) and ``odom -> base_link`` every 0.1 s up to ``until``."""
    tree = TfTree()
    if mounts:
        for name in rig.names:
            if name in skip:
                continue
            pose = np.array(rig.camera(name).base_from_camera)
            pose[:3, 3] *= mount_scale
            tree.set_transform("base_link", rig.camera(name).optical_frame, pose)
    end = TIMES[-1] if until is None else until
    for t in np.arange(0.0, end + 1e-9, 0.1):
        tree.set_transform("odom", "base_link", rig.world_from_base(t), round(t * 1e9))
    return tree


def params(rig, **changes):
    return load_parameters(None, {
        "cameras": list(rig.names), "img_size": IMG_SIZE, "num_steps": 3,
        "window_timesteps": 3, "max_views": 9, "keyframe_min_spacing": 0.0,
        "camera_timeout": 1e4, **changes})


def run(rig, backend, transforms=None, depth=None, depth_offset=0.0, **changes):
    """Every snapshot of ``TIMES`` through a session; per cycle (result, report, truth)."""
    return run_session(rig, backend, transforms, depth, depth_offset, **changes)[1]


def run_session(rig, backend, transforms=None, depth=None, depth_offset=0.0, **changes):
    """The session and :func:`run`'s cycles. ``depth(view) -> MeasuredDepth`` feeds
    add_depth, stamped ``depth_offset`` seconds after the image (None: no depth at all)."""
    session = ReconstructionSession(params(rig, **changes), transforms=transforms)
    assert session.install_backend(backend) == []
    done = []
    for t in TIMES:
        stamp = round(t * 1e9)
        for view in rig.snapshot(t):
            frame_id = rig.camera(view.camera).optical_frame
            assert session.add_frame(CameraFrame(view.camera, stamp, frame_id, view.image),
                                     stamp) == []
            if depth is not None and depth_offset is not None:
                depth_stamp = stamp + round(depth_offset * 1e9)
                assert session.add_depth(view.camera, depth_stamp, depth(view)) == []
        snapshot, _ = session.poll(stamp)
        cycle = session.reconstruct(snapshot, stamp)
        report = session.finish(cycle, publish_ms=0.0, points=len(cycle.result.cloud))
        done.append((cycle.result, report, backend.last_draw.metres_per_unit))
    return session, done


def scale_errors(done):
    return [abs(r.grounding.metres_per_unit / truth - 1) for r, _, truth in done
            if r.grounding.metric]


def codes(result):
    return [e.code for e in result.events]


def test_rig_scale_from_tf_mounts(pipeline_rig, unscaled):
    done = run(pipeline_rig, unscaled, rig_tf(pipeline_rig), scale_source="rig")
    assert len(scale_errors(done)) == len(TIMES)
    assert max(scale_errors(done)) < RIG_TOLERANCE
    for result, report, _ in done:
        assert report.metric and report.units == "m" and report.scale_source == "rig"
        assert report.scale_constraints >= 3 and report.anchor == "chain"
        assert report.grounding.startswith("rig: ") and report.tf_ms >= 0
        # Depth and cloud in metres: the published depth is the window's times the scale.
        view = result.reconstruction.views[0]
        ok = view.valid & (view.depth > 0)
        np.testing.assert_allclose(
            result.depths[0].depth[ok], view.depth[ok] * report.metres_per_unit, rtol=1e-5)
        assert "scale_unavailable" not in codes(result)


def test_odometry_scale_from_tf_motion(pipeline_rig, unscaled):
    done = run(pipeline_rig, unscaled, rig_tf(pipeline_rig), scale_source="odometry")
    first, report, _ = done[0]
    # One snapshot: no motion yet, so up to scale, and the reason is said.
    assert not first.metric and report.units == "arbitrary" and math.isnan(
        report.metres_per_unit)
    assert report.grounding.startswith("no metric scale available: odometry: ")
    assert "scale_unavailable" in codes(first)
    later = done[1:]
    assert all(r.metric for r, _, _ in later)
    assert "world_rescaled" in codes(later[0][0])
    assert max(scale_errors(later)) < ODOMETRY_TOLERANCE


def test_depth_scale_registered_at_any_size(pipeline_rig, unscaled):
    def half_size_mm(view):  # 16UC1 millimetres at half the colour resolution
        mm = np.round(view.depth[::2, ::2] * 1000).astype(np.uint16)
        return MeasuredDepth.from_image(mm)

    for depth in (lambda view: MeasuredDepth(view.depth), half_size_mm):
        done = run(pipeline_rig, unscaled, depth=depth, scale_source="depth")
        assert len(scale_errors(done)) == len(TIMES)
        assert max(scale_errors(done)) < DEPTH_TOLERANCE
        assert all(report.scale_source == "depth" for _, report, _ in done)


def test_depth_of_unknown_camera_or_without_match(pipeline_rig, unscaled):
    session = ReconstructionSession(params(pipeline_rig, scale_source="depth"))
    depth = MeasuredDepth(np.ones((120, 160), np.float32))
    assert [e.code for e in session.add_depth("nope", 0, depth)] == ["depth_rejected"]
    assert session.add_depth("nope", 1, depth) == []  # reported once
    # Depth stamped further from the images than sync_slop never matches.
    for offset in (None, 0.05):
        done = run(pipeline_rig, unscaled, scale_source="depth", depth_offset=offset,
                   depth=lambda view: MeasuredDepth(view.depth))
        assert not any(r.metric for r, _, _ in done)
        assert "depth: no depth image matched" in done[0][1].grounding


def test_anchor_tf_puts_cameras_in_odom(pipeline_rig, unscaled):
    for source in ("rig", "none"):
        done = run(pipeline_rig, unscaled, rig_tf(pipeline_rig), scale_source=source,
                   anchor="tf", world_frame="odom")
        tolerance = 3 * math.sqrt(3) * POSITION_NOISE + RIG_TOLERANCE * LEVER
        for (result, report, _), t in zip(done, TIMES, strict=True):
            assert report.anchor == "tf" and report.metric and report.units == "m"
            assert report.scale_source == ("rig" if source == "rig" else "tf")
            for pose in result.poses:
                truth = pipeline_rig.camera_pose(pose.camera, t)
                assert np.linalg.norm(pose.world_from_camera[:3, 3] - truth[:3, 3]) < tolerance
                assert pose.child_frame_id.endswith("_dvlt")  # no second parent in TF


def test_missing_tf_stays_up_to_scale_with_reasons(pipeline_rig, unscaled):
    plain = run(pipeline_rig, unscaled)
    for transforms in (None, rig_tf(pipeline_rig, mounts=False)):
        done = run(pipeline_rig, unscaled, transforms, scale_source="rig")
        for (result, report, _), (before, _, _) in zip(done, plain, strict=True):
            assert not result.metric and report.units == "arbitrary"
            assert report.grounding.startswith("no metric scale available: rig: ")
            assert {"tf_unavailable", "scale_unavailable"} <= set(codes(result))
            # Up to scale exactly as without grounding.
            for pose, old in zip(result.poses, before.poses, strict=True):
                np.testing.assert_allclose(pose.world_from_camera, old.world_from_camera,
                                           atol=1e-9)


def test_stale_odometry_is_reported_and_the_scale_held(pipeline_rig, unscaled):
    # Odometry ends at 0.8 s: later image stamps would extrapolate.
    done = run(pipeline_rig, unscaled, rig_tf(pipeline_rig, until=0.8),
               scale_source="odometry")
    stale = [r for r, _, _ in done if any(
        e.code == "tf_unavailable" and "future" in e.message for e in r.events)]
    assert [r.stamp_ns for r in stale] == [round(t * 1e9) for t in TIMES[3:]]
    assert all(result.metric for result, _, _ in done[3:])
    # At 1.2 s the keyframes at 0.4 and 0.8 s still measure; at 1.6 s only 0.8 s has
    # odometry: no estimate, the smoothed scale is held along the chain, the reason said.
    last = done[-1][0].grounding
    assert last.metric and any(reason.startswith("odometry: ") for reason in last.reasons)
    assert max(scale_errors(done[1:])) < 2 * ODOMETRY_TOLERANCE


def test_camera_without_tf_frame(pipeline_rig, unscaled):
    left = pipeline_rig.names[2]
    done = run(pipeline_rig, unscaled, rig_tf(pipeline_rig, skip=(left,)), scale_source="rig")
    for result, report, _ in done:
        assert report.metric  # the forward pair still has a baseline
        missing = [e for e in result.events if e.code == "tf_unavailable"]
        assert [e.camera for e in missing] == [left]
        assert pipeline_rig.camera(left).optical_frame in missing[0].message
    assert max(scale_errors(done)) < RIG_TOLERANCE


def test_contradictory_sources_auto_reports_the_conflict(pipeline_rig, unscaled):
    # Mounts 20 % too far apart (a wrong URDF) against a true depth sensor.
    done = run(pipeline_rig, unscaled, rig_tf(pipeline_rig, mount_scale=1.2),
               depth=lambda view: MeasuredDepth(view.depth), scale_source="auto")
    for result, report, truth in done:
        assert report.scale_source == "rig"  # auto's order: rig first
        assert "depth" in result.grounding.conflicts
        assert "scale_conflict" in codes(result)
        assert "disagrees with depth" in report.grounding
        assert report.metres_per_unit / truth == pytest.approx(1.2, rel=RIG_TOLERANCE)


def test_none_available_auto_says_why(pipeline_rig, unscaled):
    done = run(pipeline_rig, unscaled, scale_source="auto")
    for result, report, _ in done:
        assert not result.metric and math.isnan(report.metres_per_unit)
        text = report.grounding
        assert text.startswith("no metric scale available: ")
        for source in ("rig: ", "depth: ", "odometry: "):
            assert source in text


def test_anchor_refused_falls_back_to_the_chain(pipeline_rig, unscaled):
    # TF of the world frame ends at 0.4 s: windows (of two snapshots) without a view
    # before then cannot be aligned.
    tree = rig_tf(pipeline_rig, until=0.4)
    done = run(pipeline_rig, unscaled, tree, scale_source="rig", anchor="tf",
               world_frame="odom", window_timesteps=2)
    assert [r.anchor for _, r, _ in done] == ["tf"] * 3 + ["tf_held"] * 2
    for (result, report, _), t in zip(done[3:], TIMES[3:], strict=True):
        assert "anchor_refused" in codes(result) and report.metric
        assert any(reason.startswith("anchor: ") for reason in result.grounding.reasons)
        # The carried chain stays near the truth (a few windows of chain drift).
        truth = pipeline_rig.camera_pose(result.poses[0].camera, t)[:3, 3]
        assert np.linalg.norm(result.poses[0].world_from_camera[:3, 3] - truth) < 0.05


@pytest.mark.parametrize(("changes", "words"), [
    ({"anchor": "tf"}, "anchor tf needs world_frame"),
    ({"scale_source": "odometry", "window_timesteps": 1}, "window_timesteps >= 2"),
    ({"scale_source": "auto", "odom_frame": "base_link"}, "must differ"),
    ({"scale_source": "rig", "world_frame": "base_link"}, "must not be world_frame"),
    ({"depth_topic": "/abs/depth"}, "relative to the camera namespace"),
    ({"scale_source": "metres"}, "scale_source must be one of"),
    ({"odom_frame": "/odom"}, "must not start with '/'"),
])
def test_grounding_settings_refused(pipeline_rig, changes, words):
    with pytest.raises(ParameterError, match=words):
        params(pipeline_rig, **changes)


class _Log:
    def __init__(self):
        self.lines = []

    def info(self, text):
        self.lines.append(text)

    warning = error = info


def pipeline_status(session, result):
    """The pipeline DiagnosticStatus of ``session`` after ``result``'s events were reported
    like the node reports them."""
    board = ProblemBoard()
    reporter = EventReporter(board, list(session.cameras), _Log())
    for event in result.events:
        reporter(event)
    statuses = session_statuses("dvlt", session, pipeline_values(session),
                                lambda source: board.active(source))
    status = statuses[0]
    return status, {kv.key: kv.value for kv in status.values}


def test_diagnostics_show_the_scale_in_use(pipeline_rig, unscaled):
    session, done = run_session(pipeline_rig, unscaled, rig_tf(pipeline_rig),
                                scale_source="rig", anchor="tf", world_frame="odom")
    status, values = pipeline_status(session, done[-1][0])
    report = done[-1][1]
    assert status.level == bytes([OK])
    assert values["units"] == "metres" and values["scale_source"] == "rig"
    assert float(values["metres_per_unit"]) == pytest.approx(report.metres_per_unit, rel=1e-3)
    assert float(values["scale_spread"]) >= 0 and int(values["scale_constraints"]) >= 3
    assert values["anchor"] == "tf" and values["grounding"].startswith("rig: ")
    assert "latency_tf_ms" in values


def test_diagnostics_say_why_there_is_no_metric_scale(pipeline_rig, unscaled):
    session, done = run_session(pipeline_rig, unscaled, scale_source="auto")
    status, values = pipeline_status(session, done[-1][0])
    assert status.level == bytes([WARN])
    assert values["metres_per_unit"] == "n/a (up to scale)" and values["scale_source"] == "none"
    assert values["grounding"].startswith("no metric scale available: rig: ")
    assert "no metric scale available" in status.message
    assert values["problem: scale_unavailable"].endswith("publishing up to scale")
    # Without a scale source nothing is wrong: no problem, the values say up to scale.
    session, done = run_session(pipeline_rig, unscaled)
    status, values = pipeline_status(session, done[-1][0])
    assert status.level == bytes([OK]) and values["scale_source"] == "none"
    assert values["grounding"] == "no metric scale available: scale_source is none"


def test_a_held_tf_alignment_places_the_window_by_one_similarity_of_the_chain(pipeline_rig,
                                                                              unscaled):
    """TF of the world frame ends at 0.4 s; an external scale that grows 1 % a window (within
    the smoother's gate) moves the smoothed metres per chain unit after the last alignment.
    The held windows are placed by one similarity of the chain (world_from_window = H ∘
    chain), H at the measured scale and pinned where the last TF alignment put the chain,
    so the window's geometry and its position agree."""

    class Growing:  # a MetricScale
        def metres_per_unit(self, window, recon):
            index = round(window.stamp_ns / 0.4e9)
            return (1.0 + 0.01 * index) * unscaled.last_draw.metres_per_unit

    session = ReconstructionSession(
        params(pipeline_rig, anchor="tf", world_frame="odom", window_timesteps=2),
        transforms=rig_tf(pipeline_rig, until=0.4), metric_scale=Growing())
    assert session.install_backend(unscaled) == []
    chain = WorldAligner()  # the grounding's own chain, fed the same windows
    anchored, held = None, 0
    for t in TIMES:
        stamp = round(t * 1e9)
        for view in pipeline_rig.snapshot(t):
            session.add_frame(CameraFrame(view.camera, stamp,
                                          pipeline_rig.camera(view.camera).optical_frame,
                                          view.image), stamp)
        snapshot, _ = session.poll(stamp)
        cycle = session.reconstruct(snapshot, stamp)
        in_chain = chain.place(cycle.window, cycle.result.reconstruction).world_from_window
        world = cycle.result.placement.world_from_window
        implied = world.compose(in_chain.inverse())  # this window's world_from_chain
        if cycle.result.grounding.anchor == "tf":
            anchored = (implied, np.asarray(in_chain.translation))
            continue
        assert cycle.result.grounding.anchor == "tf_held" and anchored is not None
        held += 1
        last, pinned = anchored
        assert implied.scale / last.scale > 1.001  # the measured scale, not the carried one
        # Composition arithmetic on metre-sized values: equal to rounding.
        np.testing.assert_allclose(implied.apply_points(pinned), last.apply_points(pinned),
                                   atol=1e-9)
        np.testing.assert_allclose(implied.rotation, last.rotation, atol=1e-9)
    assert held == 2
