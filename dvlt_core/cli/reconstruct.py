"""``dvlt-reconstruct``: reconstruct a scene from images, a folder or a video.

Writes into ``--out``: ``reconstruction.npz`` (all arrays), ``points.ply`` (coloured,
confidence-filtered), ``depth/<view>.png`` and ``confidence/<view>.png`` previews,
``cameras.json`` and ``trajectory.tum``; with ``--glb`` ``scene.glb`` and with ``--rrd``
``recording.rrd`` (the ``viewers`` extra). ``--serve`` instead serves the browser demo
(:mod:`dvlt_core.cli.browser_demo`).
"""

from __future__ import annotations

import argparse
import logging
import sys
import threading
from collections.abc import Sequence
from pathlib import Path

import torch
from tqdm.auto import tqdm

from dvlt_core.backends import InferenceBackend, available_backends, create_backend
from dvlt_core.backends.errors import BACKEND_SETUP_ERRORS
from dvlt_core.inference import POSE_MODES, POSE_WEIGHTS, Reconstructor
from dvlt_core.io.checkpoint import default_checkpoint
from dvlt_core.io.image_decode import DEFAULT_MAX_PIXELS
from dvlt_core.io.images import load_sequence
from dvlt_core.io.writers import (
    write_confidence_preview,
    write_depth_preview,
    write_ply,
    write_tum,
)
from dvlt_core.model.precision import PRECISIONS
from dvlt_core.result import RESOLUTIONS, Reconstruction
from dvlt_core.result_writers import write_cameras_json, write_npz
from dvlt_core.viewer_exports.glb import require_trimesh, write_glb
from dvlt_core.viewer_exports.packages import ViewerPackageMissingError
from dvlt_core.viewer_exports.rrd import require_rerun, write_rrd

EXIT_USAGE = 2
USER_ERRORS = (*BACKEND_SETUP_ERRORS, FileNotFoundError, ValueError, ViewerPackageMissingError)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="dvlt-reconstruct",
        description="Reconstruct cameras, depth and a point cloud from images, a folder of "
        "images or a video with DVLT.",
    )
    parser.add_argument(
        "inputs",
        nargs="*",
        help="a folder of images, a video, or one or more image files (view 0 is the "
        "reference); none with --serve",
    )
    parser.add_argument("--out", type=Path, default=Path("dvlt_output"), help="output folder")
    parser.add_argument(
        "--checkpoint",
        default=None,
        help="torch backend: local folder/file, https URL or Hugging Face repo id[@revision] "
        "(default: $DVLT_CHECKPOINT, else nvidia/dvlt); onnxruntime/tensorrt backends: the "
        "folder written by dvlt-export (required)",
    )
    parser.add_argument("--revision", default=None, help="Hub revision (branch, tag or commit)")
    parser.add_argument("--cache-dir", type=Path, default=None, help="download cache folder")
    parser.add_argument(
        "--allow-pickle",
        action="store_true",
        help="allow .pt/.pth/.bin weights (read with torch.load(weights_only=True))",
    )
    parser.add_argument("--backend", default="torch", choices=available_backends())
    parser.add_argument(
        "--num-steps", type=int, default=None, help="loop steps K (default: the model's)"
    )
    parser.add_argument("--device", default="auto", help="'auto', 'cpu', 'cuda' or 'cuda:N'")
    parser.add_argument("--precision", default="fp32", choices=PRECISIONS)
    parser.add_argument("--pose-mode", default="robust", choices=POSE_MODES)
    parser.add_argument("--pose-weights", default="uniform", choices=POSE_WEIGHTS)
    parser.add_argument(
        "--conf-threshold",
        type=_threshold,
        default="20%",
        help="point cloud filter: an absolute confidence (>= 1), or 'P%%' to drop the P "
        "percent least confident pixels (default 20%%)",
    )
    parser.add_argument(
        "--fps", type=float, default=2.0, help="frames per second kept from a video"
    )
    parser.add_argument(
        "--max-pixels",
        type=_positive_int,
        default=DEFAULT_MAX_PIXELS,
        help="images (and video frames) with more pixels are downscaled to this many while "
        "they are decoded; those too large to decode within 4x this are refused (default "
        f"{DEFAULT_MAX_PIXELS}, 1920x1080)",
    )
    parser.add_argument(
        "--rotate-portrait",
        action="store_true",
        help="turn portrait images to landscape for the network (results are turned back)",
    )
    parser.add_argument(
        "--resolution",
        default="original",
        choices=RESOLUTIONS,
        help="maps at the original image size, or at the network's (no resampling)",
    )
    parser.add_argument(
        "--keep-failed-views",
        action="store_true",
        help="also put views whose pose fit failed into points.ply and trajectory.tum",
    )
    parser.add_argument(
        "--glb",
        action="store_true",
        help="also write scene.glb: the points.ply cloud and a camera frustum per view, "
        "for any glTF viewer (y up; needs the 'viewers' extra)",
    )
    parser.add_argument(
        "--rrd",
        action="store_true",
        help="also write recording.rrd: images, depth, confidence, cameras, points and the "
        "trajectory over time; open it with `rerun recording.rrd` (needs the 'viewers' extra)",
    )
    parser.add_argument(
        "--serve",
        action="store_true",
        help="instead of reconstructing INPUTS, serve the browser demo: upload images or a "
        "video, choose K and the backend, see the result in 3D and download its .glb (needs "
        "the 'viewers' extra); the other options are its defaults",
    )
    parser.add_argument(
        "--host",
        default="127.0.0.1",
        help="--serve: the address to listen on (default 127.0.0.1, this machine only)",
    )
    parser.add_argument(
        "--port", type=_port, default=8080, help="--serve: the port (default 8080, or the next "
        "free one)"
    )
    return parser


