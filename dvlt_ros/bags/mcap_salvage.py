"""Read what is readable of an MCAP file whose end is missing (a recording that was killed).

An MCAP file that was not closed has no footer and no summary, so index-based readers
refuse it. The data section is still a sequence of records (``opcode u8, length u64,
body``): this module walks it from the start, decoding schemas, channels, messages and
chunks (uncompressed, lz4 or zstd), and stops at the first record that is cut off. Record
layouts follow the MCAP specification (https://mcap.dev/spec).
"""

from __future__ import annotations

import struct
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

MAGIC = b"\x89MCAP0\r\n"
_OP_SCHEMA, _OP_CHANNEL, _OP_MESSAGE, _OP_CHUNK = 0x03, 0x04, 0x05, 0x06
_OP_FOOTER, _OP_DATA_END = 0x02, 0x0F


@dataclass(frozen=True)
class SalvagedChannel:
    id: int
    topic: str
    msgtype: str
    msgdef: str
    encoding: str


@dataclass
class SalvageScan:
    """Result of a pass: channels, per-channel message counts, where reading stopped."""

    channels: dict[int, SalvagedChannel]
    counts: dict[int, int]
    complete: bool
    stop_reason: str
    start_ns: int | None = None
    end_ns: int | None = None


class _CutError(Exception):
    """A record extends past the end of the readable data."""


def _string(body: bytes | memoryview, pos: int) -> tuple[str, int]:
    (size,) = struct.unpack_from("<I", body, pos)
    end = pos + 4 + size
    if end > len(body):
        raise _CutError("string beyond record end")
    return bytes(body[pos + 4 : end]).decode("utf-8", "replace"), end


def _decompress(data: bytes, compression: str) -> bytes:
    if compression == "":
        return data
    if compression == "zstd":
        try:
            from compression import zstd  # type: ignore[import-not-found]
        except ImportError:
            from backports import zstd  # type: ignore[import-not-found,no-redef]
        return zstd.decompress(data)
    if compression == "lz4":
        from lz4.frame import decompress

        return decompress(data)
    raise _CutError(f"unsupported chunk compression {compression!r}")


def _records(data: memoryview, allow_cut_chunk: bool = False
             ) -> Iterator[tuple[int, memoryview, bool]]:
    """(opcode, body, complete) of each record. A cut-off record raises :class:`_CutError`,
    except a cut chunk when ``allow_cut_chunk`` (its readable part is returned)."""
    pos = 0
    while pos < len(data):
        if pos + 9 > len(data):
            raise _CutError(f"record header cut off at byte {pos}")
        op = data[pos]
        (size,) = struct.unpack_from("<Q", data, pos + 1)
        end = pos + 9 + size
        if end > len(data):
            if allow_cut_chunk and op == _OP_CHUNK:
                yield op, data[pos + 9 :], False
            raise _CutError(f"record of {size} bytes at byte {pos} is cut off")
        yield op, data[pos + 9 : end], True
        pos = end


class McapSalvager:
    """Sequential reader of a possibly truncated MCAP file (see the module docstring)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        raw = path.read_bytes()
        if not raw.startswith(MAGIC):
            raise ValueError(f"{path} is not an MCAP file (no MCAP magic at its start)")
        self._data = memoryview(raw)[len(MAGIC) :]
        self.scan = self._meta_scan()

    def _walk(self) -> Iterator[tuple[int, memoryview]]:
        """Top-level records, and the records inside chunks in their place."""
        for op, body, complete in _records(self._data, allow_cut_chunk=True):
            if op == _OP_CHUNK:
                # start time, end time, uncompressed size (u64), crc (u32), compression
                compression, pos = _string(body, 28)
                (size,) = struct.unpack_from("<Q", body, pos)
                payload = bytes(body[pos + 8 : pos + 8 + size])
                if not complete and compression != "":
                    raise _CutError(f"the last {compression} chunk is cut off")
                # The readable records of an uncompressed chunk that was cut off are kept.
                for inner, inner_body, _ in _records(memoryview(_decompress(payload,
                                                                            compression))):
                    yield inner, inner_body
            elif op in (_OP_FOOTER, _OP_DATA_END):
                return
            else:
                yield op, body

    def _meta_scan(self) -> SalvageScan:
        schemas: dict[int, tuple[str, str]] = {}
        scan = SalvageScan({}, {}, complete=True, stop_reason="")
        try:
            for op, body in self._walk():
                if op == _OP_SCHEMA:
                    (schema_id,) = struct.unpack_from("<H", body, 0)
                    name, pos = _string(body, 2)
                    _, pos = _string(body, pos)  # encoding
                    msgdef, _ = _string(body, pos)
                    schemas[schema_id] = (name, msgdef)
                elif op == _OP_CHANNEL:
                    channel_id, schema_id = struct.unpack_from("<HH", body, 0)
                    topic, pos = _string(body, 4)
                    encoding, pos = _string(body, pos)
                    name, msgdef = schemas.get(schema_id, ("", ""))
                    scan.channels[channel_id] = SalvagedChannel(
                        channel_id, topic, name, msgdef, encoding
                    )
                elif op == _OP_MESSAGE:
                    channel_id, _, log_time = struct.unpack_from("<HIQ", body, 0)
                    scan.counts[channel_id] = scan.counts.get(channel_id, 0) + 1
                    scan.start_ns = log_time if scan.start_ns is None else min(
                        scan.start_ns, log_time)
                    scan.end_ns = log_time if scan.end_ns is None else max(scan.end_ns, log_time)
        except (_CutError, struct.error, ValueError, OSError) as exc:
            scan.complete = False
            scan.stop_reason = str(exc)
        return scan

    def messages(self, channel_ids: set[int]) -> Iterator[tuple[int, int, bytes]]:
        """(channel id, log time ns, CDR bytes) in file order, up to the first cut record."""
        try:
            for op, body in self._walk():
                if op == _OP_MESSAGE:
                    channel_id, _, log_time = struct.unpack_from("<HIQ", body, 0)
                    if channel_id in channel_ids:
                        yield channel_id, log_time, bytes(body[22:])
        except (_CutError, struct.error, ValueError, OSError):
            return
