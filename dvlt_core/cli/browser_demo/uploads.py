"""Files uploaded from the browser, kept on disk in the order they arrived.

Each upload is stored as ``<folder>/<index>/<name>``: the name is the upload's own file name
reduced to its last path part (no folders, no ``..``), so view names are the files' stems as
on the command line and two uploads of the same name do not overwrite each other. What the
files hold is checked only by the loader ``dvlt-reconstruct`` uses for its inputs
(:func:`dvlt_core.io.images.load_sequence`), when a reconstruction starts.
"""

from __future__ import annotations

import shutil
import tempfile
import threading
from pathlib import Path, PurePosixPath, PureWindowsPath

#: Bytes all uploads together may hold (a long phone video fits; the viewer keeps each upload
#: in memory while it arrives, so this is also about the server's memory).
MAX_UPLOAD_BYTES = 2 * 1024**3


class UploadRefusedError(ValueError):
    """An upload that is not stored: no usable file name, or over :data:`MAX_UPLOAD_BYTES`."""


def safe_file_name(name: str) -> str:
    """The last path part of ``name`` (POSIX or Windows separators), or
    :class:`UploadRefusedError` when nothing usable is left."""
    base = PureWindowsPath(PurePosixPath(name).name).name.strip()
    if base in ("", ".", "..") or "\0" in base:
        raise UploadRefusedError(f"the upload {name!r} has no usable file name: rename it")
    return base


class UploadFolder:
    """Uploaded files in a private temporary folder, removed by :meth:`close`."""

    def __init__(self, max_bytes: int = MAX_UPLOAD_BYTES) -> None:
        self._root = Path(tempfile.mkdtemp(prefix="dvlt-demo-uploads-"))
        self._max_bytes = max_bytes
        self._files: list[Path] = []
        self._bytes = 0
        self._lock = threading.Lock()

    def add(self, name: str, content: bytes) -> Path:
        """Store one upload; returns its path."""
        base = safe_file_name(name)
        with self._lock:
            if self._bytes + len(content) > self._max_bytes:
                raise UploadRefusedError(
                    f"{base} would take the uploads past {self._max_bytes // 1024**2} MiB: "
                    "clear them, or shorten the video"
                )
            folder = self._root / str(len(self._files))
            folder.mkdir()
            path = folder / base
            path.write_bytes(content)
            self._files.append(path)
            self._bytes += len(content)
            return path

    @property
    def files(self) -> list[Path]:
        """The stored files, in upload order."""
        with self._lock:
            return list(self._files)

    def clear(self) -> None:
        """Forget and delete every upload."""
        with self._lock:
            for path in self._files:
                shutil.rmtree(path.parent, ignore_errors=True)
            self._files.clear()
            self._bytes = 0

    def close(self) -> None:
        """Delete the folder."""
        self.clear()
        shutil.rmtree(self._root, ignore_errors=True)
