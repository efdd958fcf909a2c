"""A minimal OpenEXR reader/writer for single-part scanline depth maps (no OpenCV needed).

Supports the compressions OpenCV writes depth with (NONE, ZIPS, ZIP) and HALF, FLOAT and UINT
channels. Tiled, multi-part and deep files are refused with a clear error.
"""

from __future__ import annotations

import struct
import zlib
from pathlib import Path

import numpy as np

MAGIC = 20000630
_COMPRESSION_LINES = {0: 1, 2: 1, 3: 16}  # NONE, ZIPS, ZIP
_COMPRESSION_NAMES = {0: "NONE", 1: "RLE", 2: "ZIPS", 3: "ZIP", 4: "PIZ", 5: "PXR24",
                      6: "B44", 7: "B44A", 8: "DWAA", 9: "DWAB"}
_PIXEL_TYPES = {0: np.dtype("<u4"), 1: np.dtype("<f2"), 2: np.dtype("<f4")}


class ExrError(ValueError):
    """An EXR file this reader cannot decode."""


def _read_header(data: bytes) -> tuple[dict[str, tuple[str, bytes]], int]:
    if struct.unpack_from("<i", data, 0)[0] != MAGIC:
        raise ExrError("not an OpenEXR file")
    flags = struct.unpack_from("<I", data, 4)[0] >> 8
    if flags & (0x2 | 0x8 | 0x10):  # tiled, deep, multi-part (0x4, long names, is fine)
        raise ExrError("only single-part scanline EXR files are supported")
    pos, attrs = 8, {}
    while data[pos] != 0:
        end = data.index(b"\0", pos)
        name = data[pos:end].decode()
        type_end = data.index(b"\0", end + 1)
        kind = data[end + 1 : type_end].decode()
        size = struct.unpack_from("<i", data, type_end + 1)[0]
        start = type_end + 5
        attrs[name] = (kind, data[start : start + size])
        pos = start + size
    return attrs, pos + 1


def _channels(raw: bytes) -> list[tuple[str, int]]:
    out, pos = [], 0
    while raw[pos] != 0:
        end = raw.index(b"\0", pos)
        name = raw[pos:end].decode()
        pixel_type, _, _, x_sampling, y_sampling = struct.unpack_from("<iB3sii", raw, end + 1)
        if (x_sampling, y_sampling) != (1, 1):
            raise ExrError("subsampled channels are not supported")
        out.append((name, pixel_type))
        pos = end + 1 + 16
    return sorted(out)


def _unpredict(raw: bytes) -> bytes:
    """Undo the ZIP predictor (running sum of byte deltas) and the byte de-interleaving."""
    deltas = np.frombuffer(raw, dtype=np.uint8).astype(np.int64)
    t = ((deltas[0] + np.concatenate([[0], np.cumsum(deltas[1:] - 128)])) % 256).astype(np.uint8)
    half = (len(t) + 1) // 2
    out = np.empty_like(t)
    out[0::2] = t[:half]
    out[1::2] = t[half:]
    return out.tobytes()


def read_exr(path: str | Path, channel: str | None = None) -> np.ndarray:
    """One channel of an EXR image as float32 (H, W).

    ``channel`` defaults to ``Y``, else ``R``, else ``Z``, else the first channel.
    """
    data = Path(path).read_bytes()
    attrs, pos = _read_header(data)
    try:
        channels = _channels(attrs["channels"][1])
        compression = attrs["compression"][1][0]
        x0, y0, x1, y1 = struct.unpack("<4i", attrs["dataWindow"][1])
    except KeyError as exc:
        raise ExrError(f"{path}: missing EXR header attribute {exc}") from None
    if compression not in _COMPRESSION_LINES:
        raise ExrError(f"{path}: EXR compression {_COMPRESSION_NAMES.get(compression)} is not "
                       "supported (NONE, ZIPS, ZIP are); re-save the depth with ZIP compression")
    names = [n for n, _ in channels]
    if channel is None:
        channel = next((c for c in ("Y", "R", "Z") if c in names), names[0])
    if channel not in names:
        raise ExrError(f"{path}: no channel {channel!r} (has {names})")
    width, height = x1 - x0 + 1, y1 - y0 + 1
    lines = _COMPRESSION_LINES[compression]
    chunks = -(-height // lines)
    offsets = struct.unpack_from(f"<{chunks}Q", data, pos)
    out = np.zeros((height, width), dtype=np.float32)
    for offset in offsets:
        y, size = struct.unpack_from("<ii", data, offset)
        block = data[offset + 8 : offset + 8 + size]
        n_lines = min(lines, y1 - y + 1)
        expected = n_lines * width * sum(_PIXEL_TYPES[t].itemsize for _, t in channels)
        if compression != 0 and size < expected:
            block = _unpredict(zlib.decompress(block))
        pos_in, row0 = 0, y - y0
        for r in range(n_lines):
            for name, pixel_type in channels:
                dtype = _PIXEL_TYPES[pixel_type]
                nbytes = width * dtype.itemsize
                if name == channel:
                    out[row0 + r] = np.frombuffer(block, dtype, width, pos_in)
                pos_in += nbytes
    return out


def write_exr(
    path: str | Path, image: np.ndarray, channel: str = "Y", zip_blocks: bool = True
) -> None:
    """Write float32 (H, W) as a single-channel scanline EXR (ZIP or uncompressed)."""
    image = np.ascontiguousarray(image, dtype="<f4")
    height, width = image.shape
    compression = 3 if zip_blocks else 0
    lines = _COMPRESSION_LINES[compression]

    def attr(name: str, kind: str, value: bytes) -> bytes:
        return name.encode() + b"\0" + kind.encode() + b"\0" + struct.pack("<i", len(value)) + value

    chlist = channel.encode() + b"\0" + struct.pack("<iB3sii", 2, 0, b"\0\0\0", 1, 1) + b"\0"
    box = struct.pack("<4i", 0, 0, width - 1, height - 1)
    header = (struct.pack("<iI", MAGIC, 2) + attr("channels", "chlist", chlist)
              + attr("compression", "compression", bytes([compression]))
              + attr("dataWindow", "box2i", box) + attr("displayWindow", "box2i", box)
              + attr("lineOrder", "lineOrder", b"\0")
              + attr("pixelAspectRatio", "float", struct.pack("<f", 1.0))
              + attr("screenWindowCenter", "v2f", struct.pack("<ff", 0, 0))
              + attr("screenWindowWidth", "float", struct.pack("<f", 1.0)) + b"\0")
    blocks = []
    for y in range(0, height, lines):
        raw = image[y : y + lines].tobytes()
        if compression:
            b = np.frombuffer(raw, dtype=np.uint8)
            inter = np.concatenate([b[0::2], b[1::2]]).astype(np.int64)
            pred = inter.copy()
            pred[1:] = (inter[1:] - inter[:-1] + 128 + 256) % 256
            packed = zlib.compress(pred.astype(np.uint8).tobytes())
            raw = packed if len(packed) < len(raw) else raw
        blocks.append(struct.pack("<ii", y, len(raw)) + raw)
    table_size = 8 * len(blocks)
    offsets, pos = [], len(header) + table_size
    for block in blocks:
        offsets.append(pos)
        pos += len(block)
    Path(path).write_bytes(header + struct.pack(f"<{len(offsets)}Q", *offsets) + b"".join(blocks))
