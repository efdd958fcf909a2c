"""diagnostic_msgs/DiagnosticArray of the reconstruction node.

One status for the pipeline (latency per stage, K, views, drops, model identity and
licence, units, GPU memory) and one per camera (input rate, frames, drops, problems).
Each status carries the worst level of its active problems and their messages.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from builtin_interfaces.msg import Time
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue

from dvlt_ros.node_support.health import ERROR, OK, WARN, Problem
from dvlt_ros.pipeline.events import Level
from dvlt_ros.pipeline.sync import CameraStats

#: DiagnosticStatus level of each pipeline event level.
LEVELS = {Level.INFO: OK, Level.WARN: WARN, Level.ERROR: ERROR}


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
