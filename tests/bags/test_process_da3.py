"""``dvlt-ros process --backend da3``: the second model (Depth Anything 3, random weights saved
as the released checkpoints are) on a sample bag, for comparing it with DVLT on the same
recording: every snapshot is reconstructed, K is reported as 1 (no loop), and loop closure,
which needs place descriptors DA3 does not expose, says so once and the run goes on."""

from __future__ import annotations

import json

import pytest
from bag_helpers import make_sample

from dvlt_ros.cli import process as process_cli

pytest.importorskip("depth_anything_3", reason="the 'da3' extra (depth-anything-3) is not "
                    "installed")


def test_process_reconstructs_a_bag_with_da3(tmp_path):
    from dvlt_core.backends.da3_weights import save_random_da3_checkpoint

    checkpoint = save_random_da3_checkpoint(tmp_path / "da3")
    bag = make_sample(tmp_path / "sample", "mcap", frames=3)
    out = tmp_path / "out"
    assert process_cli.main([str(bag), "--out", str(out), "--backend", "da3", "--checkpoint",
                             str(checkpoint), "--device", "cpu", "--quiet",
                             "-p", "img_size:=112", "-p", "window_timesteps:=2"]) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["windows"] == 3 and summary["k"]["counts"] == {"1": 3}
    assert summary["parameters"]["backend"] == "da3"
    assert summary["files"]["clouds"]["cloud.ply"] > 0
    assert summary["frames"]["read"] == 2 * 3  # two cameras
    assert summary["events"]["loop_closure_unavailable"] == 1
    assert summary["loop_closure"]["state"] != "on"
