"""Per-op CPU profile (torch.profiler) of the three stages of ``DVLTModel``.

Released config, fp32, deterministic weights, B = 1. For each size it profiles ``encode``, one
loop ``step`` and ``decode`` (after a warm-up call of each) and prints the top operators by self
CPU time as a Markdown table (the tables in docs/model.md, "Profile", come from this script):

    python benchmarks/profile_model.py --threads 2 --configs 2x126x168,4x252x336
"""

from __future__ import annotations

import argparse
import time

import torch
from torch.profiler import ProfilerActivity, profile

from dvlt_core.model import DVLTModel
from dvlt_core.testing import deterministic_state_dict
from dvlt_core.testing.det_weights import model_shapes

RELEASED = {"img_size": 504, "depth_head_type": "conv"}


def stage_calls(model: DVLTModel, images: torch.Tensor) -> dict:
    H, W = images.shape[-2:]
    tokens = model.encode(images)
    return {
        "encode": lambda: model.encode(images),
        "step": lambda: model.step(tokens, 0.0, 1.0 / 11, 0, image_hw=(H, W)),
        "decode": lambda: model.decode(tokens, (H, W)),
    }


def op_table(prof, rows: int) -> str:
    events = sorted(prof.key_averages(), key=lambda e: e.self_cpu_time_total, reverse=True)
    total = sum(e.self_cpu_time_total for e in events) or 1
    lines = ["| op | calls | self ms | share |", "|---|---|---|---|"]
    for event in events[:rows]:
        ms = event.self_cpu_time_total / 1e3
        share = 100 * event.self_cpu_time_total / total
        lines.append(f"| `{event.key}` | {event.count} | {ms:.1f} | {share:.0f}% |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--configs", default="2x126x168,4x252x336", help="SxHxW, comma-separated")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--rows", type=int, default=8, help="operators per table")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    model = DVLTModel(**RELEASED).eval()
    model.load_state_dict(deterministic_state_dict(model_shapes(model), seed=1), strict=True)
    for config in args.configs.split(","):
        S, H, W = (int(v) for v in config.split("x"))
        images = torch.rand(1, S, 3, H, W, generator=torch.Generator().manual_seed(S))
        with torch.inference_mode():
            for name, call in stage_calls(model, images).items():
                call()
                start = time.perf_counter()
                with profile(activities=[ProfilerActivity.CPU]) as prof:
                    call()
                wall = (time.perf_counter() - start) * 1e3
                print(f"\n#### S={S}, {H}x{W}, {name} ({wall:.0f} ms wall, profiled)\n")
                print(op_table(prof, args.rows), flush=True)


if __name__ == "__main__":
    main()