def _port(text: str) -> int:
    """argparse type of --port."""
    value = _positive_int(text)
    if value > 65535:
        raise argparse.ArgumentTypeError(f"{value} is not a TCP port (1-65535)")
    return value


def _threshold(text: str) -> float | str:
    """argparse type of --conf-threshold: a float, or the string 'P%' with 0 <= P < 100."""
    try:
        value = float(text.rstrip("%"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is neither a number nor 'P%'") from None
    if not text.endswith("%"):
        return value
    if not 0 <= value < 100:
        raise argparse.ArgumentTypeError(f"percentage {text!r} must be in [0, 100)")
    return text


def _positive_int(text: str) -> int:
    """argparse type of --max-pixels."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"{value} must be at least 1")
    return value


def _pick_device(device: str) -> str:
    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    return device


def _backend_options(args: argparse.Namespace) -> tuple[str, dict]:
    """The checkpoint and the options ``create_backend`` takes for ``args.backend``."""
    if args.backend == "torch":
        options = {
            "revision": args.revision,
            "cache_dir": args.cache_dir,
            "allow_pickle": args.allow_pickle,
        }
        return default_checkpoint() if args.checkpoint is None else args.checkpoint, options
    if args.backend == "da3":  # a DA3 folder or Hub id; the backend says what it needs
        return args.checkpoint, {"revision": args.revision, "cache_dir": args.cache_dir}
    if args.checkpoint is None or not args.checkpoint.strip():
        raise ValueError(
            f"--backend {args.backend} runs an export folder: pass --checkpoint <folder written "
            "by dvlt-export>, or use --backend torch"
        )
    return args.checkpoint, {}


def _source(inputs: Sequence[str]) -> str | list[str]:
    return inputs[0] if len(inputs) == 1 else list(inputs)


def write_outputs(
    recon: Reconstruction,
    out: Path,
    conf_threshold: float | str,
    keep_failed: bool = False,
    *,
    glb: bool = False,
    rrd: bool = False,
    metric: bool = False,
) -> dict[str, Path]:
    """Write every output file of the tool into ``out``; returns them by kind.

    Views whose pose fit failed stay in the NPZ and JSON (flagged) but are left out of the
    point cloud, the trajectory and the viewer exports (``glb``, ``rrd``) unless
    ``keep_failed``. ``metric``: the geometry is in metres (the unit the exports state).
    """
    out.mkdir(parents=True, exist_ok=True)
    (out / "depth").mkdir(exist_ok=True)
    (out / "confidence").mkdir(exist_ok=True)
    paths = {
        "npz": out / "reconstruction.npz",
        "ply": out / "points.ply",
        "cameras": out / "cameras.json",
        "trajectory": out / "trajectory.tum",
    }
    write_npz(paths["npz"], recon)
    points, colors = recon.point_cloud(conf_threshold, include_failed=keep_failed)
    write_ply(paths["ply"], points, colors)
    if glb:
        paths["glb"] = out / "scene.glb"
        write_glb(paths["glb"], recon, points, colors, include_failed=keep_failed, metric=metric)
    if rrd:
        paths["rrd"] = out / "recording.rrd"
        write_rrd(paths["rrd"], recon, points, colors, include_failed=keep_failed, metric=metric)
    write_cameras_json(paths["cameras"], recon)
    write_tum(
        paths["trajectory"],
        [v.timestamp for v in recon.views],
        recon.extrinsics_c2w,
        None if keep_failed else [v.pose_valid for v in recon.views],
    )
    for view in tqdm(recon.views, desc="previews", unit="view", leave=False):
        write_depth_preview(out / "depth" / f"{view.name}.png", view.depth, view.valid)
        write_confidence_preview(
            out / "confidence" / f"{view.name}.png", view.confidence, view.valid
        )
    return paths


def load_backend(args: argparse.Namespace) -> InferenceBackend:
    """The backend ``args`` name (``--backend``, ``--checkpoint``, ``--device``, ...), loaded.

    Raises the errors a user can fix (checkpoint or export folder, options, a missing
    runtime) as one of :data:`USER_ERRORS`.
    """
    checkpoint, options = _backend_options(args)
    return create_backend(
        args.backend,
        checkpoint,
        device=_pick_device(args.device),
        precision=args.precision,
        **options,
    )


def reconstruct(
    args: argparse.Namespace, backend: InferenceBackend | None = None
) -> Reconstruction:
    """Load the inputs and (unless ``backend`` is given, already loaded from the same
    ``args``) the model, and run the pipeline.

    Raises the errors a user can fix (bad input, checkpoint or export folder, options, a
    missing runtime) as one of :data:`USER_ERRORS`.
    """
    sequence = load_sequence(_source(args.inputs), fps=args.fps, max_pixels=args.max_pixels)
    print(f"{len(sequence)} view(s) loaded", file=sys.stderr)
    if sequence.downscaled:
        first = sequence.downscaled[0]
        (w, h), image = sequence.source_sizes[first], sequence.images[first]
        print(
            f"note: {len(sequence.downscaled)} view(s) above --max-pixels {args.max_pixels} "
            f"were downscaled while decoded (e.g. {sequence.names[first]}: {w}x{h} -> "
            f"{image.shape[1]}x{image.shape[0]}); outputs are at the downscaled size",
            file=sys.stderr,
        )
    if backend is None:
        backend = load_backend(args)
    args.metric = backend.metric  # the unit the exports state
    reconstructor = Reconstructor(
        backend,
        pose_mode=args.pose_mode,
        pose_weights=args.pose_weights,
        rotate_portrait=args.rotate_portrait,
        resolution=args.resolution,
    )
    with tqdm(total=1, desc="reconstructing", unit="scene", leave=False) as bar:
        recon = reconstructor.reconstruct(
            sequence.images,
            args.num_steps,
            names=_unique(sequence.names),
            timestamps=sequence.timestamps,
        )
        bar.update()
    return recon


def report(recon: Reconstruction, args: argparse.Namespace) -> None:
    """Print the timings and any failed pose fits to stderr."""
    t = recon.timings
    print(
        f"K={recon.num_steps}: encode {t.encode_ms:.0f} ms, loop {sum(t.step_ms):.0f} ms, "
        f"decode {t.decode_ms:.0f} ms, total {t.total_ms:.0f} ms; results in {args.out}",
        file=sys.stderr,
    )
    if recon.failed_views:
        action = (
            "kept (--keep-failed-views)"
            if args.keep_failed_views
            else "left out of points.ply, trajectory.tum and the viewer exports"
        )
        print(
            f"warning: pose fit failed for {len(recon.failed_views)} view(s) "
            f"({', '.join(recon.failed_views)}); {action}",
            file=sys.stderr,
        )


def _unique(names: Sequence[str]) -> list[str]:
    """Make view names unique (two folders may hold files with the same stem); a suffix
    ``_N`` is chosen so that it collides with no other name either."""
    taken = set(names)
    used: set[str] = set()
    out = []
    for name in names:
        candidate, count = name, 0
        while candidate in used or (count and candidate in taken):
            count += 1
            candidate = f"{name}_{count}"
        used.add(candidate)
        out.append(candidate)
    return out


def _require_export_packages(args: argparse.Namespace) -> None:
    """Refuse --glb/--rrd before any work when their package is not installed."""
    if args.glb:
        require_trimesh()
    if args.rrd:
        require_rerun()


def _serve(args: argparse.Namespace) -> int:
    """Run the browser demo until Ctrl-C."""
    from dvlt_core.cli.browser_demo.app import BrowserDemo, is_loopback, require_viser

    require_viser()
    if not is_loopback(args.host):
        print(f"warning: --host {args.host} lets other machines use this demo: anyone who "
              "can reach the port can run the model (the page is locked to this backend and "
              "checkpoint)", file=sys.stderr)
    try:
        demo = BrowserDemo(args, host=args.host, port=args.port)
    except OSError as exc:
        raise ValueError(f"cannot listen on {args.host}:{args.port}: {exc}; choose another "
                         "--host or --port") from None
    print(f"browser demo at {demo.url} (Ctrl-C stops it)", file=sys.stderr)
    try:
        threading.Event().wait()
    except KeyboardInterrupt:
        pass
    finally:
        demo.close()
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Console entry point; returns the process exit code (2 on bad input or setup)."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.serve and args.inputs:
        parser.error("--serve takes its inputs from the browser: leave out INPUTS")
    if not args.serve and not args.inputs:
        parser.error("give INPUTS (a folder, a video or image files), or --serve")
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s: %(message)s")
    if args.serve:
        try:
            return _serve(args)
        except USER_ERRORS as exc:
            print(f"dvlt-reconstruct: error: {exc}", file=sys.stderr)
            return EXIT_USAGE
    try:
        _require_export_packages(args)
        recon = reconstruct(args)
    except USER_ERRORS as exc:
        print(f"dvlt-reconstruct: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    try:
        write_outputs(
            recon,
            args.out,
            args.conf_threshold,
            keep_failed=args.keep_failed_views,
            glb=args.glb,
            rrd=args.rrd,
            metric=args.metric,
        )
    except OSError as exc:
        print(
            f"dvlt-reconstruct: error: cannot write the outputs to {args.out}: {exc}; "
            "choose another --out",
            file=sys.stderr,
        )
        return EXIT_USAGE
    report(recon, args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
