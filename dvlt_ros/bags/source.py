"""Open a rosbag2 (sqlite3 or mcap; a bag directory or one storage file) with ``rosbags``
and stream its raw messages, keeping whatever is readable of a damaged bag.

* A directory without ``metadata.yaml`` (the recorder was killed before writing it) is
  read through its storage files (warning ``metadata_missing``).
* An MCAP file without footer/index (killed recording, cut copy) is read sequentially up
  to the first incomplete record (warning ``truncated``).
* A read error in the middle of a bag ends the stream with warning ``truncated``: what
  was read before is kept.

Topic remapping (``--remap FROM:=TO``) is applied here, so every later stage sees the
remapped names.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from rosbags.rosbag2 import Reader

from dvlt_ros.bags.issues import BagError, IssueLog
from dvlt_ros.bags.mcap_salvage import McapSalvager

STORAGE_SUFFIXES = (".mcap", ".db3")


@dataclass(frozen=True)
class TopicInfo:
    """A topic of the bag (remapped name), its type, message count and recorded QoS."""

    name: str
    msgtype: str
    count: int
    durability: str = "volatile"


@dataclass(frozen=True)
class BagMessage:
    """One message: remapped topic, type, log (receive) time in ns, and CDR bytes."""

    topic: str
    msgtype: str
    log_ns: int
    raw: bytes


@dataclass
class _Part:
    """One storage file (or a whole bag directory) with its own reader."""

    path: Path
    reader: Reader | None = None
    salvager: McapSalvager | None = None
    # bag topic name -> [(connection or channel id, msgtype, count, durability)]
    topics: dict[str, list[tuple[object, str, int, str]]] = field(default_factory=dict)


def parse_remaps(remaps: Iterable[str]) -> dict[str, str]:
    """``["/a:=/b", ...]`` -> ``{"/a": "/b"}``; a leading slash is added where missing."""
    out = {}
    for item in remaps:
        if ":=" not in item:
            raise BagError(f"remapping {item!r} must have the form FROM:=TO (e.g. "
                           "/front/image:=/cam0/image_raw)")
        src, dst = (s.strip() for s in item.split(":=", 1))
        if not src or not dst:
            raise BagError(f"remapping {item!r} has an empty side")
        out["/" + src.lstrip("/")] = "/" + dst.lstrip("/")
    return out


class BagSource:
    """A readable bag. Use as a context manager; see the module docstring."""

    def __init__(self, path: str | Path, issues: IssueLog | None = None,
                 remap: Mapping[str, str] | None = None) -> None:
        self.path = Path(path)
        self.issues = issues or IssueLog()
        self.remap = dict(remap or {})
        self._parts: list[_Part] = []
        self.truncated = False
        if not self.path.exists():
            raise BagError(f"bag {self.path} does not exist")
        self._open()
        self.topics = self._collect_topics()
        for name in sorted(set(self.remap) - self._raw_topic_names()):
            self.issues.warn("unknown_topic", f"--remap names {name}, which the bag does not "
                             f"have (topics: {', '.join(sorted(self._raw_topic_names()))})")

    # ------------------------------------------------------------------ opening
    def _open(self) -> None:
        if self.path.is_dir() and not (self.path / "metadata.yaml").exists():
            files = sorted(p for p in self.path.iterdir() if p.suffix in STORAGE_SUFFIXES)
            if not files:
                raise BagError(
                    f"{self.path} is not a rosbag2: no metadata.yaml and no .mcap/.db3 file in it"
                )
            self.issues.warn("metadata_missing",
                             f"{self.path} has no metadata.yaml (was the recording interrupted?); "
                             f"reading its storage files directly: "
                             f"{', '.join(f.name for f in files)}")
            for file in files:
                self._parts.append(self._open_file(file))
            return
        if self.path.is_file() and self.path.suffix not in STORAGE_SUFFIXES:
            raise BagError(f"{self.path}: unknown bag format (expected a rosbag2 directory, "
                           "an .mcap or a .db3 file)")
        try:
            self._parts.append(self._open_reader(self.path))
        except BagError:
            if not self.path.is_dir():
                raise
            # A damaged storage file inside a complete directory: read the files one by one.
            files = sorted(p for p in self.path.iterdir() if p.suffix in STORAGE_SUFFIXES)
            self._parts = [self._open_file(file) for file in files]

    def _open_file(self, file: Path) -> _Part:
        try:
            return self._open_reader(file)
        except BagError as exc:
            if file.suffix != ".mcap":
                raise
            reason = exc
        try:
            salvager = McapSalvager(file)
        except (OSError, ValueError) as exc:
            raise BagError(f"cannot read {file}: {reason}; {exc}") from None
        scan = salvager.scan
        kept = sum(scan.counts.values())
        self.truncated = True
        self.issues.warn("truncated",
                         f"{file.name} is incomplete ({reason}); reading it sequentially: "
                         f"{kept} messages are readable"
                         + (f", the rest is cut off ({scan.stop_reason})" if not scan.complete
                            else ""))
        part = _Part(file, salvager=salvager)
        for cid, channel in scan.channels.items():
            part.topics.setdefault(channel.topic, []).append(
                (cid, channel.msgtype, scan.counts.get(cid, 0), "volatile"))
        return part

    def _open_reader(self, path: Path) -> _Part:
        try:
            reader = Reader(path)
            reader.open()
        except Exception as exc:  # rosbags raises ReaderError, sqlite and yaml errors
            hint = ""
            if path.suffix == ".db3" or (path.is_dir() and any(path.glob("*.db3"))):
                hint = (" (a damaged sqlite3 bag cannot be read partially: try "
                        "`sqlite3 <file>.db3 .recover | sqlite3 fixed.db3`, or record with "
                        "mcap storage, which survives interruptions)")
            raise BagError(f"cannot open bag {path}: {exc}{hint}") from exc
        part = _Part(path, reader=reader)
        for conn in reader.connections:
            qos = conn.ext.offered_qos_profiles if hasattr(conn.ext, "offered_qos_profiles") else []
            durable = any(getattr(q.durability, "name", "") == "TRANSIENT_LOCAL" for q in qos)
            part.topics.setdefault(conn.topic, []).append(
                (conn, conn.msgtype, conn.msgcount, "transient_local" if durable else "volatile"))
        return part

    def _raw_topic_names(self) -> set[str]:
        return {name for part in self._parts for name in part.topics}

    def _collect_topics(self) -> dict[str, TopicInfo]:
        topics: dict[str, TopicInfo] = {}
        for part in self._parts:
            for name, entries in part.topics.items():
                remapped = self.remap.get(name, name)
                types = {e[1] for e in entries}
                if len(types) > 1:
                    self.issues.warn("mixed_types",
                                     f"{name} is recorded with several types "
                                     f"({', '.join(sorted(types))}); only {entries[0][1]} is used",
                                     remapped)
                old = topics.get(remapped)
                count = sum(e[2] for e in entries) + (old.count if old else 0)
                durability = "transient_local" if any(
                    e[3] == "transient_local" for e in entries) else "volatile"
                topics[remapped] = TopicInfo(remapped, entries[0][1], count, durability)
        return topics

    # ------------------------------------------------------------------ reading
    @property
    def message_count(self) -> int:
        return sum(t.count for t in self.topics.values())

    def time_range_ns(self) -> tuple[int, int] | None:
        """(first, last) log time over all parts, or None for an empty bag."""
        starts, ends = [], []
        for part in self._parts:
            if part.reader is not None and part.reader.message_count:
                starts.append(part.reader.start_time)
                ends.append(part.reader.end_time - 1)
            elif part.salvager is not None and part.salvager.scan.start_ns is not None:
                starts.append(part.salvager.scan.start_ns)
                ends.append(part.salvager.scan.end_ns)
        return (min(starts), max(ends)) if starts else None

    def messages(self, topics: Iterable[str] | None = None,
                 start_ns: int | None = None) -> Iterator[BagMessage]:
        """Messages of ``topics`` (remapped names; all when None) in log-time order per
        storage file, from ``start_ns`` on. A read error ends the stream (``truncated``)."""
        wanted = set(self.topics if topics is None else topics)
        for part in self._parts:
            selected = {
                name: entries[0] for name, entries in part.topics.items()
                if self.remap.get(name, name) in wanted
            }
            if not selected:
                continue
            yield from self._part_messages(part, selected, start_ns)

    def _part_messages(self, part: _Part, selected: dict, start_ns: int | None
                       ) -> Iterator[BagMessage]:
        # connection (reader) or channel (salvage) id -> (remapped topic, type)
        names = {
            (entry[0].id if part.reader is not None else entry[0]): (self.remap.get(n, n), entry[1])
            for n, entry in selected.items()
        }
        count = 0
        try:
            if part.reader is not None:
                conns = [entry[0] for entry in selected.values()]
                for conn, log_ns, raw in part.reader.messages(conns, start=start_ns):
                    topic, msgtype = names[conn.id]
                    count += 1
                    yield BagMessage(topic, msgtype, log_ns, raw)
            else:
                assert part.salvager is not None
                for cid, log_ns, raw in part.salvager.messages(set(names)):
                    if start_ns is not None and log_ns < start_ns:
                        continue
                    topic, msgtype = names[cid]
                    count += 1
                    yield BagMessage(topic, msgtype, log_ns, raw)
        except Exception as exc:  # a damaged page/chunk in the middle of the file
            self.truncated = True
            self.issues.warn("truncated",
                             f"{part.path.name}: reading stopped after {count} messages: {exc}; "
                             "the messages before are kept")

    def close(self) -> None:
        for part in self._parts:
            if part.reader is not None and part.reader.is_open:
                part.reader.close()
        self._parts = []

    def __enter__(self) -> BagSource:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
