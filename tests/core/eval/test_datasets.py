"""Benchmark loaders on small fixtures in each dataset's layout, and upstream's eval
preprocessing (crop/pad, frame selection, nearest depth, integer-pixel GT points)."""

from __future__ import annotations

import io
import json

import numpy as np
import pytest
from PIL import Image

from dvlt_core.eval.datasets import (
    DTUDataset,
    ETH3DDataset,
    NuScenesDataset,
    ScanNetppDataset,
    SevenScenesDataset,
    build_benchmark,
    preprocess_frames,
    select_frames,
)
from dvlt_core.eval.datasets.base import cv2_nearest, unproject_integer
from dvlt_core.eval.datasets.dtu import erode
from dvlt_core.eval.datasets.exr import ExrError, read_exr, write_exr
from dvlt_core.training.data.scannetpp import write_float16_png
from dvlt_core.training.data.scene import write_png_u16

RNG = np.random.default_rng(0)


def _rgb(h, w):
    return RNG.integers(0, 255, (h, w, 3), dtype=np.uint8)


def _check_geometry(seq):
    """GT points are the depth unprojected at integer pixels; the mask is depth > 0."""
    S, H, W = seq.depths.shape
    assert seq.images.shape == (S, H, W, 3) and seq.images.dtype == np.uint8
    for i in range(S):
        expected = unproject_integer(seq.depths[i], seq.intrinsics[i], seq.extrinsics_c2w[i])
        np.testing.assert_allclose(seq.world_points[i], expected, rtol=1e-5, atol=1e-5)
    np.testing.assert_array_equal(seq.point_masks, seq.depths > 1e-8)
    assert seq.images_tensor().shape == (1, S, 3, H, W)
    assert seq.ground_truth().point_masks.dtype.is_floating_point is False


# ---- preprocessing -------------------------------------------------------------------------

def test_crop_mode_resizes_width_and_centre_crops_height():
    image, depth = _rgb(300, 200), RNG.random((300, 200)).astype(np.float32) + 1
    k = np.array([[100.0, 0, 100], [0, 110.0, 150], [0, 0, 1]])
    (img,), (d,), (kk,) = preprocess_frames([image], [depth], [k], img_size=56)
    new_h = round(300 * 56 / 200 / 14) * 14  # 84 → cropped to 56 rows, offset 14
    assert img.shape == (56, 56, 3) and d.shape == (56, 56)
    np.testing.assert_allclose(kk, [[100 * 56 / 200, 0, 100 * 56 / 200],
                                    [0, 110 * new_h / 300, 150 * new_h / 300 - 14], [0, 0, 1]],
                               rtol=1e-6)
    np.testing.assert_array_equal(d, cv2_nearest(depth, new_h, 56)[14:70])


def test_pad_mode_and_mixed_sizes():
    k = np.eye(3)
    imgs, depths, ks = preprocess_frames([_rgb(40, 80), _rgb(80, 40)],
                                         [np.ones((40, 80), np.float32)] * 1
                                         + [np.ones((80, 40), np.float32)],
                                         [k, k], img_size=56, mode="pad")
    assert all(i.shape == (56, 56, 3) for i in imgs)
    assert depths[0][:14].sum() == 0 and depths[0][14:42].all()  # 28 rows centred
    assert ks[0][1, 2] == 14 and ks[1][0, 2] == 14


def test_nearest_and_max_depth():
    depth = np.arange(12, dtype=np.float32).reshape(3, 4)
    np.testing.assert_array_equal(cv2_nearest(depth, 6, 8), np.repeat(np.repeat(depth, 2, 0),
                                                                     2, 1))
    _, (d,), _ = preprocess_frames([_rgb(3, 4)], [depth], [np.eye(3)], img_size=28,
                                   patch_size=14, max_depth=5.0)
    assert d.max() == 5.0


@pytest.mark.parametrize(("ranking", "sampling", "max_frames", "expected"), [
    ("index", "uniform", 4, [0, 2, 5, 7]),
    ("index", "first", 3, [0, 1, 2]),
    ("middle_first", "uniform", None, [5, 0, 1, 2, 3, 4, 6, 7, 8, 9]),
    ("index", "every_4", None, [0, 4, 8]),
    ("index", "uniform", 20, list(range(10))),
])
def test_frame_selection(ranking, sampling, max_frames, expected):
    assert select_frames(10, ranking, sampling, max_frames) == expected


