"""Launch the DVLT reconstruction node, optionally with RViz.

    ros2 launch dvlt_ros reconstruct.launch.py cameras:='[cam_left, cam_right]' rviz:=true

Every argument left empty keeps the value of the parameters file (``config:=``, default
the package's config/reconstruct.yaml). Topics are remapped as usual, e.g. by a launch
file that includes this one inside a PushRosNamespace / SetRemap group.
"""

from launch.actions import DeclareLaunchArgument, OpaqueFunction
from launch.conditions import IfCondition
from launch.launch_description import LaunchDescription
from launch.substitutions import LaunchConfiguration, PathJoinSubstitution
from launch_ros.actions import Node
from launch_ros.substitutions import FindPackageShare

PACKAGE = "dvlt_ros"
TRUE_WORDS = ("true", "1", "yes", "on")


def _camera_list(text: str) -> list[str]:
    """'[a, b]', 'a,b' or 'a b' -> ['a', 'b']."""
    words = text.strip().strip("[]").replace(",", " ").split()
    return [w.strip("'\"") for w in words if w.strip("'\"")]


def _node_overrides(context) -> list:
    """The reconstruction node with the parameters file plus the non-empty arguments."""
    def arg(name: str) -> str:
        return LaunchConfiguration(name).perform(context).strip()

    overrides = {"use_sim_time": arg("use_sim_time").lower() in TRUE_WORDS}
    if arg("cameras"):
        overrides["cameras"] = _camera_list(arg("cameras"))
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
                "rviz", default_value="true", description="start RViz with config/reconstruct.rviz"
            ),
            DeclareLaunchArgument(
                "rviz_config",
                default_value=PathJoinSubstitution([share, "config", "reconstruct.rviz"]),
                description="RViz configuration file",
            ),
            DeclareLaunchArgument(
                "log_level", default_value="info", description="node log level"
            ),
            OpaqueFunction(function=_node_overrides),
            Node(
                package="rviz2",
                executable="rviz2",
                name="rviz2",
                arguments=["-d", LaunchConfiguration("rviz_config")],
                parameters=[{"use_sim_time": LaunchConfiguration("use_sim_time")}],
                condition=IfCondition(LaunchConfiguration("rviz")),
                output="screen",
            ),
        ]
    )
