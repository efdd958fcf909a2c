"""ROS-free core of the live reconstruction node (numpy/torch only, no rclpy).

:class:`~dvlt_ros.pipeline.session.ReconstructionSession` (``session.py``) is the one way
data flows, for the live node, ``dvlt-ros process`` and ``dvlt-ros demo``; its settings are
:mod:`~dvlt_ros.pipeline.settings`. Data flow of one cycle::

    CameraFrame --RigSynchronizer.add/poll--> RigSnapshot --WindowSelector.select-->
    ViewWindow --KPolicy.choose--> K --ReconstructionPipeline.submit--> CycleResult
    (cloud, depth + camera models, TF poses, frusta, timings, events) --> Trajectories,
    FusedCloud (accumulate.py)
    --KPolicy.observe(timings)

See docs/pipeline.md and docs/world_frame.md.
"""

from dvlt_ros.pipeline.engine import (
    CycleResult,
    CycleTimings,
    PipelineConfig,
    ReconstructionPipeline,
)
from dvlt_ros.pipeline.events import EVENT_CODES, Level, PipelineEvent
from dvlt_ros.pipeline.frames import CameraFrame, CameraInfoData, check_camera_info, prepare_frame
from dvlt_ros.pipeline.k_policy import KDecision, KPolicy, KPolicyConfig, LatencyModel
from dvlt_ros.pipeline.products import (
    CameraModel,
    CameraPose,
    CloudConfig,
    DepthImage,
    Frustum,
    PointCloud,
    child_frame_id,
)
from dvlt_ros.pipeline.scale import MetricScale, RigBaselineScale
from dvlt_ros.pipeline.sync import CameraStats, RigSnapshot, RigSynchronizer, SyncConfig
from dvlt_ros.pipeline.window import ViewWindow, WindowConfig, WindowSelector
from dvlt_ros.pipeline.world import Placement, WorldAligner, WorldConfig

__all__ = [
    "EVENT_CODES",
    "CameraFrame",
    "CameraInfoData",
    "CameraModel",
    "CameraPose",
    "CameraStats",
    "CloudConfig",
    "CycleResult",
    "CycleTimings",
    "DepthImage",
    "Frustum",
    "KDecision",
    "KPolicy",
    "KPolicyConfig",
    "LatencyModel",
    "Level",
    "MetricScale",
    "PipelineConfig",
    "PipelineEvent",
    "Placement",
    "PointCloud",
    "ReconstructionPipeline",
    "RigBaselineScale",
    "RigSnapshot",
    "RigSynchronizer",
    "SyncConfig",
    "ViewWindow",
    "WindowConfig",
    "WindowSelector",
    "WorldAligner",
    "WorldConfig",
    "check_camera_info",
    "child_frame_id",
    "prepare_frame",
]
