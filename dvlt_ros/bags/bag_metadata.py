"""Checks a rosbag2 ``metadata.yaml`` before it is trusted: it must be YAML with the
structure and fields a reader needs. A file that fails says why, in one line, so that the
bag can be read through its self-describing storage files instead (with a warning)."""

from __future__ import annotations

from pathlib import Path, PurePath

import yaml

#: storage plugins whose files this project reads
STORAGE_IDS = ("mcap", "sqlite3")
_TOPIC_FIELDS = ("name", "type", "serialization_format")


def _field(mapping: dict, key: str, kind: type | tuple[type, ...], where: str):
    if key not in mapping:
        raise ValueError(f"{where}{key} is missing")
    value = mapping[key]
    if not isinstance(value, kind) or isinstance(value, bool):
        raise ValueError(f"{where}{key} is {type(value).__name__}, not the expected "
                         f"{getattr(kind, '__name__', 'value')}")
    return value


def metadata_problem(path: Path) -> str | None:
    """Why the ``metadata.yaml`` at ``path`` cannot be used, or None when it can."""
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        return f"it cannot be read as text ({exc})"
    try:
        document = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark is not None else ""
        return f"it is not valid YAML{where}"
    try:
        if not isinstance(document, dict):
            raise ValueError(f"it holds a {type(document).__name__}, not the "
                             "rosbag2_bagfile_information mapping")
        info = _field(document, "rosbag2_bagfile_information", dict, "")
        _check_info(info, path.parent)
    except ValueError as exc:
        return str(exc)
    return None


def _check_info(info: dict, bag_dir: Path) -> None:
    where = "rosbag2_bagfile_information."
    version = _field(info, "version", int, where)
    if not 1 <= version <= 9:
        raise ValueError(f"{where}version {version} is not a rosbag2 version this reader "
                         "knows (1..9)")
    storage = _field(info, "storage_identifier", str, where)
    if storage not in STORAGE_IDS:
        raise ValueError(f"{where}storage_identifier {storage!r} is not one of "
                         f"{', '.join(STORAGE_IDS)}")
    files = _field(info, "relative_file_paths", list, where)
    if not files or not all(isinstance(name, str) for name in files):
        raise ValueError(f"{where}relative_file_paths must list the storage files")
    missing = [name for name in files if not (bag_dir / PurePath(name).name).exists()]
    if missing:
        raise ValueError(f"it lists storage files that are not there: {', '.join(missing)}")
    _field(info, "message_count", int, where)
    _field(_field(info, "duration", dict, where), "nanoseconds", int, f"{where}duration.")
    _field(_field(info, "starting_time", dict, where), "nanoseconds_since_epoch", int,
           f"{where}starting_time.")
    topics = _field(info, "topics_with_message_count", list, where)
    for index, entry in enumerate(topics):
        at = f"{where}topics_with_message_count[{index}]."
        if not isinstance(entry, dict):
            raise ValueError(f"{at[:-1]} is not a mapping")
        _field(entry, "message_count", int, at)
        topic = _field(entry, "topic_metadata", dict, at)
        for key in _TOPIC_FIELDS:
            _field(topic, key, str, f"{at}topic_metadata.")
