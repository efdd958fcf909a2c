"""Keyframes of a synthetic rig driving a closed loop, for the loop-closure tests."""

from __future__ import annotations

from dvlt_core.backends.ground_truth_unscaled import GroundTruthUnscaledBackend
from dvlt_core.inference import Reconstructor
from dvlt_core.mapping import Keyframe
from dvlt_core.synthetic import SyntheticRig

IMG_SIZE = 112


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