def test_exr_round_trip_and_refusals(tmp_path):
    depth = RNG.random((33, 47)).astype(np.float32) * 20
    for zipped in (True, False):
        write_exr(tmp_path / "d.exr", depth, zip_blocks=zipped)
        np.testing.assert_array_equal(read_exr(tmp_path / "d.exr"), depth)
    (tmp_path / "bad.exr").write_bytes(b"\x00" * 16)
    with pytest.raises(ExrError, match="not an OpenEXR"):
        read_exr(tmp_path / "bad.exr")


# ---- dataset layouts ------------------------------------------------------------------------

def _pose(i):
    c2w = np.eye(4)
    c2w[:3, 3] = (0.1 * i, 0.0, 0.0)
    return c2w


def _dtu(root):
    scan = root / "scan1"
    for sub in ("images", "cams", "depths", "binary_masks"):
        (scan / sub).mkdir(parents=True)
    for i in range(3):
        Image.fromarray(_rgb(48, 64)).save(scan / "images" / f"{i:08d}.jpg")
        w2c = np.linalg.inv(_pose(i))
        k = [[60.0, 0, 32], [0, 60.0, 24], [0, 0, 1]]
        text = "extrinsic\n" + "\n".join(" ".join(map(str, r)) for r in w2c) + "\n\nintrinsic\n"
        text += "\n".join(" ".join(map(str, r)) for r in k) + "\n\n425 2.5\n"
        (scan / "cams" / f"{i:08d}_cam.txt").write_text(text)
        np.save(scan / "depths" / f"{i:08d}.npy", np.full((48, 64), 700.0, np.float32))
        mask = np.zeros((48, 64), np.uint8)
        mask[10:40, 10:54] = 255
        Image.fromarray(mask).save(scan / "binary_masks" / f"{i:08d}.png")


def test_dtu_layout(tmp_path):
    _dtu(tmp_path)
    ds = DTUDataset(tmp_path, img_size=56)
    seq = ds.sequence(0)
    assert len(ds) == 1 and seq.name == "dtu_scan1" and seq.depths.shape == (3, 42, 56)
    np.testing.assert_allclose(seq.extrinsics_c2w[:, 0, 3], [0.1, 0.0, 0.2], atol=1e-6)
    _check_geometry(seq)
    eroded = erode(np.pad(np.ones((30, 44)), 10).astype(np.float32), 10)
    assert eroded.sum() == (30 - 9) * (44 - 9)  # 10x10 box: 9 rows/cols lost
    valid = seq.depths[0] > 0
    assert 0 < valid.mean() < (30 * 44) / (48 * 64) and seq.depths[0].max() == 700.0


def _eth3d(root):
    scene = root / "courtyard"
    calib = scene / "dslr_calibration_undistorted"
    (scene / "images" / "dslr_images_undistorted").mkdir(parents=True)
    (scene / "ground_truth_depth" / "dslr_images_undistorted").mkdir(parents=True)
    calib.mkdir()
    (calib / "cameras.txt").write_text("# c\n# c\n# c\n0 PINHOLE 64 48 50 51 32 24\n")
    lines = ["# i", "# i", "# i", "# i"]
    for i, name in enumerate(["DSC_0002.JPG", "DSC_0001.JPG", "DSC_0003.JPG"]):
        lines += [f"{i} 1 0 0 0 {-0.2 * i} 0 0 0 dslr_images_undistorted/{name}", ""]
        if name != "DSC_0003.JPG":  # no image: skipped
            Image.fromarray(_rgb(48, 64)).save(scene / "images" / "dslr_images_undistorted" / name)
        write_exr(scene / "ground_truth_depth" / "dslr_images_undistorted"
                  / name.replace(".JPG", ".exr"), np.full((48, 64), 3.0 + i, np.float32))
    (calib / "images.txt").write_text("\n".join(lines) + "\n")


def test_eth3d_layout(tmp_path):
    _eth3d(tmp_path)
    seq = ETH3DDataset(tmp_path, img_size=56).sequence(0)
    assert seq.depths.shape == (2, 42, 56)
    np.testing.assert_allclose(seq.depths[:, 0, 0], [4.0, 3.0])  # sorted: DSC_0001 first
    np.testing.assert_allclose(seq.extrinsics_c2w[:, 0, 3], [0.2, 0.0], atol=1e-6)
    np.testing.assert_allclose(seq.intrinsics[0, 0, 0], 50 * 56 / 64, rtol=1e-6)
    _check_geometry(seq)


