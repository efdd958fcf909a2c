"""dvlt_core: the DVLT model, pose fitting, training and evaluation, importable without ROS."""

__version__ = "0.1.0"
