"""``dvlt-ros process BAG --out DIR``: reconstruct a recorded rosbag2 offline.

Reads the bag directly (no DDS, no rosbag2 install), runs the reconstruction node's
pipeline on every rig snapshot in order, and writes an mcap bag of the node's outputs at
the source stamps, a fused point cloud (``cloud.ply``), per-camera TUM trajectories and
``summary.json``; optionally scores the trajectories against ground truth. Settings are
the node's parameters (``--params-file config/reconstruct.yaml``, ``-p name:=value``).
See docs/replay.md.
"""

from __future__ import annotations

import argparse
import signal
import sys
from pathlib import Path

EXIT_FAILED = 1
EXIT_BAD_INPUT = 2
EXIT_INTERRUPTED = 130
#: Test doubles that answer from a sample bag's scene (``dvlt-ros sample-bag``).
GROUND_TRUTH_BACKENDS = ("ground_truth", "ground_truth_unscaled")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("bag", type=Path, help="rosbag2 directory, .mcap or .db3 file")
    parser.add_argument("--out", type=Path, required=True,
                        help="output directory (created; must be new or empty unless "
                             "--overwrite)")
    parser.add_argument("--params-file", type=Path,
                        help="reconstruct_node parameter file (e.g. config/reconstruct.yaml)")
    parser.add_argument("-p", "--param", action="append", default=[], metavar="NAME:=VALUE",
                        help="override one node parameter, e.g. -p num_steps:=8 (repeatable)")
    parser.add_argument("--cameras", nargs="+", metavar="NS",
                        help="camera namespaces (<ns>/image_raw), reference first; default: "
                             "the parameter file's, else every <ns>/image_raw in the bag")
    parser.add_argument("--remap", action="append", default=[], metavar="FROM:=TO",
                        help="rename a bag topic, e.g. /front/color/image:=/cam0/image_raw")
    parser.add_argument("--backend", help="inference backend (parameter 'backend'); "
                        "'ground_truth' reconstructs a `dvlt-ros sample-bag` bag exactly, "
                        "'ground_truth_unscaled' like an up-to-scale network (random scale "
                        "per window, pose and depth noise)")
    parser.add_argument("--checkpoint", help="model checkpoint (parameter 'checkpoint')")
    parser.add_argument("--device", help="auto, cpu, cuda, cuda:N (parameter 'device')")
    parser.add_argument("--fuse-voxel", type=float, default=0.02,
                        help="voxel size of the fused cloud in world units (0: keep all "
                             "points; default 0.02)")
    parser.add_argument("--fuse-max-points", type=int, default=4_000_000,
                        help="fused cloud size above which its voxel doubles, keeping memory "
                             "bounded on long bags (default 4000000)")
    parser.add_argument("--glb", action="store_true",
                        help="also write scene.glb: the fused cloud and a camera frustum per "
                             "reconstructed view, for any glTF viewer (needs the 'viewers' "
                             "extra)")
    parser.add_argument("--rrd", action="store_true",
                        help="also write recording.rrd: per window the cameras, images, depth "
                             "and confidence over time, the trajectories and the fused cloud; "
                             "open it with `rerun recording.rrd` (needs the 'viewers' extra)")
    parser.add_argument("--overwrite", action="store_true",
                        help="replace an existing output directory (only once finished)")
    grounding = parser.add_argument_group(
        "grounding: metric scale and the robot's frames, from the bag's /tf, /tf_static and "
        "depth (parameters of the same names, docs/world_frame.md)")
    grounding.add_argument("--scale-source",
                           choices=("none", "rig", "odometry", "depth", "auto"),
                           help="parameter 'scale_source' (default none: up to scale)")
    grounding.add_argument("--anchor", choices=("chain", "tf"),
                           help="parameter 'anchor'; tf needs --world-frame, a TF frame of "
                                "the bag (e.g. odom)")
    for flag, what in (("world-frame", "frame of the outputs"),
                       ("odom-frame", "TF frame of the odometry"),
                       ("base-frame", "TF frame of the robot base")):
        grounding.add_argument(f"--{flag}", metavar="FRAME",
                               help=f"parameter '{flag.replace('-', '_')}' ({what})")
    loops = parser.add_argument_group(
        "loop closure (on unless the params file or -p sets loop_closure; "
        "docs/world_frame.md#loop-closure)")
    loops.add_argument("--describe-checkpoint", metavar="CHECKPOINT",
                       help="a DVLT checkpoint whose encoder describes the keyframes for place "
                            "recognition when the backend gives no descriptors (ground-truth "
                            "backends, ONNX/TensorRT exports)")
    gt = parser.add_argument_group("evaluation against ground truth")
    gt.add_argument("--gt-tf-topic", metavar="TOPIC",
                    help="TF topic of the bag with ground-truth poses (chained with "
                         "/tf_static up to its root), e.g. /ground_truth/tf")
    gt.add_argument("--gt-tum", action="append", default=[], metavar="[CAMERA=]FILE",
                    help="TUM file of a camera's optical-frame poses (no CAMERA: the "
                         "reference camera); repeatable")
    gt.add_argument("--align", choices=("sim3", "se3"), default="sim3",
                    help="alignment before ATE/RPE (se3 for metric models)")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")


