"""Training data: the folder format, the ScanNet++ layout, synthetic scenes, view sampling,
normalisation and token-budget batching."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image

from dvlt_core.geometry import compute_world_rays
from dvlt_core.training.data import (
    FolderScene,
    MultiViewDataset,
    SceneFormatError,
    SceneWriter,
    SyntheticScene,
    SyntheticSpec,
    TokenBudgetBatchSampler,
    ViewSampling,
    build_sample,
    collate_samples,
    find_folder_scenes,
    scannetpp_scenes,
    scenes_from_sources,
    sources,
    target_hw,
)
from dvlt_core.training.data.scannetpp import write_float16_png
from dvlt_core.training.data.views import frames_sample, prepare_view


@pytest.fixture(scope="module")
def synthetic():
    return SyntheticScene(3, SyntheticSpec(width=64, height=48, num_frames=6, num_cameras=2))


def test_synthetic_scene_depth_and_poses_are_consistent(synthetic):
    """Pixel centres unprojected with the dataset intrinsics land on the same world point from
    two cameras' views: re-project frame 1's points into frame 0 and compare depths."""
    f0, f1 = synthetic.frame(0), synthetic.frame(2)
    assert f0.image.shape == (48, 64, 3) and f0.depth.shape == (48, 64)
    v, u = np.mgrid[0:48, 0:64] + 0.5
    rays = np.stack([(u - f1.intrinsics[0, 2]) / f1.intrinsics[0, 0],
                     (v - f1.intrinsics[1, 2]) / f1.intrinsics[1, 1], np.ones_like(u)], -1)
    world = (rays * f1.depth[..., None]) @ f1.c2w[:3, :3].T + f1.c2w[:3, 3]
    cam0 = (world - f0.c2w[:3, 3]) @ f0.c2w[:3, :3]
    px = cam0[..., :2] / cam0[..., 2:] * np.diag(f0.intrinsics)[:2] + f0.intrinsics[:2, 2]
    inside = (cam0[..., 2] > 0) & (px[..., 0] >= 1) & (px[..., 0] < 63) & (px[..., 1] >= 1) \
        & (px[..., 1] < 47)
    cols, rows = np.floor(px[inside]).astype(int).T
    agree = np.abs(f0.depth[rows, cols] - cam0[inside][:, 2]) < 0.05 * cam0[inside][:, 2]
    assert inside.sum() > 300 and agree.mean() > 0.8
    assert len(synthetic) == 12 and synthetic.poses().shape == (12, 4, 4)


def test_folder_format_round_trip(tmp_path, synthetic):
    writer = SceneWriter(tmp_path / "scene_a", is_synthetic=True)
    for i in range(3):
        f = synthetic.frame(i)
        writer.add(f.image, f.depth, f.c2w, f.intrinsics, camera="cam", stamp=0.1 * i)
    writer.close()
    (scene,) = find_folder_scenes(tmp_path)
    assert isinstance(scene, FolderScene) and len(scene) == 3 and scene.is_synthetic
    back, orig = scene.frame(1), synthetic.frame(1)
    np.testing.assert_array_equal(back.image, orig.image)
    np.testing.assert_allclose(back.depth, orig.depth, atol=5e-4)  # millimetre PNG
    np.testing.assert_allclose(back.c2w, orig.c2w)
    np.testing.assert_allclose(back.intrinsics, orig.intrinsics)
    np.testing.assert_allclose(scene.poses()[2], synthetic.frame(2).c2w)


def test_folder_format_errors(tmp_path):
    with pytest.raises(SceneFormatError, match="no scene folders"):
        find_folder_scenes(tmp_path)
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "scene.json").write_text(json.dumps({"format": "dvlt-scene", "version": 1,
                                                             "frames": [{"image": "x.png"}]}))
    with pytest.raises(SceneFormatError, match="frame 0 is malformed"):
        find_folder_scenes(tmp_path)
    frame = {"image": "../../outside.png", "depth": "d.png", "intrinsics": [1, 1, 0, 0],
             "c2w": np.eye(4).tolist()}
    (tmp_path / "bad" / "scene.json").write_text(json.dumps({"format": "dvlt-scene", "version": 1,
                                                             "frames": [frame]}))
    with pytest.raises(SceneFormatError, match="relative path inside the scene folder"):
        find_folder_scenes(tmp_path)
    (tmp_path / "bad" / "scene.json").write_text("[1, 2]")
    with pytest.raises(SceneFormatError, match="must hold a JSON object"):
        find_folder_scenes(tmp_path)


def _scannetpp_fixture(root, synthetic):
    scene = root / "scannetpp_undistort" / "0a5c013435"
    (scene / "undistorted_images").mkdir(parents=True)
    (scene / "undistorted_depth").mkdir()
    (scene / "nerfstudio").mkdir()
    f = synthetic.frame(0)
    frames = []
    for i, name in enumerate(["DSC02.JPG", "DSC01.JPG"]):
        Image.fromarray(f.image).save(scene / "undistorted_images" / name, format="JPEG")
        write_float16_png(scene / "undistorted_depth" / name.replace(".JPG", ".png"), f.depth)
        gl = np.eye(4)
        gl[:3, 3] = (i, 2.0, 3.0)
        frames.append({"file_path": name, "transform_matrix": gl.tolist()})
    k = f.intrinsics
    (scene / "nerfstudio" / "transforms_undistorted.json").write_text(json.dumps({
        "fl_x": k[0, 0], "fl_y": k[1, 1], "cx": k[0, 2], "cy": k[1, 2], "w": 64, "h": 48,
        "frames": frames[:1], "test_frames": frames[1:]}))
    (root / "nvs_sem_train.txt").write_text("0a5c013435\n")


def test_scannetpp_layout(tmp_path, synthetic):
    _scannetpp_fixture(tmp_path, synthetic)
    (scene,) = scannetpp_scenes(tmp_path, "nvs_sem_train.txt")
    assert scene.files == ["DSC01.JPG", "DSC02.JPG"]  # frames + test_frames, sorted
    frame = scene.frame(0)
    assert frame.image.shape == (48, 64, 3)
    np.testing.assert_allclose(frame.depth, synthetic.frame(0).depth, rtol=1e-3)
    # nerfstudio (OpenGL) → OpenCV: rows 0/1 swapped, row 2 negated, camera y/z negated.
    expected = np.array([[0, -1, 0, 2], [1, 0, 0, 1], [0, 0, 1, -3], [0, 0, 0, 1]], float)
    np.testing.assert_allclose(scene.poses()[0], expected)
    repeated = scenes_from_sources([{"type": "scannetpp", "root": str(tmp_path),
                                     "split_file": "nvs_sem_train.txt", "repeat": 2}])
    assert [s.name for s in repeated] == ["0a5c013435"] * 2


def test_prepare_view_keeps_geometry(synthetic):
    """A crop/resize must move intrinsics with the pixels: the principal point stays centred and
    the focal length scales with the resize."""
    frame = synthetic.frame(0)
    image, depth, k = prepare_view(frame, (28, 42))
    assert image.shape == (28, 42, 3) and depth.shape == (28, 42)
    scale = 46 / 64  # width 64 → 42 + 4 px overshoot
    np.testing.assert_allclose(k[0, 0], frame.intrinsics[0, 0] * scale, rtol=0.02)
    assert abs(k[0, 2] - 21) <= 1 and abs(k[1, 2] - 14) <= 1


def test_sample_is_normalised_and_rays_match_points(synthetic):
    sample = frames_sample(synthetic, [0, 3, 5], (42, 56))
    c2w = sample["extrinsics_c2w"]
    np.testing.assert_allclose(c2w[0], np.eye(4), atol=1e-6)
    mask, pts = sample["point_masks"], sample["world_points"]
    # View 0's camera is the origin: the mean valid point distance over all views is 1.
    assert abs(np.linalg.norm(pts[mask], axis=-1).mean() - 1.0) < 1e-5
    rays = compute_world_rays(torch.from_numpy(c2w), torch.from_numpy(sample["intrinsics"]), 42, 56)
    recon = rays[..., 3:] + rays[..., :3] * torch.from_numpy(sample["depths"])[..., None]
    np.testing.assert_allclose(recon.numpy()[mask], pts[mask], atol=1e-4)


def test_view_selection_windows(synthetic):
    rng = np.random.default_rng(0)
    for _ in range(20):
        sample = build_sample(synthetic, 3, (28, 28), ViewSampling("index", "random_ordered", 2),
                              rng)
        assert sample["images"].shape == (3, 3, 28, 28)
    with pytest.raises(ValueError, match="ranking"):
        ViewSampling("nearest")


def test_token_budget_batches():
    sampler = TokenBudgetBatchSampler(50, images_per_batch=36, images_per_element=(2, 18),
                                      tokens_per_batch=20736, image_size=504, patch_size=14)
    batches = [b for b, _ in zip(sampler, range(40), strict=False)]
    for batch in batches:
        n, aspect = batch[0].num_views, batch[0].aspect_ratio
        assert all(r.num_views == n and r.aspect_ratio == aspect for r in batch)
        h, w = target_hw(504, 14, aspect)
        per_image = (h // 14) * (w // 14)
        assert 2 <= n <= 18 and 0.33 <= aspect <= 1.0
        assert len(batch) == max(1, 20736 // (n * per_image))  # fills the budget, never exceeds
        assert len(batch) * n * per_image <= 20736 or len(batch) == 1
    without = TokenBudgetBatchSampler(50, images_per_batch=36, images_per_element=(4, 4))
    assert len(next(iter(without))) == 9  # images_per_batch // n


def test_sampler_resume_and_ranks():
    kwargs = {"images_per_batch": 6, "images_per_element": (2, 3), "min_epoch_length": 10}
    full = TokenBudgetBatchSampler(7, **kwargs)
    stream = [b for b, _ in zip(full, range(25), strict=False)]  # crosses epoch boundaries
    resumed = TokenBudgetBatchSampler(7, **kwargs)
    resumed.load_state_dict({"start": 11})
    assert [b for b, _ in zip(resumed, range(14), strict=False)] == stream[11:]
    ranks = [TokenBudgetBatchSampler(7, num_replicas=2, rank=r, **kwargs) for r in (0, 1)]
    first = [next(iter(s)) for s in ranks]
    assert first[0][0].num_views == first[1][0].num_views  # same shapes on every rank
    assert {r.seed for r in first[0]}.isdisjoint({r.seed for r in first[1]})


def test_dataset_and_collate(synthetic):
    dataset = MultiViewDataset([synthetic], 56, 14, ViewSampling("index", window_size=3))
    sampler = TokenBudgetBatchSampler(1, images_per_batch=6, images_per_element=(2, 3),
                                      aspect_ratios=(0.5, 1.0), image_size=56, min_epoch_length=4)
    requests = next(iter(sampler))
    batch = collate_samples([dataset[r] for r in requests])
    B, S = len(requests), requests[0].num_views
    H, W = target_hw(56, 14, requests[0].aspect_ratio)
    assert batch["images"].shape == (B, S, 3, H, W) and batch["point_masks"].dtype == torch.bool
    assert batch["is_synthetic"].all()
    again = collate_samples([dataset[r] for r in requests])
    assert torch.equal(batch["images"], again["images"])  # deterministic per request seed


def test_installed_packages_add_source_types_through_entry_points(tmp_path, monkeypatch):
    """A package declaring ``dvlt.training_sources`` entry points (as dvlt_ros declares
    ``rosbag``) adds a source type that is loaded on first use; unknown types are refused."""
    (tmp_path / "fake_rooms.py").write_text(
        "from dvlt_core.training.data import SyntheticSpec, synthetic_scenes\n"
        "def rooms(spec):\n"
        "    return synthetic_scenes(int(spec['count']), 0, SyntheticSpec(num_frames=2))\n")
    info = tmp_path / "fake_rooms-0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: fake-rooms\nVersion: 0\n")
    (info / "entry_points.txt").write_text("[dvlt.training_sources]\nrooms = fake_rooms:rooms\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setattr(sources, "_REGISTERED", dict(sources._REGISTERED))
    assert "rooms" in sources.source_types()
    assert len(scenes_from_sources([{"type": "rooms", "count": 2, "repeat": 2}])) == 4
    with pytest.raises(ValueError, match=r"must be one of .*'rooms'.*, got 'lidar'"):
        scenes_from_sources([{"type": "lidar"}])
    with pytest.raises(ValueError, match="built in"):
        sources.register_source("folder", sources.scenes_from_source)
