"""Open a rosbag2 (sqlite3 or mcap; a bag directory or one storage file) with ``rosbags``
and stream its raw messages, keeping whatever is readable of a damaged bag.

* A directory without ``metadata.yaml`` (the recorder was killed before writing it), or
  whose ``metadata.yaml`` is not usable (not YAML, wrong structure, missing fields), is
  read through its storage files (warning ``metadata_missing`` / ``metadata_invalid``).
* An MCAP file without footer/index (killed recording, cut copy) is read sequentially up
  to the first incomplete record (warning ``truncated``).
* MCAP CRCs are checked where the file has them: a summary (index) that fails its CRC
  makes the file be read sequentially; a chunk that fails its CRC is skipped and reading
  goes on after it (warning ``damaged``; the bag is not :attr:`BagSource.complete`).
* A read error in the middle of a bag ends the stream with warning ``truncated`` (an MCAP
  file is read on sequentially past the damage instead): what was read before is kept.
* Message types resolve only to classes of known interface packages
  (:func:`~dvlt_ros.bags.msgtypes.message_class`); every message of such a type is
  checked to deserialise before it is handed out (warning ``malformed_message``), and
  :meth:`BagSource.topic_problem` says why a topic cannot be used at all.

Topic remapping (``--remap FROM:=TO``) is applied here, so every later stage sees the
remapped names.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from rclpy.serialization import deserialize_message
from rosbags.rosbag2 import Reader

from dvlt_ros.bags.bag_metadata import metadata_problem
from dvlt_ros.bags.issues import BagError, IssueLog
from dvlt_ros.bags.mcap_crc import summary_crc_problem
from dvlt_ros.bags.mcap_salvage import McapSalvager, SalvageScan
from dvlt_ros.bags.msgtypes import UnknownMessageTypeError, message_class

STORAGE_SUFFIXES = (".mcap", ".db3")
#: Messages read to decide whether a topic's payloads deserialise at all.
PROBE_MESSAGES = 3


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


@dataclass(frozen=True)
class TopicProblem:
    """Why a topic cannot be used: ``code`` ``unknown_type`` or ``malformed_topic``."""

    code: str
    reason: str

    def __str__(self) -> str:
        return self.reason


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
        self.damaged = False
        self._classes: dict[str, type | UnknownMessageTypeError] = {}
        self._problems: dict[str, TopicProblem | None] = {}
        if not self.path.exists():
            raise BagError(f"bag {self.path} does not exist")
        self._open()
        self.topics = self._collect_topics()
        for name in sorted(set(self.remap) - self._raw_topic_names()):
            self.issues.warn("unknown_topic", f"--remap names {name}, which the bag does not "
                             f"have (topics: {', '.join(sorted(self._raw_topic_names()))})")

    # ------------------------------------------------------------------ opening
    def _open(self) -> None:
        if self.path.is_file():
            if self.path.suffix not in STORAGE_SUFFIXES:
                raise BagError(f"{self.path}: unknown bag format (expected a rosbag2 directory, "
                               "an .mcap or a .db3 file)")
            self._parts.append(self._open_file(self.path))
            return
        files = sorted(p for p in self.path.iterdir() if p.suffix in STORAGE_SUFFIXES)
        metadata = self.path / "metadata.yaml"
        if not metadata.exists():
            if not files:
                raise BagError(
                    f"{self.path} is not a rosbag2: no metadata.yaml and no .mcap/.db3 file in it"
                )
            self._read_files_directly(files, "metadata_missing",
                                      f"{self.path} has no metadata.yaml (was the recording "
                                      "interrupted?)")
            return
        problem = metadata_problem(metadata)
        if problem is not None:
            if not files:
                raise BagError(f"{metadata} cannot be used: {problem}; and {self.path} holds no "
                               ".mcap/.db3 file to read instead: restore the file from the "
                               "recording")
            self._read_files_directly(files, "metadata_invalid",
                                      f"{metadata} cannot be used: {problem}")
            return
        if any(summary_crc_problem(f) for f in files if f.suffix == ".mcap"):
            self._parts = [self._open_file(file) for file in files]
            return
        try:
            self._parts.append(self._open_reader(self.path))
        except BagError:
            if not files:
                raise
            # A damaged storage file inside a complete directory: read the files one by one.
            self._parts = [self._open_file(file) for file in files]

    def _read_files_directly(self, files: list[Path], code: str, reason: str) -> None:
        self.issues.warn(code, f"{reason}; reading its storage files directly: "
                         f"{', '.join(f.name for f in files)}")
        self._parts = [self._open_file(file) for file in files]

    def _open_file(self, file: Path) -> _Part:
        if file.suffix == ".mcap" and (problem := summary_crc_problem(file)) is not None:
            self.damaged = True
            self.issues.warn("damaged", f"{file.name}: {problem}; reading it sequentially, "
                             "every chunk checked against its CRC")
            return self._salvage(file, None)
        try:
            return self._open_reader(file)
        except BagError as exc:
            if file.suffix != ".mcap":
                raise
            return self._salvage(file, exc)

    def _salvage(self, file: Path, reason: BagError | None) -> _Part:
        """A part read sequentially by :class:`McapSalvager`; ``reason``: why the index
        reader refused the file (None: its summary is damaged)."""
        try:
            salvager = McapSalvager(file)
        except (OSError, ValueError) as exc:
            raise BagError(f"cannot read {file}: {reason or 'damaged summary'}; {exc}") from None
        scan = salvager.scan
        if reason is not None:
            kept = sum(scan.counts.values())
            self.truncated = True
            self.issues.warn("truncated",
                             f"{file.name} is incomplete ({reason}); reading it sequentially: "
                             f"{kept} messages are readable"
                             + (f", the rest is cut off ({scan.stop_reason})"
                                if not scan.complete else ""))
        self._report_damage(file, scan)
        part = _Part(file, salvager=salvager)
        for cid, channel in scan.channels.items():
            part.topics.setdefault(channel.topic, []).append(
                (cid, channel.msgtype, scan.counts.get(cid, 0), "volatile"))
        return part

    def _report_damage(self, file: Path, scan: SalvageScan) -> None:
        for where in scan.damaged:
            self.damaged = True
            self.issues.warn("damaged", f"{file.name} is damaged: {where}")

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
    def complete(self) -> bool:
        """Everything in the bag was readable so far: not cut off, no damage found."""
        return not self.truncated and not self.damaged

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

    def message_class(self, topic: str) -> type:
        """The rclpy class of ``topic``'s type; :class:`UnknownMessageTypeError` when it
        does not resolve to a known interface package's message."""
        if topic not in self._classes:
            try:
                self._classes[topic] = message_class(self.topics[topic].msgtype)
            except UnknownMessageTypeError as exc:
                self._classes[topic] = exc
        found = self._classes[topic]
        if isinstance(found, UnknownMessageTypeError):
            raise found
        return found

    def topic_problem(self, topic: str) -> TopicProblem | None:
        """Why ``topic`` cannot be used, or None: its type is unknown, or none of its
        first messages deserialises as that type (damaged, or recorded with another
        definition of the type)."""
        if topic not in self._problems:
            self._problems[topic] = self._find_problem(topic)
        return self._problems[topic]

    def _find_problem(self, topic: str) -> TopicProblem | None:
        try:
            cls = self.message_class(topic)
        except UnknownMessageTypeError as exc:
            return TopicProblem("unknown_type", str(exc))
        probed = 0
        for message in self._raw_messages({topic}, None, report=False):
            if _deserialises(message.raw, cls):
                return None
            probed += 1
            if probed == PROBE_MESSAGES:
                break
        if probed == 0:
            return None
        return TopicProblem(
            "malformed_topic",
            f"its first {probed} message(s) do not deserialise as {self.topics[topic].msgtype} "
            "(a damaged bag, or one recorded with another definition of that type)")

    def messages(self, topics: Iterable[str] | None = None,
                 start_ns: int | None = None) -> Iterator[BagMessage]:
        """Messages of ``topics`` (remapped names; all when None) in log-time order per
        storage file, from ``start_ns`` on. A read error ends the stream (``truncated``);
        a message of a known type that does not deserialise is skipped
        (``malformed_message``)."""
        wanted = set(self.topics if topics is None else topics)
        for message in self._raw_messages(wanted, start_ns):
            try:
                cls = self.message_class(message.topic)
            except UnknownMessageTypeError:
                cls = None  # nothing here reads it; players skip such topics
            if cls is not None and not _deserialises(message.raw, cls):
                self.damaged = True
                self.issues.warn("malformed_message",
                                 f"the message logged at {message.log_ns} ns does not "
                                 f"deserialise as {message.msgtype}: skipped",
                                 message.topic, message.log_ns)
                continue
            yield message

    def _raw_messages(self, wanted: set[str], start_ns: int | None,
                      report: bool = True) -> Iterator[BagMessage]:
        for part in self._parts:
            selected = {
                name: entries[0] for name, entries in part.topics.items()
                if self.remap.get(name, name) in wanted
            }
            if not selected:
                continue
            yield from self._part_messages(part, selected, start_ns, report)

    def _part_messages(self, part: _Part, selected: dict, start_ns: int | None,
                       report: bool) -> Iterator[BagMessage]:
        # connection (reader) or channel (salvage) id -> (remapped topic, type)
        names = {
            (entry[0].id if part.reader is not None else entry[0]): (self.remap.get(n, n), entry[1])
            for n, entry in selected.items()
        }
        count, last_ns = 0, -1
        try:
            if part.reader is not None:
                conns = [entry[0] for entry in selected.values()]
                for conn, log_ns, raw in part.reader.messages(conns, start=start_ns):
                    topic, msgtype = names[conn.id]
                    count, last_ns = count + 1, log_ns
                    yield BagMessage(topic, msgtype, log_ns, raw)
            else:
                assert part.salvager is not None
                yield from self._salvaged(part.salvager, names, start_ns)
        except Exception as exc:  # a damaged page/chunk in the middle of the file
            mcaps = _mcap_files(part.path)
            if not report:
                return
            if not mcaps:
                self.truncated = True
                self.issues.warn("truncated",
                                 f"{part.path.name}: reading stopped after {count} messages: "
                                 f"{exc}; the messages before are kept")
                return
            self.damaged = True
            self.issues.warn("damaged", f"{part.path.name}: reading failed after {count} "
                             f"messages ({exc}); reading on sequentially past the damage")
            yield from self._read_on(mcaps, selected, max(last_ns + 1, start_ns or 0))

    def _salvaged(self, salvager: McapSalvager, names: dict, start_ns: int | None
                  ) -> Iterator[BagMessage]:
        for cid, log_ns, raw in salvager.messages(set(names)):
            if start_ns is not None and log_ns < start_ns:
                continue
            topic, msgtype = names[cid]
            yield BagMessage(topic, msgtype, log_ns, raw)

    def _read_on(self, files: list[Path], selected: dict, from_ns: int
                 ) -> Iterator[BagMessage]:
        """The messages of ``selected`` logged from ``from_ns`` on, read sequentially from
        ``files`` (the index reader, which failed, yields in log-time order: everything
        before was handed out already). Damaged chunks are reported and skipped."""
        wanted = {(bag_name, entry[1]): self.remap.get(bag_name, bag_name)
                  for bag_name, entry in selected.items()}
        for file in files:
            try:
                salvager = McapSalvager(file)
            except (OSError, ValueError) as exc:
                self.issues.warn("truncated", f"{file.name} cannot be read on: {exc}")
                self.truncated = True
                continue
            try:
                self._report_damage(file, salvager.scan)
                names = {cid: (wanted[(c.topic, c.msgtype)], c.msgtype)
                         for cid, c in salvager.scan.channels.items()
                         if (c.topic, c.msgtype) in wanted}
                yield from self._salvaged(salvager, names, from_ns)
            finally:
                salvager.close()

    def close(self) -> None:
        for part in self._parts:
            if part.reader is not None and part.reader.is_open:
                part.reader.close()
            if part.salvager is not None:
                part.salvager.close()
        self._parts = []

    def __enter__(self) -> BagSource:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _deserialises(raw: bytes, cls: type) -> bool:
    try:
        deserialize_message(raw, cls)
    except (RuntimeError, ValueError):  # rclpy raises RMWError (a RuntimeError)
        return False
    return True


def _mcap_files(path: Path) -> list[Path]:
    """The MCAP storage files of a part (one file, or a bag directory's)."""
    if path.is_file():
        return [path] if path.suffix == ".mcap" else []
    return sorted(path.glob("*.mcap"))
