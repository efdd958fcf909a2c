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
from collections.abc import Mapping
from pathlib import Path

import numpy as np

from dvlt_core.geometry import Sim3
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

    Each point keeps the ``label`` it was added with (e.g. the keyframe that saw it), so
    :meth:`move` can re-place the points of some labels (a loop closure moved their
    keyframes) and merge the cloud again.
    """

    def __init__(self, voxel_size: float, max_points: int = 4_000_000) -> None:
        if voxel_size < 0:
            raise ValueError(f"voxel size must be >= 0, got {voxel_size}")
        if max_points < 1:
            raise ValueError(f"max_points must be >= 1, got {max_points}")
        self.voxel_size = voxel_size
        self.max_points = max_points
        self.coarsenings = 0
        # epoch -> (sorted keys, points, colours, confidence, labels) or the raw chunks
        self._epochs: dict[int, tuple[np.ndarray, ...]] = {}
        self._chunks: dict[int, list[tuple[np.ndarray, ...]]] = {}

    def _keys(self, points: np.ndarray) -> np.ndarray:
        cells = np.floor(points / self.voxel_size).astype(np.int64) + _CELL_OFFSET
        np.clip(cells, 0, (1 << _CELL_BITS) - 1, out=cells)
        return (cells[:, 0] << (2 * _CELL_BITS)) | (cells[:, 1] << _CELL_BITS) | cells[:, 2]

    def add(self, epoch: int, points: np.ndarray, colors: np.ndarray,
            confidence: np.ndarray, label: int = -1) -> None:
        points = np.asarray(points, np.float32)
        colors = np.asarray(colors, np.uint8)
        confidence = np.asarray(confidence, np.float32)
        labels = np.full(len(points), label, np.int64)
        if self.voxel_size == 0:
            self._chunks.setdefault(epoch, []).append((points, colors, confidence, labels))
            return
        if not len(points):
            return
        self._merge(epoch, *self._reduce(points, colors, confidence, labels))
        self._bound()

    def _bound(self) -> None:
        while sum(len(v[0]) for v in self._epochs.values()) > self.max_points:
            self.voxel_size *= 2
            self.coarsenings += 1
            for key, (_, *arrays) in self._epochs.items():
                self._epochs[key] = self._reduce(*arrays)

    def _reduce(self, points: np.ndarray, colors: np.ndarray, confidence: np.ndarray,
                labels: np.ndarray) -> tuple[np.ndarray, ...]:
        """The most confident point of each voxel (earlier ones win ties), sorted by key."""
        keys = self._keys(points)
        order = np.lexsort((-confidence, keys))
        keys = keys[order]
        first = np.ones(len(keys), bool)
        first[1:] = keys[1:] != keys[:-1]
        pick = order[first]
        return keys[first], points[pick], colors[pick], confidence[pick], labels[pick]

    def _merge(self, epoch: int, keys: np.ndarray, *arrays: np.ndarray) -> None:
        old = self._epochs.get(epoch)
        if old is None:
            self._epochs[epoch] = (keys, *arrays)
            return
        old_keys, *old_arrays = old
        confidence, old_conf = arrays[2], old_arrays[2]
        at = np.searchsorted(old_keys, keys)
        found = at < len(old_keys)
        found[found] = old_keys[at[found]] == keys[found]
        better = found.copy()
        better[found] = confidence[found] > old_conf[at[found]]
        for old_array, array in zip(old_arrays, arrays, strict=True):
            old_array[at[better]] = array[better]
        new = ~found
        self._epochs[epoch] = (
            np.insert(old_keys, at[new], keys[new]),
            *(np.insert(old_array, at[new], array[new], axis=0)
              for old_array, array in zip(old_arrays, arrays, strict=True)),
        )

    def move(self, epoch: int, moves: Mapping[int, Sim3]) -> int:
        """Re-place the points of each label in ``moves`` by its similarity and merge the
        epoch again on the voxel grid; returns the number of points moved."""
        if epoch in self._epochs:
            _, *arrays = self._epochs[epoch]
            parts = [arrays]
        else:
            parts = [list(chunk) for chunk in self._chunks.get(epoch, [])]
        moved = 0
        wanted = np.fromiter(moves, np.int64, len(moves))
        for part in parts:
            points, labels = part[0], part[3]
            # Group the points by label once: each moved label is then one slice.
            order = np.argsort(labels, kind="stable")
            present, starts, counts = np.unique(labels[order], return_index=True,
                                                return_counts=True)
            at = np.searchsorted(present, wanted)
            for label, i in zip(wanted.tolist(), at.tolist(), strict=True):
                if i < len(present) and present[i] == label:
                    picked = order[starts[i]:starts[i] + counts[i]]
                    points[picked] = moves[label].apply_points(points[picked].astype(np.float64))
                    moved += len(picked)
        if epoch in self._epochs:
            self._epochs[epoch] = self._reduce(*parts[0])
            self._bound()
        elif parts:
            self._chunks[epoch] = [tuple(part) for part in parts]
        return moved

    def labels(self, epoch: int) -> np.ndarray:
        """The distinct labels of one epoch's points (sorted)."""
        if epoch in self._epochs:
            return np.unique(self._epochs[epoch][4])
        chunks = self._chunks.get(epoch)
        if not chunks:
            return np.zeros(0, np.int64)
        return np.unique(np.concatenate([c[3] for c in chunks]))

    def clear(self, epoch: int | None = None) -> None:
        """Forget one epoch's points (every epoch's when None)."""
        for store in (self._epochs, self._chunks):
            if epoch is None:
                store.clear()
            else:
                store.pop(epoch, None)

    def arrays(self, epoch: int) -> tuple[np.ndarray, np.ndarray]:
        """(points (N, 3) float32, colours (N, 3) uint8) of one epoch."""
        if epoch in self._epochs:
            points, colors = self._epochs[epoch][1:3]
            return points, colors
        chunks = self._chunks.get(epoch)
        if not chunks:
            return np.zeros((0, 3), np.float32), np.zeros((0, 3), np.uint8)
        return np.concatenate([c[0] for c in chunks]), np.concatenate([c[1] for c in chunks])

    def confidence(self, epoch: int) -> np.ndarray:
        """(N,) float32 confidence of one epoch's points (the order of :meth:`arrays`)."""
        if epoch in self._epochs:
            return self._epochs[epoch][3]
        chunks = self._chunks.get(epoch)
        return np.concatenate([c[2] for c in chunks]) if chunks else np.zeros(0, np.float32)

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