def _parameters(args: argparse.Namespace, bag) -> dict[str, object]:
    from dvlt_ros.bags.decode import detect_cameras
    from dvlt_ros.bags.sample import SCENE_TOPIC, camera_names, read_sample_config
    from dvlt_ros.pipeline.settings import file_parameters, load_parameters, parse_override

    overrides = dict(parse_override(item) for item in args.param)
    for flag in ("backend", "checkpoint", "device", "scale_source", "anchor", "world_frame",
                 "odom_frame", "base_frame"):
        if getattr(args, flag) is not None:
            overrides[flag] = getattr(args, flag)
    if args.cameras:
        overrides["cameras"] = list(args.cameras)
    # The CLI's own defaults apply only where neither a flag nor the params file sets a value.
    given = {**(file_parameters(args.params_file) if args.params_file else {}), **overrides}
    if "cameras" not in given:
        transport = given.get("image_transport", "raw")
        cameras = (camera_names(read_sample_config(bag)) if SCENE_TOPIC in bag.topics
                   else detect_cameras(bag.topics, str(transport)))
        if cameras:
            overrides["cameras"] = cameras
    if overrides.get("backend") in GROUND_TRUTH_BACKENDS and "img_size" not in overrides:
        overrides["img_size"] = 224
    if "loop_closure" not in given:
        overrides["loop_closure"] = True  # the node's default is off
    return load_parameters(args.params_file, overrides)


def _describer(args: argparse.Namespace, params: dict[str, object]):
    """The encoder of ``--describe-checkpoint`` as a keyframe describer, or None."""
    if args.describe_checkpoint is None or not params["loop_closure"]:
        return None
    from dvlt_core.mapping import EncoderDescriber
    from dvlt_ros.node_support.model import ModelSettings, load_backend

    backend = load_backend(ModelSettings("torch", args.describe_checkpoint,
                                         str(params["device"]), "fp32")).backend
    return EncoderDescriber(backend.model, backend.img_size)


def _backend(params: dict[str, object], bag):
    from dvlt_ros.bags.sample import ground_truth_backend
    from dvlt_ros.node_support.model import ModelSettings, load_backend

    if params["backend"] in GROUND_TRUTH_BACKENDS:
        return ground_truth_backend(bag, int(params["img_size"]),
                                    unscaled=params["backend"] == "ground_truth_unscaled")
    return load_backend(ModelSettings.from_params(params)).backend


def _ground_truth(args: argparse.Namespace, cameras: list[str]):
    from dvlt_ros.bags.evaluation import read_tum
    from dvlt_ros.bags.issues import BagError
    from dvlt_ros.bags.processor import GroundTruth
    from dvlt_ros.pipeline.settings import camera_label

    if args.gt_tf_topic is None and not args.gt_tum:
        return None
    tum = {}
    for item in args.gt_tum:
        camera, _, path = item.rpartition("=")
        camera = camera_label(camera) if camera else camera_label(cameras[0])
        if not Path(path).is_file():
            raise BagError(f"--gt-tum file {path} does not exist")
        read_tum(path)  # refuse a file that cannot be used now, not after processing
        tum[camera] = Path(path)
    topic = None if args.gt_tf_topic is None else "/" + args.gt_tf_topic.lstrip("/")
    return GroundTruth(tf_topic=topic, tum_files=tum, align=args.align)


