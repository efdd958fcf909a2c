"""The export manifest: what a folder of DVLT ONNX graphs holds and how to loop over them.

``dvlt-export`` writes ``export.json`` next to the graphs. It records the model config (for the
loop plan), the fixed image size, the view range, the opset, a fingerprint of the weights and a
sha256 of every graph file. Backends read the graphs only through :func:`load_manifest`, which
checks, before any session or engine is created: the schema and types of the manifest, its
sizes against its model config, and for every graph its sha256, then the stage identity and
the inputs/outputs the file declares (:mod:`dvlt_core.export.stages`). Every refusal is an
:class:`ExportError` of one line that says what is wrong and to export again.
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
from dvlt_core.export.onnx_signature import read_signature
from dvlt_core.export.stages import (
    MIN_OPSET,
    ExportSizes,
    decoder_outputs,
    stage_identity,
    stage_problems,
    step_blocks,
    step_file_name,
)
from dvlt_core.model.config import DVLTConfig
from dvlt_core.model.schedule import InferencePlan, inference_plan

MANIFEST_NAME = "export.json"
MANIFEST_FORMAT = "dvlt-onnx-export"
#: 2: every graph records its stage and export in its metadata (:mod:`~dvlt_core.export.stages`)
MANIFEST_VERSION = 2
REEXPORT = "export again with dvlt-export (same --out)"


class ExportError(RuntimeError):
    """An export could not be written, read or verified; the message says what to do.

    The command-line tools answer it with exit status 2 (bad input)."""


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

    @property
    def sizes(self) -> ExportSizes:
        return ExportSizes(self.height, self.width, self.num_tokens, self.embed_dim,
                           self.outputs)

    def stage_graphs(self) -> list[tuple[str, int | None, GraphFile]]:
        """(stage, block or None, graph) of every graph, in run order."""
        steps = [("step", block, g) for block, g in sorted(self.steps.items())]
        return [("encoder", None, self.encoder), *steps, ("decoder", None, self.decoder)]

    def identity(self, stage: str, block: int | None) -> dict[str, str]:
        """The metadata the graph of ``stage`` (and ``block``) of this export records."""
        return stage_identity(stage, block, self.height, self.width, self.checkpoint_sha256,
                              self.config)

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
    """Read and validate ``export.json`` of ``export_dir``; with ``verify_files`` also every
    graph file (sha256, stage identity, declared inputs and outputs). Raises
    :class:`ExportError` naming the first problem."""
    root = Path(export_dir).expanduser()
    path = root / MANIFEST_NAME
    if not path.is_file():
        raise ExportError(
            f"{root} is not a DVLT export (no {MANIFEST_NAME}); create one with "
            f"`dvlt-export --checkpoint SRC --out {root} --onnx-only`"
        )
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:  # ValueError: JSONDecodeError, UnicodeDecodeError
        raise ExportError(f"cannot read {path} ({_one_line(exc)}); {REEXPORT}") from exc
    _check_format(path, data)
    try:
        manifest = _parse(root, data)
    except (TypeError, ValueError) as exc:
        raise ExportError(
            f"{path} is not a valid version-{MANIFEST_VERSION} manifest ({_one_line(exc)}); "
            f"{REEXPORT}"
        ) from exc
    problem = _size_problem(manifest)
    if problem:
        raise ExportError(f"{path} contradicts its model config: {problem}; {REEXPORT}")
    if verify_files:
        for stage, block, graph in manifest.stage_graphs():
            _verify_graph(manifest, stage, block, graph)
    return manifest


def _check_format(path: Path, data: Any) -> None:
    if not isinstance(data, dict) or data.get("format") != MANIFEST_FORMAT:
        raise ExportError(f"{path} is not a DVLT export manifest (no \"format\": "
                          f"\"{MANIFEST_FORMAT}\"); {REEXPORT}")
    version = data.get("version")
    if type(version) is int and version < MANIFEST_VERSION:
        raise ExportError(
            f"{path} was written by an older dvlt-export (manifest version {version}; this one "
            f"reads {MANIFEST_VERSION}, whose graphs record their stage); {REEXPORT}"
        )
    if version != MANIFEST_VERSION:
        raise ExportError(f"{path} has manifest version {version!r}, this dvlt_ros reads "
                          f"{MANIFEST_VERSION}; {REEXPORT}, or update dvlt_ros")


def _size_problem(manifest: ExportManifest) -> str | None:
    """What in the manifest's sizes, outputs or step graphs its model config contradicts."""
    m, cfg = manifest, manifest.model_config
    p = cfg.patch_size
    if m.height < p or m.width < p or m.height % p or m.width % p:
        return f"height x width {m.height}x{m.width} is not a multiple of the patch size {p}"
    tokens = 1 + cfg.num_register_tokens + (m.height // p) * (m.width // p)
    if m.num_tokens != tokens:
        return f"num_tokens is {m.num_tokens}, {m.height}x{m.width} images give {tokens}"
    if m.embed_dim != cfg.embed_dim:
        return f"embed_dim is {m.embed_dim}, the model's is {cfg.embed_dim}"
    if cfg.decode_chunk_size is not None and m.views.max > cfg.decode_chunk_size:
        return f"views max {m.views.max} exceeds the decode_chunk_size {cfg.decode_chunk_size}"
    if m.opset < MIN_OPSET:
        return f"opset {m.opset} is below {MIN_OPSET}"
    if m.outputs != decoder_outputs(cfg):
        return f"outputs are {list(m.outputs)}, the model gives {list(decoder_outputs(cfg))}"
    blocks = step_blocks(cfg)
    if sorted(m.steps) != blocks:
        return f"step graphs for blocks {sorted(m.steps)}, the model's loop uses {blocks}"
    expected = {"encoder": "encoder.onnx", "decoder": "decoder.onnx"}
    expected.update({f"step {b}": step_file_name(b, len(blocks)) for b in blocks})
    found = {"encoder": m.encoder.file, "decoder": m.decoder.file}
    found.update({f"step {b}": g.file for b, g in m.steps.items()})
    for what, file in found.items():
        if file != expected[what]:
            return f"the {what} graph is {file!r}, expected {expected[what]!r}"
    return None


def _verify_graph(manifest: ExportManifest, stage: str, block: int | None,
                  graph: GraphFile) -> None:
    """Refuse a graph file that is missing, altered, or not the one its entry describes."""
    path = manifest.path(graph)
    if not path.is_file():
        state = "is not a file" if path.exists() else "is missing"
        raise ExportError(f"{path} {state}; {REEXPORT}")
    if file_sha256(path) != graph.sha256:
        raise ExportError(
            f"{path} does not match the sha256 in {manifest.root / MANIFEST_NAME} (modified or "
            f"truncated); {REEXPORT}"
        )
    try:
        signature = read_signature(path)
    except (OSError, ValueError) as exc:
        raise ExportError(f"{path} is not a complete ONNX graph ({exc}); {REEXPORT}") from exc
    problems = stage_problems(signature, stage, block, manifest.sizes,
                              manifest.identity(stage, block), manifest.opset)
    if problems:
        more = f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""
        raise ExportError(f"{path} does not fit {manifest.root / MANIFEST_NAME}: "
                          f"{problems[0]}{more}; {REEXPORT}")


def _one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split())


