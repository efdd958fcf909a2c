"""A ground-truth test double that behaves like an up-to-scale network: ``ground_truth_unscaled``.

:class:`GroundTruthUnscaledBackend` answers like :class:`GroundTruthBackend` (registered
views of a synthetic scene, the same lookup and conventions), but every inference is a new
"window" with

* an unknown scale: geometry in units of ``1 / units_per_metre`` metres, with
  ``units_per_metre`` drawn log-uniformly from ``scale_range`` (default 0.2 to 5);
* pose noise: each view's camera is perturbed in its own frame by a rotation vector with
  components ~ N(0, ``rotation_noise_deg``) (default 0.05°) and a centre offset with
  components ~ N(0, ``position_noise``) metres (default 2 mm), before the window frame (view
  0's perturbed camera) is taken. The rays are those of the perturbed cameras, so the pose fit
  recovers the perturbed poses: that is the pose error downstream code sees;
* depth noise: each pixel's depth (of the true camera, so depth stays registered to the
  image) is multiplied by ``exp(N(0, depth_noise))`` (default 1 %);
* ray noise: N(0, ``ray_noise``) added to each component of each pixel's ray direction
  (directions have camera-frame z = 1; default 0.001).

It is declared non-metric (``metric = False``). The draws are seeded: each window's random
generator is seeded by ``seed`` and the SHA-256 of the input tensor, so the same images give
the same draw in any order and on any machine. :attr:`last_draw` holds the truth of the
latest window (for tests and benchmarks only; the pipeline must never read it).
"""

from __future__ import annotations

import hashlib
import math
import time
from dataclasses import dataclass, field

import numpy as np
import torch

from dvlt_core.backends.base import BackendOutput, register_backend
from dvlt_core.backends.ground_truth import GroundTruthBackend, backend_factory
from dvlt_core.geometry import Sim3
from dvlt_core.geometry.rotations import rotation_from_vector
from dvlt_core.model.config import DEFAULT_NUM_STEPS
from dvlt_core.synthetic.scene import Scene


@dataclass(frozen=True)
class WindowDraw:
    """The truth of one window: ``units_per_metre`` (the window's unit is ``1 /
    units_per_metre`` metres) and the perturbed network-view poses ``c2w`` (S, 4, 4) in the
    scene frame, metres, whose view 0 is the window frame."""

    units_per_metre: float
    c2w: np.ndarray = field(repr=False)

    @property
    def metres_per_unit(self) -> float:
        return 1.0 / self.units_per_metre

    def scene_from_window(self) -> Sim3:
        """The similarity taking window coordinates to scene metres."""
        return Sim3.from_rigid(self.c2w[0], 1.0 / self.units_per_metre)


class GroundTruthUnscaledBackend(GroundTruthBackend):
    """Scene geometry at a random scale per window, with pose, depth and ray noise."""

    name = "ground_truth_unscaled"
    metric = False

    def __init__(
        self,
        scene: Scene,
        img_size: int = 504,
        confidence: float = 10.0,
        default_num_steps: int = DEFAULT_NUM_STEPS,
        *,
        scale_range: tuple[float, float] = (0.2, 5.0),
        rotation_noise_deg: float = 0.05,
        position_noise: float = 0.002,
        depth_noise: float = 0.01,
        ray_noise: float = 0.001,
        seed: int = 0,
    ) -> None:
        super().__init__(scene, img_size, confidence, default_num_steps)
        low, high = (float(v) for v in scale_range)
        if not 0.0 < low <= high or not math.isfinite(high):
            raise ValueError(f"scale_range must be 0 < low <= high, got {scale_range}")
        noise = {
            "rotation_noise_deg": rotation_noise_deg,
            "position_noise": position_noise,
            "depth_noise": depth_noise,
            "ray_noise": ray_noise,
        }
        for what, value in noise.items():
            if not (math.isfinite(value) and value >= 0.0):
                raise ValueError(f"{what} must be a finite value >= 0, got {value}")
        self.scale_range = (low, high)
        self.rotation_noise = math.radians(rotation_noise_deg)
        self.position_noise = float(position_noise)
        self.depth_noise = float(depth_noise)
        self.ray_noise = float(ray_noise)
        self.seed = int(seed)
        self.last_draw: WindowDraw | None = None

    def infer(self, images: torch.Tensor, num_steps: int | None = None) -> BackendOutput:
        steps = self._num_steps(num_steps)
        start = time.perf_counter()
        k_net, c2w_true = self._network_cameras(images)
        frames, height, width = len(k_net), images.shape[-2], images.shape[-1]
        rng = self._window_rng(images)
        low, high = self.scale_range
        units_per_metre = float(math.exp(rng.uniform(math.log(low), math.log(high))))
        delta = np.tile(np.eye(4), (frames, 1, 1))
        delta[:, :3, :3] = rotation_from_vector(rng.normal(0.0, self.rotation_noise, (frames, 3)))
        delta[:, :3, 3] = rng.normal(0.0, self.position_noise, (frames, 3))
        c2w = c2w_true @ delta
        depth = np.stack(
            [self.scene.depth(k, p, height, width) for k, p in zip(k_net, c2w_true, strict=True)]
        )
        hit = depth > 0
        depth = np.where(
            hit, depth * np.exp(rng.normal(0.0, self.depth_noise, depth.shape)), 0.0
        )
        relative = np.linalg.inv(c2w[0]) @ c2w
        relative[:, :3, 3] *= units_per_metre
        direction_noise = rng.normal(0.0, self.ray_noise, (frames, height, width, 3))
        self.last_draw = WindowDraw(units_per_metre, c2w)
        return self._outputs(
            k_net, relative, depth * units_per_metre, steps, start, direction_noise
        )

    def _window_rng(self, images: torch.Tensor) -> np.random.Generator:
        data = np.ascontiguousarray(images.detach().cpu().numpy(), dtype=np.float32)
        digest = hashlib.sha256(data.tobytes()).digest()
        return np.random.default_rng([self.seed, int.from_bytes(digest[:8], "little")])


register_backend("ground_truth_unscaled", backend_factory(GroundTruthUnscaledBackend))
