"""Files of Hugging Face Hub repositories: metadata, offline detection, verified downloads.

The Hub's metadata (one HEAD request per file) gives the commit, the size and, for files
stored with Git LFS such as weights, their sha256. The transfer itself is
:func:`dvlt_core.io.download.download_file` (size cap, deadline, sha256, ``.part`` files), into
the Hugging Face cache layout (``blobs/``, ``snapshots/<commit>/``, ``refs/``), so files cached
here or by other Hugging Face tools serve each other, also offline.

Offline is detected once per :class:`HubRepo` (one checkpoint load): ``HF_HUB_OFFLINE=1``, or a
first metadata request that gets no answer within :data:`PROBE_TIMEOUT_S` (one attempt, no
retries). From then on only the cache is used.
"""

from __future__ import annotations

import logging
import os
import re
import urllib.parse
from dataclasses import dataclass
from pathlib import Path

from dvlt_core.atomic import write_atomic
from dvlt_core.io.download import DownloadError, DownloadLimits, download_file

logger = logging.getLogger(__name__)

# Long enough for a slow link to answer a HEAD request, short enough to fail fast offline.
PROBE_TIMEOUT_S = 5.0
_SHA256 = re.compile(r"^[0-9a-f]{64}$")


class HubUnreachableError(DownloadError):
    """The Hub cannot be reached (offline, or ``HF_HUB_OFFLINE=1``) and the cache lacks a file."""


@dataclass(frozen=True)
class HubFile:
    """One file of a repository revision as the Hub's metadata describes it."""

    filename: str
    url: str  # where its bytes are (the Hub's resolve URL, or the storage it redirects to)
    commit: str
    etag: str
    size: int | None

    @property
    def sha256(self) -> str | None:
        """The content sha256 (the etag of LFS files); None for plain git files."""
        return self.etag if _SHA256.match(self.etag) else None


def hub_offline_mode() -> bool:
    """Whether ``HF_HUB_OFFLINE`` is set (read by huggingface_hub at import)."""
    import huggingface_hub.constants as hf_constants

    return bool(hf_constants.HF_HUB_OFFLINE)


_HEX_COMMIT = re.compile(r"[0-9a-f]{40}")
_HEX_ETAG = re.compile(r"[0-9a-f]{40}|[0-9a-f]{64}")


class HubRepo:
    """Fetches files of one repository revision into the Hugging Face cache."""

    def __init__(self, repo_id: str, revision: str | None, cache_dir: str | Path | None) -> None:
        import huggingface_hub.constants as hf_constants
        from huggingface_hub.file_download import repo_folder_name

        self.repo_id = repo_id
        self.revision = revision or "main"
        if ".." in self.revision.split("/") or self.revision.startswith("/"):
            raise DownloadError(f"revision {self.revision!r} is not a branch, tag or commit of "
                                f"{repo_id}: name one (e.g. main)")
        root = Path(cache_dir) if cache_dir else Path(hf_constants.HF_HUB_CACHE)
        self.storage = root / repo_folder_name(repo_id=repo_id, repo_type="model")
        self.cache_dir = root
        self.offline_reason: str | None = (
            "HF_HUB_OFFLINE is set" if hub_offline_mode() else None
        )

    def get(self, filename: str, limits: DownloadLimits, optional: bool = False) -> Path | None:
        """The local path of ``filename``, downloaded if needed.

        Returns None if the repository has no such file (or, offline, if an ``optional``
        file is not cached). Raises :class:`HubUnreachableError` offline when a required
        file is not cached, and the huggingface_hub errors of the answer otherwise
        (gated, not found, ...).
        """
        if self.offline_reason is None:
            try:
                remote = self._metadata(filename)
            except HubUnreachableError as exc:
                self.offline_reason = str(exc)
                logger.warning("%s; using the local cache only", exc)
            else:
                return None if remote is None else self._download(remote, limits)
        cached = self._cached(filename)
        if cached is None and not optional:
            raise HubUnreachableError(
                f"cannot download {self.repo_id} ({self.offline_reason}) and {filename} of "
                f"revision {self.revision!r} is not in the cache {self.cache_dir}"
            )
        return cached

    def _metadata(self, filename: str) -> HubFile | None:
        from huggingface_hub import get_hf_file_metadata, hf_hub_url
        from huggingface_hub.errors import EntryNotFoundError, HfHubHTTPError

        url = hf_hub_url(self.repo_id, filename, revision=self.revision)
        try:
            meta = get_hf_file_metadata(url, timeout=PROBE_TIMEOUT_S)
        except EntryNotFoundError:
            return None
        except (HfHubHTTPError, ValueError):
            raise  # the Hub answered (gated, not found, ...) or the request was invalid
        except Exception as exc:  # any transport failure (the HTTP client varies by version)
            raise HubUnreachableError(f"no answer from {_host(url)}: {exc}") from exc
        if not (meta.commit_hash and meta.etag and meta.location):
            raise DownloadError(
                f"{url}: the server's answer lacks the commit or etag of the file; is "
                "HF_ENDPOINT a Hugging Face Hub?"
            )
        # Both become cache path components: only the Hub's hex ids are accepted.
        if not (_HEX_COMMIT.fullmatch(meta.commit_hash) and _HEX_ETAG.fullmatch(meta.etag)):
            raise DownloadError(
                f"{url}: the server's commit {meta.commit_hash!r} or etag {meta.etag!r} is not "
                "a Hub id; is HF_ENDPOINT a Hugging Face Hub?"
            )
        return HubFile(filename, meta.location, meta.commit_hash, meta.etag, meta.size)

    def _download(self, remote: HubFile, limits: DownloadLimits) -> Path:
        blob = self.storage / "blobs" / remote.etag
        if not (blob.is_file() and (remote.size is None or blob.stat().st_size == remote.size)):
            download_file(remote.url, blob, limits, expected_size=remote.size,
                          sha256=remote.sha256, headers=self._auth_headers(remote.url))
        pointer = self.storage / "snapshots" / remote.commit / remote.filename
        if not pointer.is_file():
            pointer.parent.mkdir(parents=True, exist_ok=True)
            link = pointer.with_name(f".{pointer.name}.{os.getpid()}.link")
            link.unlink(missing_ok=True)
            link.symlink_to(os.path.relpath(blob, pointer.parent))
            os.replace(link, pointer)
        if self.revision != remote.commit:
            ref = self.storage / "refs" / self.revision
            if not (ref.is_file() and ref.read_text() == remote.commit):
                write_atomic(ref, lambda path: path.write_text(remote.commit))
        return pointer

    def _cached(self, filename: str) -> Path | None:
        from huggingface_hub import try_to_load_from_cache

        found = try_to_load_from_cache(self.repo_id, filename, cache_dir=self.cache_dir,
                                       revision=self.revision)
        return Path(found) if isinstance(found, str) else None

    def _auth_headers(self, url: str) -> dict[str, str]:
        """The user's Hub token, for the Hub's own host only (not the storage it redirects
        to, which gets a signed URL)."""
        import huggingface_hub.constants as hf_constants
        from huggingface_hub.utils import build_hf_headers

        if _host(url) != _host(hf_constants.ENDPOINT):
            return {}
        token = build_hf_headers().get("authorization")
        return {"Authorization": token} if token else {}


def _host(url: str) -> str:
    return urllib.parse.urlsplit(url).netloc.lower()
