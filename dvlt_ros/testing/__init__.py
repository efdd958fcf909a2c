"""Helpers for tests and scripts that start ROS 2 processes on a shared machine."""
