"""The per-view record of preprocessing, and the maps between original and network pixels.

Pixel convention used by every function here: OpenCV/ROS, i.e. the centre of pixel
(column u, row v) sits at coordinates (u, v) and the image spans [-0.5, W - 0.5]. The
network's own intrinsics (from ``rays_to_pose``) place pixel centres at (u + 0.5, v + 0.5);
convert them with :func:`network_to_opencv_intrinsics` first.

Preprocessing of one view is the chain (each step optional):

1. ``rotation_k`` counter-clockwise quarter turns (``np.rot90(image, k)``);
2. a resize of the whole (rotated) image to ``resized_hw``;
3. a crop of ``crop_hw`` starting at ``crop_offset`` (top, left);
4. zero padding that puts the crop at ``pad_offset`` (top, left) of the ``network_hw`` canvas.
"""

from __future__ import annotations

import functools
from dataclasses import asdict, dataclass

import numpy as np
import torch
import torch.nn.functional as F

# Maps camera coordinates of the unrotated view to those of the view turned a quarter
# counter-clockwise: the new x axis is the old y axis, the new y axis the old -x axis.
_QUARTER_TURN_CAM = np.array([[0.0, 1.0, 0.0], [-1.0, 0.0, 0.0], [0.0, 0.0, 1.0]])


