"""Install dvlt_ros and dvlt_core: as an ament_python package (colcon) or with pip alone.

All Python dependencies are declared here, once. `.ci/setup.sh` installs the groups a
machine needs: `ros` only where no ROS 2 install is sourced (a sourced ROS provides rclpy
and the message packages through the system).
"""

from glob import glob

from setuptools import find_packages, setup

PACKAGE = "dvlt_ros"

CORE = [
    "numpy>=1.22",
    "torch>=2.4",
    "safetensors>=0.4",
    "huggingface_hub>=0.23",
    "accelerate>=0.30",
    "pillow>=9.0",
    "av>=12.0",
    "tqdm>=4.60",
    "pyyaml>=6.0",
]

# The ROS 2 Kilted wheels: rclpy over Fast DDS and the message packages the node uses,
# plus the rosidl/ament tools that build tf2_msgs (not on pip) into the same prefix.
ROS = [
    "ros-kilted-rclpy[fastrtps]",
    "ros-kilted-builtin-interfaces",
    "ros-kilted-std-msgs",
    "ros-kilted-sensor-msgs",
    "ros-kilted-geometry-msgs",
    "ros-kilted-nav-msgs",
    "ros-kilted-visualization-msgs",
    "ros-kilted-diagnostic-msgs",
    "ros-kilted-rosgraph-msgs",
    "ros-kilted-rcl-interfaces",
    "ros-kilted-std-srvs",
    "ros-kilted-action-msgs",
    "ros-kilted-unique-identifier-msgs",
    "ros-kilted-ament-index-python",
    "ros-kilted-rosidl-default-generators",
    "ros-kilted-rosidl-core-generators",
    "ros-kilted-ament-cmake",
    "ros-kilted-ament-cmake-include-directories",
    "ros-kilted-ament-cmake-ros-core",
    "ros-kilted-ament-package",
    "catkin_pkg",
]

EXTRAS = {
    "ros": ROS,
    "bags": ["rosbags>=0.10"],
    "export": ["onnx>=1.19", "onnxruntime>=1.18"],  # onnx 1.19: bfloat16 via ml_dtypes
    "tensorrt": ["tensorrt>=10.3", "onnx>=1.19"],
    "train": ["tensorboard>=2.14"],
    "eval": ["h5py>=3.8"],  # the NuScenes benchmark loader
    "rectify": ["opencv-python-headless>=4.5"],  # distorted inputs (dvlt_core.io.rectify)
    # dvlt-reconstruct --glb / --rrd (tested with trimesh 5.2 and rerun-sdk 0.41, whose
    # rerun.chunk.RrdReader the tests read recordings with) and --serve, the browser demo
    # (viser 1.1: its client is prebuilt in the wheel; no gradio/fastapi stack)
    "viewers": ["trimesh>=4.0", "rerun-sdk>=0.41", "viser>=1.1"],
    # dvlt-eval --num-steps 2,4,8: accuracy against K as PNG (drawn off-screen, Agg)
    "plots": ["matplotlib>=3.7"],
    # backend: da3, Depth Anything 3 as a second model: what its model code imports. The
    # package itself goes in without its own requirements, which pin numpy<2 and pull
    # xformers, open3d and pycolmap: pip install --no-deps depth-anything-3 (0.1.1 tested)
    "da3": ["einops>=0.7", "omegaconf>=2.3", "addict>=2.4"],
    # loop closure's pose graph (dvlt_core.mapping.pose_graph; tested with gtsam 4.3.0)
    "mapping": ["gtsam>=4.3"],
    "dev": [
        "pytest>=8.0",
        "ruff>=0.6",
        "colcon-core>=0.17",
        "colcon-ros>=0.5",
        "colcon-python-setup-py>=0.2",
        "colcon-library-path>=0.2",
        "colcon-cmake>=0.2",
    ],
}

# Everything the test suite exercises on a machine without a GPU; the `mcap` library is an
# independent reader that checks the CRCs our mcap bags carry, and with `mcap-ros2-support`
# (Foxglove's ROS 2 decoder) shows that Foxglove reads what `dvlt-ros process` writes.
TEST_GROUPS = ("dev", "export", "train", "eval", "rectify", "viewers", "plots", "mapping", "da3")
EXTRAS["test"] = sorted({r for group in TEST_GROUPS for r in EXTRAS[group]}
                        | {"mcap>=1.1", "mcap-ros2-support>=0.5"})

setup(
    name=PACKAGE,
    version="0.1.0",
    description="Live multi-camera 3D reconstruction with the DVLT looping transformer for ROS 2",
    license="Apache-2.0",
    python_requires=">=3.10",
    packages=find_packages(include=["dvlt_ros", "dvlt_ros.*", "dvlt_core", "dvlt_core.*"]),
    data_files=[
        ("share/ament_index/resource_index/packages", [f"{PACKAGE}/resource/{PACKAGE}"]),
        (f"share/{PACKAGE}", ["package.xml"]),
        (f"share/{PACKAGE}/launch", glob("launch/*.launch.py")),
        (f"share/{PACKAGE}/config", glob("config/*.yaml") + glob("config/*.rviz")),
        (f"share/{PACKAGE}/config/foxglove", glob("config/foxglove/*.json")),
        (f"share/{PACKAGE}/training", glob("training/*.yaml")),
    ],
    install_requires=CORE,
    extras_require=EXTRAS,
    zip_safe=False,
    entry_points={
        "console_scripts": [
            "reconstruct_node = dvlt_ros.nodes.reconstruct_node:main",
            "dvlt-ros = dvlt_ros.cli.main:main",
            "dvlt-reconstruct = dvlt_core.cli.reconstruct:main",
            "dvlt-export = dvlt_core.cli.export:main",
            "dvlt-train = dvlt_core.cli.train:main",
            "dvlt-eval = dvlt_core.cli.evaluate:main",
            "dvlt-bag-to-dataset = dvlt_ros.cli.bag_to_dataset:main",
        ],
        # Training source types dvlt_core's `dvlt-train` loads by name (data.sources[].type).
        "dvlt.training_sources": [
            "rosbag = dvlt_ros.bags.training_source:rosbag_scenes",
        ],
    },
)
