"""From images to a :class:`~dvlt_core.result.Reconstruction`: the pipeline shared by the
command line tool and the ROS node."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from dvlt_core.backends.base import InferenceBackend
from dvlt_core.geometry import rays_to_pose
from dvlt_core.io.images import preprocess
from dvlt_core.result import RESOLUTIONS, Reconstruction, build_reconstruction

POSE_MODES = ("robust", "upstream")
POSE_WEIGHTS = ("uniform", "confidence")


class Reconstructor:
    """preprocess → backend → ``rays_to_pose`` (float32) → unprojection → original pixels.

    ``pose_mode`` selects the pose fitter ("robust", or "upstream" for bit-parity with the
    reference code). ``pose_weights`` "uniform" weights every pixel equally (upstream
    default); "confidence" weights pixels by the predicted depth confidence. Padding added
    to batch views of different sizes always gets weight 0; with no padding and uniform
    weights the fitter gets ``weights=None``, exactly as upstream.
    ``resolution`` and ``interpolation`` choose how maps are returned (see
    :func:`~dvlt_core.result.build_reconstruction`).
    """

    def __init__(
        self,
        backend: InferenceBackend,
        *,
        pose_mode: str = "robust",
        pose_weights: str = "uniform",
        rotate_portrait: bool = False,
        resolution: str = "original",
        interpolation: str = "bilinear",
        img_size: int | None = None,
    ) -> None:
        if pose_mode not in POSE_MODES:
            raise ValueError(f"pose_mode must be one of {POSE_MODES}, got {pose_mode!r}")
        if pose_weights not in POSE_WEIGHTS:
            raise ValueError(f"pose_weights must be one of {POSE_WEIGHTS}, got {pose_weights!r}")
        if resolution not in RESOLUTIONS:
            raise ValueError(f"resolution must be one of {RESOLUTIONS}, got {resolution!r}")
        if interpolation not in ("bilinear", "nearest"):
            raise ValueError(
                f"interpolation must be 'bilinear' or 'nearest', got {interpolation!r}"
            )
        self.backend = backend
        self.pose_mode = pose_mode
        self.pose_weights = pose_weights
        self.rotate_portrait = rotate_portrait
        self.resolution = resolution
        self.interpolation = interpolation
        self.img_size = img_size or backend.img_size

    def reconstruct(
        self,
        images: Sequence[np.ndarray],
        num_steps: int | None = None,
        *,
        names: Sequence[str] | None = None,
        timestamps: Sequence[float] | None = None,
        intrinsics: Sequence[np.ndarray | None] | None = None,
    ) -> Reconstruction:
        """Reconstruct one scene from uint8 RGB images (H, W, 3); view 0 is the reference.

        ``num_steps`` is the loop count K (default: the backend's). ``names`` and
        ``timestamps`` label the views (default: ``view_000``, ... and 0, 1, ...).
        ``intrinsics`` gives known (calibrated, pinhole) 3x3 intrinsics per view in the
        OpenCV/ROS convention of its original image, None for a view whose K is to be
        estimated: those views' poses are fitted with that K (rotation and translation
        only, see :func:`~dvlt_core.geometry.rays_to_pose`) and their depth and points use
        it. Known intrinsics need ``pose_mode="robust"``.
        """
        count = len(images)
        names = list(names) if names is not None else [f"view_{i:03d}" for i in range(count)]
        times = list(timestamps) if timestamps is not None else [float(i) for i in range(count)]
        if len(names) != count or len(times) != count:
            raise ValueError(
                f"{count} images but {len(names)} names and {len(times)} timestamps"
            )
        if intrinsics is not None and len(intrinsics) != count:
            raise ValueError(f"{count} images but {len(intrinsics)} intrinsics (None: estimate)")
        known = [] if intrinsics is None else [i for i, k in enumerate(intrinsics) if k is not None]
        for i in known:
            if np.shape(intrinsics[i]) != (3, 3):
                shape = np.shape(intrinsics[i])
                raise ValueError(f"intrinsics of view {i} must be 3x3, got {shape}")
        if known and self.pose_mode != "robust":
            raise ValueError("known intrinsics need pose_mode='robust'")
        batch = preprocess(images, img_size=self.img_size, rotate_portrait=self.rotate_portrait,
                           names=names)
        raw = self.backend.infer(batch.images, num_steps=num_steps)
        weights = self._pose_weights(raw.depth_conf, batch.valid)
        rays = raw.rays.float()
        if len(known) < count:
            cameras = rays_to_pose(rays, weights=weights, mode=self.pose_mode)
            extrinsics = cameras.extrinsics_c2w[0].double().numpy()
            network_k = cameras.intrinsics[0].double().numpy()
            pose_valid = cameras.valid[0].numpy()
        else:
            extrinsics, network_k = np.zeros((count, 4, 4)), np.zeros((count, 3, 3))
            pose_valid = np.zeros(count, dtype=bool)
        if known:
            # The network canvas K of each known view, pixel centres at (u + 0.5, v + 0.5).
            k_known = np.stack(
                [batch.transforms[i].intrinsics_to_network(intrinsics[i]) for i in known]
            )
            k_known[:, :2, 2] += 0.5
            fit = rays_to_pose(
                rays[:, known],
                weights=None if weights is None else weights[:, known],
                intrinsics=k_known,
            )
            extrinsics[known] = fit.extrinsics_c2w[0].double().numpy()
            network_k[known] = k_known
            pose_valid[known] = fit.valid[0].numpy()
        return build_reconstruction(
            raw,
            extrinsics,
            network_k,
            pose_valid,
            batch,
            images,
            names=names,
            timestamps=times,
            num_steps=raw.timings.num_steps,
            pose_mode=self.pose_mode,
            resolution=self.resolution,
            interpolation=self.interpolation,
        )

    def _pose_weights(self, depth_conf: torch.Tensor, valid: torch.Tensor) -> torch.Tensor | None:
        if self.pose_weights == "confidence":
            return depth_conf.float() * valid.float()
        return None if bool(valid.all()) else valid.float()
