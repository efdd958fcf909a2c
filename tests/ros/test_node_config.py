"""Static checks of what users launch: config/reconstruct.yaml against the declared
parameters, launch/reconstruct.launch.py (parsed, since launch and launch_ros are not
installable here; its decisions are tested in tests/packaging/test_launch.py) and
config/reconstruct.rviz against the node's topics and frames."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest
import yaml

from dvlt_ros.node_support.launching import camera_list
from dvlt_ros.node_support.parameters import SPECS, SPECS_BY_NAME, check_parameters, descriptor

REPO = Path(__file__).resolve().parents[2]
CONFIG = REPO / "config" / "reconstruct.yaml"
LAUNCH = REPO / "launch" / "reconstruct.launch.py"
RVIZ = REPO / "config" / "reconstruct.rviz"


def _node_params() -> dict:
    # "/**": the file must apply to a renamed or namespaced node too.
    return yaml.safe_load(CONFIG.read_text())["/**"]["ros__parameters"]


def test_config_file_holds_every_parameter_with_its_default_and_a_comment():
    params = _node_params()
    assert list(params) == [spec.name for spec in SPECS]
    for spec in SPECS:
        assert params[spec.name] == spec.default, spec.name
        assert type(params[spec.name]) is type(spec.default), spec.name
    # Each parameter is documented next to it: a comment block (or a parameter sharing
    # the block above) directly before its line; dynamic ones say so.
    lines = CONFIG.read_text().splitlines()
    documented: dict[str, str] = {}
    for i, line in enumerate(lines):
        key = line.strip().split(":")[0]
        if key not in SPECS_BY_NAME:
            continue
        j = i
        while lines[j - 1].strip().startswith("#"):
            j -= 1
        above = lines[i - 1].strip().split(":")[0]
        block = "\n".join(lines[j:i]) if j < i else documented.get(above, "")
        assert block, f"{key} has no comment"
        assert ("[dynamic]" in block) is SPECS_BY_NAME[key].dynamic, key
        documented[key] = block
    assert set(documented) == set(SPECS_BY_NAME)


def test_one_default_k_everywhere():
    """K's default is stated once (dvlt_core.model.DEFAULT_NUM_STEPS, 16: the released
    model's, behind upstream's benchmark) and every default of K is that constant."""
    import inspect

    from dvlt_core.backends.ground_truth import GroundTruthBackend
    from dvlt_core.backends.ground_truth_unscaled import GroundTruthUnscaledBackend
    from dvlt_core.io.checkpoint import released_config
    from dvlt_core.model import DEFAULT_NUM_STEPS, DVLTConfig
    from dvlt_ros.pipeline import KPolicyConfig

    assert DEFAULT_NUM_STEPS == 16
    assert DVLTConfig().default_num_steps == released_config().default_num_steps == 16
    assert SPECS_BY_NAME["num_steps"].default == DEFAULT_NUM_STEPS
    assert SPECS_BY_NAME["budget_max_num_steps"].default == DEFAULT_NUM_STEPS
    assert KPolicyConfig().num_steps == KPolicyConfig().k_max == DEFAULT_NUM_STEPS
    for backend in (GroundTruthBackend, GroundTruthUnscaledBackend):
        default = inspect.signature(backend).parameters["default_num_steps"].default
        assert default == DEFAULT_NUM_STEPS, backend.name
    assert "K, the number of loop steps, defaults to 16" in (REPO / "README.md").read_text()


def test_parameter_descriptors():
    for spec in SPECS:
        desc = descriptor(spec)
        assert desc.description and desc.read_only is not spec.dynamic
        if isinstance(spec.default, (int, float)) and not isinstance(spec.default, bool):
            assert desc.integer_range or desc.floating_point_range, spec.name
    num_steps = descriptor(SPECS_BY_NAME["num_steps"]).integer_range[0]
    assert (num_steps.from_value, num_steps.to_value) == (1, 64)


@pytest.mark.parametrize(
    ("name", "value", "reason"),
    [("num_steps", 0, ">= 1"), ("num_steps", 65, "<= 64"), ("precision", "int8", "one of"),
     ("cameras", [], "at least one"), ("cameras", ["a", "/a/"], "distinct"),
     ("img_size", 7, ">= 14"), ("torch_threads", -1, "torch_threads must be >= 0")],
)
def test_parameter_validation_messages(name, value, reason):
    from rclpy.parameter import Parameter

    result = check_parameters([Parameter(name, value=value)])
    assert not result.successful and reason in result.reason


def _launch_tree() -> ast.Module:
    return ast.parse(LAUNCH.read_text())


def _calls(tree, name):
    return [n for n in ast.walk(tree) if isinstance(n, ast.Call)
            and getattr(n.func, "id", getattr(n.func, "attr", None)) == name]


def _kw(call, name):
    return next((k.value for k in call.keywords if k.arg == name), None)


def test_launch_file_arguments_and_node():
    tree = _launch_tree()
    args = {}
    for call in _calls(tree, "DeclareLaunchArgument"):
        default = _kw(call, "default_value")
        args[call.args[0].value] = default.value if isinstance(default, ast.Constant) else default
    assert {"config", "cameras", "checkpoint", "backend", "num_steps", "use_sim_time",
            "rviz"} <= set(args)
    assert args["use_sim_time"] == "false"
    # rviz defaults to true only where rviz2 is installed (decided at launch time).
    assert ast.unparse(args["rviz"]) == "'true' if rviz_available() else 'false'"
    assert args["rviz_config"] == "", "empty: generated for the launched cameras"
    for name in ("cameras", "checkpoint", "backend", "num_steps", "device", "precision"):
        assert args[name] == "", f"{name} must default to the parameters file's value"
    # The default parameters file is <share>/config/reconstruct.yaml.
    config_path = [e.value for e in args["config"].args[0].elts if isinstance(e, ast.Constant)]
    assert config_path == ["config", "reconstruct.yaml"]
    rviz_template = next(c for c in _calls(tree, "PathJoinSubstitution")
                         if "reconstruct.rviz" in ast.unparse(c))
    assert [e.value for e in rviz_template.args[0].elts if isinstance(e, ast.Constant)] == [
        "config", "reconstruct.rviz"]

    constants = {t.id: n.value.value for n in tree.body if isinstance(n, ast.Assign)
                 for t in n.targets if isinstance(n.value, ast.Constant)}
    nodes = {_kw(c, "executable").value: c for c in _calls(tree, "Node")}
    node = nodes["reconstruct_node"]
    assert constants[_kw(node, "package").id] == "dvlt_ros"
    assert _kw(node, "name").value == "reconstruct_node"
    assert "rviz2" in nodes
    # Every parameter the launch file overrides is a declared parameter.
    overridden = {
        n.slice.value for n in ast.walk(tree)
        if isinstance(n, ast.Subscript) and getattr(n.value, "id", None) == "overrides"
        and isinstance(n.slice, ast.Constant)
    }
    overridden |= {
        k.value for n in ast.walk(tree) if isinstance(n, ast.Assign)
        and getattr(n.targets[0], "id", None) == "overrides" for k in n.value.keys
    }
    overridden |= {
        e.value for loop in ast.walk(tree) if isinstance(loop, ast.For)
        and isinstance(loop.iter, ast.Tuple) for e in loop.iter.elts
    }
    assert overridden == {"use_sim_time", "cameras", "num_steps", "checkpoint", "backend",
                          "device", "precision"}
    assert overridden - {"use_sim_time"} <= set(SPECS_BY_NAME)


def test_launch_camera_argument_parsing():
    """The launch file's camera-list parser (dvlt_ros.node_support.launching)."""
    parse = camera_list
    assert "camera_list" in LAUNCH.read_text()
    assert parse("[cam_left, cam_right]") == ["cam_left", "cam_right"]
    assert parse("['a', \"b\"]") == ["a", "b"]
    assert parse("front/cam back/cam") == ["front/cam", "back/cam"]
    assert parse("") == []


