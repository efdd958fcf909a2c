"""Read what is readable of an MCAP file that an index-based reader refuses: one whose end
is missing (a recording that was killed) or that is damaged.

An MCAP file that was not closed has no footer and no summary, so index-based readers
refuse it. The data section is still a sequence of records (``opcode u8, length u64,
body``): this module walks it from the start, decoding schemas, channels, messages and
chunks (uncompressed, lz4 or zstd), and stops at the first record that is cut off.

Every chunk that carries a CRC is checked: a chunk whose records fail their CRC (or do not
decompress) is skipped and reported, reading goes on with the next one. The data-section
CRC of the Data End record is checked as well. Record layouts follow the MCAP
specification (https://mcap.dev/spec).
"""

from __future__ import annotations

import mmap
import struct
import zlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

MAGIC = b"\x89MCAP0\r\n"
OP_FOOTER, OP_SCHEMA, OP_CHANNEL, OP_MESSAGE, OP_CHUNK = 0x02, 0x03, 0x04, 0x05, 0x06
OP_DATA_END = 0x0F
#: Offset of the uncompressed-records CRC in a chunk body (after start, end time, size).
CHUNK_CRC_AT = 24
_RECORD_HEADER = 9  # opcode u8 + length u64


@dataclass(frozen=True)
class SalvagedChannel:
    id: int
    topic: str
    msgtype: str
    msgdef: str
    encoding: str


@dataclass
class SalvageScan:
    """Result of a pass: channels, per-channel message counts, where reading stopped, and
    what the CRCs said (``damaged``: one line per chunk skipped, and one for a data
    section that fails its CRC)."""

    channels: dict[int, SalvagedChannel]
    counts: dict[int, int]
    complete: bool
    stop_reason: str
    start_ns: int | None = None
    end_ns: int | None = None
    damaged: list[str] = field(default_factory=list)
    chunks_checked: int = 0
    chunks_without_crc: int = 0
    data_crc: str = "absent"  # "ok", "absent" (0 or not reached) or "mismatch"


class CutError(Exception):
    """A record extends past the end of the readable data."""


class DamagedChunkError(Exception):
    """A chunk whose records fail their CRC or cannot be decompressed."""


@dataclass(frozen=True)
class Record:
    """One record: where it starts in the buffer, its opcode and body, and whether the
    body is whole (False only for a cut-off chunk, see :func:`records`)."""

    offset: int
    op: int
    body: bytes
    complete: bool = True

    @property
    def end(self) -> int:
        return self.offset + _RECORD_HEADER + len(self.body)


def _string(body: bytes, pos: int) -> tuple[str, int]:
    (size,) = struct.unpack_from("<I", body, pos)
    end = pos + 4 + size
    if end > len(body):
        raise CutError("string beyond record end")
    return body[pos + 4 : end].decode("utf-8", "replace"), end


def decompress(data: bytes, compression: str, size: int) -> bytes:
    """The ``size`` bytes of records of a chunk; :class:`DamagedChunkError` when they cannot
    be decompressed or would decompress past ``size`` (its header's uncompressed size), so a
    crafted chunk cannot expand without bound."""
    if compression == "":
        return data
    try:
        if compression == "zstd":
            try:
                from compression import zstd  # type: ignore[import-not-found]
            except ImportError:
                from backports import zstd  # type: ignore[import-not-found,no-redef]
            decompressor = zstd.ZstdDecompressor()
            out = decompressor.decompress(data, max_length=size)
            complete = decompressor.eof
        elif compression == "lz4":
            from lz4.frame import LZ4FrameDecompressor

            decompressor = LZ4FrameDecompressor()
            out = decompressor.decompress(data, max_length=size)
            complete = decompressor.eof
        else:
            raise CutError(f"unsupported chunk compression {compression!r}")
    except CutError:
        raise
    except Exception as exc:  # zstd and lz4 raise their own error types
        raise DamagedChunkError(f"its {compression} data does not decompress ({exc})") from None
    if not complete:  # more output than declared, or the compressed data is cut
        raise DamagedChunkError(f"its {compression} data does not end within the {size} "
                                "bytes its header declares")
    return out


@dataclass(frozen=True)
class ChunkHeader:
    """The fields of a chunk body before its records."""

    uncompressed_size: int
    crc: int
    compression: str
    records_at: int
    records_size: int

    @classmethod
    def parse(cls, body: bytes) -> ChunkHeader:
        _, _, size, crc = struct.unpack_from("<QQQI", body, 0)
        compression, pos = _string(body, CHUNK_CRC_AT + 4)
        (records_size,) = struct.unpack_from("<Q", body, pos)
        return cls(size, crc, compression, pos + 8, records_size)


def chunk_records(body: bytes) -> tuple[bytes, bool]:
    """(uncompressed records, whether a CRC checked them) of a whole chunk body; raises
    :class:`DamagedChunkError` when they fail the CRC or their stated size."""
    header = ChunkHeader.parse(body)
    payload = body[header.records_at : header.records_at + header.records_size]
    if len(payload) != header.records_size:
        raise DamagedChunkError(f"its records are {len(payload)} bytes, not {header.records_size}")
    data = decompress(payload, header.compression, header.uncompressed_size)
    if len(data) != header.uncompressed_size:
        raise DamagedChunkError(f"its records decompress to {len(data)} bytes, not "
                           f"{header.uncompressed_size}")
    if header.crc and zlib.crc32(data) != header.crc:
        raise DamagedChunkError("its records fail their CRC check")
    return data, bool(header.crc)


