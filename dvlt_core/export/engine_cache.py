"""On-disk cache of TensorRT engines, keyed by everything that makes an engine valid.

An engine is only valid for the GPU model and compute capability it was built on, the
TensorRT version that built it, the precision, the S profile, the image size, the weights and
the ONNX graph. :class:`EngineKey` holds these; its digest names the files, so a change of any
field maps to another file and never loads a stale engine.

Each entry is ``<graph>-<precision>-<digest>.engine`` plus a JSON sidecar with the key, the
engine's size and sha256. Deserialising a TensorRT engine runs code from it (plugins), so
:meth:`EngineCache.load` returns bytes only after the sidecar passes a strict schema check, its
key equals the requested key, the file lies inside the cache folder (no links) and the sha256
matches. Both files are written atomically, the sidecar last: a crash leaves no valid entry.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import re
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from dvlt_core.atomic import write_atomic
from dvlt_core.model.precision import PRECISIONS

ENGINE_SCHEMA = "dvlt-tensorrt-engine"
ENGINE_SCHEMA_VERSION = 1
ENGINE_PRECISIONS = PRECISIONS  # an engine is built at any precision the model runs at
MISMATCH_POLICIES = ("rebuild", "refuse")
_LAYER_POLICY = re.compile(r"^(float32|typed-v\d+(-fp32-softmax)?)$")
_GRAPH_NAME = re.compile(r"^(encoder|decoder|step(_block\d{2})?)$")
_ENTRY_FILE = re.compile(r"^(encoder|decoder|step(_block\d{2})?)-(fp16|bf16|fp32)-[0-9a-f]{16}"
                         r"\.(engine|json)$")
_HEX64 = re.compile(r"^[0-9a-f]{64}$")


class EngineCacheError(RuntimeError):
    """A cache entry is missing, stale, corrupt or unsafe; the message says why."""


class EngineMissingError(EngineCacheError):
    """No valid engine for the requested key (possibly engines for other keys exist)."""


@dataclass(frozen=True)
class EngineKey:
    """Everything an engine depends on. ``graph``: encoder, step[_blockNN] or decoder;
    ``layer_policy``: ``float32`` (fp32 engines), or ``typed-v<N>[-fp32-softmax]``: the version
    of the mixed-precision rules (:mod:`dvlt_core.export.mixed_precision`) that typed the graph,
    and whether softmax was kept in float32."""

    graph: str
    gpu_name: str
    compute_capability: str
    tensorrt_version: str
    precision: str
    layer_policy: str
    views_min: int
    views_opt: int
    views_max: int
    height: int
    width: int
    checkpoint_sha256: str
    onnx_sha256: str

    def __post_init__(self) -> None:
        _validate_key(dataclasses.asdict(self))

    def as_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @property
    def digest(self) -> str:
        return hashlib.sha256(json.dumps(self.as_dict(), sort_keys=True).encode()).hexdigest()

    @property
    def stem(self) -> str:
        return f"{self.graph}-{self.precision}-{self.digest[:16]}"

    def differences(self, other: EngineKey) -> list[str]:
        """Human-readable ``field: cached X, wanted Y`` for every field that differs."""
        mine, theirs = self.as_dict(), other.as_dict()
        return [
            f"{name}: cached {theirs[name]!r}, wanted {mine[name]!r}"
            for name in mine
            if mine[name] != theirs[name]
        ]


_KEY_TYPES: dict[str, type] = {f.name: f.type for f in dataclasses.fields(EngineKey)}
_KEY_PYTYPES = {name: (int if kind in ("int", int) else str) for name, kind in _KEY_TYPES.items()}


def _validate_key(data: Any) -> None:
    if not isinstance(data, dict) or set(data) != set(_KEY_PYTYPES):
        raise ValueError(f"engine key must have exactly the fields {sorted(_KEY_PYTYPES)}")
    for name, kind in _KEY_PYTYPES.items():
        value = data[name]
        if isinstance(value, bool) or not isinstance(value, kind):
            raise ValueError(f"engine key field {name} must be {kind.__name__}, got {value!r}")
    if not _GRAPH_NAME.match(data["graph"]):
        raise ValueError(f"engine key graph {data['graph']!r} is not a DVLT graph name")
    if data["precision"] not in ENGINE_PRECISIONS:
        raise ValueError(f"engine precision must be one of {ENGINE_PRECISIONS}")
    if not _LAYER_POLICY.match(data["layer_policy"]):
        raise ValueError("engine layer_policy must be float32, typed-v<N> or "
                         "typed-v<N>-fp32-softmax")
    if not 1 <= data["views_min"] <= data["views_opt"] <= data["views_max"]:
        raise ValueError("engine key views must satisfy 1 <= min <= opt <= max")
    if data["height"] < 1 or data["width"] < 1:
        raise ValueError("engine key height and width must be positive")
    for name in ("checkpoint_sha256", "onnx_sha256"):
        if not _HEX64.match(data[name]):
            raise ValueError(f"engine key {name} must be a sha256 hex digest")


@dataclass(frozen=True)
class EngineMetadata:
    """The JSON sidecar of one cached engine."""

    key: EngineKey
    engine_file: str
    engine_sha256: str
    engine_bytes: int
    created_unix: float
    build_seconds: float

    def to_json(self) -> dict[str, Any]:
        return {
            "schema": ENGINE_SCHEMA,
            "schema_version": ENGINE_SCHEMA_VERSION,
            "key": self.key.as_dict(),
            "engine_file": self.engine_file,
            "engine_sha256": self.engine_sha256,
            "engine_bytes": self.engine_bytes,
            "created_unix": self.created_unix,
            "build_seconds": self.build_seconds,
        }

    @classmethod
    def from_json(cls, data: Any) -> EngineMetadata:
        """Parse a sidecar, refusing anything outside the schema (ValueError says what)."""
        fields = {"schema", "schema_version", "key", "engine_file", "engine_sha256",
                  "engine_bytes", "created_unix", "build_seconds"}
        if not isinstance(data, dict) or set(data) != fields:
            raise ValueError(f"metadata must be an object with exactly the fields {sorted(fields)}")
        if data["schema"] != ENGINE_SCHEMA or data["schema_version"] != ENGINE_SCHEMA_VERSION:
            raise ValueError(
                f"metadata schema {data['schema']!r} v{data['schema_version']!r} is not "
                f"{ENGINE_SCHEMA!r} v{ENGINE_SCHEMA_VERSION}"
            )
        _validate_key(data["key"])
        key = EngineKey(**data["key"])
        if data["engine_file"] != f"{key.stem}.engine":
            raise ValueError(f"engine_file {data['engine_file']!r} is not {key.stem}.engine")
        if not isinstance(data["engine_sha256"], str) or not _HEX64.match(data["engine_sha256"]):
            raise ValueError("engine_sha256 must be a sha256 hex digest")
        size = data["engine_bytes"]
        if isinstance(size, bool) or not isinstance(size, int) or size <= 0:
            raise ValueError("engine_bytes must be a positive int")
        for name in ("created_unix", "build_seconds"):
            if isinstance(data[name], bool) or not isinstance(data[name], int | float):
                raise ValueError(f"{name} must be a number")
        return cls(key, data["engine_file"], data["engine_sha256"], size,
                   float(data["created_unix"]), float(data["build_seconds"]))


class EngineCache:
    """Engines and their sidecars in one folder (created on first write)."""

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root).expanduser().absolute()

    def engine_path(self, key: EngineKey) -> Path:
        return self.root / f"{key.stem}.engine"

    def metadata_path(self, key: EngineKey) -> Path:
        return self.root / f"{key.stem}.json"

    def timing_cache_path(self, gpu_name: str, compute_capability: str, trt_version: str) -> Path:
        """TensorRT timing cache shared by all builds on one GPU model and TensorRT version."""
        ident = json.dumps([gpu_name, compute_capability, trt_version]).encode()
        return self.root / f"timing-{hashlib.sha256(ident).hexdigest()[:16]}.cache"

    def store(self, key: EngineKey, engine: bytes, build_seconds: float = 0.0) -> Path:
        """Write the engine, then its sidecar, each atomically. Returns the engine path."""
        if not engine:
            raise EngineCacheError("refusing to cache an empty engine")
        self.root.mkdir(parents=True, exist_ok=True)
        meta = EngineMetadata(
            key=key,
            engine_file=f"{key.stem}.engine",
            engine_sha256=hashlib.sha256(engine).hexdigest(),
            engine_bytes=len(engine),
            created_unix=time.time(),
            build_seconds=float(build_seconds),
        )
        engine_path = self.engine_path(key)
        write_atomic(engine_path, lambda p: p.write_bytes(engine))
        text = json.dumps(meta.to_json(), indent=2, sort_keys=True) + "\n"
        write_atomic(self.metadata_path(key), lambda p: p.write_text(text))
        return engine_path

    def remove(self, key: EngineKey) -> None:
        """Delete an entry (sidecar first, so a half-removed entry is never valid)."""
        self.metadata_path(key).unlink(missing_ok=True)
        self.engine_path(key).unlink(missing_ok=True)

    def clear(self) -> int:
        """Delete every engine and sidecar named like an entry, valid or not (sidecars first);
        other files stay. Returns how many files were deleted."""
        if not self.root.is_dir():
            return 0
        files = [p for p in self.root.iterdir() if _ENTRY_FILE.match(p.name) and
                 (p.is_file() or p.is_symlink())]
        for path in sorted(files, key=lambda p: p.suffix != ".json"):
            path.unlink()
        return len(files)

    def load(self, key: EngineKey) -> bytes:
        """The verified engine bytes for ``key``, or :class:`EngineCacheError` saying why not."""
        meta_path = self.metadata_path(key)
        if not meta_path.is_file():
            raise EngineMissingError(self._missing_message(key))
        meta = self._read_metadata(meta_path)
        if meta.key != key:
            raise EngineCacheError(
                f"{meta_path} describes another engine ({'; '.join(key.differences(meta.key))});"
                " delete it"
            )
        path = self._safe_path(meta.engine_file)
        data = path.read_bytes()
        if len(data) != meta.engine_bytes or hashlib.sha256(data).hexdigest() != meta.engine_sha256:
            raise EngineCacheError(
                f"{path} does not match the size/sha256 in its metadata (truncated or modified);"
                " refusing to deserialise it: delete both files and rebuild"
            )
        return data

    def entries(self) -> list[EngineMetadata]:
        """Every entry whose sidecar passes the schema check (others are skipped)."""
        found = []
        if not self.root.is_dir():
            return found
        for meta_path in sorted(self.root.glob("*.json")):
            try:
                found.append(self._read_metadata(meta_path))
            except EngineCacheError:
                continue
        return found

    def _read_metadata(self, path: Path) -> EngineMetadata:
        if path.is_symlink():
            raise EngineCacheError(f"{path} is a symbolic link; cache entries must be plain files")
        try:
            return EngineMetadata.from_json(json.loads(path.read_text()))
        except (OSError, json.JSONDecodeError, ValueError, TypeError) as exc:
            raise EngineCacheError(
                f"invalid engine metadata {path}: {exc}; delete it and rebuild"
            ) from exc

    def _safe_path(self, file_name: str) -> Path:
        path = self.root / file_name
        if path.is_symlink() or path.resolve().parent != self.root.resolve():
            raise EngineCacheError(f"{path} is not a plain file inside {self.root}; refusing it")
        if not path.is_file():
            raise EngineMissingError(f"{path} is missing although its metadata exists; rebuild")
        return path

    def _missing_message(self, key: EngineKey) -> str:
        base = f"no {key.precision} engine for graph {key.graph!r} in {self.root}"
        same_graph = [m.key for m in self.entries() if m.key.graph == key.graph]
        if not same_graph:
            return base
        closest = min(same_graph, key=lambda other: len(key.differences(other)))
        return f"{base}; the closest cached engine differs in: " + "; ".join(
            key.differences(closest)
        )
