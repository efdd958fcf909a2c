"""Loading DVLT checkpoints from a folder, a file, a URL or the Hugging Face Hub.

A checkpoint is ``model.safetensors`` (the ``DVLTModel`` state dict) plus, optionally, a
``config.json`` with the model's constructor arguments. Weights are read with safetensors;
pickled files (``.pt/.pth/.bin``) are refused unless ``allow_pickle=True``, and even then
read with ``torch.load(weights_only=True)``. ``config.json`` is read and checked (types,
ranges, consistency) before the weights are fetched or the model is built; keys this version
does not know are ignored with a warning once the weights load with ``strict=True``.
"""

from __future__ import annotations

import json
import logging
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from dvlt_core.atomic import write_atomic
from dvlt_core.device import resolve_device
from dvlt_core.io.download import (
    CONFIG_LIMITS,
    WEIGHTS_LIMITS,
    DownloadError,
    RemoteFileNotFoundError,
    cached_download,
    default_cache_dir,
    url_file_name,
)
from dvlt_core.io.hub import HubRepo, HubUnreachableError
from dvlt_core.model import DVLTConfig, DVLTModel
from dvlt_core.model.config import config_field_names

logger = logging.getLogger(__name__)

RELEASED_REPO = "nvidia/dvlt"
WEIGHTS_NAME = "model.safetensors"
CONFIG_NAME = "config.json"
PICKLE_SUFFIXES = (".pt", ".pth", ".bin")
# The released checkpoint: DVLTModel defaults with these overrides (docs/architecture.md §1).
RELEASED_CONFIG_OVERRIDES: dict[str, Any] = {"img_size": 504, "depth_head_type": "conv"}
LICENCE_NOTICE = (
    "The nvidia/dvlt weights are released under the NVIDIA License (non-commercial): "
    "use them for research or evaluation only. See "
    "https://huggingface.co/nvidia/dvlt for the licence text."
)
_REPO_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")
_OFFLINE_HINT = (
    "set DVLT_CHECKPOINT (or --checkpoint) to a local directory holding config.json and "
    "model.safetensors, or to a .safetensors file"
)
_SOURCE_KINDS = (
    "a local directory or weights file, an https URL, or a Hugging Face repository id like "
    "'nvidia/dvlt'"
)


class CheckpointError(RuntimeError):
    """A checkpoint could not be found, fetched, read or matched to the model."""


@dataclass(frozen=True)
class ResolvedCheckpoint:
    """Where the weights (and config) of a checkpoint source ended up on disk."""

    weights: Path
    config: dict[str, Any] | None  # the checked config.json, without ignored_config_keys
    origin: str
    released: bool
    ignored_config_keys: tuple[str, ...] = ()
    #: the config.json as read (None if there is none): for a backend whose config is not a
    #: DVLT one (``da3`` reads its ``model_name``)
    raw_config: dict[str, Any] | None = None


def default_checkpoint() -> str:
    """``$DVLT_CHECKPOINT`` if set (an empty value counts as unset), else ``nvidia/dvlt``."""
    return os.environ.get("DVLT_CHECKPOINT") or RELEASED_REPO


def released_config() -> DVLTConfig:
    """The constructor arguments of the released ``nvidia/dvlt`` model."""
    return DVLTConfig(**RELEASED_CONFIG_OVERRIDES)


def load_model(
    source: str | Path | None = None,
    *,
    config: DVLTConfig | Mapping[str, Any] | None = None,
    revision: str | None = None,
    device: str | torch.device = "cpu",
    cache_dir: str | Path | None = None,
    allow_pickle: bool = False,
) -> DVLTModel:
    """Build a :class:`DVLTModel` and load a checkpoint into it with ``strict=True``.

    ``source`` (default :func:`default_checkpoint`) is a local directory holding
    ``model.safetensors`` and ``config.json``; a weights file (config from a
    ``config.json`` beside it); an ``https://`` URL of a weights file or of a folder
    holding both files; or a Hub repository id such as ``nvidia/dvlt`` (optionally
    ``nvidia/dvlt@<revision>``). The model config is ``config`` if given, else the
    checkpoint's ``config.json``, else the released configuration. The model is returned
    in eval mode on ``device``.
    """
    resolved = resolve_checkpoint(
        source if source is not None else default_checkpoint(),
        revision=revision,
        cache_dir=cache_dir,
        allow_pickle=allow_pickle,
    )
    device = resolve_device(device)
    if resolved.released:
        logger.warning(LICENCE_NOTICE)
    model_config = _pick_config(config, resolved)
    model = DVLTModel(**model_config.to_dict())
    state_dict = read_state_dict(resolved.weights, allow_pickle=allow_pickle)
    ignored = resolved.ignored_config_keys if config is None else ()
    check_state_dict(model, state_dict, origin=resolved.origin, ignored_config_keys=ignored)
    model.load_state_dict(state_dict, strict=True)
    if ignored:
        logger.warning(
            "config.json of %s holds keys this version does not know, ignored (the weights "
            "load with strict=True): %s", resolved.origin, ", ".join(ignored)
        )
    return model.eval().to(device)


