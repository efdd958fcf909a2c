"""ROS-side building blocks of the reconstruction node: parameters, QoS, inputs, outputs,
diagnostics and the inference worker. The ROS-free logic lives in ``dvlt_ros.pipeline``."""
