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
        preprocessing kept (those cut away by the crop are False and hold 0).
        """
        if mode not in ("bilinear", "nearest"):
            raise ValueError(f"mode must be 'bilinear' or 'nearest', got {mode!r}")
        h0, w0 = self.original_hw
        # The map is affine, so N(u, v) = N(u, 0) + N(0, v) - N(0, 0): no full-size float64 grid.
        along_u = self.original_to_network(np.stack([np.arange(w0), np.zeros(w0)], -1))
        along_v = self.original_to_network(np.stack([np.zeros(h0), np.arange(h0)], -1))
        origin = self.original_to_network(np.zeros(2))
        uv = (along_u - origin).astype(np.float32)[None] + along_v.astype(np.float32)[:, None]
        rows, cols = self.network_slices
        crop = np.asarray(array[rows, cols], dtype=np.float32)
        ch, cw = self.crop_hw
        # Continuous coordinates inside the crop; the crop spans [0, cw] x [0, ch].
        x = uv[..., 0] + 0.5 - cols.start
        y = uv[..., 1] + 0.5 - rows.start
        inside = (x >= 0) & (x <= cw) & (y >= 0) & (y <= ch)
        grid = np.stack([2.0 * x / cw - 1.0, 2.0 * y / ch - 1.0], axis=-1).astype(np.float32)
        src = torch.from_numpy(crop.reshape(ch, cw, -1)).permute(2, 0, 1)[None]
        out = F.grid_sample(
            src,
            torch.from_numpy(grid)[None],
            mode=mode,
            padding_mode="border",
            align_corners=False,
        )[0].permute(1, 2, 0).numpy()
        out = out.reshape((h0, w0, *array.shape[2:]))
        out[~inside] = 0.0
        return out, inside


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
