"""Video decoding with PyAV: frames subsampled to a target rate, within ``max_pixels``."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from dvlt_core.io.image_decode import DEFAULT_MAX_PIXELS, check_decode_size, fit_max_pixels

VIDEO_EXTENSIONS = frozenset({".mp4", ".mov", ".avi", ".mkv", ".webm", ".m4v", ".gif"})


def read_video_frames(
    path: str | Path, fps: float | None = 2.0, max_pixels: int | None = DEFAULT_MAX_PIXELS
) -> tuple[list[np.ndarray], list[float], tuple[int, int]]:
    """Decode ``path`` and keep about ``fps`` frames per second (all frames if ``fps`` is None).

    A frame is kept when its presentation time reaches the next multiple of ``1 / fps``
    (the first frame is always kept), so variable frame rates are handled. Kept frames are
    converted to RGB directly at a size of at most ``max_pixels`` (aspect kept); streams
    whose frames are too large to decode within that bound are refused
    (:func:`~dvlt_core.io.image_decode.check_decode_size`). Returns uint8 RGB arrays
    (H, W, 3), their timestamps in seconds from the start of the stream, and the stream's
    (width, height).
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
        size = (stream.codec_context.width, stream.codec_context.height)
        if all(size):  # refused before the first frame is decoded, where the stream says
            check_decode_size(*size, max_pixels, f"video {path}")
        next_time = 0.0
        for index, frame in enumerate(container.decode(stream)):
            t = _frame_time(frame, stream, index)
            if fps is not None and frames and t < next_time - 1e-6:
                continue
            check_decode_size(frame.width, frame.height, max_pixels, f"video {path}")
            width, height = fit_max_pixels(frame.width, frame.height, max_pixels)
            resize = ({} if (width, height) == (frame.width, frame.height) else
                      {"width": width, "height": height, "interpolation": "AREA"})
            frames.append(frame.to_ndarray(format="rgb24", **resize))
            times.append(t)
            if fps is not None:
                next_time = max(next_time, t) + 1.0 / fps
    if not frames:
        raise ValueError(f"no frames could be decoded from {path}")
    return frames, times, size


def _frame_time(frame, stream, index: int) -> float:
    """Presentation time in seconds, falling back to index / average rate."""
    if frame.pts is not None and stream.time_base is not None:
        start = stream.start_time or 0
        return float((frame.pts - start) * stream.time_base)
    rate = float(stream.average_rate) if stream.average_rate else 24.0
    return index / rate
