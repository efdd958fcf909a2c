"""dvlt_ros: ROS 2 nodes and tools around dvlt_core (live reconstruction, bag replay, export)."""

__version__ = "0.1.0"
