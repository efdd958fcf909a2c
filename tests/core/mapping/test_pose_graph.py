"""The keyframe pose graph (GTSAM): drift corrected by a true loop, a false loop survived."""

from __future__ import annotations

import numpy as np
import pytest

from dvlt_core.geometry import Sim3, rotation_from_vector
from dvlt_core.mapping import EdgeSigmas, GraphOptions, PoseGraph

pytest.importorskip("gtsam")

SIGMAS = EdgeSigmas(rotation=0.002, translation=0.01, log_scale=0.002)
LOOP = EdgeSigmas(rotation=0.002, translation=0.01, log_scale=0.002)


def _circle(n, radius=3.0):
    """Truth: ``n`` nodes on one lap of a circle, heading along it."""
    poses = []
    for i in range(n):
        a = 2 * np.pi * i / n
        poses.append(Sim3(rotation_from_vector(np.array([0.0, 0.0, a + np.pi / 2])),
                          np.array([radius * np.cos(a), radius * np.sin(a), 0.0]), 1.0))
    return poses


def _drifted_chain(truth, seed=0, metric=False, **options):
    """A graph of ``truth`` whose window edges carry noise of SIGMAS (nodes chained)."""
    rng = np.random.default_rng(seed)
    graph = PoseGraph(GraphOptions(metric=metric, **options))
    pose = truth[0]
    graph.add_node(0, pose)
    for i in range(1, len(truth)):
        rel = truth[i - 1].inverse().compose(truth[i])
        noisy = Sim3(rel.rotation @ rotation_from_vector(rng.normal(0, SIGMAS.rotation, 3)),
                     rel.translation + rng.normal(0, SIGMAS.translation, 3),
                     1.0 if metric else rel.scale * np.exp(rng.normal(0, SIGMAS.log_scale)))
        pose = pose.compose(noisy)
        graph.add_node(i, pose)
        graph.add_edge(i - 1, i, noisy, SIGMAS)
    graph.optimise()
    return graph


def _ate(graph, truth, optimised=True):
    poses = [graph.pose(i) if optimised else graph.initial_pose(i) for i in range(len(truth))]
    return float(np.sqrt(np.mean([np.sum((p.translation - t.translation) ** 2)
                                  for p, t in zip(poses, truth, strict=True)])))


@pytest.mark.parametrize("metric", [False, True])
def test_a_true_loop_pulls_the_drifted_chain_back(metric):
    truth = _circle(120)
    before, after = [], []
    for seed in range(4):
        graph = _drifted_chain(truth, seed=seed, metric=metric)
        before.append(_ate(graph, truth))
        np.testing.assert_allclose(before[-1], _ate(graph, truth, optimised=False), rtol=1e-6)
        # The rig is back at its start: the last node sees the first (exact measurement).
        graph.add_edge(119, 0, truth[119].inverse().compose(truth[0]), LOOP, "loop")
        result = graph.optimise()
        assert result.loops == 1 and result.nodes == 120
        after.append(_ate(graph, truth))
        end = np.linalg.norm(graph.pose(119).translation - truth[119].translation)
        assert end < 0.2 * np.linalg.norm(graph.initial_pose(119).translation
                                          - truth[119].translation)
        if metric:
            assert all(graph.pose(i).scale == 1.0 for i in range(120))
        correction = graph.correction(119)
        np.testing.assert_allclose(correction.compose(graph.initial_pose(119)).translation,
                                   graph.pose(119).translation, atol=1e-9)
    # A random-walk chain pinned at both ends (a Brownian bridge) keeps about
    # sqrt(1/6) / sqrt(1/2) = 0.58 of its RMS error on average over realisations; more
    # than 0.75 is left only if the loop was ignored.
    assert np.mean(after) < 0.75 * np.mean(before), (before, after)


def test_an_injected_false_loop_is_down_weighted_by_the_robust_kernel():
    truth = _circle(120)
    reference = _drifted_chain(truth, seed=3)
    reference.add_edge(119, 0, truth[119].inverse().compose(truth[0]), LOOP, "loop")
    reference.optimise()
    for kind, survives in (("loop", True), ("window", False)):
        graph = _drifted_chain(truth, seed=3)
        graph.add_edge(119, 0, truth[119].inverse().compose(truth[0]), LOOP, "loop")
        # A false closure: node 90 "is" node 30, across the room.
        graph.add_edge(90, 30, truth[90].inverse().compose(truth[60]), LOOP, kind)
        graph.optimise()
        moved = max(np.linalg.norm(graph.pose(i).translation - reference.pose(i).translation)
                    for i in range(120))
        # Robust: the map stays where the true loop put it (within the chain's own noise);
        # the same edge trusted as Gaussian bends it by metres.
        assert (moved < 0.05) == survives, (kind, moved)
        if survives:  # the false loop stands out by its residual, the true one does not
            residuals = sorted(r for _, r in graph.edge_residuals("loop"))
            assert residuals[0] < 5 < 100 < residuals[1], residuals


def test_the_graph_refuses_bad_input():
    graph = PoseGraph()
    graph.add_node(0, Sim3())
    with pytest.raises(ValueError, match="already"):
        graph.add_node(0, Sim3())
    with pytest.raises(ValueError, match="existing nodes"):
        graph.add_edge(0, 1, Sim3(), SIGMAS)
    graph.add_node(1, Sim3())
    with pytest.raises(ValueError, match="kind"):
        graph.add_edge(0, 1, Sim3(), SIGMAS, "gps")
    with pytest.raises(ValueError, match="sigmas"):
        EdgeSigmas(0.0, 1.0)
    with pytest.raises(ValueError, match="loop_kernel"):
        GraphOptions(loop_kernel="tukey")


def test_extra_updates_over_the_time_budget_are_owed_to_the_next_cycles():
    truth = _circle(120)
    loop = truth[119].inverse().compose(truth[0])
    settled = _drifted_chain(truth, seed=1)
    settled.add_edge(119, 0, loop, LOOP, "loop")
    assert settled.optimise().owed_iterations == 0  # three extra updates in one call
    deferred = _drifted_chain(truth, seed=1, budget_ms=1e-9)  # no time for an extra update
    deferred.add_edge(119, 0, loop, LOOP, "loop")
    owed = [deferred.optimise().owed_iterations for _ in range(4)]
    # Each later cycle's own update is one of the owed ones: the same four ISAM2 updates,
    # spread over four cycles, give the same estimate.
    assert owed == [3, 2, 1, 0]
    for node in range(120):
        np.testing.assert_allclose(deferred.pose(node).matrix(), settled.pose(node).matrix(),
                                   atol=1e-9)
    assert deferred.error() == pytest.approx(settled.error(), rel=1e-9)
