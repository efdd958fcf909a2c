"""The vectorised cloud and depth products against the straightforward implementation they
replaced (kept here as the reference), on fixed inputs with every filter exercised."""

from __future__ import annotations

import numpy as np
import pytest

from dvlt_core.geometry import Sim3
from dvlt_core.result import Reconstruction, ViewReconstruction
from dvlt_ros.pipeline.frames import CameraFrame
from dvlt_ros.pipeline.products import CloudConfig, PointCloud, build_cloud, build_depth

HEIGHT, WIDTH = 37, 53  # odd sizes: strides do not divide them


def reference_cloud(reconstruction, world_from_window, config, view_indices) -> PointCloud:
    """The previous build_cloud: boolean masks per view, concatenation, Sim3.apply_points."""
    cut = reconstruction.confidence_threshold(config.confidence_threshold)
    points, colors, confs = [], [], []
    step = config.stride
    for i in view_indices:
        view = reconstruction.views[i]
        if not view.pose_valid:
            continue
        world = view.world_points[::step, ::step]
        conf = view.confidence[::step, ::step]
        keep = (view.valid[::step, ::step] & (conf >= cut) & (view.depth[::step, ::step] > 0)
                & np.isfinite(world).all(-1))
        points.append(world[keep])
        colors.append(view.image[::step, ::step][keep])
        confs.append(conf[keep])
    if not points:
        return PointCloud(np.zeros((0, 3), np.float32), np.zeros((0, 3), np.uint8),
                          np.zeros(0, np.float32))
    pts = world_from_window.apply_points(np.concatenate(points).astype(np.float64))
    col, conf = np.concatenate(colors), np.concatenate(confs)
    if config.voxel_size > 0 and len(pts):
        cells = np.floor(pts / config.voxel_size).astype(np.int64)
        order = np.lexsort((-conf, *cells.T[::-1]))
        _, first = np.unique(cells[order], axis=0, return_index=True)
        keep = np.sort(order[first])
        pts, col, conf = pts[keep], col[keep], conf[keep]
    if len(pts) > config.max_points:
        keep = np.linspace(0, len(pts) - 1, config.max_points).round().astype(np.int64)
        pts, col, conf = pts[keep], col[keep], conf[keep]
    return PointCloud(pts.astype(np.float32), col.astype(np.uint8), conf.astype(np.float32))


def _view(rng, index: int, pose_valid: bool = True) -> ViewReconstruction:
    depth = rng.uniform(0.5, 8.0, (HEIGHT, WIDTH)).astype(np.float32)
    depth[rng.random(depth.shape) < 0.1] = 0.0
    world = rng.normal(0, 3, (HEIGHT, WIDTH, 3)).astype(np.float32)
    world[rng.random(depth.shape) < 0.05, rng.integers(0, 3)] = np.nan
    world[rng.random(depth.shape) < 0.02, 1] = np.inf
    return ViewReconstruction(
        name=f"v{index}", timestamp=0.1 * index,
        image=rng.integers(0, 256, (HEIGHT, WIDTH, 3), dtype=np.uint8), depth=depth,
        confidence=rng.uniform(1, 20, (HEIGHT, WIDTH)).astype(np.float32),
        valid=rng.random((HEIGHT, WIDTH)) > 0.15, world_points=world,
        intrinsics=np.array([[40.0, 0, 26], [0, 40.0, 18], [0, 0, 1]]),
        extrinsics_c2w=np.eye(4), pose_valid=pose_valid, transform=None,
    )


@pytest.fixture(scope="module")
def reconstruction() -> Reconstruction:
    rng = np.random.default_rng(15)
    views = [_view(rng, i, pose_valid=i != 2) for i in range(4)]
    return Reconstruction(views, "original", 4, "robust", None)


SIMS = {
    "identity": Sim3(),
    "general": Sim3(np.linalg.qr(np.random.default_rng(3).normal(size=(3, 3)))[0],
                    np.array([12.5, -3.25, 0.75]), np.float64(1.7)),
}
CONFIGS = [
    CloudConfig(),
    CloudConfig(stride=2),
    CloudConfig(stride=3, confidence_threshold="30%"),
    CloudConfig(max_points=777),
    CloudConfig(stride=2, max_points=1),
    CloudConfig(confidence_threshold=12.0, max_points=500),
    CloudConfig(voxel_size=0.5),
    CloudConfig(voxel_size=0.25, max_points=300, stride=2),
    CloudConfig(confidence_threshold=100.0),
]