@dataclass(frozen=True)
class ViewTransform:
    """Everything preprocessing did to one image, enough to map results back exactly."""

    original_hw: tuple[int, int]
    rotation_k: int
    resized_hw: tuple[int, int]
    crop_offset: tuple[int, int]
    crop_hw: tuple[int, int]
    pad_offset: tuple[int, int]
    network_hw: tuple[int, int]

    @property
    def rotated_hw(self) -> tuple[int, int]:
        """Size of the image after the rotation and before the resize."""
        h, w = self.original_hw
        return (w, h) if self.rotation_k % 2 else (h, w)

    @property
    def scale_xy(self) -> tuple[float, float]:
        """Resize factors (x, y): resized size over rotated size, per axis."""
        rh, rw = self.rotated_hw
        return self.resized_hw[1] / rw, self.resized_hw[0] / rh

    @property
    def network_slices(self) -> tuple[slice, slice]:
        """Row and column slices of this view's valid pixels in the network canvas."""
        (top, left), (h, w) = self.pad_offset, self.crop_hw
        return slice(top, top + h), slice(left, left + w)

    def to_dict(self) -> dict:
        """JSON-serialisable form (tuples become lists)."""
        return {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(self).items()}

    @classmethod
    def from_dict(cls, data: dict) -> ViewTransform:
        """Inverse of :meth:`to_dict`."""
        return cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in data.items()})

    # -- pixel coordinates ---------------------------------------------------------------
    def _affine(self) -> tuple[np.ndarray, np.ndarray]:
        """(a, b) with network = a * rotated + b per axis (x, y), OpenCV pixel coordinates."""
        sx, sy = self.scale_xy
        a = np.array([sx, sy])
        shift = np.array(
            [self.pad_offset[1] - self.crop_offset[1], self.pad_offset[0] - self.crop_offset[0]]
        )
        return a, 0.5 * a - 0.5 + shift

    def original_to_network(self, uv: np.ndarray) -> np.ndarray:
        """Map (..., 2) pixel coordinates (u, v) of the original image to the network canvas."""
        uv = np.asarray(uv, dtype=np.float64)
        h, w = self.original_hw
        for _ in range(self.rotation_k % 4):
            uv = np.stack([uv[..., 1], w - 1 - uv[..., 0]], axis=-1)
            h, w = w, h
        a, b = self._affine()
        return uv * a + b

    def network_to_original(self, uv: np.ndarray) -> np.ndarray:
        """Inverse of :meth:`original_to_network`."""
        a, b = self._affine()
        uv = (np.asarray(uv, dtype=np.float64) - b) / a
        h, w = self.rotated_hw
        for _ in range(self.rotation_k % 4):
            # undo one quarter turn of an image that is h x w after it
            uv = np.stack([h - 1 - uv[..., 1], uv[..., 0]], axis=-1)
            h, w = w, h
        return uv

    # -- cameras -------------------------------------------------------------------------
    def intrinsics_to_original(self, K_net: np.ndarray) -> np.ndarray:
        """Network-canvas intrinsics (OpenCV convention) to original-image intrinsics."""
        a, b = self._affine()
        K = np.array(K_net, dtype=np.float64)
        K[0] = K[0] / a[0]
        K[1] = K[1] / a[1]
        K[0, 2] -= b[0] / a[0]
        K[1, 2] -= b[1] / a[1]
        h, w = self.rotated_hw
        for _ in range(self.rotation_k % 4):
            K = _unturn_intrinsics(K, h)
            h, w = w, h
        return K

    def intrinsics_to_network(self, K_orig: np.ndarray) -> np.ndarray:
        """Original-image intrinsics (OpenCV convention) to network-canvas intrinsics."""
        K = np.array(K_orig, dtype=np.float64)
        h, w = self.original_hw
        for _ in range(self.rotation_k % 4):
            K = _turn_intrinsics(K, w)
            h, w = w, h
        a, b = self._affine()
        K[0] = K[0] * a[0]
        K[1] = K[1] * a[1]
        K[0, 2] += b[0]
        K[1, 2] += b[1]
        return K

    def extrinsics_to_original(self, c2w_net: np.ndarray) -> np.ndarray:
        """Camera-to-world pose of the network view to that of the original (unrotated) view."""
        T = np.eye(4)
        T[:3, :3] = np.linalg.matrix_power(_QUARTER_TURN_CAM, self.rotation_k % 4)
        return np.asarray(c2w_net, dtype=np.float64) @ T

    def extrinsics_to_network(self, c2w_orig: np.ndarray) -> np.ndarray:
        """Inverse of :meth:`extrinsics_to_original`."""
        T = np.eye(4)
        T[:3, :3] = np.linalg.matrix_power(_QUARTER_TURN_CAM.T, self.rotation_k % 4)
        return np.asarray(c2w_orig, dtype=np.float64) @ T

    # -- dense maps ----------------------------------------------------------------------
    def crop_from_network(self, array: np.ndarray) -> np.ndarray:
        """This view's valid (unpadded) region of a network-canvas map, rotation undone.

        The result is the map of the resized and cropped image, in the original orientation.
        """
        rows, cols = self.network_slices
        return np.ascontiguousarray(np.rot90(array[rows, cols], k=-self.rotation_k, axes=(0, 1)))

    def network_crop_intrinsics(self, K_net: np.ndarray) -> np.ndarray:
        """Intrinsics (OpenCV convention) of the map returned by :meth:`crop_from_network`."""
        K = np.array(K_net, dtype=np.float64)
        K[0, 2] -= self.pad_offset[1]
        K[1, 2] -= self.pad_offset[0]
        h, w = self.crop_hw
        for _ in range(self.rotation_k % 4):
            K = _unturn_intrinsics(K, h)
            h, w = w, h
        return K

    def resample_to_original(
        self, array: np.ndarray, mode: str = "bilinear"
    ) -> tuple[np.ndarray, np.ndarray]:
        """Resample a network-canvas map (H, W) or (H, W, C) to the original image grid.

        Returns the resampled float32 map and a boolean mask of the original pixels that
        preprocessing kept (those cut away by the crop are False and hold 0). See
        :meth:`resample_maps_to_original` for the sampling.
        """
        array = np.asarray(array)
        maps = np.moveaxis(array.reshape(*array.shape[:2], -1), -1, 0)
        out, inside = self.resample_maps_to_original(maps, mode)
        return np.moveaxis(out, 0, -1).reshape(*inside.shape, *array.shape[2:]), inside

    def resample_maps_to_original(
        self, maps: np.ndarray, mode: str = "bilinear"
    ) -> tuple[np.ndarray, np.ndarray]:
        """Resample network-canvas maps (..., H, W) to the original image grid at once.

        Each original pixel centre is mapped into this view's crop of the canvas and
        sampled there (``mode`` "bilinear" or "nearest", coordinates clamped to the crop's
        border pixels, as ``grid_sample`` with ``padding_mode="border"`` and
        ``align_corners=False``); a non-finite value reaches every pixel whose taps hold
        it. Returns the float32 maps (..., h0, w0) and the (h0, w0) boolean mask of the
        original pixels that preprocessing kept: those cut away by the crop are False and
        hold 0 in every map.
        """
        if mode not in ("bilinear", "nearest"):
            raise ValueError(f"mode must be 'bilinear' or 'nearest', got {mode!r}")
        maps = np.asarray(maps)
        lead = maps.shape[:-2]
        grid = _original_grid(self)
        inside = np.zeros(self.original_hw, dtype=bool)
        inside[grid.rows, grid.cols] = True
        if not inside.any() or not maps.size:
            return np.zeros((*lead, *self.original_hw), dtype=np.float32), inside
        rows, cols = self.network_slices
        crop = np.ascontiguousarray(maps[..., rows, cols], dtype=np.float32)
        src = torch.from_numpy(crop.reshape(-1, 1, *self.crop_hw))
        sampled = F.grid_sample(
            src,
            grid.sample_grid().expand(len(src), -1, -1, -1),
            mode=mode,
            padding_mode="border",
            align_corners=False,
        ).numpy().reshape(*lead, *grid.shape)
        if grid.shape == self.original_hw:
            return sampled, inside
        out = np.zeros((*lead, *self.original_hw), dtype=np.float32)
        out[..., grid.rows, grid.cols] = sampled
        return out, inside


