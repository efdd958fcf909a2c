"""A test double at the backend boundary: exact raw outputs of a synthetic scene.

:class:`GroundTruthBackend` answers ``infer`` with what a perfect network would predict for
the views it is given: per-pixel rays (directions with camera-frame z = 1 and origins, in
the camera frame of view 0), exact z-depth, a constant confidence, world points and the
pose encoding, all at network resolution and in metres (``metric = True``). Everything
after the backend (pose fitting, unprojection, mapping back to original pixels) is the
real code.

How views are identified: the backend cannot see camera poses, only the preprocessed
tensor. Every image a test (or node) will feed is first *registered* with its exact
camera (:meth:`register`, :meth:`register_view`, :meth:`for_rig`): the backend
preprocesses it alone exactly as :func:`dvlt_core.io.images.preprocess` does for a batch
(the per-image resize and crop do not depend on the other views) and keys a table by the
crop size and the SHA-256 of the crop's float32 bytes. In ``infer`` each view's centred
region of every registered crop size is hashed and looked up, which also recovers the
padding offset of views padded to a larger batch size. A match is exact (bit-identical
input) or fails with an error naming the view; nothing is guessed. The intrinsics of the
network canvas follow from the preprocessing record
(:meth:`~dvlt_core.io.view_transforms.ViewTransform.intrinsics_to_network`), so the effect of
resize, crop, padding and portrait rotation is exact. The reconstructor must use the
backend's ``img_size`` (its default).

Pixels whose ray hits nothing get depth 0 and confidence 1 (the minimum); all others get
``confidence``.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Iterable
from dataclasses import dataclass, replace

import numpy as np
import torch

from dvlt_core.backends.base import BackendOutput, InferenceBackend, StageTimings, register_backend
from dvlt_core.geometry.transforms import pose_encoding_from_cameras
from dvlt_core.geometry.unproject import compute_world_rays
from dvlt_core.io.images import preprocess
from dvlt_core.io.view_transforms import ViewTransform
from dvlt_core.model.config import DEFAULT_NUM_STEPS
from dvlt_core.synthetic.rig import RenderedView, SyntheticRig
from dvlt_core.synthetic.scene import Scene


@dataclass(frozen=True)
class _Entry:
    intrinsics: np.ndarray
    c2w: np.ndarray
    transform: ViewTransform


class GroundTruthBackend(InferenceBackend):
    """Exact outputs for registered views of ``scene`` (see the module docstring)."""

    name = "ground_truth"
    #: Geometry is in metres: the node may publish depth and clouds with metric units.
    metric = True

    def __init__(
        self,
        scene: Scene,
        img_size: int = 504,
        confidence: float = 10.0,
        default_num_steps: int = DEFAULT_NUM_STEPS,
    ) -> None:
        if confidence < 1.0:
            raise ValueError(f"confidence must be >= 1 (the model's range), got {confidence}")
        self.scene = scene
        self.confidence = float(confidence)
        self._img_size = int(img_size)
        self._default_num_steps = int(default_num_steps)
        self._table: dict[tuple[int, int, str], _Entry] = {}

    @property
    def device(self) -> torch.device:
        return torch.device("cpu")

    @property
    def img_size(self) -> int:
        return self._img_size

    @property
    def default_num_steps(self) -> int:
        return self._default_num_steps

    def __len__(self) -> int:
        return len(self._table)

    @classmethod
    def for_rig(
        cls, rig: SyntheticRig, times: Iterable[float], **kwargs: object
    ) -> GroundTruthBackend:
        """A backend with every camera of ``rig`` registered at each of ``times`` (s)."""
        backend = cls(rig.scene, **kwargs)
        for t in times:
            for view in rig.snapshot(t):
                backend.register_view(view)
        return backend

    def register_view(self, view: RenderedView) -> None:
        """Register a rendered view with its exact camera."""
        self.register(view.image, view.k, view.c2w)

    def register(self, image: np.ndarray, intrinsics: np.ndarray, c2w: np.ndarray) -> None:
        """Register an RGB uint8 image taken by a camera with OpenCV ``intrinsics`` and
        camera-to-world pose ``c2w`` in the scene frame (metres). Portrait images are
        registered both as they are and turned, so ``rotate_portrait`` may be either."""
        image = np.asarray(image)
        turns = (False, True) if image.shape[0] > image.shape[1] else (False,)
        for rotate in turns:
            batch = preprocess([image], img_size=self._img_size, rotate_portrait=rotate)
            crop = batch.images[0, 0]
            key = (crop.shape[1], crop.shape[2], _digest(crop))
            self._table[key] = _Entry(
                np.array(intrinsics, dtype=np.float64),
                np.array(c2w, dtype=np.float64),
                batch.transforms[0],
            )

    def _lookup(self, view: torch.Tensor, index: int) -> tuple[_Entry, ViewTransform]:
        height, width = view.shape[-2:]
        sizes = sorted({(h, w) for h, w, _ in self._table if h <= height and w <= width})
        for h, w in sizes:
            top, left = (height - h) // 2, (width - w) // 2
            entry = self._table.get((h, w, _digest(view[:, top : top + h, left : left + w])))
            if entry is not None:
                return entry, replace(
                    entry.transform, pad_offset=(top, left), network_hw=(height, width)
                )
        raise ValueError(
            f"view {index} ({height}x{width}) matches no registered synthetic view: register "
            "every image before inference (GroundTruthBackend.register / for_rig) and run the "
            f"reconstructor with this backend's img_size ({self._img_size}) on the unmodified "
            "images"
        )

    def infer(self, images: torch.Tensor, num_steps: int | None = None) -> BackendOutput:
        steps = self._num_steps(num_steps)
        start = time.perf_counter()
        k_net, c2w_net = self._network_cameras(images)
        height, width = images.shape[-2:]
        depth = np.stack(
            [self.scene.depth(k, c2w, height, width) for k, c2w in zip(k_net, c2w_net, strict=True)]
        )
        # The network's world is view 0's camera frame.
        relative = np.linalg.inv(c2w_net[0]) @ c2w_net
        return self._outputs(k_net, relative, depth, steps, start)

    def _num_steps(self, num_steps: int | None) -> int:
        steps = self._default_num_steps if num_steps is None else int(num_steps)
        if steps < 1:
            raise ValueError(f"num_steps must be >= 1, got {steps}")
        return steps

    def _network_cameras(self, images: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
        """(S, 3, 3) OpenCV intrinsics and (S, 4, 4) scene-frame poses of the network views."""
        if images.dim() != 5 or images.shape[0] != 1:
            raise ValueError(f"images must be (1, S, 3, H, W), got {tuple(images.shape)}")
        k_net, c2w_net = [], []
        for i in range(images.shape[1]):
            entry, transform = self._lookup(images[0, i], i)
            k_net.append(transform.intrinsics_to_network(entry.intrinsics))
            c2w_net.append(transform.extrinsics_to_network(entry.c2w))
        return np.stack(k_net), np.stack(c2w_net)

    def _outputs(
        self,
        k_net: np.ndarray,
        c2w: np.ndarray,
        depth: np.ndarray,
        steps: int,
        start: float,
        direction_noise: np.ndarray | None = None,
    ) -> BackendOutput:
        """Raw outputs of cameras ``k_net`` (OpenCV) at poses ``c2w`` (the network's world)
        with z-depth maps ``depth`` (S, H, W), plus ``direction_noise`` (S, H, W, 3) on the
        ray directions; ``start`` is the ``perf_counter`` time the inference began."""
        height, width = depth.shape[-2:]
        k_centre = np.array(k_net, dtype=np.float64)
        k_centre[:, :2, 2] += 0.5  # the rays use pixel centres at u + 0.5
        rays = compute_world_rays(torch.from_numpy(c2w), torch.from_numpy(k_centre), height, width)
        if direction_noise is not None:
            rays[..., :3] += torch.from_numpy(direction_noise)
        depth_t = torch.from_numpy(depth).float()
        world = rays[..., 3:] + rays[..., :3] * depth_t[..., None]
        conf = torch.where(depth_t > 0, self.confidence, 1.0)
        pose_enc = pose_encoding_from_cameras(
            torch.from_numpy(c2w).float(),
            torch.from_numpy(k_centre).float(),
            (height, width),
        )
        elapsed = (time.perf_counter() - start) * 1e3
        return BackendOutput(
            rays=rays[None].float(),
            depth=depth_t[None, ..., None],
            depth_conf=conf[None].float(),
            world_points=world[None].float(),
            pose_enc=pose_enc[None].float(),
            timings=StageTimings(
                encode_ms=elapsed, step_ms=[0.0] * steps, decode_ms=0.0, total_ms=elapsed
            ),
        )


def _digest(crop: torch.Tensor) -> str:
    data = np.ascontiguousarray(crop.numpy(), dtype=np.float32).tobytes()
    return hashlib.sha256(data).hexdigest()


def backend_factory(cls: type[GroundTruthBackend]):
    """The ``create_backend`` factory of a ground-truth backend class (``scene=`` required)."""

    def create(
        checkpoint: object = None,
        device: str = "cpu",
        precision: str = "fp32",
        *,
        scene: Scene | None = None,
        **options: object,
    ) -> GroundTruthBackend:
        if scene is None or checkpoint is not None or device != "cpu" or precision != "fp32":
            raise ValueError(
                f"the {cls.name} backend needs scene=<dvlt_core.synthetic.Scene>, no "
                "checkpoint, device='cpu' and precision='fp32'"
            )
        return cls(scene, **options)

    return create


register_backend("ground_truth", backend_factory(GroundTruthBackend))
