"""What the session accumulates over cycles: the fused cloud and the trajectories.

* :class:`FusedCloud`: the points of each snapshot (the newest views of each window) in
  the world frame, merged on a voxel grid (the most confident point per voxel), so its
  memory is bounded by the scene, not by the length of the run.
* :class:`Trajectories`: the reference camera's recent path (what ``~/trajectory``
  publishes, bounded by ``trajectory_length``) and, when asked, every camera's world pose
  per world epoch (the TUM files of ``dvlt-ros process``).
"""

from __future__ import annotations

from collections import deque
from pathlib import Path

import numpy as np

from dvlt_core.io.writers import write_ply, write_tum
from dvlt_ros.pipeline.engine import CycleResult

_CELL_BITS = 21
_CELL_OFFSET = 1 << (_CELL_BITS - 1)


class FusedCloud:
    """World points merged on a voxel grid per world epoch: each voxel keeps its most
    confident point (earlier ones win ties). Voxels are kept sorted by a packed 63-bit key,
    so adding a window costs O(points of the window x log voxels) plus one copy. Cells are
    limited to +-2^20 voxels from the origin per axis (+-21 km at 2 cm).

    Memory stays bounded however long the bag: when all epochs together hold more than
    ``max_points`` voxels, the voxel size doubles and the cloud is merged again onto the
    coarser grid (``coarsenings`` counts it). ``voxel_size`` 0 keeps every point, unbounded.
    """

    def __init__(self, voxel_size: float, max_points: int = 4_000_000) -> None:
        if voxel_size < 0:
            raise ValueError(f"voxel size must be >= 0, got {voxel_size}")
        if max_points < 1:
            raise ValueError(f"max_points must be >= 1, got {max_points}")
        self.voxel_size = voxel_size
        self.max_points = max_points
        self.coarsenings = 0
        # epoch -> (sorted keys, points, colours, confidence) or the raw chunks
        self._epochs: dict[int, tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]] = {}
        self._chunks: dict[int, list[tuple[np.ndarray, np.ndarray, np.ndarray]]] = {}

    def _keys(self, points: np.ndarray) -> np.ndarray:
        cells = np.floor(points / self.voxel_size).astype(np.int64) + _CELL_OFFSET
        np.clip(cells, 0, (1 << _CELL_BITS) - 1, out=cells)
        return (cells[:, 0] << (2 * _CELL_BITS)) | (cells[:, 1] << _CELL_BITS) | cells[:, 2]

    def add(self, epoch: int, points: np.ndarray, colors: np.ndarray,
            confidence: np.ndarray) -> None:
        points = np.asarray(points, np.float32)
        colors = np.asarray(colors, np.uint8)
        confidence = np.asarray(confidence, np.float32)
        if self.voxel_size == 0:
            self._chunks.setdefault(epoch, []).append((points, colors, confidence))
            return
        if not len(points):
            return
        self._merge(epoch, *self._reduce(points, colors, confidence))
        while sum(len(v[0]) for v in self._epochs.values()) > self.max_points:
            self.voxel_size *= 2
            self.coarsenings += 1
            for key, (_, pts, cols, conf) in self._epochs.items():
                self._epochs[key] = self._reduce(pts, cols, conf)

    def _reduce(self, points: np.ndarray, colors: np.ndarray, confidence: np.ndarray
                ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """The most confident point of each voxel (earlier ones win ties), sorted by key."""
        keys = self._keys(points)
        order = np.lexsort((-confidence, keys))
        keys = keys[order]
        first = np.ones(len(keys), bool)
        first[1:] = keys[1:] != keys[:-1]
        pick = order[first]
        return keys[first], points[pick], colors[pick], confidence[pick]

    def _merge(self, epoch: int, keys: np.ndarray, points: np.ndarray, colors: np.ndarray,
               confidence: np.ndarray) -> None:
        old = self._epochs.get(epoch)
        if old is None:
            self._epochs[epoch] = (keys, points, colors, confidence)
            return
        old_keys, old_points, old_colors, old_conf = old
        at = np.searchsorted(old_keys, keys)
        found = at < len(old_keys)
        found[found] = old_keys[at[found]] == keys[found]
        better = found.copy()
        better[found] = confidence[found] > old_conf[at[found]]
        old_points[at[better]] = points[better]
        old_colors[at[better]] = colors[better]
        old_conf[at[better]] = confidence[better]
        new = ~found
        self._epochs[epoch] = (
            np.insert(old_keys, at[new], keys[new]),
            np.insert(old_points, at[new], points[new], axis=0),
            np.insert(old_colors, at[new], colors[new], axis=0),
            np.insert(old_conf, at[new], confidence[new]),
        )

    def arrays(self, epoch: int) -> tuple[np.ndarray, np.ndarray]:
        """(points (N, 3) float32, colours (N, 3) uint8) of one epoch."""
        if epoch in self._epochs:
            _, points, colors, _ = self._epochs[epoch]
            return points, colors
        chunks = self._chunks.get(epoch)
        if not chunks:
            return np.zeros((0, 3), np.float32), np.zeros((0, 3), np.uint8)
        return np.concatenate([c[0] for c in chunks]), np.concatenate([c[1] for c in chunks])

    @property
    def epochs(self) -> list[int]:
        return sorted(set(self._epochs) | set(self._chunks))

    def __len__(self) -> int:
        return sum(len(self.arrays(e)[0]) for e in self.epochs)

    def write(self, path: Path, epoch: int) -> int:
        """Write one epoch's points as a binary PLY; returns the number of points."""
        points, colors = self.arrays(epoch)
        write_ply(path, points, colors)
        return len(points)


class Trajectories:
    """World poses of reconstructed frames.

    ``path``: (stamp ns, world_from_camera 4x4) of the reference camera at each cycle's
    stamp, the last ``path_length`` of the current world (it restarts with a new world
    epoch or :meth:`reset_path`). With ``keep_all``, every camera's pose of every cycle is
    also kept per (epoch, camera), for the whole run.
    """

    def __init__(self, path_length: int, keep_all: bool = False) -> None:
        self._path: deque[tuple[int, np.ndarray]] = deque(maxlen=path_length)
        self._path_epoch: int | None = None
        self.keep_all = keep_all
        self.poses: dict[tuple[int, str], list[tuple[int, np.ndarray]]] = {}

    @property
    def path(self) -> list[tuple[int, np.ndarray]]:
        return list(self._path)

    def reset_path(self) -> None:
        """Start a new path (the world was replaced, e.g. by a model reload)."""
        self._path.clear()

    def add_cycle(self, result: CycleResult) -> bool:
        """Record the poses of one cycle; True when the path got a pose."""
        if self._path_epoch is not None and result.epoch != self._path_epoch:
            self._path.clear()
        self._path_epoch = result.epoch
        if self.keep_all:
            for pose in result.poses:
                self.add(result.epoch, pose.camera, pose.stamp_ns, pose.world_from_camera)
        if not result.poses:
            return False
        reference = result.poses[0]
        if reference.camera != result.keys[0][0] or reference.stamp_ns != result.stamp_ns:
            return False
        self._path.append((reference.stamp_ns, reference.world_from_camera))
        return True

    def add(self, epoch: int, camera: str, stamp_ns: int, world_from_camera: np.ndarray) -> None:
        self.poses.setdefault((epoch, camera), []).append((stamp_ns, world_from_camera))

    @property
    def epochs(self) -> list[int]:
        """The world epochs with kept poses."""
        return sorted({epoch for epoch, _ in self.poses})

    def arrays(self, epoch: int, camera: str) -> tuple[np.ndarray, np.ndarray]:
        """(stamps ns (N,), poses (N, 4, 4)) of one camera, in stamp order."""
        items = sorted(self.poses.get((epoch, camera), []), key=lambda item: item[0])
        if not items:
            return np.zeros(0, np.int64), np.zeros((0, 4, 4))
        return (np.array([s for s, _ in items], np.int64), np.stack([p for _, p in items]))

    def write_tum(self, path: Path, epoch: int, camera: str) -> int:
        stamps, poses = self.arrays(epoch, camera)
        write_tum(path, [int(s) / 1e9 for s in stamps], poses)
        return len(stamps)

    def write_path_tum(self, path: Path) -> int:
        """Write the reference camera's path as a TUM file; returns its length."""
        items = self.path
        write_tum(path, [s * 1e-9 for s, _ in items],
                  np.array([p for _, p in items]).reshape(-1, 4, 4))
        return len(items)


def epoch_suffix(epoch: int) -> str:
    """File name part of a world epoch: nothing for the first, ``.epoch<N>`` after resets."""
    return "" if epoch == 0 else f".epoch{epoch}"
