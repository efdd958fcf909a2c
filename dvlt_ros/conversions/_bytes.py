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
    # frombytes reads the array through the buffer protocol: one copy, no bytes object.
    out.frombytes(np.ascontiguousarray(data).reshape(-1).view(np.uint8))
    return out


def uint8_buffer(nbytes: int) -> tuple[array.array, np.ndarray]:
    """A zeroed ``array.array('B')`` of ``nbytes`` and a writable numpy view of it: fill
    the view, assign the array to a message field, and the data is copied only once, by
    ``publish``."""
    out = array.array("B", [0]) * nbytes
    return out, np.frombuffer(out, dtype=np.uint8)