def run(args: argparse.Namespace) -> int:
    """Run ``dvlt-ros process``; returns the exit status."""
    from tqdm import tqdm

    from dvlt_core.backends.errors import BACKEND_SETUP_ERRORS
    from dvlt_ros.bags.issues import BagError, IssueLog
    from dvlt_ros.bags.processor import BagProcessor, ProcessOptions
    from dvlt_ros.bags.source import BagSource, parse_remaps
    from dvlt_ros.bags.viewer_exports import ViewerPackageMissingError, require_viewer_exports
    from dvlt_ros.pipeline.settings import ParameterError

    def say(level: str, text: str) -> None:
        tqdm.write(f"[{level}] {text}", file=sys.stderr)  # keeps the progress bar intact

    issues = IssueLog(lambda issue: say(issue.level, f"{issue.code}: "
                                        + (f"[{issue.topic}] " if issue.topic else "")
                                        + issue.message))
    try:
        require_viewer_exports(args.glb, args.rrd)
        bag = BagSource(args.bag, issues, parse_remaps(args.remap))
        params = _parameters(args, bag)
        options = ProcessOptions(fuse_voxel=args.fuse_voxel,
                                 fuse_max_points=args.fuse_max_points, overwrite=args.overwrite,
                                 ground_truth=_ground_truth(args, list(params["cameras"])),
                                 glb=args.glb, rrd=args.rrd)
        backend = _backend(params, bag)
        describer = _describer(args, params)
        bar = None if args.quiet else _ProgressBar()
        processor = BagProcessor(bag, backend, params, args.out, options, issues=issues,
                                 log=say, progress=bar, describer=describer)
    except (BagError, ParameterError, ViewerPackageMissingError,
            *BACKEND_SETUP_ERRORS) as exc:
        say("error", str(exc))
        return EXIT_BAD_INPUT
    cameras = ", ".join(processor.session.cameras)
    say("info", f"processing {args.bag} -> {args.out}: cameras {cameras}, "
        f"K {params['num_steps_mode']} (num_steps={params['num_steps']}), "
        f"window {params['window_timesteps']} timesteps / {params['max_views']} views")

    def on_sigint(signum, frame):
        say("warning", "interrupted: finishing the current window and keeping what was done "
            "(Ctrl-C again to abort without output)")
        processor.stop()
        signal.signal(signal.SIGINT, signal.default_int_handler)

    previous = signal.signal(signal.SIGINT, on_sigint)
    try:
        summary = processor.run()
    finally:
        signal.signal(signal.SIGINT, previous)
        if bar is not None:
            bar.close()
    _print_summary(summary, say)
    if summary["interrupted"]:
        return EXIT_INTERRUPTED
    if summary["error"]:
        return EXIT_FAILED
    if summary["windows"] == 0:
        say("error", _no_window_reason(summary))
        return EXIT_BAD_INPUT
    return 0


def _no_window_reason(summary: dict) -> str:
    """One line: why a run made no window, with the per-camera counts."""
    frames = summary["frames"]
    counts = "; ".join(f"{camera}: {c['received']} received, {c['rejected']} rejected"
                       for camera, c in frames["per_camera"].items())
    if frames["read"] == 0:
        why = "the bag's camera topics hold no image"
    elif all(c["rejected"] == c["received"] for c in frames["per_camera"].values()):
        why = f"every image was rejected ({counts}); first: {frames['first_rejection']}"
    else:
        why = (f"the images never formed a complete rig snapshot ({counts}): check that the "
               "cameras' stamps are within sync_slop of each other")
    return f"no window was reconstructed: {why}"


