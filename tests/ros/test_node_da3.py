"""reconstruct_node with ``backend: da3`` (Depth Anything 3, da3-small with random weights saved
as the released checkpoints are) over real DDS: the node loads it from the checkpoint
parameter, reconstructs every rig snapshot with all views in one pass and publishes the
usual outputs, saying in diagnostics which model runs and that its geometry is up to scale."""

from __future__ import annotations

import pytest
from node_harness import OutputCollector, RigPublisher, RosGraph, status_values, wait_cycle
from rclpy.parameter import Parameter

from dvlt_core.synthetic import default_rig
from dvlt_ros.nodes.reconstruct_node import ReconstructNode

pytest.importorskip("depth_anything_3", reason="the 'da3' extra (depth-anything-3) is not "
                    "installed")

IMG = 56


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    from dvlt_core.backends.da3_weights import save_random_da3_checkpoint

    return save_random_da3_checkpoint(tmp_path_factory.mktemp("da3"))


@pytest.fixture
def graph():
    g = RosGraph()
    yield g
    g.close()


def test_the_node_reconstructs_with_da3(graph, checkpoint):
    rig = default_rig(width=IMG, height=42, num_cameras=2)
    params = {"backend": "da3", "checkpoint": str(checkpoint), "device": "cpu",
              "cameras": rig.names, "rate": 10.0, "input_qos": "reliable", "img_size": IMG,
              "num_steps": 4, "window_timesteps": 2, "camera_timeout": 1e4}
    node = graph.add(ReconstructNode(context=graph.context, parameter_overrides=[
        Parameter(name, value=value) for name, value in params.items()]))
    publisher = RigPublisher(graph, rig)
    collector = OutputCollector(graph, rig.names)
    publisher.wait_connected()
    assert graph.spin_until(lambda: node.pipeline is not None, 120)
    wait_cycle(graph, node, publisher.publish(0.0), timeout=120)
    second = wait_cycle(graph, node, publisher.publish(0.5), timeout=120)
    assert second.num_views == 4  # 2 cameras x 2 timesteps, one forward pass
    assert second.num_steps == 1  # DA3 has no loop: K is ignored
    assert graph.spin_until(lambda: collector.stamped("points", second.stamp_ns) is not None, 30)
    status = collector.wait_status(": pipeline", lambda s: status_values(s).get("cycles") == "2")
    values = status_values(status)
    assert "da3" in values["model"] and str(checkpoint) in values["model"]
    assert values["units"].startswith("arbitrary")
