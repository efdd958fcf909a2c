"""Loading image sequences and turning them into the network input (docs/architecture.md §3.1)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from dvlt_core.io.image_decode import DEFAULT_MAX_PIXELS, DecodedImage, decode_image
from dvlt_core.io.video import VIDEO_EXTENSIONS, read_video_frames
from dvlt_core.io.view_transforms import ViewTransform
from dvlt_core.model.config import PATCH_SIZE

IMAGE_EXTENSIONS = frozenset({".jpg", ".jpeg", ".png", ".webp", ".bmp"})


@dataclass
class ImageSequence:
    """Decoded views: uint8 RGB arrays (H, W, 3), their names, and timestamps in seconds.

    Timestamps are presentation times for videos and the frame index otherwise.
    ``source_sizes`` are the (width, height) of each view as stored; a view whose image
    is smaller was downscaled to ``max_pixels`` while it was decoded.
    """

    images: list[np.ndarray]
    names: list[str]
    timestamps: list[float]
    source_sizes: list[tuple[int, int]] = field(default_factory=list)

    @property
    def downscaled(self) -> list[int]:
        """Indices of the views that were downscaled while they were decoded."""
        return [i for i, (image, size) in enumerate(zip(self.images, self.source_sizes,
                                                        strict=True))
                if (image.shape[1], image.shape[0]) != tuple(size)]

    def __len__(self) -> int:
        return len(self.images)


@dataclass
class PreprocessedBatch:
    """Network input: ``images`` (1, S, 3, H, W) float32 in [0, 1], ``valid`` (1, S, H, W)
    bool (False on padding), and one :class:`ViewTransform` per view."""

    images: torch.Tensor
    valid: torch.Tensor
    transforms: list[ViewTransform]


def read_image(path: str | Path, max_pixels: int | None = DEFAULT_MAX_PIXELS) -> np.ndarray:
    """Read one image file as uint8 RGB (H, W, 3), applying its EXIF orientation, with at
    most ``max_pixels`` pixels (:func:`dvlt_core.io.image_decode.decode_image`: larger
    images are downscaled, those too large to decode within that bound are refused)."""
    return _read(Path(path), max_pixels).rgb


def _read(path: Path, max_pixels: int | None) -> DecodedImage:
    return decode_image(path, max_pixels, what=f"image {path}", exif_transpose=True)


def load_sequence(
    source: str | Path | Sequence[str | Path],
    fps: float | None = 2.0,
    max_pixels: int | None = DEFAULT_MAX_PIXELS,
) -> ImageSequence:
    """Load the views of a scene.

    ``source`` is a directory (its image files, sorted by name), a video (frames subsampled
    to ``fps``), a single image, or a list of image files (kept in the given order). Every
    view is decoded with at most ``max_pixels`` pixels (larger ones are downscaled while
    they are decoded; see :mod:`dvlt_core.io.image_decode`).
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
            return _load_files(files, max_pixels)
        suffix = path.suffix.lower()
        if suffix in VIDEO_EXTENSIONS:
            frames, times, size = read_video_frames(path, fps=fps, max_pixels=max_pixels)
            names = [f"{path.stem}_{i:06d}" for i in range(len(frames))]
            return ImageSequence(frames, names, times, [size] * len(frames))
        if suffix in IMAGE_EXTENSIONS:
            return _load_files([path], max_pixels)
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
    return _load_files(files, max_pixels)


def _load_files(files: Sequence[Path], max_pixels: int | None) -> ImageSequence:
    decoded = [_read(p, max_pixels) for p in files]
    return ImageSequence([d.rgb for d in decoded], [p.stem for p in files],
                         [float(i) for i in range(len(files))],
                         [d.source_size for d in decoded])


def resize_antialiased(image: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Bilinear antialiased resize of a float (C, H, W) tensor, as torchvision's tensor
    ``resize(..., antialias=True)`` does it (``align_corners=False``)."""
    if tuple(image.shape[-2:]) == tuple(size):
        return image
    return F.interpolate(
        image[None], size=size, mode="bilinear", align_corners=False, antialias=True
    )[0]


def network_size(height: int, width: int, img_size: int) -> tuple[int, int]:
    """(height, width) of an image once its longer side is scaled to ``img_size``."""
    scale = img_size / max(height, width)
    return round(height * scale), round(width * scale)


def image_size_problem(
    height: int, width: int, img_size: int, patch_size: int = PATCH_SIZE
) -> str | None:
    """Why a ``height`` x ``width`` image cannot be a view of the network at ``img_size``,
    or None: its shorter side must keep one ``patch_size`` patch after resizing, and hold
    at least one patch of real pixels (a smaller image is upsampled blur)."""
    if height < 1 or width < 1:
        return f"empty image {width}x{height}"
    shorter = min(network_size(height, width, img_size))
    if shorter < patch_size:
        return (
            f"{width}x{height} is too elongated: its shorter side becomes {shorter} px at "
            f"img_size {img_size}, less than one {patch_size} px patch; crop it to at most "
            f"1:{img_size // patch_size}"
        )
    if min(height, width) < patch_size:
        return (
            f"{width}x{height} is smaller than one {patch_size} px patch per side: too small "
            "to reconstruct; use images of at least that size"
        )
    return None


def preprocess(
    images: Sequence[np.ndarray],
    img_size: int = 504,
    rotate_portrait: bool = False,
    patch_size: int = PATCH_SIZE,
    names: Sequence[str] | None = None,
) -> PreprocessedBatch:
    """Resize, crop and pad a list of uint8 RGB images (H, W, 3) into one network batch.

    Per image: optionally turn a portrait image a quarter counter-clockwise; scale the
    longer side to ``img_size`` (sizes rounded with Python ``round``), with a bilinear
    antialiased resize; centre-crop each side down to a multiple of ``patch_size``. Images
    of different sizes are then zero-padded, centred, to the largest height and width.
    Images :func:`image_size_problem` refuses raise ValueError (``names`` name them).
    """
    if len(images) == 0:
        raise ValueError("no images to preprocess")
    if img_size < patch_size:
        raise ValueError(f"img_size ({img_size}) must be at least the patch size ({patch_size})")

    crops: list[torch.Tensor] = []
    partial: list[dict] = []
    for i, image in enumerate(images):
        label = f"image {names[i]!r}" if names is not None else f"image {i}"
        array = _as_rgb_uint8(image, label)
        h0, w0 = array.shape[:2]
        problem = image_size_problem(h0, w0, img_size, patch_size)
        if problem is not None:
            raise ValueError(f"{label}: {problem}")
        k = 1 if rotate_portrait and h0 > w0 else 0
        array = np.rot90(array, k=k)
        h, w = array.shape[:2]
        new_h, new_w = network_size(h, w, img_size)
        # A float copy: never a view of a read-only decoded buffer.
        t = torch.from_numpy(np.ascontiguousarray(array, dtype=np.float32)).permute(2, 0, 1)
        t = resize_antialiased(t / 255.0, (new_h, new_w))
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


def _as_rgb_uint8(image: np.ndarray, label: str) -> np.ndarray:
    array = np.asarray(image)
    if array.dtype != np.uint8 or array.ndim != 3 or array.shape[2] != 3:
        raise ValueError(
            f"{label}: expected a uint8 RGB array of shape (H, W, 3), got dtype "
            f"{array.dtype} and shape {array.shape}; load files with dvlt_core.io.load_sequence"
        )
    return array
