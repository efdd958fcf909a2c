"""Loop closure, ROS-free: place recognition, geometric verification and the pose graph.

* :mod:`~dvlt_core.mapping.places`: keyframe descriptors (the encoder's pooled patch
  tokens), a bounded database, retrieval with temporal exclusion;
* :mod:`~dvlt_core.mapping.alignment`: the similarity between two reconstructions of the
  same views, with the agreement figures;
* :mod:`~dvlt_core.mapping.verification`: a loop candidate checked by running the model on
  both keyframes as one window;
* :mod:`~dvlt_core.mapping.pose_graph`: Sim(3)/SE(3) keyframe graph optimised with GTSAM
  (the optional ``mapping`` extra; imported when a graph is built).
"""

from dvlt_core.mapping.alignment import Alignment, ViewGeometry, align_views, depth_samples
from dvlt_core.mapping.places import (
    EncoderDescriber,
    PlaceDatabase,
    PlaceMatch,
    PlaceOptions,
    keyframe_similarity,
)
from dvlt_core.mapping.pose_graph import EdgeSigmas, GraphOptions, Optimisation, PoseGraph
from dvlt_core.mapping.verification import (
    Keyframe,
    LoopVerdict,
    VerifyOptions,
    covisible_fraction,
    verify_loop,
)

__all__ = [
    "Alignment",
    "EdgeSigmas",
    "EncoderDescriber",
    "GraphOptions",
    "Keyframe",
    "LoopVerdict",
    "Optimisation",
    "PlaceDatabase",
    "PlaceMatch",
    "PlaceOptions",
    "PoseGraph",
    "VerifyOptions",
    "ViewGeometry",
    "align_views",
    "covisible_fraction",
    "depth_samples",
    "keyframe_similarity",
    "verify_loop",
]