def test_rviz_config_shows_the_node_outputs():
    rviz = yaml.safe_load(RVIZ.read_text())
    manager = rviz["Visualization Manager"]
    assert manager["Global Options"]["Fixed Frame"] == SPECS_BY_NAME["world_frame"].default
    # The first display of each kind: the live outputs (the loop-closure map follows).
    displays = {}
    for d in manager["Displays"]:
        displays.setdefault(d["Class"].split("/")[-1], d)
    assert {"PointCloud2", "TF", "Path", "MarkerArray", "Image"} <= set(displays)
    first_camera = SPECS_BY_NAME["cameras"].default[0]
    topics = {
        "PointCloud2": "/reconstruct_node/points",
        "Path": "/reconstruct_node/trajectory",
        "MarkerArray": "/reconstruct_node/frusta",
        "Image": f"/reconstruct_node/{first_camera}/depth",
    }
    for kind, topic in topics.items():
        assert displays[kind]["Topic"]["Value"] == topic
    assert displays["PointCloud2"]["Color Transformer"] == "RGB8"
    for kind in ("Path", "MarkerArray"):  # latched topics
        assert displays[kind]["Topic"]["Durability Policy"] == "Transient Local"


def test_rviz_config_shows_the_loop_closure_map():
    """The map of ``loop_closure: true`` (docs/node.md): every latched map topic with its
    message type, and an axes display of ``map_frame`` (off: no map without loop closure)."""
    displays = {d["Name"]: d for d in
                yaml.safe_load(RVIZ.read_text())["Visualization Manager"]["Displays"]}
    shown = {d["Topic"]["Value"]: d for d in displays.values() if "Topic" in d}
    for topic, kind in (("/reconstruct_node/map_points", "PointCloud2"),
                        ("/reconstruct_node/map_trajectory", "Path"),
                        ("/reconstruct_node/loop_closures", "MarkerArray")):
        assert shown[topic]["Class"] == f"rviz_default_plugins/{kind}", topic
        assert shown[topic]["Topic"]["Durability Policy"] == "Transient Local", topic
    assert shown["/reconstruct_node/loop_closures"]["Namespaces"] == {"loop_closures": True}
    (axes,) = [d for d in displays.values() if d["Class"] == "rviz_default_plugins/Axes"]
    assert axes["Reference Frame"] == SPECS_BY_NAME["map_frame"].default
