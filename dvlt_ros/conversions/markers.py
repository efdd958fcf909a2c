"""Camera frusta as visualization_msgs/MarkerArray for RViz."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from geometry_msgs.msg import Point
from std_msgs.msg import ColorRGBA, Header
from visualization_msgs.msg import Marker, MarkerArray

# A qualitative palette, so that each camera keeps its colour across cycles.
PALETTE = (
    (0.12, 0.47, 0.71), (1.0, 0.5, 0.05), (0.17, 0.63, 0.17), (0.84, 0.15, 0.16),
    (0.58, 0.4, 0.74), (0.55, 0.34, 0.29), (0.89, 0.47, 0.76), (0.5, 0.5, 0.5),
)


def frusta_markers(
    header: Header,
    frusta: Sequence[tuple[np.ndarray, np.ndarray]],
    *,
    colors: Sequence[int] | None = None,
    line_width: float = 0.01,
    namespace: str = "frusta",
) -> MarkerArray:
    """One LINE_LIST marker per frustum, given as (vertices (V, 3), edges (E, 2) vertex
    index pairs) in ``header.frame_id``. A DELETEALL comes first, so frusta of cameras
    that left the window disappear. ``colors`` are palette indices (default: position)."""
    out = MarkerArray()
    out.markers.append(Marker(header=header, ns=namespace, action=Marker.DELETEALL))
    for i, (vertices, edges) in enumerate(frusta):
        vertices = np.asarray(vertices, dtype=np.float64)
        if not np.isfinite(vertices).all():
            continue
        red, green, blue = PALETTE[(colors[i] if colors is not None else i) % len(PALETTE)]
        marker = Marker(header=header, ns=namespace, id=i, type=Marker.LINE_LIST,
                        action=Marker.ADD)
        marker.pose.orientation.w = 1.0
        marker.scale.x = float(line_width)
        marker.color = ColorRGBA(r=red, g=green, b=blue, a=1.0)
        marker.points = [
            Point(x=float(p[0]), y=float(p[1]), z=float(p[2]))
            for pair in np.asarray(edges, dtype=np.int64)
            for p in vertices[pair]
        ]
        out.markers.append(marker)
    return out
