"""Launch the DVLT reconstruction node, optionally with RViz.

    ros2 launch dvlt_ros reconstruct.launch.py cameras:='[cam_left, cam_right]' rviz:=true

Every argument left empty keeps the value of the parameters file (``config:=``, default
the package's config/reconstruct.yaml). Topics are remapped as usual, e.g. by a launch
file that includes this one inside a PushRosNamespace / SetRemap group.

``rviz`` defaults to true only where rviz2 is installed; asked for without it, the node
starts alone with a warning. RViz gets config/reconstruct.rviz rewritten for the launched
cameras (one depth display each; the file is kept in ~/.cache/dvlt_ros/rviz) unless
``rviz_config:=`` names a file. The node ends with this launch, even if launch is killed.
"""

from launch.actions import DeclareLaunchArgument, LogInfo, OpaqueFunction
from launch.launch_description import LaunchDescription
from launch.substitutions import LaunchConfiguration, PathJoinSubstitution
from launch_ros.actions import Node
from launch_ros.substitutions import FindPackageShare

from dvlt_ros.node_support.launching import (
    camera_list,
    launched_parameters,
    rviz_available,
    write_rviz_config,
)

PACKAGE = "dvlt_ros"
TRUE_WORDS = ("true", "1", "yes", "on")


def _arg(context, name: str) -> str:
    return LaunchConfiguration(name).perform(context).strip()


def _node_overrides(context) -> list:
    """The reconstruction node with the parameters file plus the non-empty arguments."""
    def arg(name: str) -> str:
        return _arg(context, name)

    overrides = {"use_sim_time": arg("use_sim_time").lower() in TRUE_WORDS}
    if arg("cameras"):
        overrides["cameras"] = camera_list(arg("cameras"))
    for name in ("checkpoint", "backend", "device", "precision"):
        if arg(name):
            overrides[name] = arg(name)
    if arg("num_steps"):
        overrides["num_steps"] = int(arg("num_steps"))
    return [
        Node(
            package=PACKAGE,
            executable="reconstruct_node",
            name="reconstruct_node",
            output="screen",
            emulate_tty=True,
            parameters=[arg("config"), overrides],
            arguments=["--ros-args", "--log-level", arg("log_level")],
        )
    ]


def _rviz(context) -> list:
    """RViz on the launched cameras, if asked for and installed."""
    if _arg(context, "rviz").lower() not in TRUE_WORDS:
        return []
    if not rviz_available():
        return [LogInfo(msg="rviz:=true, but rviz2 is not installed here (the pip ROS 2 route "
                            "has none): starting the node without RViz. Install rviz2, or run "
                            "RViz on another machine of the same ROS network")]
    config = _arg(context, "rviz_config")
    if not config:
        values = launched_parameters(_arg(context, "config"), _arg(context, "cameras"))
        template = PathJoinSubstitution([FindPackageShare(PACKAGE), "config",
                                         "reconstruct.rviz"]).perform(context)
        config = str(write_rviz_config(template, values["cameras"], values["world_frame"]))
    return [
        Node(
            package="rviz2",
            executable="rviz2",
            name="rviz2",
            arguments=["-d", config],
            parameters=[{"use_sim_time": _arg(context, "use_sim_time").lower() in TRUE_WORDS}],
            output="screen",
        )
    ]


def generate_launch_description() -> LaunchDescription:
    share = FindPackageShare(PACKAGE)
    return LaunchDescription(
        [
            DeclareLaunchArgument(
                "config",
                default_value=PathJoinSubstitution([share, "config", "reconstruct.yaml"]),
                description="parameters file of the node",
            ),
            DeclareLaunchArgument(
                "cameras", default_value="",
                description="camera namespaces, e.g. '[cam_left, cam_right]' (empty: from config)",
            ),
            DeclareLaunchArgument(
                "checkpoint", default_value="",
                description="Hub id, directory or weights file (empty: from config)",
            ),
            DeclareLaunchArgument(
                "backend", default_value="",
                description="inference backend, e.g. torch (empty: from config)",
            ),
            DeclareLaunchArgument(
                "device", default_value="", description="auto, cpu, cuda or cuda:N (empty: config)"
            ),
            DeclareLaunchArgument(
                "precision", default_value="", description="fp32, bf16 or fp16 (empty: config)"
            ),
            DeclareLaunchArgument(
                "num_steps", default_value="",
                description="loop steps K, 1 to 64 (empty: from config)",
            ),
            DeclareLaunchArgument(
                "use_sim_time", default_value="false",
                description="use /clock (bag replay with --clock)",
            ),
            DeclareLaunchArgument(
                "rviz", default_value="true" if rviz_available() else "false",
                description="start RViz (default: true where rviz2 is installed)",
            ),
            DeclareLaunchArgument(
                "rviz_config", default_value="",
                description="RViz configuration file (empty: config/reconstruct.rviz with one "
                            "depth display per launched camera)",
            ),
            DeclareLaunchArgument(
                "log_level", default_value="info", description="node log level"
            ),
            OpaqueFunction(function=_node_overrides),
            OpaqueFunction(function=_rviz),
        ]
    )