class _ProgressBar:
    """tqdm bar over the bag's images, with the number of windows made so far."""

    def __init__(self) -> None:
        from tqdm import tqdm

        self._bar = tqdm(unit="img", file=sys.stderr, dynamic_ncols=True)

    def __call__(self, done: int, total: int, windows: int) -> None:
        self._bar.total = total
        self._bar.n = done
        self._bar.set_postfix(windows=windows, refresh=False)
        self._bar.refresh()

    def close(self) -> None:
        self._bar.close()


def _print_summary(summary: dict, say) -> None:
    frames = summary["frames"]
    timings = summary["timings_ms"]["total_ms"]
    first = summary["time_to_first_output_s"]
    state = ("NOTHING reconstructed" if summary["windows"] == 0 and not summary["interrupted"]
             else "complete" if summary["complete"] else
             "INTERRUPTED, partial result kept" if summary["interrupted"] else
             "DAMAGED bag, the readable part was processed (see the warnings above)"
             if summary["bag_damaged"] else "PARTIAL result kept (see the warnings above)")
    lines = [
        f"{state}: {summary['windows']} windows from {frames['read']} of {frames['in_bag']} "
        f"images in {summary['wall_s']:.1f} s"
        + (f" (first output after {first:.2f} s, {timings['mean']:.0f} ms per window)"
           if first is not None and timings else ""),
        "images per camera: " + "; ".join(
            f"{camera}: {c['received']} received, {c['used']} used, {c['rejected']} rejected"
            for camera, c in frames["per_camera"].items()),
        f"K: {summary['k']['mode']} {summary['k']['counts']}; outputs in {summary['output']}: "
        f"{summary['files']['bag']}/, {', '.join(summary['files']['clouds'])}, "
        + "".join(f"{', '.join(summary['files'][kind])}, " for kind in ("glb", "rrd")
                  if kind in summary["files"])
        + f"{len(summary['files']['trajectories'])} TUM files, summary.json",
    ]
    if summary["error"]:
        lines.append(f"stopped by an error: {summary['error']}")
    grounding = summary["grounding"]
    if grounding["scale_source"] != "none" or grounding["anchor"] != "chain":
        scale = grounding["metres_per_unit"]
        lines.append(
            f"grounding: scale_source {grounding['scale_source']}, anchor "
            f"{grounding['anchor']}: {grounding['metric_windows']} of {summary['windows']} "
            "windows metric" + (f" (median {scale['median']:.4g} m/unit)" if scale else "")
            + (f"; not metric: {grounding['unscaled_reason']}"
               if grounding["unscaled_reason"] else ""))
    loops = summary["loop_closure"]
    if loops["state"] != "off":
        lines.append(f"loop closure {loops['state']}" + (
            f": {loops['keyframes']} keyframes, {loops['candidates']} candidates, "
            f"{loops['accepted']} loops accepted, {sum(loops['rejected'].values())} rejected"
            if loops["state"] == "on" else ""))

    def ate(value) -> str:
        return "n/a" if value is None else f"{value:.4g}"

    for name, truth in grounding["ground_truth"].items():
        lines.append(f"{name} ({truth['frame']}): reference camera ATE "
                     f"{ate(truth['ate_se3_rmse'])} after SE(3) alignment, "
                     f"{truth['unaligned_rmse']:.4g} unaligned, path "
                     f"{truth['path_length_m']:.3g} m" + (
                         f"; after Sim(3) alignment {ate(truth['ate_sim3_rmse'])} chained, "
                         f"{ate(truth['ate_sim3_rmse_optimised'])} loop-corrected"
                         if "ate_sim3_rmse_optimised" in truth else ""))
    for evaluation in summary["evaluation"] or []:
        optimised = evaluation.get("optimised")
        lines.append(f"ATE rmse {evaluation['ate_rmse']:.4g} over {evaluation['matched']} poses "
                     f"(world epoch {evaluation['epoch']}, {evaluation['align']}, scale "
                     f"{evaluation['scale']:.4g})" + (
                         f"; loop-corrected {optimised['ate_rmse']:.4g} over "
                         f"{optimised['matched']} poses" if optimised else ""))
    for line in lines:
        say("info", line)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="dvlt-ros process", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    add_arguments(parser)
    return run(parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