def _pick_config(
    config: DVLTConfig | Mapping[str, Any] | None, resolved: ResolvedCheckpoint
) -> DVLTConfig:
    if isinstance(config, DVLTConfig):
        return config
    if config is not None:
        try:
            return DVLTConfig.from_kwargs(dict(config))
        except ValueError as exc:
            raise CheckpointError(f"invalid model config argument: {exc}") from exc
    if resolved.config is not None:
        return DVLTConfig.from_kwargs(resolved.config)  # checked by resolve_checkpoint
    return released_config()


def resolve_checkpoint(
    source: str | Path,
    *,
    revision: str | None = None,
    cache_dir: str | Path | None = None,
    allow_pickle: bool = False,
) -> ResolvedCheckpoint:
    """Find (downloading if needed) the weights file and config of a checkpoint source.

    The config is fetched and checked first, so a bad ``config.json`` is refused before any
    weights are downloaded. Raises :class:`CheckpointError` saying what to fix.
    """
    text = str(source)
    if not text.strip():
        raise CheckpointError(
            f"the checkpoint is empty ({text!r}; check --checkpoint, the checkpoint parameter "
            f"and DVLT_CHECKPOINT): give {_SOURCE_KINDS}, or leave it unset for {RELEASED_REPO}"
        )
    path = Path(text).expanduser()
    if path.is_dir():
        return _resolve_directory(path, allow_pickle)
    if path.is_file():
        return _resolve_file(path, allow_pickle)
    if text.startswith(("http://", "https://")):
        return _resolve_url(text, cache_dir, allow_pickle)
    repo_id, _, pinned = text.partition("@")
    if isinstance(source, str) and _REPO_ID.match(repo_id):
        if pinned and revision and pinned != revision:
            raise CheckpointError(
                f"two revisions given for {repo_id}: '@{pinned}' and revision={revision!r}; "
                "keep one"
            )
        return _resolve_hub(repo_id, pinned or revision, cache_dir)
    raise CheckpointError(
        f"checkpoint {text!r} is neither an existing file or directory, an https URL, nor a "
        "Hugging Face repository id like 'nvidia/dvlt'; "
        "pass one of those (or set DVLT_CHECKPOINT)"
    )


def _checked_config(
    data: dict[str, Any] | None, where: str
) -> tuple[dict[str, Any] | None, tuple[str, ...]]:
    """(the known keys of a ``config.json``, checked; the unknown keys, to be ignored)."""
    if data is None:
        return None, ()
    known_names = config_field_names()
    known = {k: v for k, v in data.items() if k in known_names}
    try:
        DVLTConfig.from_kwargs(known)
    except ValueError as exc:
        raise CheckpointError(f"{where}: {exc}; correct config.json") from exc
    return known, tuple(sorted(set(data) - known_names))


def _resolved(weights: Path, raw_config: dict[str, Any] | None, where: str, origin: str,
              released: bool) -> ResolvedCheckpoint:
    config, ignored = _checked_config(raw_config, where)
    return ResolvedCheckpoint(weights, config, origin, released, ignored, raw_config)


def _resolve_directory(path: Path, allow_pickle: bool) -> ResolvedCheckpoint:
    weights = path / WEIGHTS_NAME
    if not weights.is_file():
        pickled = [path / f"model{s}" for s in PICKLE_SUFFIXES if (path / f"model{s}").is_file()]
        if not (pickled and allow_pickle):
            hint = (
                f" It holds {pickled[0].name}: pass allow_pickle=True to read it with "
                "torch.load(weights_only=True), or convert it to safetensors."
                if pickled
                else ""
            )
            raise CheckpointError(f"no {WEIGHTS_NAME} in checkpoint directory {path}.{hint}")
        weights = pickled[0]
    config = path / CONFIG_NAME
    return _resolved(weights, _read_config(config), str(config), str(path), False)


