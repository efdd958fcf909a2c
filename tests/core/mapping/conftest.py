"""Fixtures of the loop-closure tests: the small deterministic-weight DVLT model (a real
encoder for place descriptors) and keyframes of a synthetic rig driving a closed loop."""

from __future__ import annotations

import json

import numpy as np
import pytest

from dvlt_core.backends.ground_truth_unscaled import GroundTruthUnscaledBackend
from dvlt_core.inference import Reconstructor
from dvlt_core.mapping import EncoderDescriber, Keyframe
from dvlt_core.model import DVLTModel
from dvlt_core.synthetic import SyntheticRig
from dvlt_core.testing import load_deterministic_weights

IMG_SIZE = 112


@pytest.fixture(scope="session")
def small_model(reference_dir):
    case = np.load(reference_dir / "case_small_public.npz")
    model = DVLTModel(**json.loads(str(case["config_json"])))
    load_deterministic_weights(model, int(case["weights_seed"]), str(case["weights_sha256"]))
    return model.eval()


@pytest.fixture(scope="session")
def describer(small_model):
    return EncoderDescriber(small_model, IMG_SIZE)


def make_keyframes(rig: SyntheticRig, times, **noise) -> tuple[Reconstructor, list[Keyframe],
                                                                GroundTruthUnscaledBackend]:
    """One keyframe per time: the newest snapshot of a window of it and the snapshot
    before (as the node's window selector builds them), made with ``ground_truth_unscaled``
    (its default noise unless given) through the real reconstructor."""
    backend = GroundTruthUnscaledBackend.for_rig(rig, times, img_size=IMG_SIZE, **noise)
    reconstructor = Reconstructor(backend, img_size=IMG_SIZE)
    keyframes = []
    for node, t in enumerate(times):
        views = rig.snapshot(t)
        window = views + (rig.snapshot(times[node - 1]) if node else [])
        recon = reconstructor.reconstruct([v.image for v in window], 1)
        keyframes.append(Keyframe.from_reconstruction(
            node, round(t * 1e9), [v.camera for v in views], [v.image for v in views], recon,
            range(len(views))))
    return reconstructor, keyframes, backend
