"""Benchmark sequences and upstream's evaluation preprocessing (``EvalDataset``, mode "crop").

Per sequence the frames are chosen (``view_ranking`` then ``view_sampling``), each image is
resized with PIL bicubic to width ``img_size`` and height ``round(h·img_size/w/14)·14``
("crop" mode: then centre-cropped to ``img_size`` rows if taller; "pad" mode: the longer side
fits and the rest is zero-padded to a square), depth follows with OpenCV-style nearest
neighbour (source index ``floor(i·src/dst)``), intrinsics are scaled per axis and shifted by
the crop. GT world points unproject the depth at integer pixel coordinates as upstream does,
and the point mask is ``depth > 1e-8``. GT is not normalised (``scale_factor`` 1).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from PIL import Image

from dvlt_core.eval.protocol import SequenceGroundTruth
from dvlt_core.training.data.views import rank_by_pose

RANKINGS = ("index", "pose", "middle_first")
MODES = ("crop", "pad")


@dataclass(frozen=True)
class EvalSequence:
    """One preprocessed benchmark sequence of S frames of size H×W."""

    name: str
    images: np.ndarray  # (S, H, W, 3) uint8
    depths: np.ndarray  # (S, H, W) float32, 0 = invalid
    extrinsics_c2w: np.ndarray  # (S, 4, 4) float32, OpenCV
    intrinsics: np.ndarray  # (S, 3, 3) float32
    world_points: np.ndarray  # (S, H, W, 3) float32
    point_masks: np.ndarray  # (S, H, W) bool
    scale_factor: float = 1.0

    def images_tensor(self) -> torch.Tensor:
        """(1, S, 3, H, W) float32 in [0, 1], the network input."""
        return torch.from_numpy(self.images).permute(0, 3, 1, 2)[None].float() / 255.0

    def ground_truth(self) -> SequenceGroundTruth:
        return SequenceGroundTruth(
            extrinsics_c2w=torch.from_numpy(self.extrinsics_c2w),
            intrinsics=torch.from_numpy(self.intrinsics),
            depths=torch.from_numpy(self.depths),
            world_points=torch.from_numpy(self.world_points),
            point_masks=torch.from_numpy(self.point_masks),
            scale_factor=self.scale_factor,
        )


@dataclass(frozen=True)
class RawFrames:
    """Frames as a loader reads them, before preprocessing."""

    images: list[np.ndarray]  # (h, w, 3) uint8 each
    depths: list[np.ndarray]  # (h, w) float32 each
    extrinsics_c2w: np.ndarray  # (S, 4, 4)
    intrinsics: np.ndarray  # (S, 3, 3)


class EvalDataset(ABC):
    """A benchmark dataset: sequences chosen and preprocessed as upstream evaluates them."""

    name: str = "dataset"

    def __init__(
        self,
        img_size: int = 504,
        patch_size: int = 14,
        max_frames: int | None = None,
        view_ranking: str = "index",
        view_sampling: str = "uniform",
        mode: str = "crop",
        max_depth: float | None = None,
    ) -> None:
        if view_ranking not in RANKINGS:
            raise ValueError(f"view_ranking must be one of {RANKINGS}, got {view_ranking!r}")
        if mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
        if view_sampling.startswith("every_") and max_frames is not None:
            raise ValueError("every_X view sampling takes no max_frames")
        self.img_size = img_size
        self.patch_size = patch_size
        self.max_frames = max_frames
        self.view_ranking = view_ranking
        self.view_sampling = view_sampling
        self.mode = mode
        self.max_depth = max_depth

    @abstractmethod
    def __len__(self) -> int:
        """Number of sequences."""

    @abstractmethod
    def sequence_name(self, index: int) -> str:
        """Name of sequence ``index``."""

    @abstractmethod
    def num_frames(self, index: int) -> int:
        """Frames available in sequence ``index``."""

    @abstractmethod
    def read_frames(self, index: int, frames: Sequence[int]) -> RawFrames:
        """Read the given frames of sequence ``index``."""

    def all_poses(self, index: int) -> np.ndarray | None:
        """All c2w poses of the sequence (needed only for ``view_ranking="pose"``)."""
        return None

    def sequence(self, index: int) -> EvalSequence:
        """Sequence ``index``, frames selected and preprocessed."""
        frames = select_frames(self.num_frames(index), self.view_ranking, self.view_sampling,
                               self.max_frames, self.all_poses(index))
        raw = self.read_frames(index, frames)
        images, depths, intrinsics = preprocess_frames(
            raw.images, raw.depths, raw.intrinsics, self.img_size, self.patch_size, self.mode,
            self.max_depth,
        )
        c2w = np.asarray(raw.extrinsics_c2w, dtype=np.float32)
        points = np.stack([unproject_integer(d, k, e) for d, k, e in
                           zip(depths, intrinsics, c2w, strict=True)])
        return EvalSequence(
            name=f"{self.name}_{self.sequence_name(index)}",
            images=np.stack(images),
            depths=np.stack(depths).astype(np.float32),
            extrinsics_c2w=c2w,
            intrinsics=np.stack(intrinsics).astype(np.float32),
            world_points=points.astype(np.float32),
            point_masks=np.stack(depths) > 1e-8,
        )

    def __iter__(self):
        return (self.sequence(i) for i in range(len(self)))


def select_frames(
    num_frames: int,
    ranking: str,
    sampling: str,
    max_frames: int | None,
    poses: np.ndarray | None = None,
) -> list[int]:
    """Upstream ``EvalDataset._get_indices``: rank (index / pose / middle_first), then sample
    (``first``, ``uniform`` up to ``max_frames``, or ``every_X``)."""
    indices = np.arange(num_frames, dtype=np.int64)
    if ranking == "pose":
        if poses is None:
            raise ValueError("view_ranking='pose' needs the sequence poses")
        indices = rank_by_pose(0, poses)
    elif ranking == "middle_first":
        mid = num_frames // 2
        indices = np.concatenate([[mid], indices[:mid], indices[mid + 1 :]])
    if sampling.startswith("every_"):
        indices = indices[:: int(sampling.split("_", 1)[1])]
    elif max_frames is not None and max_frames < num_frames:
        if sampling == "first":
            indices = indices[:max_frames]
        elif sampling == "uniform":
            indices = indices[np.linspace(0, num_frames, max_frames, endpoint=False,
                                          dtype=np.int32)]
        else:
            raise ValueError(f"unknown view sampling {sampling!r}: first, uniform or every_X")
    return [int(i) for i in indices]


def cv2_nearest(depth: np.ndarray, height: int, width: int) -> np.ndarray:
    """``cv2.resize(..., INTER_NEAREST)``: source index ``floor(dst · src / dst_size)``."""
    rows = np.minimum(np.floor(np.arange(height) * (depth.shape[0] / height)).astype(int),
                      depth.shape[0] - 1)
    cols = np.minimum(np.floor(np.arange(width) * (depth.shape[1] / width)).astype(int),
                      depth.shape[1] - 1)
    return depth[rows[:, None], cols[None, :]]


def _pad(array: np.ndarray, top: int, bottom: int, left: int, right: int) -> np.ndarray:
    spec = [(top, bottom), (left, right)] + [(0, 0)] * (array.ndim - 2)
    return np.pad(array, spec)


def preprocess_frames(
    images: Sequence[np.ndarray],
    depths: Sequence[np.ndarray],
    intrinsics: Sequence[np.ndarray],
    img_size: int = 504,
    patch_size: int = 14,
    mode: str = "crop",
    max_depth: float | None = None,
) -> tuple[list[np.ndarray], list[np.ndarray], list[np.ndarray]]:
    """Upstream's eval resize/crop/pad of images (uint8), depths and intrinsics."""
    out_images, out_depths, out_k = [], [], []
    for image, depth, k in zip(images, depths, intrinsics, strict=True):
        h, w = image.shape[:2]
        if depth.shape != (h, w):
            raise ValueError(f"depth {depth.shape} does not match image {(h, w)}")
        if mode == "pad" and h > w:
            new_h = img_size
            new_w = round(w * (new_h / h) / patch_size) * patch_size
        else:
            new_w = img_size
            new_h = round(h * (new_w / w) / patch_size) * patch_size
        sx, sy = new_w / w, new_h / h
        image = np.asarray(Image.fromarray(image).resize((new_w, new_h),
                                                         Image.Resampling.BICUBIC))
        depth = np.array(depth, dtype=np.float32)
        if max_depth is not None:
            depth[depth > max_depth] = 0.0
        depth = cv2_nearest(depth, new_h, new_w).astype(np.float32)
        k = np.array(k, dtype=np.float32)
        k[0, 0] *= sx
        k[1, 1] *= sy
        k[0, 2] *= sx
        k[1, 2] *= sy
        if mode == "crop" and new_h > img_size:
            y0 = (new_h - img_size) // 2
            image, depth = image[y0 : y0 + img_size], depth[y0 : y0 + img_size]
            k[1, 2] -= y0
        if mode == "pad":
            image, depth, k = _pad_to(image, depth, k, img_size, img_size)
        out_images.append(image)
        out_depths.append(depth)
        out_k.append(k)
    max_h = max(i.shape[0] for i in out_images)
    max_w = max(i.shape[1] for i in out_images)
    for i in range(len(out_images)):
        out_images[i], out_depths[i], out_k[i] = _pad_to(out_images[i], out_depths[i], out_k[i],
                                                         max_h, max_w)
    return out_images, out_depths, out_k


def _pad_to(image, depth, k, height, width):
    ph, pw = height - image.shape[0], width - image.shape[1]
    if ph <= 0 and pw <= 0:
        return image, depth, k
    top, left = ph // 2, pw // 2
    k = k.copy()
    k[0, 2] += left
    k[1, 2] += top
    return (_pad(image, top, ph - top, left, pw - left),
            _pad(depth, top, ph - top, left, pw - left), k)


def unproject_integer(depth: np.ndarray, k: np.ndarray, c2w: np.ndarray) -> np.ndarray:
    """(H, W, 3) world points at integer pixel coordinates (upstream's GT convention)."""
    h, w = depth.shape
    v, u = np.mgrid[0:h, 0:w].astype(np.float32)
    z = depth.astype(np.float32)
    cam = np.stack([(u - k[0, 2]) * z / k[0, 0], (v - k[1, 2]) * z / k[1, 1], z], axis=-1)
    return cam @ np.asarray(c2w[:3, :3], np.float32).T + np.asarray(c2w[:3, 3], np.float32)
