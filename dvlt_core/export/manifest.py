"""The export manifest: what a folder of DVLT ONNX graphs holds and how to loop over them.

``dvlt-export`` writes ``export.json`` next to the graphs. It records the model config (for the
loop plan), the fixed image size, the view range, the opset, a fingerprint of the weights and a
sha256 of every graph file. Backends read the graphs only through :func:`load_manifest`, which
checks the schema and the file hashes first.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from dvlt_core.atomic import write_atomic
from dvlt_core.model.config import DVLTConfig
from dvlt_core.model.schedule import InferencePlan, inference_plan

MANIFEST_NAME = "export.json"
MANIFEST_FORMAT = "dvlt-onnx-export"
MANIFEST_VERSION = 1

ENCODER_INPUTS = ("images",)
ENCODER_OUTPUTS = ("tokens",)
STEP_INPUTS = ("tokens", "t_now", "t_next")
STEP_OUTPUTS = ("tokens_out",)
DECODER_INPUTS = ("tokens",)
DECODER_OUTPUTS = ("rays", "depth", "depth_conf", "world_points", "pose_enc")
VIEW_AXIS = 1


class ExportError(RuntimeError):
    """An export could not be written, read or verified; the message says what to do."""


@dataclass(frozen=True)
class ViewRange:
    """Number of views S an export accepts: ``min <= opt <= max`` (``opt``: tuning target)."""

    min: int
    opt: int
    max: int

    def __post_init__(self) -> None:
        if not 1 <= self.min <= self.opt <= self.max:
            raise ValueError(
                f"views must satisfy 1 <= min <= opt <= max, got {self.min}:{self.opt}:{self.max}"
            )

    @classmethod
    def parse(cls, text: str) -> ViewRange:
        """``"8"`` (fixed), ``"1:16"`` (opt = max) or ``"1:8:16"``."""
        try:
            parts = [int(p) for p in text.split(":")]
        except ValueError:
            parts = []
        if len(parts) == 1:
            return cls(parts[0], parts[0], parts[0])
        if len(parts) == 2:
            return cls(parts[0], parts[1], parts[1])
        if len(parts) == 3:
            return cls(*parts)
        raise ValueError(f"views must look like 8, 1:16 or 1:8:16 (min:opt:max), got {text!r}")

    def __contains__(self, num_views: object) -> bool:
        return isinstance(num_views, int) and self.min <= num_views <= self.max

    def __str__(self) -> str:
        return f"{self.min}:{self.opt}:{self.max}"


@dataclass(frozen=True)
class GraphFile:
    """One ONNX graph of an export: file name (inside the export folder) and its sha256."""

    file: str
    sha256: str


@dataclass(frozen=True)
class ExportManifest:
    """Contents of ``export.json``; ``root`` is the folder it was read from or written to."""

    root: Path
    config: dict[str, Any]
    checkpoint_sha256: str
    height: int
    width: int
    views: ViewRange
    opset: int
    num_tokens: int
    embed_dim: int
    encoder: GraphFile
    steps: dict[int, GraphFile]
    decoder: GraphFile
    outputs: tuple[str, ...]
    torch_version: str = field(default=torch.__version__)

    @property
    def model_config(self) -> DVLTConfig:
        return DVLTConfig.from_json(self.config)

    @property
    def img_size(self) -> int:
        return max(self.height, self.width)

    def plan(self, num_steps: int | None) -> InferencePlan:
        """The loop plan for K = ``num_steps`` (default K of the model if None)."""
        cfg = self.model_config
        K = cfg.default_num_steps if num_steps is None else num_steps
        plan = inference_plan(cfg.k_sampling, cfg.recurrence_mode, cfg.num_steps, K)
        missing = sorted(set(plan.block_indices) - set(self.steps))
        if missing:
            raise ExportError(
                f"the export in {self.root} has step graphs for blocks {sorted(self.steps)} but "
                f"K={K} needs blocks {missing}; export again with dvlt-export"
            )
        return plan

    def path(self, graph: GraphFile) -> Path:
        return self.root / graph.file

    def check_images(self, images: torch.Tensor) -> int:
        """Return S for ``images`` (1, S, 3, H, W), or raise naming what does not fit."""
        if images.dim() != 5 or images.shape[0] != 1 or images.shape[2] != 3:
            raise ValueError(
                f"images must be (1, S, 3, H, W), got {tuple(images.shape)}; run one scene at "
                "a time"
            )
        H, W = int(images.shape[3]), int(images.shape[4])
        if (self.height, self.width) != (H, W):
            raise ValueError(
                f"this export is fixed to {self.height}x{self.width} (HxW) images, got {H}x{W}; "
                f"resize the images or export again with --height {H} --width {W}"
            )
        S = int(images.shape[1])
        if S not in self.views:
            raise ValueError(
                f"this export accepts {self.views.min}..{self.views.max} views, got {S}; "
                f"export again with --views covering {S}"
            )
        return S

    def to_json(self) -> dict[str, Any]:
        return {
            "format": MANIFEST_FORMAT,
            "version": MANIFEST_VERSION,
            "config": self.config,
            "checkpoint_sha256": self.checkpoint_sha256,
            "height": self.height,
            "width": self.width,
            "views": {"min": self.views.min, "opt": self.views.opt, "max": self.views.max},
            "opset": self.opset,
            "num_tokens": self.num_tokens,
            "embed_dim": self.embed_dim,
            "graphs": {
                "encoder": _graph_json(self.encoder),
                "steps": {str(k): _graph_json(v) for k, v in sorted(self.steps.items())},
                "decoder": _graph_json(self.decoder),
            },
            "outputs": list(self.outputs),
            "torch_version": self.torch_version,
        }


def _graph_json(graph: GraphFile) -> dict[str, str]:
    return {"file": graph.file, "sha256": graph.sha256}


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def model_fingerprint(model: nn.Module) -> str:
    """sha256 over the model config and every state-dict entry (name, dtype, shape, bytes)."""
    digest = hashlib.sha256()
    config = getattr(model, "config", None)
    if config is not None:
        digest.update(json.dumps(config.to_dict(), sort_keys=True).encode())
    for name, tensor in sorted(model.state_dict().items()):
        t = tensor.detach().cpu().contiguous()
        digest.update(f"{name}|{t.dtype}|{tuple(t.shape)}|".encode())
        digest.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def save_manifest(manifest: ExportManifest) -> Path:
    path = manifest.root / MANIFEST_NAME
    text = json.dumps(manifest.to_json(), indent=2, sort_keys=True) + "\n"
    write_atomic(path, lambda p: p.write_text(text))
    return path


def load_manifest(export_dir: str | Path, *, verify_files: bool = True) -> ExportManifest:
    """Read and validate ``export.json`` of ``export_dir`` (and the graph hashes)."""
    root = Path(export_dir).expanduser()
    path = root / MANIFEST_NAME
    if not path.is_file():
        raise ExportError(
            f"{root} is not a DVLT export (no {MANIFEST_NAME}); create one with "
            f"`dvlt-export --checkpoint SRC --out {root} --onnx-only`"
        )
    try:
        data = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise ExportError(f"cannot read {path}: {exc}; export again with dvlt-export") from exc
    try:
        manifest = _parse(root, data)
    except (KeyError, TypeError, ValueError) as exc:
        raise ExportError(
            f"{path} is not a valid version-{MANIFEST_VERSION} manifest ({exc}); export again "
            "with this version of dvlt-export"
        ) from exc
    if verify_files:
        for graph in (manifest.encoder, *manifest.steps.values(), manifest.decoder):
            graph_path = manifest.path(graph)
            if not graph_path.is_file():
                raise ExportError(f"{graph_path} is missing; export again with dvlt-export")
            if file_sha256(graph_path) != graph.sha256:
                raise ExportError(
                    f"{graph_path} does not match the sha256 in {path} (modified or truncated); "
                    "export again with dvlt-export"
                )
    return manifest


def _parse(root: Path, data: Any) -> ExportManifest:
    if not isinstance(data, dict) or data.get("format") != MANIFEST_FORMAT:
        raise ValueError(f"format is not {MANIFEST_FORMAT!r}")
    if data.get("version") != MANIFEST_VERSION:
        raise ValueError(f"version {data.get('version')!r} is not {MANIFEST_VERSION}")
    graphs = data["graphs"]
    views = data["views"]
    config = data["config"]
    DVLTConfig.from_json(config)  # refuses unknown or invalid arguments
    return ExportManifest(
        root=root,
        config=config,
        checkpoint_sha256=_hex(data["checkpoint_sha256"]),
        height=_int(data["height"]),
        width=_int(data["width"]),
        views=ViewRange(_int(views["min"]), _int(views["opt"]), _int(views["max"])),
        opset=_int(data["opset"]),
        num_tokens=_int(data["num_tokens"]),
        embed_dim=_int(data["embed_dim"]),
        encoder=_graph(graphs["encoder"]),
        steps={_int(int(k)): _graph(v) for k, v in graphs["steps"].items()},
        decoder=_graph(graphs["decoder"]),
        outputs=tuple(_name(o) for o in data["outputs"]),
        torch_version=str(data["torch_version"]),
    )


def _int(value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ValueError(f"expected a non-negative int, got {value!r}")
    return value


def _hex(value: Any) -> str:
    if not isinstance(value, str) or len(value) != 64 or set(value) - set("0123456789abcdef"):
        raise ValueError(f"expected a sha256 hex digest, got {value!r}")
    return value


def _name(value: Any) -> str:
    if not isinstance(value, str) or not value or not value.replace("_", "").isalnum():
        raise ValueError(f"expected a plain name, got {value!r}")
    return value


def _graph(entry: Any) -> GraphFile:
    file = entry["file"]
    if not isinstance(file, str) or Path(file).name != file or not file.endswith(".onnx"):
        raise ValueError(f"graph file must be a plain *.onnx name inside the export, got {file!r}")
    return GraphFile(file=file, sha256=_hex(entry["sha256"]))
