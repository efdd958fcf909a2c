"""Video decoding with PyAV: frames subsampled to a target rate."""

from __future__ import annotations

from pathlib import Path

import numpy as np

VIDEO_EXTENSIONS = frozenset({".mp4", ".mov", ".avi", ".mkv", ".webm", ".m4v", ".gif"})


def read_video_frames(
    path: str | Path, fps: float | None = 2.0
) -> tuple[list[np.ndarray], list[float]]:
    """Decode ``path`` and keep about ``fps`` frames per second (all frames if ``fps`` is None).

    A frame is kept when its presentation time reaches the next multiple of ``1 / fps``
    (the first frame is always kept), so variable frame rates are handled. Returns uint8
    RGB arrays (H, W, 3) and their timestamps in seconds from the start of the stream.
    """
    try:
        import av
    except ImportError as exc:  # pragma: no cover - av is a declared dependency
        raise RuntimeError("reading videos needs PyAV: pip install av") from exc
    if fps is not None and fps <= 0:
        raise ValueError(f"fps must be positive (or None for every frame), got {fps}")

    frames: list[np.ndarray] = []
    times: list[float] = []
    try:
        container = av.open(str(path))
    except av.error.FFmpegError as exc:
        raise ValueError(f"cannot open video {path}: {exc}") from exc
    with container:
        if not container.streams.video:
            raise ValueError(f"{path} has no video stream")
        stream = container.streams.video[0]
        next_time = 0.0
        for index, frame in enumerate(container.decode(stream)):
            t = _frame_time(frame, stream, index)
            if fps is not None and frames and t < next_time - 1e-6:
                continue
            frames.append(frame.to_ndarray(format="rgb24"))
            times.append(t)
            if fps is not None:
                next_time = max(next_time, t) + 1.0 / fps
    if not frames:
        raise ValueError(f"no frames could be decoded from {path}")
    return frames, times


def _frame_time(frame, stream, index: int) -> float:
    """Presentation time in seconds, falling back to index / average rate."""
    if frame.pts is not None and stream.time_base is not None:
        start = stream.start_time or 0
        return float((frame.pts - start) * stream.time_base)
    rate = float(stream.average_rate) if stream.average_rate else 24.0
    return index / rate
