"""Camera geometry: pose fitting from rays, depth unprojection, rigid and similarity
transforms, quaternions, and a time-indexed transform tree."""

from dvlt_core.geometry.rays_to_pose import PoseFit, PoseMode, RobustOptions, rays_to_pose
from dvlt_core.geometry.rotations import (
    chordal_mean,
    nearest_rotation,
    rotation_angle,
    rotation_from_vector,
    wahba_rotation,
)
from dvlt_core.geometry.similarity import Sim3
from dvlt_core.geometry.tf_tree import (
    ExtrapolationError,
    FrameNotFoundError,
    NotConnectedError,
    TfTree,
    TransformError,
    rigid_from_translation_quaternion,
)
from dvlt_core.geometry.transforms import (
    cameras_from_pose_encoding,
    invert_pose,
    pose_encoding_from_cameras,
    quaternion_to_rotation,
    rotation_to_quaternion,
    slerp,
    to_homogeneous,
)
from dvlt_core.geometry.unproject import (
    PIXEL_CENTRE_OFFSET,
    UPSTREAM_PIXEL_OFFSET,
    compute_world_rays,
    pixel_grid,
    unproject_depth,
)

__all__ = [
    "PIXEL_CENTRE_OFFSET",
    "UPSTREAM_PIXEL_OFFSET",
    "ExtrapolationError",
    "FrameNotFoundError",
    "NotConnectedError",
    "PoseFit",
    "PoseMode",
    "RobustOptions",
    "Sim3",
    "TfTree",
    "TransformError",
    "cameras_from_pose_encoding",
    "chordal_mean",
    "compute_world_rays",
    "invert_pose",
    "nearest_rotation",
    "pixel_grid",
    "pose_encoding_from_cameras",
    "quaternion_to_rotation",
    "rays_to_pose",
    "rigid_from_translation_quaternion",
    "rotation_angle",
    "rotation_from_vector",
    "rotation_to_quaternion",
    "slerp",
    "to_homogeneous",
    "unproject_depth",
    "wahba_rotation",
]
