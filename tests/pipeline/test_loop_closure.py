"""Loop closure behind the pipeline's world chain: windows of a synthetic loop placed by the
real ``WorldAligner``, keyframes into ``LoopCloser``, the map corrected."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from dvlt_core.backends.ground_truth_unscaled import GroundTruthUnscaledBackend
from dvlt_core.eval.alignment import umeyama_alignment
from dvlt_core.geometry import rotation_angle
from dvlt_core.inference import Reconstructor
from dvlt_core.mapping import EncoderDescriber
from dvlt_core.mapping.loop_closer import LoopCloser
from dvlt_core.model import DVLTModel
from dvlt_core.synthetic import default_rig
from dvlt_core.testing import load_deterministic_weights
from dvlt_ros.pipeline.synthetic_windows import rig_windows
from dvlt_ros.pipeline.world import WorldAligner

pytest.importorskip("gtsam")


def _ate(positions, truth):
    r, t, c = (x.numpy() for x in umeyama_alignment(torch.from_numpy(positions.T),
                                                    torch.from_numpy(truth.T)))
    return float(np.sqrt(np.mean(np.sum((c * positions @ r.T + t - truth) ** 2, axis=1))))


def test_a_drifting_loop_is_closed_and_its_error_drops(reference_dir):
    rig = default_rig(160, 120, num_cameras=2)
    lap = rig.trajectory.lap_time
    times = [i * lap * 1.1 / 44 for i in range(44)]
    # Four times the default pose noise, so that the chain drifts measurably in 44 windows.
    backend = GroundTruthUnscaledBackend.for_rig(rig, times, img_size=112,
                                                 rotation_noise_deg=0.2, position_noise=0.008)
    case = np.load(reference_dir / "case_small_public.npz")
    model = DVLTModel(**json.loads(str(case["config_json"])))
    load_deterministic_weights(model, int(case["weights_seed"]), str(case["weights_sha256"]))
    reconstructor = Reconstructor(backend, img_size=112)
    closer = LoopCloser(reconstructor, EncoderDescriber(model, 112))
    world = WorldAligner()
    for window in rig_windows(rig, times):
        recon = reconstructor.reconstruct([f.rgb for f in window.frames], 1)
        placement = world.place(window, recon)
        newest = [i for i, step in enumerate(window.timesteps) if step == 0]
        closer.add_window(window.keys, [f.rgb for f in window.frames], recon, newest,
                          placement.world_from_window)
        closer.verify_pending(limit=2)
    counts = closer.counts
    assert counts.keyframes == 44 and counts.accepted >= 2
    ref = rig.names[0]
    for verdict in closer.verdicts:
        if verdict.accepted:  # every accepted loop is a true revisit
            truth = (rig.camera_pose(ref, times[verdict.current])[:3, :3].T
                     @ rig.camera_pose(ref, times[verdict.candidate])[:3, :3])
            assert np.degrees(rotation_angle(verdict.current_from_candidate.rotation,
                                             truth)) < 1.0
    truth = np.array([rig.camera_pose(ref, t)[:3, 3] for t in times])

    def positions(poses):
        return np.array([poses[n].apply_c2w(closer.keyframes[n].views[0].c2w)[:3, 3]
                         for n in range(44)])

    before = _ate(positions({n: closer.graph.initial_pose(n) for n in range(44)}), truth)
    after = _ate(positions(closer.trajectory()), truth)
    assert after < 0.9 * before, (before, after)
