"""Rectify distorted camera images to pinhole images before inference (OpenCV, ROS-free).

A :class:`CameraCalibration` holds what a sensor_msgs/CameraInfo says about the camera:
size, ``K``, the distortion model and coefficients ``D``, and the optional rectification
rotation ``R`` and projection ``P``. :class:`Rectifier` computes the undistortion maps of a
calibration once (cached by the calibration's values) and remaps images with them to a
pinhole image of the same size whose intrinsics are :attr:`RectificationMaps.k`.

Models (ROS ``distortion_model`` names): ``plumb_bob`` (``D = k1 k2 p1 p2 [k3]``) and
``rational_polynomial`` (``k1 k2 p1 p2 k3 k4 k5 k6``), OpenCV's standard model, and
``equidistant`` (``k1 k2 k3 k4``, ``cv2.fisheye``). A calibration whose ``D`` is empty or all
zero has no distortion, whatever its model name. Anything else is refused
(:class:`ValueError`).

New intrinsics (``new_intrinsics``): ``"auto"`` (default) takes ``P``'s left 3x3 when ``P``
is given (what ROS's image_proc does; ``P``'s fourth column, a stereo baseline, is not
applied), else ``K``; ``"k"`` always ``K``; ``"optimal"`` the pinhole camera that keeps only
valid pixels (``cv2.getOptimalNewCameraMatrix`` with alpha 0, or for ``equidistant``
``cv2.fisheye.estimateNewCameraMatrixForUndistortRectify`` with balance 0).

Conventions: OpenCV/ROS pixel coordinates (the centre of pixel (u, v) is at (u, v)), the
same as every ``K`` here. With a rectification rotation ``R`` (stereo), the rectified image
is that of a camera turned by ``R``: points map as ``p_rectified = R · p_camera``, so the
rectified camera's pose is ``camera_pose @ [[Rᵀ, 0], [0, 1]]``
(:attr:`RectificationMaps.camera_from_rectified`).
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass, field
from types import ModuleType
from typing import Literal

import numpy as np

#: Distortion models and the numbers of coefficients each accepts.
DISTORTION_MODELS: dict[str, tuple[int, ...]] = {
    "plumb_bob": (4, 5),
    "rational_polynomial": (8,),
    "equidistant": (4,),
}
NewIntrinsics = Literal["auto", "k", "optimal"]
Interpolation = Literal["bilinear", "nearest"]


def _cv2() -> ModuleType:
    try:
        import cv2
    except ImportError:
        raise ImportError(
            "rectifying distorted images needs OpenCV: pip install opencv-python-headless "
            "(or the package's 'rectify' extra; python3-opencv in a ROS install)"
        ) from None
    return cv2


@dataclass(frozen=True, eq=False)
class CameraCalibration:
    """A camera as sensor_msgs/CameraInfo describes it (``k``, ``r`` 3x3, ``p`` 3x4; ``d``
    as many coefficients as the model takes). ``r`` and ``p`` None: not given (monocular,
    or all-zero in the message). Invalid values raise :class:`ValueError`. Equal (and
    hashing alike) when their values are: a changed CameraInfo is a new calibration."""

    width: int
    height: int
    k: np.ndarray
    distortion_model: str = ""
    d: tuple[float, ...] = ()
    r: np.ndarray | None = None
    p: np.ndarray | None = None
    _key: tuple = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        k = np.asarray(self.k, dtype=np.float64)
        problems = []
        if self.width < 1 or self.height < 1:
            problems.append(f"size {self.width}x{self.height} is empty")
        if k.shape != (3, 3) or not np.isfinite(k).all() or k[0, 0] <= 0 or k[1, 1] <= 0:
            problems.append("K must be a finite 3x3 matrix with positive fx, fy")
        r = None if self.r is None else np.asarray(self.r, dtype=np.float64).reshape(3, 3)
        p = None if self.p is None else np.asarray(self.p, dtype=np.float64).reshape(3, 4)
        if r is not None and not np.allclose(r @ r.T, np.eye(3), atol=1e-6):
            problems.append("R is not a rotation matrix")
        if p is not None and (not np.isfinite(p).all() or p[0, 0] <= 0 or p[1, 1] <= 0):
            problems.append("P must be finite with positive fx, fy")
        d = tuple(float(c) for c in self.d)
        if not all(np.isfinite(d)):
            problems.append("D contains NaN or inf")
        if any(d):
            lengths = DISTORTION_MODELS.get(self.distortion_model)
            if lengths is None:
                problems.append(
                    f"distortion model {self.distortion_model!r} is not supported (supported: "
                    f"{', '.join(DISTORTION_MODELS)}); publish rectified images instead"
                )
            elif len(d) not in lengths:
                problems.append(
                    f"{self.distortion_model} takes {' or '.join(map(str, lengths))} "
                    f"coefficients, D has {len(d)}"
                )
        if problems:
            raise ValueError("camera calibration refused: " + "; ".join(problems))
        object.__setattr__(self, "k", k)
        object.__setattr__(self, "d", d)
        object.__setattr__(self, "r", r)
        object.__setattr__(self, "p", p)
        key = (self.width, self.height, k.tobytes(), self.distortion_model if any(d) else "", d)
        key += (None if r is None else r.tobytes(), None if p is None else p.tobytes())
        object.__setattr__(self, "_key", key)

    @classmethod
    def from_camera_info(
        cls,
        width: int,
        height: int,
        k: object,
        distortion_model: str = "",
        d: object = (),
        r: object = None,
        p: object = None,
    ) -> CameraCalibration:
        """From CameraInfo fields as sent (flat ``k`` 9, ``r`` 9, ``p`` 12): an all-zero
        ``r`` or ``p`` (not calibrated) counts as not given."""

        def given(values: object, size: int) -> np.ndarray | None:
            if values is None:
                return None
            array = np.asarray(values, dtype=np.float64).reshape(-1)
            return None if array.size != size or not array.any() else array

        r_given, p_given = given(r, 9), given(p, 12)
        return cls(
            int(width),
            int(height),
            np.asarray(k, dtype=np.float64).reshape(3, 3),
            distortion_model,
            tuple(np.asarray(d, dtype=np.float64).reshape(-1).tolist()),
            None if r_given is None else r_given.reshape(3, 3),
            None if p_given is None else p_given.reshape(3, 4),
        )

    @property
    def distorted(self) -> bool:
        """True when ``D`` has a non-zero coefficient."""
        return any(self.d)

    @property
    def key(self) -> tuple:
        """Hashable identity of the calibration's values (the map cache's key)."""
        return self._key

    def __eq__(self, other: object) -> bool:
        return isinstance(other, CameraCalibration) and self.key == other.key

    def __hash__(self) -> int:
        return hash(self.key)


@dataclass(frozen=True)
class RectificationMaps:
    """Where each rectified pixel samples the distorted image, and the rectified camera.

    ``map_x``, ``map_y``: (H, W) float32 source coordinates (OpenCV pixel convention);
    ``k``: intrinsics of the rectified image; ``camera_from_rectified``: ``Rᵀ`` (identity
    without ``R``); ``valid``: (H, W) rectified pixels whose bilinear sample lies wholly
    inside the distorted image; ``identity``: nothing to do (no distortion, no ``R``, new K =
    K), :meth:`Rectifier.rectify` then returns the image unchanged.
    """

    map_x: np.ndarray = field(repr=False)
    map_y: np.ndarray = field(repr=False)
    k: np.ndarray
    camera_from_rectified: np.ndarray
    valid: np.ndarray = field(repr=False)
    identity: bool


@dataclass(frozen=True)
class RectifiedImage:
    """A rectified image with its pinhole intrinsics ``k`` and maps."""

    image: np.ndarray = field(repr=False)
    k: np.ndarray
    maps: RectificationMaps = field(repr=False)


class Rectifier:
    """Undistortion maps per calibration (computed once, LRU-cached) and remapping."""

    def __init__(self, new_intrinsics: NewIntrinsics = "auto", cache_size: int = 8) -> None:
        if new_intrinsics not in ("auto", "k", "optimal"):
            raise ValueError(
                f"new_intrinsics must be 'auto', 'k' or 'optimal', got {new_intrinsics!r}"
            )
        if cache_size < 1:
            raise ValueError(f"cache_size must be >= 1, got {cache_size}")
        self.new_intrinsics = new_intrinsics
        self.cache_size = int(cache_size)
        self._cache: OrderedDict[tuple, RectificationMaps] = OrderedDict()

    def __len__(self) -> int:
        return len(self._cache)

    def maps(self, calibration: CameraCalibration) -> RectificationMaps:
        """The maps of ``calibration`` (cached; the same object for equal calibrations)."""
        key = calibration.key
        maps = self._cache.get(key)
        if maps is None:
            maps = self._compute(calibration)
            self._cache[key] = maps
            while len(self._cache) > self.cache_size:
                self._cache.popitem(last=False)
        else:
            self._cache.move_to_end(key)
        return maps

    def rectify(
        self,
        image: np.ndarray,
        calibration: CameraCalibration,
        interpolation: Interpolation = "bilinear",
    ) -> RectifiedImage:
        """Remap ``image`` ((H, W) or (H, W, C), any dtype cv2.remap takes: uint8, uint16,
        float32...) to the pinhole camera :attr:`RectificationMaps.k`. Pixels outside the
        distorted image become 0. ``interpolation="nearest"`` for depth images (no blending
        across depth edges)."""
        if interpolation not in ("bilinear", "nearest"):
            raise ValueError(
                f"interpolation must be 'bilinear' or 'nearest', got {interpolation!r}"
            )
        image = np.asarray(image)
        if image.shape[:2] != (calibration.height, calibration.width):
            raise ValueError(
                f"image is {image.shape[1]}x{image.shape[0]} but the calibration is for "
                f"{calibration.width}x{calibration.height}; scale the CameraInfo to the image"
            )
        maps = self.maps(calibration)
        if maps.identity:
            return RectifiedImage(image, maps.k, maps)
        cv2 = _cv2()
        flag = cv2.INTER_LINEAR if interpolation == "bilinear" else cv2.INTER_NEAREST
        out = cv2.remap(
            np.ascontiguousarray(image), maps.map_x, maps.map_y, flag,
            borderMode=cv2.BORDER_CONSTANT, borderValue=0,
        )
        return RectifiedImage(out.reshape(image.shape), maps.k, maps)

    def _new_k(self, calibration: CameraCalibration) -> np.ndarray:
        cal = calibration
        if self.new_intrinsics == "auto" and cal.p is not None:
            return cal.p[:, :3].copy()
        if self.new_intrinsics != "optimal" or not cal.distorted:
            return cal.k.copy()
        cv2 = _cv2()
        size = (cal.width, cal.height)
        d = np.asarray(cal.d, dtype=np.float64)
        if cal.distortion_model == "equidistant":
            r = np.eye(3) if cal.r is None else cal.r
            new_k = cv2.fisheye.estimateNewCameraMatrixForUndistortRectify(
                cal.k, d, size, r, balance=0.0
            )
        else:
            new_k, _ = cv2.getOptimalNewCameraMatrix(cal.k, d, size, 0.0, size)
        return np.asarray(new_k, dtype=np.float64)

    def _compute(self, calibration: CameraCalibration) -> RectificationMaps:
        cal = calibration
        new_k = self._new_k(cal)
        if not cal.distorted and cal.r is None and np.array_equal(new_k, cal.k):
            return _identity_maps(cal)
        cv2 = _cv2()
        rotation = np.eye(3) if cal.r is None else cal.r
        size = (cal.width, cal.height)
        if cal.distortion_model == "equidistant" and cal.distorted:
            d = np.asarray(cal.d, dtype=np.float64)
            map_x, map_y = cv2.fisheye.initUndistortRectifyMap(
                cal.k, d, rotation, new_k, size, cv2.CV_32FC1
            )
        else:
            d = np.asarray(cal.d if cal.distorted else (0.0,) * 5, dtype=np.float64)
            map_x, map_y = cv2.initUndistortRectifyMap(
                cal.k, d, rotation, new_k, size, cv2.CV_32FC1
            )
        valid = (map_x >= 0) & (map_x <= cal.width - 1) & (map_y >= 0) & (map_y <= cal.height - 1)
        return RectificationMaps(
            _read_only(map_x), _read_only(map_y), new_k, rotation.T.copy(), _read_only(valid), False
        )


def _identity_maps(calibration: CameraCalibration) -> RectificationMaps:
    rows, cols = np.mgrid[0 : calibration.height, 0 : calibration.width].astype(np.float32)
    return RectificationMaps(
        _read_only(cols),
        _read_only(rows),
        calibration.k.copy(),
        np.eye(3),
        _read_only(np.ones(cols.shape, dtype=bool)),
        True,
    )


def _read_only(array: np.ndarray) -> np.ndarray:
    array.flags.writeable = False
    return array
