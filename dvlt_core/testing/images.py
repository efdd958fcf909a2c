"""Image files for bad-input tests, made without ever holding their pixels in memory."""

from __future__ import annotations

import struct
import zlib


def constant_png(width: int, height: int, value: int = 0, rows: int | None = None) -> bytes:
    """An 8-bit greyscale PNG of ``width`` x ``height`` pixels, all ``value``.

    The rows are deflated one at a time, so a 9000x9000 image (81 MP, the size of a
    decompression bomb that takes 13 GB to reconstruct naively) costs one row of memory
    and comes out at about 80 KB. ``rows`` writes only that many rows: a truncated image
    whose header still claims ``height`` (e.g. a header of absurd size, cheaply).
    """
    def chunk(kind: bytes, data: bytes) -> bytes:
        body = kind + data
        return struct.pack(">I", len(data)) + body + struct.pack(">I", zlib.crc32(body))

    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    row = b"\x00" + bytes([value]) * width  # filter type 0, then the pixels
    deflate = zlib.compressobj(9)
    count = height if rows is None else rows
    data = b"".join(deflate.compress(row) for _ in range(count)) + deflate.flush()
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", data)
            + chunk(b"IEND", b""))