def _resolve_file(path: Path, allow_pickle: bool) -> ResolvedCheckpoint:
    _check_weights_suffix(path, allow_pickle)
    config = path.parent / CONFIG_NAME
    return _resolved(path, _read_config(config), str(config), str(path), False)


def _check_weights_suffix(path: Path, allow_pickle: bool) -> None:
    suffix = path.suffix.lower()
    if suffix == ".safetensors":
        return
    if suffix in PICKLE_SUFFIXES:
        if allow_pickle:
            return
        raise CheckpointError(
            f"{path} is a pickled checkpoint, which is not read by default because unpickling "
            "can run code; convert it to safetensors, or pass allow_pickle=True "
            "(--allow-pickle) to read it with torch.load(weights_only=True)"
        )
    raise CheckpointError(
        f"{path}: unknown weights format {suffix!r}; expected .safetensors "
        f"(or {'/'.join(PICKLE_SUFFIXES)} with allow_pickle=True)"
    )


def _read_config(path: Path) -> dict[str, Any] | None:
    if not path.is_file():
        return None
    if path.stat().st_size > CONFIG_LIMITS.max_bytes:
        raise CheckpointError(
            f"{path} is {path.stat().st_size} bytes, more than a config.json of model "
            f"arguments can be ({CONFIG_LIMITS.max_bytes}); fix or remove the file"
        )
    try:
        data = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError, RecursionError) as exc:
        raise CheckpointError(f"cannot parse {path}: {exc}; fix or remove the file") from exc
    if not isinstance(data, dict):
        raise CheckpointError(f"{path} must hold a JSON object of model arguments")
    return data


def _resolve_url(url: str, cache_dir: str | Path | None, allow_pickle: bool) -> ResolvedCheckpoint:
    released = f"/{RELEASED_REPO}/" in url.lower()
    cache = Path(cache_dir) if cache_dir else default_cache_dir()
    try:
        if url.lower().split("?")[0].endswith((".safetensors", *PICKLE_SUFFIXES)):
            _check_weights_suffix(Path(url_file_name(url)), allow_pickle)  # before downloading
            weights = cached_download(url, cache, WEIGHTS_LIMITS)
            return ResolvedCheckpoint(weights, None, url, released)
        base = url.rstrip("/") + "/"
        try:
            raw_config = _read_config(cached_download(base + CONFIG_NAME, cache, CONFIG_LIMITS))
        except RemoteFileNotFoundError:
            raw_config = None
        config, ignored = _checked_config(raw_config, base + CONFIG_NAME)
        weights = cached_download(base + WEIGHTS_NAME, cache, WEIGHTS_LIMITS)
    except DownloadError as exc:
        raise CheckpointError(f"{exc} ({_OFFLINE_HINT})") from exc
    return ResolvedCheckpoint(weights, config, url, released, ignored, raw_config)


def _resolve_hub(
    repo_id: str, revision: str | None, cache_dir: str | Path | None
) -> ResolvedCheckpoint:
    from huggingface_hub.errors import (
        GatedRepoError,
        HfHubHTTPError,
        RepositoryNotFoundError,
        RevisionNotFoundError,
    )

    origin = f"{repo_id}@{revision}" if revision else repo_id
    repo = HubRepo(repo_id, revision, cache_dir)
    try:
        config_path = repo.get(CONFIG_NAME, CONFIG_LIMITS, optional=True)
        raw_config = None if config_path is None else _read_config(config_path)
        config, ignored = _checked_config(raw_config, f"config.json of {origin}")
        weights = repo.get(WEIGHTS_NAME, WEIGHTS_LIMITS)
        if weights is None:
            raise CheckpointError(f"{origin} has no {WEIGHTS_NAME}")
    except GatedRepoError as exc:
        raise CheckpointError(
            f"{repo_id} is gated: accept its licence on huggingface.co and log in with "
            f"`hf auth login`, or {_OFFLINE_HINT}"
        ) from exc
    except RevisionNotFoundError as exc:
        raise CheckpointError(f"revision {revision!r} of {repo_id} does not exist") from exc
    except RepositoryNotFoundError as exc:
        raise CheckpointError(
            f"Hugging Face repository {repo_id!r} not found (or private); check the id, or "
            f"{_OFFLINE_HINT}"
        ) from exc
    except HubUnreachableError as exc:
        raise CheckpointError(
            f"{exc}: {_OFFLINE_HINT}; or connect once to fill the cache"
        ) from exc
    except HfHubHTTPError as exc:
        raise CheckpointError(
            f"the Hugging Face Hub refused {origin}: {_one_line(exc)}; try again later, or "
            f"{_OFFLINE_HINT}"
        ) from exc
    except (DownloadError, OSError) as exc:
        raise CheckpointError(f"download of {origin} failed: {exc}; {_OFFLINE_HINT}") from exc
    except ValueError as exc:  # huggingface_hub's validation of the id or revision
        raise CheckpointError(f"{origin}: {_one_line(exc)}") from exc
    return ResolvedCheckpoint(weights, config, origin, repo_id.lower() == RELEASED_REPO, ignored,
                              raw_config)


