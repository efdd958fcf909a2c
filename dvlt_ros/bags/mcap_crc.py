"""The CRC32s of MCAP files: filled into a file its writer closed without them, and the
footer's summary CRC checked when a file is opened.

``rosbags`` writes every CRC of an MCAP file as 0 ("not available"), so a flipped byte in
a bag would be read as good data. :func:`write_crcs` walks a finished file once and fills
in, in place, each chunk's CRC of its uncompressed records, the Data End record's CRC of
the data section (every byte from the start of the file up to that record) and the
footer's CRC of the summary (from its start through the footer's offset fields), as the
MCAP specification defines them (https://mcap.dev/spec). CRCs that are already set are
kept.
"""

from __future__ import annotations

import mmap
import struct
from pathlib import Path

from dvlt_ros.bags.mcap_salvage import (
    CHUNK_CRC_AT,
    MAGIC,
    OP_CHUNK,
    OP_DATA_END,
    OP_FOOTER,
    chunk_records,
    crc32_of,
    records,
)

#: Footer record (opcode, length, summary start, summary offset start, summary CRC) + magic.
_FOOTER_SIZE = 1 + 8 + 8 + 8 + 4
_TAIL_SIZE = _FOOTER_SIZE + len(MAGIC)


def _footer_at(buffer) -> int:
    """Offset of the footer record of a finished file; ValueError if there is none."""
    at = len(buffer) - _TAIL_SIZE
    if at < len(MAGIC) or buffer[at] != OP_FOOTER or buffer[len(buffer) - len(MAGIC):] != MAGIC:
        raise ValueError("the file has no MCAP footer (it was not closed)")
    return at


def _summary_crc(buffer, footer_at: int) -> tuple[int, int]:
    """(stated, computed) summary CRC of a finished file."""
    (summary_start,) = struct.unpack_from("<Q", buffer, footer_at + 9)
    start = summary_start or footer_at
    if not len(MAGIC) <= start <= footer_at:
        raise ValueError(f"the footer's summary offset {summary_start} is outside the file")
    (stated,) = struct.unpack_from("<I", buffer, footer_at + 9 + 16)
    return stated, crc32_of(buffer, start, footer_at + 9 + 16)


def summary_crc_problem(path: Path) -> str | None:
    """Why the summary (the index) of the finished MCAP file ``path`` cannot be trusted:
    its CRC does not match. None when it matches, or the file has no CRC or no footer
    (opening it then says what is wrong)."""
    try:
        with path.open("rb") as file:
            buffer = mmap.mmap(file.fileno(), 0, access=mmap.ACCESS_READ)
    except (OSError, ValueError):  # unreadable or empty: opening it says what is wrong
        return None
    with buffer:
        try:
            stated, computed = _summary_crc(buffer, _footer_at(buffer))
        except (ValueError, struct.error):
            return None
    if stated and stated != computed:
        return "its summary (the index at the end of the file) fails its CRC check"
    return None


def write_crcs(path: Path) -> None:
    """Fill in the zero CRCs of the finished MCAP file ``path`` (see the module docstring).
    ValueError if it is not a finished MCAP file."""
    with path.open("r+b") as file, mmap.mmap(file.fileno(), 0) as buffer:
        if buffer[: len(MAGIC)] != MAGIC:
            raise ValueError(f"{path} is not an MCAP file")
        footer_at = _footer_at(buffer)
        data_crc = crc32_of(buffer, 0, len(MAGIC))
        for record in records(buffer, len(MAGIC), footer_at):
            if record.op == OP_DATA_END:
                if struct.unpack_from("<I", record.body, 0)[0] == 0:
                    struct.pack_into("<I", buffer, record.offset + 9, data_crc)
                break
            if record.op == OP_CHUNK and struct.unpack_from("<I", record.body,
                                                            CHUNK_CRC_AT)[0] == 0:
                data, _ = chunk_records(record.body)
                struct.pack_into("<I", buffer, record.offset + 9 + CHUNK_CRC_AT,
                                 crc32_of(data, 0, len(data)))
            data_crc = crc32_of(buffer, record.offset, record.end, data_crc)
        else:
            raise ValueError(f"{path} has no Data End record")
        stated, computed = _summary_crc(buffer, footer_at)
        if stated == 0:
            struct.pack_into("<I", buffer, footer_at + 9 + 16, computed)
        buffer.flush()
