"""diagnostic_msgs/DiagnosticArray of a reconstruction session, live or offline.

One status for the pipeline (latency per stage, K, views, drops, model identity and
licence, units, the scale in use with its source, spread and constraints, the anchor,
loop closure counts and timings, GPU memory) and one per camera (input rate, frames,
drops, problems).
Each status carries the worst level of its active problems and their messages. The live
node and ``dvlt-ros process`` both build them with :func:`session_statuses` from
:func:`pipeline_values` (plus their own values, e.g. the model's).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence

from builtin_interfaces.msg import Time
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue

from dvlt_ros.node_support.health import OK, Problem
from dvlt_ros.pipeline.report import CycleReport
from dvlt_ros.pipeline.session import ReconstructionSession
from dvlt_ros.pipeline.sync import CameraStats


def _format(value: object) -> str:
    if isinstance(value, float):
        return f"{value:.3f}"
    return str(value)


def status(
    name: str,
    hardware_id: str,
    values: Mapping[str, object],
    problems: Sequence[Problem],
    ok_message: str = "OK",
) -> DiagnosticStatus:
    """A DiagnosticStatus whose level and message come from ``problems`` (the worst
    first), with ``values`` and one ``problem: <kind>`` entry per problem."""
    worst = max((p.level for p in problems), default=OK)
    ranked = sorted(problems, key=lambda p: -p.level)
    message = "; ".join(p.message for p in ranked) if ranked else ok_message
    pairs = [KeyValue(key=k, value=_format(v)) for k, v in values.items()]
    pairs += [KeyValue(key=f"problem: {p.kind}", value=p.message) for p in ranked]
    return DiagnosticStatus(
        level=bytes([worst]), name=name, message=message, hardware_id=hardware_id,
        values=pairs,
    )


def units_text(units: str) -> str:
    """The ``units`` value of the pipeline status for a cycle's ``units`` (``m`` or not)."""
    return "metres" if units == "m" else "arbitrary (network scale; not metres)"


def camera_values(stats: CameraStats) -> dict[str, object]:
    """The values of a camera's status."""
    return {"input_rate_hz": stats.rate_hz, "received": stats.received, "used": stats.used,
            "dropped": stats.dropped, "rejected": stats.rejected, "timed_out": stats.timed_out}


def pipeline_values(session: ReconstructionSession, overruns: int = 0) -> dict[str, object]:
    """The values of the pipeline status: the K settings, cycle counts, torch's intra-op
    threads of the last cycle and, after a cycle, its report (K, views, points, units,
    latency per stage, drops)."""
    p, report = session.params, session.last_report
    values: dict[str, object] = {
        "num_steps_mode": p["num_steps_mode"],
        "num_steps_setting": p["num_steps"],
        "cycles": session.cycles,
        "overruns": overruns,
    }
    if session.torch_threads is not None:
        values["torch_threads"] = session.torch_threads
    if report is not None:
        values.update({
            "num_steps": report.num_steps,
            "views": report.num_views,
            "cameras_in_window": report.num_cameras,
            "timesteps_in_window": report.num_timesteps,
            "points": report.points,
            "units": units_text(report.units),
            "latency_budget_ms": p["latency_budget_ms"],
            "predicted_ms": report.predicted_ms if report.predicted_ms is not None
            else "n/a",
        })
        values.update({f"latency_{k}": v for k, v in report.as_dict().items()
                       if k.endswith("_ms") and k != "predicted_ms" and not k.startswith("loop_")})
        values["drops"] = report.drops
        values.update(grounding_values(report))
        values.update(loop_values(report))
    return values


def loop_values(report: CycleReport) -> dict[str, object]:
    """Loop closure: its state, the keyframe, candidate, accepted and rejected counts and
    the milliseconds of the last graph update, verification and optimisation."""
    if report.loop_closure == "off":
        return {"loop_closure": "off"}
    return {"loop_closure": report.loop_closure,
            **{k: v for k, v in report.as_dict().items() if k.startswith("loop_")}}


def grounding_values(report: CycleReport) -> dict[str, object]:
    """The scale in use, its source, spread and constraints, and the anchor of a cycle;
    ``grounding`` is one line (``no metric scale available: <reasons>`` when none)."""
    metric = report.metric
    return {
        "scale_source": report.scale_source,
        "metres_per_unit": report.metres_per_unit if metric else "n/a (up to scale)",
        "scale_spread": report.scale_spread if math.isfinite(report.scale_spread) else "n/a",
        "scale_constraints": report.scale_constraints,
        "anchor": report.anchor,
        "grounding": report.grounding or units_text(report.units),
    }


def session_statuses(
    name: str,
    session: ReconstructionSession,
    values: Mapping[str, object],
    problems: Callable[[str], Sequence[Problem]],
) -> list[DiagnosticStatus]:
    """The pipeline status (``values``, the problems of source ``"pipeline"``) and one
    status per camera (its counters, the problems of its source) of ``name``."""
    statuses = [status(f"{name}: pipeline", name, values, problems("pipeline"))]
    stats = session.camera_stats()
    for camera in session.cameras:
        statuses.append(status(f"{name}: camera {camera}", camera,
                               camera_values(stats[camera]), problems(camera)))
    return statuses


def diagnostic_array(stamp: Time, statuses: Sequence[DiagnosticStatus]) -> DiagnosticArray:
    msg = DiagnosticArray()
    msg.header.stamp = stamp
    msg.status = list(statuses)
    return msg


def gpu_memory_values(device) -> dict[str, float]:
    """Allocated and reserved CUDA memory in MiB on ``device``; empty on CPU."""
    if getattr(device, "type", None) != "cuda":
        return {}
    import torch

    return {
        "gpu_memory_allocated_mib": torch.cuda.memory_allocated(device) / 2**20,
        "gpu_memory_reserved_mib": torch.cuda.memory_reserved(device) / 2**20,
        "gpu_memory_peak_mib": torch.cuda.max_memory_allocated(device) / 2**20,
    }
