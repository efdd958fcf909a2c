"""sensor_msgs/PointCloud2 <-> numpy for clouds of x, y, z, rgb and confidence."""

from __future__ import annotations

import numpy as np
from sensor_msgs.msg import PointCloud2, PointField

from dvlt_ros.conversions._bytes import uint8_buffer

# RViz reads colour from a float32 field named "rgb" holding 0x00RRGGBB bit-packed.
CLOUD_DTYPE = np.dtype(
    [("x", "<f4"), ("y", "<f4"), ("z", "<f4"), ("rgb", "<f4"), ("confidence", "<f4")]
)
_NUMPY_TYPES = {
    PointField.INT8: "i1", PointField.UINT8: "u1", PointField.INT16: "i2",
    PointField.UINT16: "u2", PointField.INT32: "i4", PointField.UINT32: "u4",
    PointField.FLOAT32: "f4", PointField.FLOAT64: "f8",
}


def pack_rgb(colors: np.ndarray) -> np.ndarray:
    """Pack (N, 3) uint8 RGB into the float32 bit pattern of 0x00RRGGBB."""
    c = colors.astype(np.uint32)
    return ((c[:, 0] << 16) | (c[:, 1] << 8) | c[:, 2]).view(np.float32)


def unpack_rgb(packed: np.ndarray) -> np.ndarray:
    """Inverse of pack_rgb: float32 bit patterns to (N, 3) uint8 RGB."""
    bits = np.ascontiguousarray(packed, dtype=np.float32).view(np.uint32)
    return np.stack([(bits >> 16) & 255, (bits >> 8) & 255, bits & 255], axis=1).astype(np.uint8)


def points_to_cloud(
    points: np.ndarray, colors: np.ndarray, confidence: np.ndarray, header=None
) -> PointCloud2:
    """Build an unorganised PointCloud2 (height 1, dense) from (N,3) points, (N,3) uint8
    colours and (N,) confidence. Non-finite points must be removed by the caller."""
    n = points.shape[0]
    if points.shape != (n, 3) or colors.shape != (n, 3) or confidence.shape != (n,):
        raise ValueError(
            f"points {points.shape}, colors {colors.shape} and confidence {confidence.shape} "
            "must be (N,3), (N,3) and (N,)"
        )
    # Fill the message's own buffer in place: the only other copy is the one publish makes.
    data, raw = uint8_buffer(n * CLOUD_DTYPE.itemsize)
    records = raw.reshape(n, CLOUD_DTYPE.itemsize)
    # x, y, z as one 12-byte item per point: a much faster strided copy than 3 floats.
    xyz = np.ascontiguousarray(points, dtype="<f4")
    records[:, :12].view("V12")[:, 0] = xyz.view("V12")[:, 0]
    # rgb: the little-endian bytes of 0x00RRGGBB are B, G, R, 0 (the buffer is zeroed);
    # three byte columns are faster than packing uint32 words.
    for byte, channel in ((12, 2), (13, 1), (14, 0)):
        records[:, byte] = colors[:, channel]
    records[:, 16:20].view("<f4")[:, 0] = confidence
    msg = PointCloud2(check_fields=True)  # keeps ``data`` as given, without copying it
    if header is not None:
        msg.header = header
    msg.height, msg.width = 1, n
    msg.fields = [
        PointField(name=name, offset=CLOUD_DTYPE.fields[name][1], datatype=PointField.FLOAT32,
                   count=1)
        for name in CLOUD_DTYPE.names
    ]
    msg.is_bigendian = False
    msg.point_step = CLOUD_DTYPE.itemsize
    msg.row_step = CLOUD_DTYPE.itemsize * n
    msg.is_dense = True
    msg.data = data
    return msg


def cloud_to_array(msg: PointCloud2) -> np.ndarray:
    """Return the cloud's points as a structured array with one field per PointField."""
    fields = {}
    for field in msg.fields:
        if field.datatype not in _NUMPY_TYPES:
            raise ValueError(f"PointField '{field.name}' has unknown datatype {field.datatype}")
        code = (">" if msg.is_bigendian else "<") + _NUMPY_TYPES[field.datatype]
        shape = (field.count,) if field.count > 1 else ()
        fields[field.name] = ((np.dtype(code), shape), field.offset)
    dtype = np.dtype(
        {
            "names": list(fields),
            "formats": [f[0] for f in fields.values()],
            "offsets": [f[1] for f in fields.values()],
            "itemsize": msg.point_step,
        }
    )
    count = msg.width * msg.height
    data = np.frombuffer(msg.data, dtype=np.uint8)
    if data.size < count * msg.point_step:
        raise ValueError(
            f"PointCloud2 data has {data.size} bytes, expected {count * msg.point_step}"
        )
    return data[: count * msg.point_step].view(dtype)
