"""ReconstructionPipeline end to end with the ground-truth backend, and its products."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from dvlt_core.synthetic import camera_rays
from dvlt_ros.pipeline import (
    CameraInfoData,
    CloudConfig,
    PipelineConfig,
    ReconstructionPipeline,
)
from dvlt_ros.pipeline.products import build_cloud, frustum, resample_to_intrinsics


def _run(backend, windows, config=None):
    pipeline = ReconstructionPipeline(backend, config)
    return [pipeline.submit(w, num_steps=3) for w in windows]


@pytest.fixture(scope="module")
def results(pipeline_gt_backend, pipeline_windows):
    return _run(pipeline_gt_backend, pipeline_windows)


@pytest.fixture(scope="module")
def world_to_scene(pipeline_rig, pipeline_windows):
    """The world is the first reference camera's optical frame: its pose in the scene."""
    return pipeline_rig.camera_pose(pipeline_windows[0].frames[0].camera, 0.0)


def test_poses_stamps_and_frames_match_the_rig(pipeline_rig, results, world_to_scene):
    for result in results:
        assert result.units == "m" and result.events == () and result.num_steps == 3
        assert [p.stamp_ns for p in result.poses] == [result.stamp_ns] * 3
        for pose in result.poses:
            truth = np.linalg.inv(world_to_scene) @ pipeline_rig.camera_pose(
                pose.camera, pose.stamp_ns * 1e-9
            )
            np.testing.assert_allclose(pose.world_from_camera, truth, atol=1e-5)
            assert pose.child_frame_id == f"{pose.camera}_optical_frame_dvlt"
        assert len(result.window_poses) == result.num_views
        t = result.timings
        assert min(t.preprocess_ms, t.inference_ms, t.pose_fit_ms, t.products_ms) > 0
        assert t.total_ms >= t.inference_ms + t.pose_fit_ms


def test_published_depth_and_camera_info_unproject_onto_the_scene(
    pipeline_rig, results, world_to_scene
):
    for depth in results[-1].depths:
        pose = next(p for p in results[-1].poses if p.camera == depth.camera)
        assert depth.frame_id == pose.child_frame_id
        model = depth.camera_model
        assert depth.depth.shape == (model.height, model.width) == (120, 160)
        assert depth.depth.dtype == np.float32
        # Published depth + camera_info + TF pose -> scene points.
        rays = camera_rays(model.k, model.height, model.width)
        c2w = world_to_scene @ pose.world_from_camera
        points = (rays * depth.depth[..., None]) @ c2w[:3, :3].T + c2w[:3, 3]
        truth = pipeline_rig.render(depth.camera, depth.stamp_ns * 1e-9)
        expected = (camera_rays(truth.k, 120, 160) * truth.depth[..., None]) @ truth.c2w[
            :3, :3
        ].T + truth.c2w[:3, 3]
        err = np.linalg.norm(points - expected, axis=-1)
        assert np.isfinite(err).all()
        # Bilinear resampling from the 112x84 network grid: sub-millimetre on surfaces,
        # blended only across depth edges (the last few percent).
        assert np.median(err) < 5e-4 and np.percentile(err, 90) < 5e-3


def test_cloud_points_lie_on_scene_surfaces(pipeline_rig, results, world_to_scene):
    result = results[-1]
    cloud = result.cloud
    assert len(cloud) == 6 * 120 * 160  # two timesteps x three cameras, nothing filtered
    assert cloud.points.dtype == np.float32 and cloud.colors.dtype == np.uint8
    sample = np.random.default_rng(0).choice(len(cloud), 3000, replace=False)
    points = cloud.points[sample].astype(np.float64) @ world_to_scene[:3, :3].T
    points += world_to_scene[:3, 3]
    centre = (world_to_scene @ result.poses[0].world_from_camera)[:3, 3]
    _, t = pipeline_rig.scene.cast(centre, points - centre, shade=False)
    # t = 1: the point is the first surface hit from this camera; t < 1: occluded from
    # it; t > 1 would be a point floating in free space.
    assert (np.abs(t - 1) < 1e-3).mean() > 0.6
    assert (t > 1.002).mean() < 0.02


