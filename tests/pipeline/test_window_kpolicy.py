"""Keyframe windows and the K policy (driven by fed timings, never the wall clock)."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from dvlt_core.backends.base import StageTimings
from dvlt_ros.pipeline import (
    CameraFrame,
    KPolicy,
    KPolicyConfig,
    RigSnapshot,
    WindowConfig,
    WindowSelector,
)

MS = 1_000_000


def _snapshot(stamp_ms: int, cameras=("a", "b"), level: int | None = None, epoch: int = 0):
    rng = np.random.default_rng(stamp_ms)
    frames = []
    for cam in cameras:
        rgb = (
            np.full((24, 32, 3), level, np.uint8)
            if level is not None
            else rng.integers(0, 256, (24, 32, 3), dtype=np.uint8)
        )
        frames.append(CameraFrame(cam, stamp_ms * MS, cam, rgb))
    return RigSnapshot(tuple(frames), epoch=epoch)


def test_window_order_reference_and_overlap():
    sel = WindowSelector(WindowConfig(max_timesteps=3, max_views=8, keyframe_min_spacing_ns=0))
    windows = [sel.select(_snapshot(t)) for t in (0, 100, 200, 300)]
    assert windows[0].keys == (("a", 0), ("b", 0))
    last = windows[-1]
    # Newest snapshot first (camera order), then keyframes newest to oldest.
    assert [k[1] // MS for k in last.keys] == [300, 300, 200, 200, 100, 100]
    assert last.timesteps == (0, 0, 1, 1, 2, 2) and last.frames[0].key == ("a", 300 * MS)
    assert [f.camera for f in last.newest] == ["a", "b"]
    for prev, cur in itertools.pairwise(windows):
        assert set(prev.keys) & set(cur.keys)


def test_keyframes_need_time_spacing_and_image_change():
    cfg = WindowConfig(max_timesteps=2, keyframe_min_spacing_ns=150 * MS, keyframe_min_change=0.05)
    sel = WindowSelector(cfg)
    sel.select(_snapshot(0, level=100))
    sel.select(_snapshot(100, level=200))  # 0 becomes the first keyframe
    sel.select(_snapshot(200, level=200))  # 100: too soon after 0
    sel.select(_snapshot(400, level=202))  # 200: changed enough, spaced enough
    assert [k.stamp_ns // MS for k in sel.keyframes] == [200]
    window = sel.select(_snapshot(600, level=202))  # 400 vs 200: too little change
    assert [k.stamp_ns // MS for k in sel.keyframes] == [200]
    assert [k[1] // MS for k in window.keys] == [600, 600, 200, 200]
    assert sel.image_change(_snapshot(0, level=0), _snapshot(1, level=255)) == pytest.approx(1.0)


def test_a_failed_snapshot_never_becomes_a_keyframe():
    sel = WindowSelector(WindowConfig(max_timesteps=3, max_views=8, keyframe_min_spacing_ns=0))
    sel.select(_snapshot(0))
    failed = _snapshot(100)
    sel.select(failed)
    sel.forget(failed)  # its cycle raised
    window = sel.select(_snapshot(200))
    assert [k[1] // MS for k in window.keys] == [200, 200, 0, 0]


def test_max_views_caps_timesteps_then_cameras():
    sel = WindowSelector(WindowConfig(max_timesteps=4, max_views=5, keyframe_min_spacing_ns=0))
    for t in (0, 100, 200):
        window = sel.select(_snapshot(t))
    assert len(window) == 4  # 2 cameras x 2 timesteps; a third would exceed 5
    wide = sel.select(_snapshot(300, cameras=tuple("abcdefg")))
    assert len(wide) == 5 and [e.code for e in wide.events] == ["views_capped"]
    single = WindowSelector(WindowConfig(max_timesteps=1))
    single.select(_snapshot(0))
    assert len(single.select(_snapshot(100))) == 2 and single.keyframes == ()


def test_new_epoch_resets_keyframes():
    sel = WindowSelector(WindowConfig(keyframe_min_spacing_ns=0))
    sel.select(_snapshot(0))
    sel.select(_snapshot(100))
    window = sel.select(_snapshot(5, epoch=1))
    assert len(window) == 2 and window.epoch == 1 and sel.keyframes == ()


def _timings(num_views: int, k: int, step_ms: float, fixed_ms: float) -> StageTimings:
    """What a backend with these per-view costs reports for one cycle."""
    scale = num_views / 4
    steps = [step_ms * scale] * k
    return StageTimings(
        encode_ms=fixed_ms * scale * 0.6,
        step_ms=steps,
        decode_ms=fixed_ms * scale * 0.4,
        total_ms=fixed_ms * scale + sum(steps),
    )


def test_fixed_mode_and_validation():
    policy = KPolicy(KPolicyConfig(mode="fixed", num_steps=7))
    decision = policy.choose(4)
    assert decision.num_steps == 7 and decision.predicted_ms is None
    policy.observe(4, _timings(4, 7, 10.0, 50.0), post_ms=5.0)
    assert policy.choose(4).predicted_ms == pytest.approx(50 + 70 + 5)
    for bad in ({"num_steps": 0}, {"k_max": 65}, {"mode": "auto"}, {"k_min": 9, "k_max": 3}):
        with pytest.raises(ValueError):
            KPolicyConfig(**bad)
    with pytest.raises(ValueError, match="latency_budget_ms"):
        policy.update(latency_budget_ms=0)


def test_budget_mode_converges_and_adapts_to_load():
    policy = KPolicy(
        KPolicyConfig(mode="budget", k_min=1, k_max=32, latency_budget_ms=305.0, smoothing=0.5)
    )
    step, fixed, post = 10.0, 80.0, 20.0
    history = []
    for cycle in range(40):
        if cycle == 15:
            step = 25.0  # load: another process shares the accelerator
        if cycle == 30:
            step = 10.0
        decision = policy.choose(4)
        history.append(decision.num_steps)
        policy.observe(4, _timings(4, decision.num_steps, step, fixed), post_ms=post)
    assert history[0] == 1  # nothing measured yet: learn with the cheapest K
    # 80 + 20 + 10 K <= 305 -> K = 20; under load 80 + 20 + 25 K <= 305 -> K = 8.
    assert history[5:15] == [20] * 10
    assert history[22:30] == [8] * 8
    assert history[-4:] == [20] * 4
    # While adapting, the policy never predicts over budget for the K it picks.
    assert policy.choose(4).predicted_ms <= 305.0


def test_budget_scales_to_unseen_view_counts_and_reports_over_budget():
    policy = KPolicy(KPolicyConfig(mode="budget", k_min=2, k_max=64, latency_budget_ms=300.0))
    policy.observe(4, _timings(4, 4, 10.0, 80.0), post_ms=20.0)
    # Costs scale linearly in S: S=8 doubles them -> 200 + 20 K <= 300 -> K = 5.
    assert policy.choose(8).num_steps == 5
    assert policy.model.predict_ms(8, 5) == pytest.approx(300.0)
    decision = policy.choose(16)  # 400 ms fixed alone: even k_min does not fit
    assert decision.num_steps == 2 and decision.over_budget
    assert decision.event.code == "over_budget"
    policy.update(k_max=3)
    assert policy.choose(4).num_steps == 3