def _parse(root: Path, data: dict[str, Any]) -> ExportManifest:
    graphs = _field(data, "graphs", dict)
    views = _field(data, "views", dict)
    config = _field(data, "config", dict)
    try:
        DVLTConfig.from_json(config)  # refuses unknown or invalid arguments
    except (TypeError, ValueError) as exc:
        raise ValueError(f"config: {exc}") from exc
    steps = _field(graphs, "steps", dict, "graphs.")
    if not steps:
        raise ValueError("graphs.steps is empty")
    return ExportManifest(
        root=root,
        config=config,
        checkpoint_sha256=_hex(_field(data, "checkpoint_sha256", str)),
        height=_int(_field(data, "height", int)),
        width=_int(_field(data, "width", int)),
        views=ViewRange(*(_int(_field(views, k, int, "views.")) for k in ("min", "opt", "max"))),
        opset=_int(_field(data, "opset", int)),
        num_tokens=_int(_field(data, "num_tokens", int)),
        embed_dim=_int(_field(data, "embed_dim", int)),
        encoder=_graph(_field(graphs, "encoder", dict, "graphs.")),
        steps={_block(k): _graph(v) for k, v in steps.items()},
        decoder=_graph(_field(graphs, "decoder", dict, "graphs.")),
        outputs=tuple(_name(o) for o in _field(data, "outputs", list)),
        torch_version=_field(data, "torch_version", str),
    )


def _field(data: dict[str, Any], key: str, kind: type, where: str = "") -> Any:
    """``data[key]`` if it is a ``kind``; ``where`` prefixes the field name in the message."""
    name = where + key
    if key not in data:
        raise ValueError(f"{name} is missing")
    value = data[key]
    if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
        raise ValueError(f"{name} must be {_KIND_NAMES[kind]}, got {_short(value)}")
    return value


_KIND_NAMES = {dict: "an object", list: "a list", int: "an integer", str: "a string"}


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


def _int(value: int) -> int:
    if value < 1:
        raise ValueError(f"expected a positive integer, got {value!r}")
    return value


def _block(key: str) -> int:
    if not key.isdigit():
        raise ValueError(f"graphs.steps key {key!r} is not a block index")
    return int(key)


def _hex(value: Any) -> str:
    if not isinstance(value, str) or len(value) != 64 or set(value) - set("0123456789abcdef"):
        raise ValueError(f"expected a sha256 hex digest, got {_short(value)}")
    return value


def _name(value: Any) -> str:
    if not isinstance(value, str) or not value or not value.replace("_", "").isalnum():
        raise ValueError(f"expected a plain name, got {_short(value)}")
    return value


def _graph(entry: Any) -> GraphFile:
    if not isinstance(entry, dict):
        raise ValueError(f"a graph entry must be an object with file and sha256, got "
                         f"{_short(entry)}")
    file = _field(entry, "file", str, "graph.")
    if Path(file).name != file or not file.endswith(".onnx"):
        raise ValueError(f"graph file must be a plain *.onnx name inside the export, got "
                         f"{_short(file)}")
    return GraphFile(file=file, sha256=_hex(_field(entry, "sha256", str, "graph.")))