@dataclass(frozen=True)
class _OriginalGrid:
    """Where the original pixels kept by preprocessing sample the crop of the canvas.

    ``rows`` and ``cols`` bound the kept pixels (a rectangle: each canvas axis follows one
    original axis, monotonically). ``x`` and ``y`` are ``grid_sample``'s normalised crop
    coordinates of those pixels, shaped to broadcast over (rows, cols): each varies along
    one axis only (x along the columns, y along the rows, swapped for odd rotations).
    """

    rows: slice
    cols: slice
    x: torch.Tensor
    y: torch.Tensor

    @property
    def shape(self) -> tuple[int, int]:
        """Rows and columns of the kept rectangle."""
        return self.rows.stop - self.rows.start, self.cols.stop - self.cols.start

    def sample_grid(self) -> torch.Tensor:
        """(1, rows, cols, 2) float32 sampling grid (a new tensor)."""
        grid = torch.empty(1, *self.shape, 2)
        grid[0, ..., 0] = self.x
        grid[0, ..., 1] = self.y
        return grid


@functools.lru_cache(maxsize=64)
def _original_grid(transform: ViewTransform) -> _OriginalGrid:
    """The sampling grid of ``transform`` (cached by value: every cycle of a camera
    preprocesses to an equal record)."""
    h0, w0 = transform.original_hw
    # The map is affine, so N(u, v) = (N(u, 0) - N(0, 0)) + N(0, v); each canvas coordinate
    # follows one original axis, so the full grid is that sum on one line and one column.
    origin = transform.original_to_network(np.zeros(2))
    along_u = transform.original_to_network(np.stack([np.arange(w0), np.zeros(w0)], -1))
    along_v = transform.original_to_network(np.stack([np.zeros(h0), np.arange(h0)], -1))
    along_u = (along_u - origin).astype(np.float32)  # per original column, 0 at u = 0
    along_v = along_v.astype(np.float32)  # per original row
    swapped = transform.rotation_k % 2 == 1  # canvas x follows the original rows
    (top, left), (ch, cw) = transform.pad_offset, transform.crop_hw
    x_axis, y_axis = (along_v[:, 0], along_u[:, 1]) if swapped else (along_u[:, 0], along_v[:, 1])
    x_rest, y_rest = (along_u[0, 0], along_v[0, 1]) if swapped else (along_v[0, 0], along_u[0, 1])
    # Continuous coordinates inside the crop, which spans [0, cw] x [0, ch].
    x = x_axis + x_rest + 0.5 - left
    y = y_axis + y_rest + 0.5 - top
    x_kept = _kept_range((x >= 0) & (x <= cw))
    y_kept = _kept_range((y >= 0) & (y <= ch))
    gx = torch.from_numpy((2.0 * x[x_kept] / cw - 1.0).astype(np.float32))
    gy = torch.from_numpy((2.0 * y[y_kept] / ch - 1.0).astype(np.float32))
    if swapped:
        return _OriginalGrid(x_kept, y_kept, gx[:, None], gy[None, :])
    return _OriginalGrid(y_kept, x_kept, gx[None, :], gy[:, None])


def _kept_range(kept: np.ndarray) -> slice:
    """The slice of a monotone run of True in a 1-D mask (an empty slice if none)."""
    index = np.flatnonzero(kept)
    return slice(int(index[0]), int(index[-1]) + 1) if index.size else slice(0, 0)


def _turn_intrinsics(K: np.ndarray, width: int) -> np.ndarray:
    """Intrinsics after one counter-clockwise quarter turn of an image ``width`` wide."""
    fx, fy, cx, cy = K[0, 0], K[1, 1], K[0, 2], K[1, 2]
    out = np.eye(3)
    out[0, 0], out[1, 1], out[0, 2], out[1, 2] = fy, fx, cy, width - 1 - cx
    return out


def _unturn_intrinsics(K: np.ndarray, height: int) -> np.ndarray:
    """Inverse of :func:`_turn_intrinsics`; ``height`` is the turned image's height."""
    fx, fy, cx, cy = K[0, 0], K[1, 1], K[0, 2], K[1, 2]
    out = np.eye(3)
    out[0, 0], out[1, 1], out[0, 2], out[1, 2] = fy, fx, height - 1 - cy, cx
    return out


def network_to_opencv_intrinsics(K: np.ndarray) -> np.ndarray:
    """Shift intrinsics from the network's pixel-centre-at-(u+0.5) convention to OpenCV's."""
    out = np.array(K, dtype=np.float64)
    out[..., 0, 2] -= 0.5
    out[..., 1, 2] -= 0.5
    return out
