"""numpy <-> message conversions: every supported encoding, padding, endianness, bad input."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image as PILImage
from sensor_msgs.msg import CompressedImage, Image
from std_msgs.msg import Header

from dvlt_core.geometry import TfTree, rotation_to_quaternion
from dvlt_ros.conversions.camera_info import camera_info_from_intrinsics
from dvlt_ros.conversions.image import (
    ImageConversionError,
    array_to_image,
    decode_compressed,
    image_to_array,
    image_to_rgb8,
)
from dvlt_ros.conversions.pointcloud import (
    CLOUD_DTYPE,
    cloud_to_array,
    pack_rgb,
    points_to_cloud,
    unpack_rgb,
)
from dvlt_ros.conversions.tf import (
    matrix_from_transform,
    ns_from_stamp,
    stamp_from_ns,
    tf_message,
    transform_stamped,
    transforms_stamped,
)
from dvlt_ros.node_support.depth import DepthConversionError, measured_depth

RNG = np.random.default_rng(7)
RGB = RNG.integers(0, 256, size=(5, 7, 3), dtype=np.uint8)


@pytest.mark.parametrize(
    ("encoding", "pixels"),
    [
        ("rgb8", RGB),
        ("bgr8", RGB[..., ::-1].copy()),
        ("rgba8", np.concatenate([RGB, np.full((5, 7, 1), 9, np.uint8)], axis=2)),
        ("bgra8", np.concatenate([RGB[..., ::-1], np.full((5, 7, 1), 9, np.uint8)], axis=2)),
    ],
)
def test_colour_encodings_to_rgb(encoding, pixels):
    np.testing.assert_array_equal(image_to_rgb8(array_to_image(pixels, encoding)), RGB)


def test_mono8_becomes_grey_rgb():
    grey = RGB[..., 0].copy()
    out = image_to_rgb8(array_to_image(grey, "mono8"))
    assert out.shape == (5, 7, 3)
    np.testing.assert_array_equal(out[..., 1], grey)


@pytest.mark.parametrize("encoding", ["uyvy", "yuv422", "yuyv", "yuv422_yuy2"])
def test_yuv422_encodings_become_rgb(encoding):
    grey = np.arange(16, 16 + 5 * 8, dtype=np.uint8).reshape(5, 8)  # Y only: U = V = 128
    packed = np.full((5, 8, 2), 128, np.uint8)
    packed[..., 1 if encoding in ("uyvy", "yuv422") else 0] = grey
    out = image_to_rgb8(array_to_image(packed, encoding))
    expected = np.rint((grey.astype(float) - 16) * 255 / 219)
    np.testing.assert_allclose(out, np.repeat(expected[..., None], 3, axis=2), atol=1)


@pytest.mark.parametrize("pattern", ["rggb", "bggr", "gbrg", "grbg"])
def test_bayer_encodings_are_demosaiced(pattern):
    colour = {"r": 200, "g": 90, "b": 30}
    mosaic = np.empty((6, 8), np.uint8)
    for index, letter in enumerate(pattern):
        mosaic[index // 2 :: 2, index % 2 :: 2] = colour[letter]
    out = image_to_rgb8(array_to_image(mosaic, f"bayer_{pattern}8"))
    np.testing.assert_array_equal(out, np.broadcast_to([200, 90, 30], (6, 8, 3)))


def test_odd_width_yuv_and_unsupported_raw_layouts_are_refused():
    with pytest.raises(ImageConversionError, match=r"uyvy image: .*even width"):
        image_to_rgb8(Image(height=2, width=3, encoding="uyvy", step=6, data=bytes(12)))
    for encoding in ("bayer_rggb16", "nv21", "rgb16", "16UC1"):
        with pytest.raises(ImageConversionError, match="not a colour encoding"):
            image_to_rgb8(Image(height=2, width=2, encoding=encoding, step=8, data=bytes(16)))


def test_row_padding_and_big_endian():
    depth = RNG.uniform(0.1, 10, size=(4, 6)).astype(np.float32)
    msg = Image(height=4, width=6, encoding="32FC1", is_bigendian=True, step=6 * 4 + 8)
    rows = np.zeros((4, msg.step), np.uint8)
    rows[:, :24] = depth.astype(">f4").view(np.uint8).reshape(4, 24)
    msg.data = rows.tobytes()
    np.testing.assert_array_equal(image_to_array(msg), depth)


@pytest.mark.parametrize(
    ("msg", "message"),
    [
        (Image(height=2, width=2, encoding="nv21", step=2, data=bytes(6)), "unsupported"),
        (Image(height=0, width=2, encoding="rgb8", step=6), "zero size"),
        (Image(height=2, width=2, encoding="rgb8", step=5, data=bytes(10)), "step 5"),
        (Image(height=2, width=2, encoding="rgb8", step=6, data=bytes(7)), "expected"),
    ],
)
def test_bad_images_raise_clear_errors(msg, message):
    with pytest.raises(ImageConversionError, match=message):
        image_to_array(msg)


def test_depth_image_is_not_a_colour_image():
    with pytest.raises(ImageConversionError, match="not a colour encoding"):
        image_to_rgb8(array_to_image(np.ones((2, 2), np.float32), "32FC1"))


@pytest.mark.parametrize("fmt", ["png", "jpeg"])
def test_compressed_images(fmt):
    v, u = np.mgrid[0:32, 0:48]
    smooth = np.stack([u * 5, v * 7, (u + v) * 3], axis=2).astype(np.uint8)
    buf = io.BytesIO()
    PILImage.fromarray(smooth).save(buf, format=fmt.upper(), quality=95)
    msg = CompressedImage(format=f"rgb8; {fmt} compressed bgr8", data=buf.getvalue())
    out = decode_compressed(msg).rgb
    assert out.flags.writeable  # torch would warn on a read-only buffer
    assert out.shape == smooth.shape
    assert np.abs(out.astype(int) - smooth).max() <= (0 if fmt == "png" else 12)


def test_corrupt_compressed_image():
    with pytest.raises(ImageConversionError, match="cannot decode"):
        decode_compressed(CompressedImage(format="jpeg", data=b"\xff\xd8garbage"))


def test_pointcloud_round_trip_and_layout():
    points = RNG.normal(size=(100, 3)).astype(np.float32)
    colors = RNG.integers(0, 256, size=(100, 3), dtype=np.uint8)
    conf = RNG.uniform(size=100).astype(np.float32)
    msg = points_to_cloud(points, colors, conf)
    assert [f.name for f in msg.fields] == ["x", "y", "z", "rgb", "confidence"]
    assert msg.point_step == 20 and msg.row_step == 2000 and msg.width == 100
    cloud = cloud_to_array(msg)
    np.testing.assert_array_equal(cloud["z"], points[:, 2])
    np.testing.assert_array_equal(unpack_rgb(cloud["rgb"]), colors)
    assert pack_rgb(np.array([[255, 0, 1]], np.uint8)).view(np.uint32)[0] == 0xFF0001


def test_pointcloud_bytes_are_those_of_the_structured_array():
    """Byte for byte what a CLOUD_DTYPE structured array of the same points holds (the
    previous implementation's layout), and the message keeps its buffer (no copy)."""
    n = 1001
    points = RNG.normal(size=(n, 3)) * 50  # float64 in: cast to float32 like the array
    colors = RNG.integers(0, 256, size=(n, 3), dtype=np.uint8)
    conf = RNG.uniform(1, 30, size=n).astype(np.float32)
    expected = np.zeros(n, CLOUD_DTYPE)
    for i, axis in enumerate("xyz"):
        expected[axis] = points[:, i]
    expected["rgb"], expected["confidence"] = pack_rgb(colors), conf
    header = Header(frame_id="dvlt_world")
    msg = points_to_cloud(points, colors, conf, header)
    assert msg.data.tobytes() == expected.tobytes()
    assert msg.header.frame_id == "dvlt_world" and msg.is_dense and not msg.is_bigendian
    buffer = msg.data
    msg.data = buffer  # what publish reads: the same array object
    assert msg.data is buffer
    empty = points_to_cloud(np.zeros((0, 3)), np.zeros((0, 3), np.uint8), np.zeros(0))
    assert empty.width == 0 and len(empty.data) == 0


def test_image_bytes_and_layout():
    depth = RNG.uniform(0.1, 9, size=(6, 11)).astype(np.float32)
    depth[2, 3] = np.nan
    msg = array_to_image(depth, "32FC1", Header(frame_id="cam_dvlt"))
    assert msg.data.tobytes() == depth.tobytes() and msg.step == 44
    assert (msg.height, msg.width, msg.encoding) == (6, 11, "32FC1")
    np.testing.assert_array_equal(image_to_array(msg), depth)
    strided = RGB[:, ::2]  # a non-contiguous view is sent contiguous
    assert array_to_image(strided, "rgb8").data.tobytes() == strided.tobytes()


def test_transforms_of_many_poses_match_one_at_a_time():
    """The batched quaternions equal those of each pose alone, bit for bit."""
    children = []
    for i, angles in enumerate(RNG.uniform(-np.pi, np.pi, size=(9, 3))):
        pose = np.eye(4)
        pose[:3, :3] = _euler(*angles)
        pose[:3, 3] = RNG.normal(size=3)
        children.append((pose, f"cam{i}_dvlt", stamp_from_ns(10**9 + i)))
    msgs = transforms_stamped(children, "dvlt_world")
    assert transforms_stamped([], "dvlt_world") == []
    for (pose, child, stamp), msg in zip(children, msgs, strict=True):
        q = rotation_to_quaternion(pose[:3, :3])
        r, t = msg.transform.rotation, msg.transform.translation
        assert [r.x, r.y, r.z, r.w] == q.tolist()
        assert [t.x, t.y, t.z] == pose[:3, 3].tolist()
        assert (msg.header.frame_id, msg.child_frame_id, msg.header.stamp) == (
            "dvlt_world", child, stamp)


def test_pointcloud_shape_mismatch():
    with pytest.raises(ValueError, match=r"must be \(N,3\)"):
        points_to_cloud(np.zeros((3, 3)), np.zeros((2, 3), np.uint8), np.zeros(3))


def test_transform_round_trip():
    angles = RNG.uniform(-np.pi, np.pi, size=(50, 3))
    rotations = [_euler(*a) for a in angles] + [np.diag([1.0, -1, -1]), np.diag([-1.0, 1, -1])]
    for i, rot in enumerate(rotations):
        pose = np.eye(4)
        pose[:3, :3] = rot
        pose[:3, 3] = (1, -2, 3 + i)
        msg = transform_stamped(pose, "map", "cam", stamp_from_ns(5))
        q = msg.transform.rotation
        assert q.w >= 0 and abs(np.linalg.norm([q.x, q.y, q.z, q.w]) - 1) < 1e-12
        np.testing.assert_allclose(matrix_from_transform(msg), pose, atol=1e-12)


def test_tf_messages_fill_the_tf_tree():
    """Real tf2_msgs/TFMessage objects go into the core's TF tree (static and stamped)."""
    mount, odom = np.eye(4), np.eye(4)
    mount[:3, :3] = _euler(0.1, -0.2, 0.3)
    mount[:3, 3] = (0.2, 0.0, 0.1)
    odom[:3, 3] = (1.0, 2.0, 0.0)
    tree = TfTree()
    tree.add_tf_messages([tf_message([transform_stamped(mount, "base_link", "cam_optical",
                                                        stamp_from_ns(0))])], static=True)
    tree.add_tf_messages([tf_message([transform_stamped(odom, "odom", "base_link",
                                                        stamp_from_ns(10**9))])], static=False)
    np.testing.assert_allclose(tree.lookup("odom", "cam_optical", 10**9), odom @ mount,
                               atol=1e-12)


def _euler(a: float, b: float, c: float) -> np.ndarray:
    ca, sa, cb, sb, cc, sc = np.cos(a), np.sin(a), np.cos(b), np.sin(b), np.cos(c), np.sin(c)
    rz = np.array([[ca, -sa, 0], [sa, ca, 0], [0, 0, 1]])
    ry = np.array([[cb, 0, sb], [0, 1, 0], [-sb, 0, cb]])
    rx = np.array([[1, 0, 0], [0, cc, -sc], [0, sc, cc]])
    return rz @ ry @ rx


def test_stamps():
    assert ns_from_stamp(stamp_from_ns(1_234_567_890_123_456_789)) == 1_234_567_890_123_456_789
    stamp = stamp_from_ns(1_500_000_000)
    assert (stamp.sec, stamp.nanosec) == (1, 500_000_000)


# ---------------------------------------------------------------- depth images
DEPTH_K = np.array([[50.0, 0.0, 3.5], [0.0, 51.0, 2.0], [0.0, 0.0, 1.0]])


def _depth_msg(pixels, encoding, frame_id="cam_optical", stamp_ns=10**9):
    return array_to_image(pixels, encoding, Header(stamp=stamp_from_ns(stamp_ns),
                                                   frame_id=frame_id))


def _depth_info(width=7, height=5, frame_id="cam_optical"):
    return camera_info_from_intrinsics(DEPTH_K, width, height, Header(frame_id=frame_id))


def test_registered_depth_in_millimetres_and_metres_invalid_pixels_kept_invalid():
    mm = np.full((5, 7), 1500, np.uint16)
    mm[0, 0] = 0  # no return
    depth = measured_depth(_depth_msg(mm, "16UC1"), None, "cam_optical", (7, 5))
    assert depth.k is None and depth.colour_from_depth is None
    assert depth.depth.dtype == np.float32 and depth.depth[0, 0] == 0
    np.testing.assert_allclose(depth.depth[1:, 1:], 1.5, rtol=1e-6)

    metres = np.full((5, 7), 2.25, np.float32)
    metres[0, :3] = (np.nan, np.inf, 0.0)
    # The same frame (a leading slash aside) at the colour image's size, with its own
    # CameraInfo: still registered (the colour image's pixels).
    depth = measured_depth(_depth_msg(metres, "32FC1", "/cam_optical"), _depth_info(),
                           "cam_optical", (7, 5))
    assert depth.k is None
    assert np.isnan(depth.depth[0, 0]) and np.isinf(depth.depth[0, 1])
    np.testing.assert_allclose(depth.depth[1:], 2.25)


def test_depth_of_another_size_or_frame_is_reprojected_with_its_k_and_tf():
    metres = np.ones((5, 7), np.float32)
    # Same frame, another size than the colour image: its own K.
    depth = measured_depth(_depth_msg(metres, "32FC1"), _depth_info(), "cam_optical", (14, 10))
    np.testing.assert_allclose(depth.k, DEPTH_K)
    assert depth.colour_from_depth is None
    # No CameraInfo of its own: registered (resampled by the session).
    assert measured_depth(_depth_msg(metres, "32FC1"), None, "cam_optical", (14, 10)).k is None

    # Another frame: the depth optical frame in the colour optical frame, from TF.
    mount = np.eye(4)
    mount[:3, 3] = (0.05, 0.0, 0.0)
    tree = TfTree()
    tree.add_tf_messages([tf_message([
        transform_stamped(np.eye(4), "base_link", "cam_optical", stamp_from_ns(0)),
        transform_stamped(mount, "base_link", "depth_optical", stamp_from_ns(0)),
    ])], static=True)
    depth = measured_depth(_depth_msg(metres, "32FC1", "depth_optical"), _depth_info(),
                           "cam_optical", (7, 5), tree)
    np.testing.assert_allclose(depth.k, DEPTH_K)
    np.testing.assert_allclose(depth.colour_from_depth, mount, atol=1e-12)


@pytest.mark.parametrize(
    ("msg", "info", "transforms", "expected"),
    [
        (_depth_msg(np.ones((5, 7), np.uint16), "mono16"), None, None, "not 16UC1"),
        (_depth_msg(np.ones((5, 7, 3), np.uint8), "rgb8"), None, None, "not 16UC1"),
        (_depth_msg(np.ones((5, 7), np.float32), "32FC1", "depth_optical"), None, TfTree(),
         "needs its CameraInfo"),
        (_depth_msg(np.ones((5, 7), np.float32), "32FC1", "depth_optical"), _depth_info(),
         None, "needs TF"),
        (_depth_msg(np.ones((5, 7), np.float32), "32FC1", "depth_optical"), _depth_info(),
         TfTree(), "cannot be reprojected"),
        (_depth_msg(np.ones((5, 7), np.float32), "32FC1", "depth_optical"),
         _depth_info(width=8), TfTree(), "CameraInfo is for 8x5"),
        (_depth_msg(np.ones((5, 7), np.float32), "32FC1"),
         camera_info_from_intrinsics(DEPTH_K * [[0], [1], [1]], 7, 5), None,
         "non-positive focal lengths"),
    ],
    ids=["mono16", "colour", "no-info", "no-tf", "tf-missing", "info-size", "bad-k"],
)
def test_unusable_depth_is_refused_with_the_reason(msg, info, transforms, expected):
    with pytest.raises(DepthConversionError, match=expected):
        measured_depth(msg, info, "cam_optical", (14, 10), transforms)


def test_truncated_depth_data_is_refused():
    msg = _depth_msg(np.ones((5, 7), np.uint16), "16UC1")
    msg.data = msg.data[:10]
    with pytest.raises(DepthConversionError, match="expected step"):
        measured_depth(msg, None, "cam_optical")
