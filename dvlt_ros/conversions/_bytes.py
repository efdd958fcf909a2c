"""Fast assignment of numpy buffers to rclpy ``uint8[]`` fields."""

from __future__ import annotations

import array

import numpy as np


def as_uint8_array(data: np.ndarray) -> array.array:
    """Return ``data``'s bytes as ``array.array('B')``, the fastest type rclpy accepts.

    Assigning a numpy array to a ``uint8[]`` message field costs seconds for megabytes;
    ``array.array`` is a plain copy.
    """
    out = array.array("B")
    out.frombytes(np.ascontiguousarray(data).reshape(-1).view(np.uint8).tobytes())
    return out
