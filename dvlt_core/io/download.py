"""HTTP(S) download of checkpoint files into a cache, atomically and with a progress bar."""

from __future__ import annotations

import hashlib
import logging
import os
import tempfile
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

from tqdm.auto import tqdm

logger = logging.getLogger(__name__)

_LOCAL_HOSTS = frozenset({"localhost", "127.0.0.1", "::1"})
_CHUNK = 1 << 20


class DownloadError(RuntimeError):
    """A URL could not be fetched (the message says what to do)."""


class RemoteFileNotFoundError(DownloadError):
    """The server answered 404 for the URL."""


def default_cache_dir() -> Path:
    """``$DVLT_CACHE_DIR``, else ``$XDG_CACHE_HOME/dvlt``, else ``~/.cache/dvlt``."""
    env = os.environ.get("DVLT_CACHE_DIR")
    if env:
        return Path(env)
    xdg = os.environ.get("XDG_CACHE_HOME")
    return (Path(xdg) if xdg else Path.home() / ".cache") / "dvlt"


def check_url(url: str) -> None:
    """Accept https URLs, and plain http only for the local machine (with a warning)."""
    parts = urllib.parse.urlsplit(url)
    if parts.scheme == "https":
        return
    if parts.scheme == "http" and parts.hostname in _LOCAL_HOSTS:
        logger.warning("downloading over unencrypted http from the local machine: %s", url)
        return
    raise DownloadError(
        f"refusing to download {url}: only https URLs are allowed (plain http only for "
        "localhost); use an https URL or download the file and pass its local path"
    )


def cached_download(url: str, cache_dir: str | Path | None = None, timeout: float = 30.0) -> Path:
    """Return the local copy of ``url``, downloading it first if it is not cached.

    Files land in ``<cache_dir>/urls/<sha256(url)[:16]>/<file name>``; a download is
    written to a temporary name in the same folder and renamed when complete, so an
    interrupted download never leaves a partial file under the final name. URLs are
    treated as immutable: delete the cached file to fetch it again.
    """
    check_url(url)
    name = url_file_name(url)
    folder = Path(cache_dir or default_cache_dir()) / "urls" / _url_key(url)
    target = folder / name
    if target.is_file():
        return target
    folder.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{name}.", suffix=".part", dir=folder)
    try:
        with os.fdopen(fd, "wb") as out:
            _fetch(url, out, timeout, name)
        os.replace(tmp_name, target)
    except BaseException:
        Path(tmp_name).unlink(missing_ok=True)
        raise
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


def _fetch(url: str, out, timeout: float, label: str) -> None:
    request = urllib.request.Request(url, headers={"User-Agent": "dvlt_core"})
    try:
        response = _OPENER.open(request, timeout=timeout)
    except urllib.error.HTTPError as exc:
        if exc.code == 404:
            raise RemoteFileNotFoundError(f"{url} does not exist (HTTP 404)") from exc
        raise DownloadError(f"download of {url} failed: HTTP {exc.code} {exc.reason}") from exc
    except (urllib.error.URLError, OSError) as exc:
        raise DownloadError(
            f"cannot reach {url} ({exc}); check the network, or download the file yourself and "
            "set DVLT_CHECKPOINT to its local path"
        ) from exc
    with response:
        total = response.headers.get("Content-Length")
        expected = int(total) if total and total.isdigit() else None
        received = 0
        with tqdm(total=expected, unit="B", unit_scale=True, desc=label, leave=False) as bar:
            while chunk := response.read(_CHUNK):
                out.write(chunk)
                received += len(chunk)
                bar.update(len(chunk))
    if expected is not None and received != expected:
        raise DownloadError(
            f"download of {url} stopped after {received} of {expected} bytes; try again"
        )


def _url_key(url: str) -> str:
    return hashlib.sha256(url.encode()).hexdigest()[:16]