def _sevenscenes(root):
    seq = root / "chess" / "seq-03"
    seq.mkdir(parents=True)
    for i in range(23):
        Image.fromarray(_rgb(480, 640)).save(seq / f"frame-{i:06d}.color.png")
        depth = np.full((480, 640), 1500, np.uint16)
        depth[0, 0], depth[0, 1] = 50, 12000  # below 0.1 m / above 10 m: invalid
        write_png_u16(seq / f"frame-{i:06d}.depth.proj.png", depth)
        np.savetxt(seq / f"frame-{i:06d}.pose.txt", _pose(i))
    (root / "chess" / "seq-01").mkdir()  # a training sequence: not in the test split


def test_sevenscenes_layout(tmp_path):
    _sevenscenes(tmp_path)
    ds = SevenScenesDataset(tmp_path, img_size=56)
    assert len(ds) == 1 and ds.sequence_name(0) == "chess_seq-03"
    seq = ds.sequence(0)
    assert seq.depths.shape == (3, 42, 56)  # every 11th of 23 frames
    np.testing.assert_allclose(seq.extrinsics_c2w[:, 0, 3], [0.0, 1.1, 2.2], atol=1e-6)
    assert seq.depths[0, 0, 0] == 0.0 and seq.depths[0, 5, 5] == pytest.approx(1.5)
    np.testing.assert_allclose(seq.intrinsics[0], [[525 * 56 / 640, 0, 28], [0, 525 * 42 / 480,
                                                                             21], [0, 0, 1]])
    _check_geometry(seq)


def _scannetpp(root):
    scene = root / "scannetpp_undistort" / "abc"
    for sub in ("undistorted_images", "undistorted_depth", "nerfstudio"):
        (scene / sub).mkdir(parents=True)
    frames = []
    for i in range(4):
        name = f"DSC{i:05d}.JPG"
        Image.fromarray(_rgb(48, 64)).save(scene / "undistorted_images" / name, format="JPEG")
        write_float16_png(scene / "undistorted_depth" / f"DSC{i:05d}.png",
                          np.full((48, 64), 2.5, np.float32))
        frames.append({"file_path": name, "transform_matrix": _pose(i).tolist()})
    (scene / "nerfstudio" / "transforms_undistorted.json").write_text(json.dumps(
        {"fl_x": 50, "fl_y": 50, "cx": 32, "cy": 24, "w": 64, "h": 48,
         "frames": frames[:3], "test_frames": frames[3:]}))
    (root / "nvs_sem_val.txt").write_text("abc\n")


def test_scannetpp_layout(tmp_path):
    _scannetpp(tmp_path)
    seq = ScanNetppDataset(tmp_path, img_size=56, max_frames=2).sequence(0)
    assert seq.depths.shape == (2, 42, 56) and seq.name == "scannetpp_abc"
    np.testing.assert_allclose(seq.depths[seq.point_masks], 2.5)
    np.testing.assert_allclose(seq.extrinsics_c2w[1, 1, 3], 0.2, atol=1e-6)  # frames 0, 2
    _check_geometry(seq)


def test_nuscenes_layout(tmp_path):
    h5py = pytest.importorskip("h5py")
    scene = tmp_path / "trainval" / "scene-0013"
    scene.mkdir(parents=True)
    with h5py.File(scene / "scene.h5", "w") as f:
        for i in range(3):
            buf = io.BytesIO()
            Image.fromarray(_rgb(48, 64)).save(buf, format="JPEG")
            f[f"images/{i}"] = np.frombuffer(buf.getvalue(), np.uint8)
        depths = np.zeros((3, 48, 64), np.float32)
        depths[:, 10, 10], depths[:, 20, 20] = 12.0, 150.0  # 150 m is beyond the 100 m cut
        f["depths"] = depths
        f["extrinsics_c2w"] = np.stack([_pose(i + 5) for i in range(3)])
        f["intrinsics"] = np.stack([[[50.0, 0, 32], [0, 50, 24], [0, 0, 1]]] * 3)
    seq = NuScenesDataset(tmp_path, img_size=56).sequence(0)
    np.testing.assert_allclose(seq.extrinsics_c2w[:, 0, 3], [0.0, 0.1, 0.2], atol=1e-6)
    assert seq.depths.max() == 12.0 and seq.point_masks.sum() > 0
    _check_geometry(seq)


def test_benchmark_lite_from_data_root(tmp_path):
    _dtu(tmp_path / "test" / "dtu")
    _eth3d(tmp_path / "test" / "eth3d")
    _sevenscenes(tmp_path / "test" / "sevenscenes")
    datasets = build_benchmark("lite", tmp_path, img_size=56)
    assert list(datasets) == ["dtu", "eth3d", "sevenscenes"]
    assert [len(d) for d in datasets.values()] == [1, 1, 1]
    with pytest.raises(FileNotFoundError):
        build_benchmark("full", tmp_path, img_size=56)
