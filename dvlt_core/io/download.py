"""HTTP(S) downloads of checkpoint files: bounded in size and time, verified, atomic.

Every download streams into a ``.part`` file beside its target and is renamed to the target
only once complete and verified (size, and sha256 where the server announced one), so the
cache never holds a partial or corrupt file under its final name. The ``.part`` file is
removed on any error and on interrupts (Ctrl-C); one left by a killed process is removed by
the next download into the same folder once it is older than the deadline.
"""

from __future__ import annotations

import hashlib
import http.client
import logging
import os
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from tqdm.auto import tqdm

from dvlt_core.atomic import write_atomic

logger = logging.getLogger(__name__)

_LOCAL_HOSTS = frozenset({"localhost", "127.0.0.1", "::1"})
_CHUNK = 1 << 20
GIB = 1 << 30


class DownloadError(RuntimeError):
    """A URL could not be fetched (the message says what to do)."""


class RemoteFileNotFoundError(DownloadError):
    """The server answered 404 for the URL."""


@dataclass(frozen=True)
class DownloadLimits:
    """Bounds of one download.

    ``max_bytes``: refused if announced larger, stopped if it grows larger. ``deadline_s``: the
    whole transfer, connection included. ``stall_s``: the longest wait for the next bytes
    (the deadline is checked between reads, so it is overrun by at most ``stall_s``).
    """

    max_bytes: int
    deadline_s: float = 3600.0
    stall_s: float = 30.0


# Weights: 8 GiB is 17x the released model.safetensors (117 M float32 parameters, 470 MB).
WEIGHTS_LIMITS = DownloadLimits(max_bytes=8 * GIB)
# config.json holds a few dozen constructor arguments: 1 MiB is plenty.
CONFIG_LIMITS = DownloadLimits(max_bytes=1 << 20, deadline_s=120.0)


def default_cache_dir() -> Path:
    """``$DVLT_CACHE_DIR``, else ``$XDG_CACHE_HOME/dvlt``, else ``~/.cache/dvlt``."""
    env = os.environ.get("DVLT_CACHE_DIR")
    if env:
        return Path(env)
    xdg = os.environ.get("XDG_CACHE_HOME")
    return (Path(xdg) if xdg else Path.home() / ".cache") / "dvlt"


def display_url(url: str) -> str:
    """``url`` as messages show it: scheme, host and path. A query (signed storage URLs carry
    their signature and expiry there) or credentials never reach a log or a diagnostics
    topic."""
    parts = urllib.parse.urlsplit(url)
    host = parts.hostname or ""
    port = f":{parts.port}" if parts.port else ""
    return urllib.parse.urlunsplit((parts.scheme, host + port, parts.path, "", ""))


def check_url(url: str) -> None:
    """Accept https URLs, and plain http only for the local machine (with a warning)."""
    shown = display_url(url)
    parts = urllib.parse.urlsplit(url)
    if parts.scheme == "https":
        return
    if parts.scheme == "http" and parts.hostname in _LOCAL_HOSTS:
        logger.warning("downloading over unencrypted http from the local machine: %s", shown)
        return
    raise DownloadError(
        f"refusing to download {shown}: only https URLs are allowed (plain http only for "
        "localhost); use an https URL or download the file and pass its local path"
    )


def cached_download(
    url: str, cache_dir: str | Path | None = None, limits: DownloadLimits = WEIGHTS_LIMITS
) -> Path:
    """Return the local copy of ``url``, downloading it first if it is not cached.

    Files land in ``<cache_dir>/urls/<sha256(url)[:16]>/<file name>`` (see
    :func:`download_file` for the checks). URLs are treated as immutable: delete the cached
    file to fetch it again.
    """
    target = Path(cache_dir or default_cache_dir()) / "urls" / _url_key(url) / url_file_name(url)
    if target.is_file():
        return target
    return download_file(url, target, limits)


def download_file(
    url: str,
    target: Path,
    limits: DownloadLimits,
    *,
    expected_size: int | None = None,
    sha256: str | None = None,
    headers: Mapping[str, str] | None = None,
) -> Path:
    """Download ``url`` to ``target`` within ``limits``; returns ``target``.

    ``expected_size`` and ``sha256`` are what an index (the Hub's metadata) announced: the
    download is refused before it starts if the announced size exceeds ``limits.max_bytes``,
    and the file is kept only if it matches both. ``headers`` (credentials) go to ``url``'s
    host only, never along a redirect. Raises :class:`DownloadError` saying what to do.
    """
    check_url(url)
    if expected_size is not None:
        _check_size(url, expected_size, limits)
    target.parent.mkdir(parents=True, exist_ok=True)
    _remove_stale_parts(target, limits.deadline_s)
    write_atomic(
        target, lambda part: _fetch(url, part, limits, expected_size, sha256, headers or {})
    )
    return target


