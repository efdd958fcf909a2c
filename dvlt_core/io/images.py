"""Loading image sequences and turning them into the network input (docs/architecture.md §3.1)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, ImageOps

from dvlt_core.io.transforms import ViewTransform
from dvlt_core.io.video import VIDEO_EXTENSIONS, read_video_frames

IMAGE_EXTENSIONS = frozenset({".jpg", ".jpeg", ".png", ".webp", ".bmp"})
PATCH_SIZE = 14


@dataclass
class ImageSequence:
    """Decoded views: uint8 RGB arrays (H, W, 3), their names, and timestamps in seconds.

    Timestamps are presentation times for videos and the frame index otherwise.
    """

    images: list[np.ndarray]
    names: list[str]
    timestamps: list[float]

    def __len__(self) -> int:
        return len(self.images)


@dataclass
class PreprocessedBatch:
    """Network input: ``images`` (1, S, 3, H, W) float32 in [0, 1], ``valid`` (1, S, H, W)
    bool (False on padding), and one :class:`ViewTransform` per view."""

    images: torch.Tensor
    valid: torch.Tensor
    transforms: list[ViewTransform]


def read_image(path: str | Path) -> np.ndarray:
    """Read one image file as uint8 RGB (H, W, 3), applying its EXIF orientation."""
    try:
        with Image.open(path) as img:
            return np.asarray(ImageOps.exif_transpose(img).convert("RGB")).copy()
    except (OSError, SyntaxError) as exc:
        raise ValueError(f"cannot read image {path}: {exc}") from exc


def load_sequence(
    source: str | Path | Sequence[str | Path], fps: float | None = 2.0
) -> ImageSequence:
    """Load the views of a scene.

    ``source`` is a directory (its image files, sorted by name), a video (frames subsampled
    to ``fps``), a single image, or a list of image files (kept in the given order).
    """
    if isinstance(source, (str, Path)):
        path = Path(source)
        if not path.exists():
            raise FileNotFoundError(f"input does not exist: {path}")
        if path.is_dir():
            files = sorted(p for p in path.iterdir() if p.suffix.lower() in IMAGE_EXTENSIONS)
            if not files:
                raise ValueError(
                    f"directory {path} holds no images; expected files ending in "
                    f"{', '.join(sorted(IMAGE_EXTENSIONS))}"
                )
            return _load_files(files)
        suffix = path.suffix.lower()
        if suffix in VIDEO_EXTENSIONS:
            frames, times = read_video_frames(path, fps=fps)
            names = [f"{path.stem}_{i:06d}" for i in range(len(frames))]
            return ImageSequence(frames, names, times)
        if suffix in IMAGE_EXTENSIONS:
            return _load_files([path])
        raise ValueError(
            f"unsupported input {path}: give a directory, an image "
            f"({', '.join(sorted(IMAGE_EXTENSIONS))}) or a video "
            f"({', '.join(sorted(VIDEO_EXTENSIONS))})"
        )
    files = [Path(p) for p in source]
    if not files:
        raise ValueError("the list of input images is empty")
    missing = [str(p) for p in files if not p.is_file()]
    if missing:
        raise FileNotFoundError(f"input image(s) not found: {', '.join(missing)}")
    return _load_files(files)


def _load_files(files: Sequence[Path]) -> ImageSequence:
    images = [read_image(p) for p in files]
    return ImageSequence(images, [p.stem for p in files], [float(i) for i in range(len(files))])


def resize_antialiased(image: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Bilinear antialiased resize of a float (C, H, W) tensor, as torchvision's tensor
    ``resize(..., antialias=True)`` does it (``align_corners=False``)."""
    if tuple(image.shape[-2:]) == tuple(size):
        return image
    return F.interpolate(
        image[None], size=size, mode="bilinear", align_corners=False, antialias=True
    )[0]


def preprocess(
    images: Sequence[np.ndarray],
    img_size: int = 504,
    rotate_portrait: bool = False,
    patch_size: int = PATCH_SIZE,
) -> PreprocessedBatch:
    """Resize, crop and pad a list of uint8 RGB images (H, W, 3) into one network batch.

    Per image: optionally turn a portrait image a quarter counter-clockwise; scale the
    longer side to ``img_size`` (sizes rounded with Python ``round``), with a bilinear
    antialiased resize; centre-crop each side down to a multiple of ``patch_size``. Images
    of different sizes are then zero-padded, centred, to the largest height and width.
    """
    if len(images) == 0:
        raise ValueError("no images to preprocess")
    if img_size < patch_size:
        raise ValueError(f"img_size ({img_size}) must be at least the patch size ({patch_size})")

    crops: list[torch.Tensor] = []
    partial: list[dict] = []
    for i, image in enumerate(images):
        array = _as_rgb_uint8(image, i)
        h0, w0 = array.shape[:2]
        k = 1 if rotate_portrait and h0 > w0 else 0
        array = np.rot90(array, k=k)
        h, w = array.shape[:2]
        scale = img_size / max(h, w)
        new_h, new_w = round(h * scale), round(w * scale)
        t = torch.from_numpy(np.ascontiguousarray(array)).permute(2, 0, 1).float() / 255.0
        if min(new_h, new_w) < patch_size:
            raise ValueError(
                f"image {i} ({h0}x{w0}) is too elongated: its shorter side becomes "
                f"{min(new_h, new_w)} px after resizing, less than one {patch_size} px patch; "
                "crop it to a less extreme aspect ratio"
            )
        t = resize_antialiased(t, (new_h, new_w))
        crop_h = max(patch_size, patch_size * (new_h // patch_size))
        crop_w = max(patch_size, patch_size * (new_w // patch_size))
        top, left = (new_h - crop_h) // 2, (new_w - crop_w) // 2
        crops.append(t[:, top : top + crop_h, left : left + crop_w])
        partial.append(
            dict(
                original_hw=(h0, w0),
                rotation_k=k,
                resized_hw=(new_h, new_w),
                crop_offset=(top, left),
                crop_hw=(crop_h, crop_w),
            )
        )

    H = max(c.shape[1] for c in crops)
    W = max(c.shape[2] for c in crops)
    batch = torch.zeros(len(crops), 3, H, W)
    valid = torch.zeros(len(crops), H, W, dtype=torch.bool)
    transforms = []
    for i, (crop, info) in enumerate(zip(crops, partial, strict=True)):
        h, w = crop.shape[1:]
        top, left = (H - h) // 2, (W - w) // 2
        batch[i, :, top : top + h, left : left + w] = crop
        valid[i, top : top + h, left : left + w] = True
        transforms.append(ViewTransform(**info, pad_offset=(top, left), network_hw=(H, W)))
    return PreprocessedBatch(batch[None], valid[None], transforms)


def _as_rgb_uint8(image: np.ndarray, index: int) -> np.ndarray:
    array = np.asarray(image)
    if array.dtype != np.uint8 or array.ndim != 3 or array.shape[2] != 3:
        raise ValueError(
            f"image {index}: expected a uint8 RGB array of shape (H, W, 3), got dtype "
            f"{array.dtype} and shape {array.shape}; load files with dvlt_core.io.load_sequence"
        )
    if array.shape[0] < 1 or array.shape[1] < 1:
        raise ValueError(f"image {index} is empty (shape {array.shape})")
    return array