def _one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split())


def read_state_dict(path: str | Path, allow_pickle: bool = False) -> dict[str, torch.Tensor]:
    """Read a state dict from a safetensors file (or, if allowed, a weights-only pickle)."""
    path = Path(path)
    _check_weights_suffix(path, allow_pickle)
    if path.suffix.lower() == ".safetensors":
        try:
            return load_file(str(path), device="cpu")
        except SafetensorError as exc:
            raise CheckpointError(
                f"{path} is truncated or corrupt ({exc}); delete it and download it again"
            ) from exc
    try:
        data = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise CheckpointError(
            f"cannot read {path} with torch.load(weights_only=True): {exc}"
        ) from exc
    if not isinstance(data, Mapping) or not all(
        isinstance(v, torch.Tensor) for v in data.values()
    ):
        raise CheckpointError(f"{path} does not hold a flat state dict of tensors")
    return dict(data)


def check_state_dict(
    model: torch.nn.Module,
    state_dict: Mapping[str, torch.Tensor],
    origin: str = "checkpoint",
    ignored_config_keys: tuple[str, ...] = (),
) -> None:
    """Raise :class:`CheckpointError` naming every missing, unexpected or mis-shaped key.

    The message is one line (the first 20 keys of each kind); ``ignored_config_keys``, the
    unknown keys of the config.json the model was built from, are named as a likely cause.
    """
    expected = model.state_dict()
    missing = sorted(set(expected) - set(state_dict))
    unexpected = sorted(set(state_dict) - set(expected))
    mismatched = sorted(
        f"{k}: checkpoint {tuple(state_dict[k].shape)} vs model {tuple(expected[k].shape)}"
        for k in set(expected) & set(state_dict)
        if tuple(state_dict[k].shape) != tuple(expected[k].shape)
    )
    if not (missing or unexpected or mismatched):
        return
    parts = []
    for title, items in (
        ("missing keys", missing),
        ("unexpected keys", unexpected),
        ("shape mismatches", mismatched),
    ):
        if items:
            more = f", ... ({len(items) - 20} more)" if len(items) > 20 else ""
            parts.append(f"{len(items)} {title}: {', '.join(items[:20])}{more}")
    ignored = (
        f"; its config.json also holds keys this version ignores ({', '.join(ignored_config_keys)})"
        if ignored_config_keys
        else ""
    )
    raise CheckpointError(
        f"{origin} does not match the model built from its config: {'; '.join(parts)}{ignored}. "
        "Check that config.json (or the config argument) describes this checkpoint."
    )


def save_checkpoint(model: DVLTModel, directory: str | Path) -> Path:
    """Write ``config.json`` and ``model.safetensors`` of ``model`` into ``directory``.

    Each file is written under a temporary name and renamed, so readers never see a
    half-written checkpoint. Returns the directory.
    """
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    state_dict = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    config_text = json.dumps(model.config.to_dict(), indent=2, sort_keys=True) + "\n"
    write_atomic(
        directory / WEIGHTS_NAME, lambda p: save_file(state_dict, str(p), {"format": "pt"})
    )
    write_atomic(directory / CONFIG_NAME, lambda p: p.write_text(config_text))
    return directory