def url_file_name(url: str) -> str:
    """The last path segment of ``url`` as a safe file name (``download`` if it has none)."""
    name = Path(urllib.parse.urlsplit(url).path).name
    return name if name not in ("", ".", "..") else "download"


class _CheckedRedirects(urllib.request.HTTPRedirectHandler):
    """Follow a redirect only to a URL that :func:`check_url` accepts (no https → http)."""

    def redirect_request(self, req, fp, code, msg, headers, newurl):
        check_url(newurl)
        return super().redirect_request(req, fp, code, msg, headers, newurl)


_OPENER = urllib.request.build_opener(_CheckedRedirects)


def _check_size(url: str, size: int, limits: DownloadLimits) -> None:
    shown = display_url(url)
    if size > limits.max_bytes:
        raise DownloadError(
            f"refusing to download {shown}: it is {size} bytes, more than the {limits.max_bytes}-"
            "byte limit for this file; download it yourself and pass its local path"
        )


def _fetch(
    url: str,
    part: Path,
    limits: DownloadLimits,
    expected_size: int | None,
    sha256: str | None,
    headers: Mapping[str, str],
) -> None:
    shown = display_url(url)
    deadline = time.monotonic() + limits.deadline_s
    request = urllib.request.Request(url, headers={"User-Agent": "dvlt_core"})
    for key, value in headers.items():
        request.add_unredirected_header(key, value)
    try:
        response = _OPENER.open(request, timeout=limits.stall_s)
    except urllib.error.HTTPError as exc:
        if exc.code == 404:
            raise RemoteFileNotFoundError(f"{shown} does not exist (HTTP 404)") from exc
        raise DownloadError(f"download of {shown} failed: HTTP {exc.code} {exc.reason}") from exc
    except (urllib.error.URLError, OSError) as exc:
        raise DownloadError(
            f"cannot reach {shown} ({exc}); check the network, or download the file yourself and "
            "set DVLT_CHECKPOINT to its local path"
        ) from exc
    with response:
        announced = response.headers.get("Content-Length")
        announced = int(announced) if announced and announced.isdigit() else None
        if announced is not None:
            if expected_size is not None and announced != expected_size:
                raise DownloadError(
                    f"{shown}: the server sends {announced} bytes but the index announced "
                    f"{expected_size}; try again later"
                )
            _check_size(url, announced, limits)
        total = expected_size if expected_size is not None else announced
        received, digest = _stream(response, part, url, limits, deadline, total)
    if total is not None and received != total:
        raise DownloadError(
            f"download of {shown} stopped after {received} of {total} bytes; try again"
        )
    if sha256 is not None and digest != sha256.lower():
        raise DownloadError(
            f"download of {shown} is corrupt: sha256 {digest}, expected {sha256}; try again"
        )


def _stream(response, part: Path, url: str, limits: DownloadLimits, deadline: float,
            total: int | None) -> tuple[int, str]:
    """Copy the body into ``part`` within the limits; returns its size and sha256."""
    shown = display_url(url)
    received = 0
    digest = hashlib.sha256()
    try:
        with open(part, "wb") as out, tqdm(
            total=total, unit="B", unit_scale=True, desc=url_file_name(url), leave=False
        ) as bar:
            # read1 returns after one network read, so a trickle cannot hold a read past the
            # deadline; each read waits at most stall_s.
            while chunk := response.read1(_CHUNK):
                received += len(chunk)
                if received > limits.max_bytes:
                    raise DownloadError(
                        f"download of {shown} passed the {limits.max_bytes}-byte limit for this "
                        "file; download it yourself and pass its local path"
                    )
                out.write(chunk)
                digest.update(chunk)
                bar.update(len(chunk))
                if time.monotonic() > deadline:
                    raise DownloadError(
                        f"download of {shown} did not finish within {limits.deadline_s:.0f} s; "
                        "try again on a faster connection, or download the file yourself and "
                        "pass its local path"
                    )
    except TimeoutError as exc:
        raise DownloadError(
            f"download of {shown} stalled: no data for {limits.stall_s:.0f} s after {received} "
            "bytes; try again"
        ) from exc
    except (OSError, http.client.HTTPException) as exc:
        raise DownloadError(
            f"download of {shown} broke off after {received} bytes ({exc}); try again"
        ) from exc
    return received, digest.hexdigest()


def _remove_stale_parts(target: Path, older_than_s: float) -> None:
    """Delete ``.part`` files of ``target`` untouched for longer than a download may last:
    left by a killed process, they can belong to no running download."""
    cutoff = time.time() - older_than_s
    for part in target.parent.glob(f".{target.name}.*.part"):
        try:
            if part.stat().st_mtime < cutoff:
                part.unlink()
        except FileNotFoundError:
            pass


def _url_key(url: str) -> str:
    return hashlib.sha256(url.encode()).hexdigest()[:16]
