"""World placement: continuity across windows, scale alignment, metric seam."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from dvlt_core.geometry import Sim3
from dvlt_core.inference import Reconstructor
from dvlt_core.mapping.alignment import ViewGeometry, align_views, depth_samples
from dvlt_core.synthetic.rig import rotation_z
from dvlt_ros.pipeline import (
    RigBaselineScale,
    WindowConfig,
    WorldAligner,
    WorldConfig,
)


def _truth(rig, window, reference_c2w):
    """Ground-truth world poses when the world is the first reference camera's frame."""
    inv = np.linalg.inv(reference_c2w)
    return [inv @ rig.camera_pose(f.camera, f.stamp_ns * 1e-9) for f in window.frames]


def _recon(backend, window):
    return Reconstructor(backend).reconstruct([f.rgb for f in window.frames], 2)


def _transformed(recon, sim: Sim3):
    """The same reconstruction in another frame and scale (what a network may output)."""
    views = [
        dataclasses.replace(
            v,
            extrinsics_c2w=sim.apply_c2w(v.extrinsics_c2w),
            depth=v.depth * sim.scale,
            world_points=sim.apply_points(v.world_points),
        )
        for v in recon.views
    ]
    return dataclasses.replace(recon, views=views)


@pytest.fixture(scope="module")
def recons(pipeline_gt_backend, pipeline_windows):
    return [_recon(pipeline_gt_backend, w) for w in pipeline_windows]


def _pose_errors(placement, recon, truth):
    errs = []
    for view, gt in zip(recon.views, truth, strict=True):
        got = placement.world_from_window.apply_c2w(view.extrinsics_c2w)
        errs.append(np.abs(got - gt).max())
    return max(errs)


def test_metric_backend_windows_are_continuous(pipeline_rig, pipeline_windows, recons):
    world = WorldAligner(backend_metric=True)
    reference = pipeline_rig.camera_pose(pipeline_windows[0].frames[0].camera, 0.0)
    for window, recon in zip(pipeline_windows, recons, strict=True):
        placement = world.place(window, recon)
        assert placement.metric and placement.world_from_window.scale == 1.0
        assert _pose_errors(placement, recon, _truth(pipeline_rig, window, reference)) < 1e-5
    assert placement.scale_source == "metric" and len(placement.shared) == 3


def test_scaled_and_transformed_windows_are_aligned(pipeline_rig, pipeline_windows, recons):
    """Every window comes in its own frame at its own scale; the chain undoes it."""
    world = WorldAligner()
    reference = pipeline_rig.camera_pose(pipeline_windows[0].frames[0].camera, 0.0)
    rng = np.random.default_rng(0)
    for i, (window, recon) in enumerate(zip(pipeline_windows, recons, strict=True)):
        scale = 1.0 if i == 0 else float(rng.uniform(0.2, 5.0))
        sim = Sim3(rotation_z(rng.uniform(-3, 3)), rng.normal(size=3), scale)
        if i == 0:
            sim = Sim3()
        moved = _transformed(recon, sim)
        placement = world.place(window, moved)
        assert not placement.metric
        if i:
            assert placement.scale_source == "shared_depth"
            assert placement.world_from_window.scale == pytest.approx(1.0 / scale, rel=1e-5)
        assert _pose_errors(placement, moved, _truth(pipeline_rig, window, reference)) < 1e-4


def test_rig_baseline_gives_metric_scale(pipeline_rig, pipeline_windows, recons):
    mounts = {name: pipeline_rig.camera(name).base_from_camera for name in pipeline_rig.names}
    world = WorldAligner(metric_scale=RigBaselineScale(mounts))
    reference = pipeline_rig.camera_pose(pipeline_windows[0].frames[0].camera, 0.0)
    for window, recon in zip(pipeline_windows[:3], recons[:3], strict=True):
        moved = _transformed(recon, Sim3(scale=0.37))
        placement = world.place(window, moved)
        assert placement.metric
        assert placement.world_from_window.scale == pytest.approx(1 / 0.37, rel=1e-5)
        assert _pose_errors(placement, moved, _truth(pipeline_rig, window, reference)) < 1e-4