def records(buffer, start: int = 0, end: int | None = None,
            allow_cut_chunk: bool = False) -> Iterator[Record]:
    """The records of ``buffer[start:end]`` (bytes or an mmap). A cut-off record raises
    :class:`CutError`, except a cut chunk when ``allow_cut_chunk`` (its readable part is
    returned first, with ``complete=False``)."""
    end = len(buffer) if end is None else end
    pos = start
    while pos < end:
        if pos + _RECORD_HEADER > end:
            raise CutError(f"record header cut off at byte {pos}")
        op = buffer[pos]
        (size,) = struct.unpack_from("<Q", buffer, pos + 1)
        body_end = pos + _RECORD_HEADER + size
        if body_end > end:
            if allow_cut_chunk and op == OP_CHUNK:
                yield Record(pos, op, bytes(buffer[pos + _RECORD_HEADER : end]), False)
            raise CutError(f"record of {size} bytes at byte {pos} is cut off")
        yield Record(pos, op, bytes(buffer[pos + _RECORD_HEADER : body_end]))
        pos = body_end


def crc32_of(buffer, start: int, end: int, value: int = 0, block: int = 1 << 24) -> int:
    """CRC32 of ``buffer[start:end]``, continuing ``value``, read in blocks."""
    for pos in range(start, end, block):
        value = zlib.crc32(buffer[pos : min(end, pos + block)], value)
    return value


class McapSalvager:
    """Sequential reader of a possibly truncated or damaged MCAP file (see the module
    docstring). The file is mapped, not read into memory; :meth:`close` releases it."""

    def __init__(self, path: Path) -> None:
        self.path = path
        with path.open("rb") as file:
            try:
                self._map = mmap.mmap(file.fileno(), 0, access=mmap.ACCESS_READ)
            except ValueError:  # an empty file cannot be mapped
                raise ValueError(f"{path} is empty") from None
        if self._map[: len(MAGIC)] != MAGIC:
            self._map.close()
            raise ValueError(f"{path} is not an MCAP file (no MCAP magic at its start)")
        self.scan = self._meta_scan()

    def close(self) -> None:
        self._map.close()

    def _walk(self, scan: SalvageScan | None = None) -> Iterator[tuple[int, bytes]]:
        """(opcode, body) of the top-level records, and of the records of each intact
        chunk in its place; with ``scan``, CRC results and damage are noted there."""
        data_crc = zlib.crc32(MAGIC)
        for record in records(self._map, len(MAGIC), allow_cut_chunk=True):
            if record.op == OP_DATA_END:
                if scan is not None:
                    (stated,) = struct.unpack_from("<I", record.body, 0)
                    scan.data_crc = ("absent" if not stated else "ok" if stated == data_crc
                                     else "mismatch")
                    if scan.data_crc == "mismatch" and not scan.damaged:  # else explained
                        scan.damaged.append(
                            "the data section fails its CRC check: a record outside the "
                            "CRC-checked chunks is damaged (the messages of chunks without a "
                            "CRC may be wrong)")
                return
            if record.op == OP_FOOTER:
                return
            if scan is not None:
                data_crc = crc32_of(self._map, record.offset, record.end, data_crc)
            if record.op != OP_CHUNK:
                yield record.op, record.body
                continue
            if record.complete:
                try:
                    inner, checked = chunk_records(record.body)
                except DamagedChunkError as exc:
                    if scan is not None:
                        scan.damaged.append(f"the chunk at byte {record.offset} is skipped: "
                                            f"{exc}")
                    continue
                if scan is not None:
                    scan.chunks_checked += checked
                    scan.chunks_without_crc += not checked
            else:
                header = ChunkHeader.parse(record.body)
                if header.compression != "":
                    raise CutError(f"the last {header.compression} chunk is cut off")
                # The readable records of an uncompressed chunk that was cut off are kept.
                inner = record.body[header.records_at :]
            for inner_record in records(inner):
                yield inner_record.op, inner_record.body

    def _meta_scan(self) -> SalvageScan:
        schemas: dict[int, tuple[str, str]] = {}
        scan = SalvageScan({}, {}, complete=True, stop_reason="")
        try:
            for op, body in self._walk(scan):
                if op == OP_SCHEMA:
                    (schema_id,) = struct.unpack_from("<H", body, 0)
                    name, pos = _string(body, 2)
                    _, pos = _string(body, pos)  # encoding
                    msgdef, _ = _string(body, pos)
                    schemas[schema_id] = (name, msgdef)
                elif op == OP_CHANNEL:
                    channel_id, schema_id = struct.unpack_from("<HH", body, 0)
                    topic, pos = _string(body, 4)
                    encoding, pos = _string(body, pos)
                    name, msgdef = schemas.get(schema_id, ("", ""))
                    scan.channels[channel_id] = SalvagedChannel(
                        channel_id, topic, name, msgdef, encoding
                    )
                elif op == OP_MESSAGE:
                    channel_id, _, log_time = struct.unpack_from("<HIQ", body, 0)
                    scan.counts[channel_id] = scan.counts.get(channel_id, 0) + 1
                    scan.start_ns = log_time if scan.start_ns is None else min(
                        scan.start_ns, log_time)
                    scan.end_ns = log_time if scan.end_ns is None else max(scan.end_ns, log_time)
        except (CutError, struct.error, ValueError, OSError) as exc:
            scan.complete = False
            scan.stop_reason = str(exc)
        return scan

    def messages(self, channel_ids: set[int]) -> Iterator[tuple[int, int, bytes]]:
        """(channel id, log time ns, CDR bytes) in file order, up to the first cut record;
        damaged chunks are skipped."""
        try:
            for op, body in self._walk():
                if op == OP_MESSAGE:
                    channel_id, _, log_time = struct.unpack_from("<HIQ", body, 0)
                    if channel_id in channel_ids:
                        yield channel_id, log_time, body[22:]
        except (CutError, struct.error, ValueError, OSError):
            return
