"""Executable ROS 2 nodes of dvlt_ros."""