def test_deterministic_for_the_same_windows(pipeline_gt_backend, pipeline_windows, results):
    again = _run(pipeline_gt_backend, pipeline_windows)
    for a, b in zip(results, again, strict=True):
        np.testing.assert_array_equal(a.cloud.points, b.cloud.points)
        for pa, pb in zip(a.poses, b.poses, strict=True):
            np.testing.assert_array_equal(pa.world_from_camera, pb.world_from_camera)
        for da, db in zip(a.depths, b.depths, strict=True):
            np.testing.assert_array_equal(da.depth, db.depth)


def test_input_camera_info_grid(pipeline_rig, pipeline_gt_backend, pipeline_windows):
    window = pipeline_windows[0]
    frames = tuple(
        dataclasses.replace(f, info=CameraInfoData(pipeline_rig.intrinsics(f.camera), 160, 120))
        for f in window.frames
    )
    config = PipelineConfig(use_input_camera_info=True)
    (result,) = _run(pipeline_gt_backend, [dataclasses.replace(window, frames=frames)], config)
    for depth, frame in zip(result.depths, frames, strict=True):
        np.testing.assert_array_equal(depth.camera_model.k, frame.info.k)
        truth = pipeline_rig.render(frame.camera, 0.0).depth
        rel = np.abs(depth.depth - truth) / truth
        assert np.nanmedian(rel) < 1e-4


def test_resample_to_other_intrinsics_matches_a_render(pipeline_rig):
    scene = pipeline_rig.scene
    c2w = pipeline_rig.camera_pose("cam_left", 0.0)
    k_pred = np.array([[150.0, 0, 80.0], [0, 150.0, 60.0], [0, 0, 1]])
    k_out = np.array([[90.0, 0, 52.0], [0, 91.0, 37.0], [0, 0, 1]])
    depth = scene.depth(k_pred, c2w, 120, 160)
    out, conf = resample_to_intrinsics(depth, np.full_like(depth, 5.0), k_pred, k_out, 80, 100)
    truth = scene.depth(k_out, c2w, 80, 100)
    inside = np.isfinite(out)
    assert 0.3 < inside.mean() < 1.0  # k_out sees more than k_pred: the rest is NaN
    rel = np.abs(out[inside] - truth[inside]) / truth[inside]
    assert np.median(rel) < 5e-3
    assert (conf[inside] == 5.0).mean() > 0.9 and (conf[~inside] == 0).all()


def test_cloud_filters(results):
    result = results[-1]
    recon, sim = result.reconstruction, result.placement.world_from_window
    views = list(range(len(recon)))
    full = build_cloud(recon, sim, CloudConfig(), views)
    strided = build_cloud(recon, sim, CloudConfig(stride=4), views)
    assert len(strided) == 6 * 30 * 40
    capped = build_cloud(recon, sim, CloudConfig(max_points=1000), views)
    assert len(capped) == 1000
    voxel = build_cloud(recon, sim, CloudConfig(voxel_size=0.25), views)
    cells = np.floor(voxel.points / 0.25).astype(np.int64)
    assert len(np.unique(cells, axis=0)) == len(voxel) < len(full)
    newest = build_cloud(recon, sim, CloudConfig(views="newest"), [0, 1, 2])
    assert len(newest) == 3 * 120 * 160
    none = build_cloud(recon, sim, CloudConfig(confidence_threshold=11.0), views)
    assert len(none) == 0  # the GT backend's confidence is 10


def test_frustum_geometry():
    k = np.array([[100.0, 0, 40.0], [0, 100.0, 30.0], [0, 0, 1]])
    pose = np.eye(4)
    pose[:3, 3] = [1.0, 2.0, 3.0]
    f = frustum("cam", 5, k, 80, 60, pose, size=0.5)
    np.testing.assert_allclose(f.vertices[0], [1, 2, 3])
    corner = [1 + 0.5 * (-40.5) / 100, 2 + 0.5 * (-30.5) / 100, 3.5]  # pixel (-0.5, -0.5)
    np.testing.assert_allclose(f.vertices[1], corner)
    assert f.edges.shape == (8, 2)