def test_placement_is_align_views_of_the_shared_views(pipeline_windows, recons):
    """One implementation of view alignment: a chained window's placement is
    dvlt_core.mapping's align_views of its shared views onto their remembered world
    poses and depth, also when the depth ratios are noisy (an even number of them, whose
    median the two must take alike)."""
    grid = 4
    world = WorldAligner(WorldConfig(depth_grid=grid))
    first = world.place(pipeline_windows[0], recons[0])
    rng = np.random.default_rng(3)
    noisy = dataclasses.replace(recons[1], views=[
        dataclasses.replace(v, depth=v.depth * np.exp(rng.normal(0.0, 0.3, v.depth.shape)))
        for v in recons[1].views])
    placement = world.place(pipeline_windows[1], noisy)
    assert placement.scale_source == "shared_depth" and placement.shared
    earlier = dict(zip(pipeline_windows[0].keys, recons[0].views, strict=True))
    target = [ViewGeometry(first.world_from_window.apply_c2w(earlier[k].extrinsics_c2w),
                           depth_samples(earlier[k], grid) * first.world_from_window.scale)
              for k in placement.shared]
    now = dict(zip(pipeline_windows[1].keys, noisy.views, strict=True))
    source = [ViewGeometry.from_view(now[k], grid) for k in placement.shared]
    expected = align_views(target, source).target_from_source
    # The same arithmetic on the same numbers: equal to rounding.
    np.testing.assert_allclose(placement.world_from_window.matrix(), expected.matrix(),
                               rtol=1e-12, atol=1e-12)


def test_initial_anchor_and_reset(pipeline_rig, pipeline_windows, recons):
    # Anchor the world on the rig base at t=0: world poses are then the rig's own.
    first = pipeline_windows[0].frames[0].camera
    anchor = pipeline_rig.world_from_base(0.0) @ pipeline_rig.camera(first).base_from_camera
    world = WorldAligner(WorldConfig(initial_world_from_reference=anchor), backend_metric=True)
    for window, recon in zip(pipeline_windows[:2], recons[:2], strict=True):
        placement = world.place(window, recon)
        truth = [pipeline_rig.camera_pose(f.camera, f.stamp_ns * 1e-9) for f in window.frames]
        assert _pose_errors(placement, recon, truth) < 1e-5
    # A new epoch starts a new world.
    restarted = dataclasses.replace(pipeline_windows[3], epoch=1)
    placement = world.place(restarted, recons[3])
    assert placement.scale_source == "initial"


def test_windows_without_shared_views_hold_the_placement(
    pipeline_rig, pipeline_gt_backend, make_rig_windows
):
    windows = make_rig_windows(pipeline_rig, (0.0, 0.4), WindowConfig(max_timesteps=1))
    world = WorldAligner(backend_metric=True)
    first = world.place(windows[0], _recon(pipeline_gt_backend, windows[0]))
    second = world.place(windows[1], _recon(pipeline_gt_backend, windows[1]))
    assert second.scale_source == "held" and second.shared == ()
    assert second.world_from_window is first.world_from_window
    assert [e.code for e in second.events] == ["no_shared_views"]
    # The advice names the node's (and dvlt-ros process's) parameter.
    assert "window_timesteps >= 2" in second.events[0].message


def test_sim3_algebra():
    sim = Sim3(rotation_z(0.3), np.array([1.0, -2.0, 0.5]), 2.5)
    points = np.random.default_rng(1).normal(size=(5, 3))
    np.testing.assert_allclose(sim.inverse().apply_points(sim.apply_points(points)), points)
    homogeneous = np.c_[points, np.ones(5)] @ sim.matrix().T
    np.testing.assert_allclose(homogeneous[:, :3], sim.apply_points(points))