def assert_same_cloud(fast: PointCloud, ref: PointCloud, sim: Sim3, window_points) -> None:
    """Colours, confidences, count and order byte-exact. Points: both evaluate the same
    float64 expression, so they differ by the float64 rounding of R(c p) + t at most (a
    few eps64 of |c R||p| + |t|) plus one float32 rounding step of the result (here they
    are equal on this machine; the bound holds on any)."""
    assert fast.points.dtype == np.float32 and fast.points.flags.c_contiguous
    assert fast.colors.dtype == np.uint8 and fast.confidence.dtype == np.float32
    assert fast.points.shape == ref.points.shape
    np.testing.assert_array_equal(fast.colors, ref.colors)
    assert fast.confidence.tobytes() == ref.confidence.tobytes()
    if not len(ref):
        return
    magnitude = (float(sim.scale) * np.abs(np.asarray(sim.rotation)).sum(1)
                 * np.abs(window_points).max() + np.abs(np.asarray(sim.translation)))
    bound = 8 * np.finfo(np.float64).eps * magnitude + np.spacing(np.abs(ref.points))
    assert (np.abs(fast.points.astype(np.float64) - ref.points) <= bound).all()


@pytest.mark.parametrize("sim_name", list(SIMS))
@pytest.mark.parametrize("config", CONFIGS, ids=repr)
def test_cloud_matches_the_previous_implementation(reconstruction, sim_name, config):
    sim = SIMS[sim_name]
    views = [0, 1, 2, 3]
    fast = build_cloud(reconstruction, sim, config, views)
    ref = reference_cloud(reconstruction, sim, config, views)
    finite = np.concatenate([v.world_points[np.isfinite(v.world_points).all(-1)]
                             for v in reconstruction.views])
    assert_same_cloud(fast, ref, sim, finite)


def test_cloud_of_selected_and_of_no_views(reconstruction):
    sim = SIMS["general"]
    for views in ([3, 1], [2], []):
        fast = build_cloud(reconstruction, sim, CloudConfig(stride=2), views)
        ref = reference_cloud(reconstruction, sim, CloudConfig(stride=2), views)
        assert_same_cloud(fast, ref, sim, np.ones(1))
    assert len(build_cloud(reconstruction, sim, CloudConfig(), [2])) == 0  # pose-invalid


def test_cloud_of_the_pipeline_matches_the_previous_implementation(
        pipeline_gt_backend, pipeline_windows):
    """Real reconstructions (ground-truth backend, chained world) at the node's defaults."""
    from dvlt_ros.pipeline import ReconstructionPipeline

    pipeline = ReconstructionPipeline(pipeline_gt_backend)
    config = CloudConfig(stride=2, max_points=5000)
    for window in pipeline_windows:
        result = pipeline.submit(window, num_steps=3)
        recon, sim = result.reconstruction, result.placement.world_from_window
        views = list(range(len(recon)))
        fast = build_cloud(recon, sim, config, views)
        ref = reference_cloud(recon, sim, config, views)
        points = np.concatenate([v.world_points.reshape(-1, 3) for v in recon.views])
        assert_same_cloud(fast, ref, sim, points[np.isfinite(points).all(-1)])


def reference_depth(view, world_from_window):
    """The previous depth and confidence maps of build_depth (predicted intrinsics)."""
    depth = np.where(view.valid & (view.depth > 0), view.depth * world_from_window.scale,
                     np.nan)
    confidence = np.where(view.valid, view.confidence, 0.0)
    return depth.astype(np.float32), confidence.astype(np.float32)


@pytest.mark.parametrize("scale", [1.0, 0.37, np.float64(2.5), np.float32(1.25)])
def test_depth_matches_the_previous_implementation(reconstruction, scale):
    view = reconstruction.views[1]
    sim = Sim3(scale=scale)
    frame = CameraFrame("cam", 123, "cam_optical", view.image)
    out = build_depth(view, frame, sim, "_dvlt")
    depth, confidence = reference_depth(view, sim)
    assert out.depth.dtype == np.float32 and out.depth.flags.c_contiguous
    assert out.depth.tobytes() == depth.tobytes()
    assert out.confidence.tobytes() == confidence.tobytes()
    assert (out.camera, out.stamp_ns, out.frame_id) == ("cam", 123, "cam_optical_dvlt")
