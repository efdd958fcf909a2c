"""numpy <-> ROS message conversions: the only place the pipeline touches message types."""
