"""Frame checks and the rig synchroniser: slop, drops, timeouts, time jumps, sizes."""

from __future__ import annotations

import numpy as np
import pytest

from dvlt_ros.pipeline import (
    CameraFrame,
    CameraInfoData,
    Level,
    RigSynchronizer,
    SyncConfig,
    check_camera_info,
    prepare_frame,
)

MS = 1_000_000


def _frame(camera: str, stamp_ms: float, h: int = 14, w: int = 16, info=None) -> CameraFrame:
    rgb = np.full((h, w, 3), int(stamp_ms) % 256, dtype=np.uint8)
    return CameraFrame(camera, int(stamp_ms * MS), f"{camera}_optical", rgb, info)


def _info(w: int = 16, h: int = 12, **changes) -> CameraInfoData:
    k = np.array([[20.0, 0.0, 7.5], [0.0, 20.0, 5.5], [0.0, 0.0, 1.0]])
    for (r, c), value in changes.get("entries", {}).items():
        k[r, c] = value
    return CameraInfoData(k, w, h, "plumb_bob", changes.get("d", (0.0,) * 5))


def _codes(events) -> list[str]:
    return [e.code for e in events]


@pytest.mark.parametrize(
    ("info", "reason"),
    [
        (_info(entries={(0, 0): np.nan}), "NaN"),
        (_info(entries={(0, 0): 0.0, (1, 1): 0.0}), "not positive"),
        (_info(w=32, h=24), "image is 16x12"),
    ],
)
def test_bad_camera_info_is_dropped_with_a_warning(info, reason):
    kept, events = check_camera_info(info, 12, 16, "cam")
    assert kept is None
    assert _codes(events) == ["camera_info_invalid"] and reason in events[0].message
    assert events[0].level is Level.WARN and "predicted intrinsics" in events[0].message


def test_valid_camera_info_passes_distortion_and_all():
    kept, events = check_camera_info(_info(), 12, 16)
    assert kept is not None and events == [] and not kept.distorted
    # Distortion is prepare_frame's to rectify (tests/pipeline/test_rectify_known_k.py).
    kept, events = check_camera_info(_info(d=(0.1, 0, 0, 0, 0)), 12, 16)
    assert kept is not None and events == [] and kept.distorted


def test_huge_images_are_downscaled_with_matching_intrinsics():
    frame = _frame("cam", 0, h=400, w=600, info=_info(600, 400))
    out, events = prepare_frame(frame, max_pixels=60_000)
    assert out.rgb.shape == (200, 300, 3) and out.rgb.dtype == np.uint8
    assert _codes(events) == ["image_downscaled"]
    # Pixel centres map as (u + 0.5) * s - 0.5; focal lengths scale by s.
    assert out.info.k[0, 0] == pytest.approx(10.0)
    assert out.info.k[0, 2] == pytest.approx((7.5 + 0.5) * 0.5 - 0.5)
    assert (out.info.width, out.info.height) == (300, 200)


@pytest.mark.parametrize(
    ("rgb", "text"),
    [
        (np.zeros((10, 10, 3), np.float32), "uint8 RGB"),
        (np.zeros((0, 10, 3), np.uint8), "empty"),
        (np.zeros((2, 100, 3), np.uint8), "elongated"),
        (np.zeros((1, 5000, 3), np.uint8), "elongated"),
        (np.zeros((1, 1, 3), np.uint8), "smaller than one 14 px patch"),
        (np.zeros((13, 20, 3), np.uint8), "smaller than one 14 px patch"),
    ],
)
def test_unusable_images_are_rejected(rgb, text):
    out, events = prepare_frame(CameraFrame("cam", 0, "f", rgb))
    assert out is None and events[0].level is Level.ERROR and text in events[0].message


def test_slop_matching_returns_the_newest_complete_snapshot():
    sync = RigSynchronizer(SyncConfig(("a", "b"), slop_ns=5 * MS, queue_size=8))
    for t in (0, 100, 200):
        sync.add(_frame("a", t), t * MS)
    for t in (3, 108, 196):  # 108 is 8 ms off: outside the slop
        sync.add(_frame("b", t), t * MS)
    snap, _ = sync.poll(200 * MS)
    assert [f.stamp_ns // MS for f in snap.frames] == [200, 196]
    assert snap.stamp_ns == 200 * MS and snap.cameras == ("a", "b") and snap.spread_ns == 4 * MS
    # Consumed: nothing complete is left; the older unmatched frames count as drops.
    assert sync.poll(200 * MS)[0] is None
    stats = sync.stats()
    assert stats["a"].dropped_unmatched == 2 and stats["b"].dropped_unmatched == 2
    assert stats["a"].used == 1 and stats["a"].rate_hz == pytest.approx(10.0)


def test_bounded_queues_drop_oldest_and_count():
    sync = RigSynchronizer(SyncConfig(("a",), queue_size=2))
    for t in range(5):
        sync.add(_frame("a", t * 10), t * 10 * MS)
    assert sync.stats()["a"].dropped_overflow == 3
    snap, _ = sync.poll(50 * MS)
    assert snap.stamp_ns == 40 * MS


def test_out_of_order_and_time_jump_reset():
    sync = RigSynchronizer(SyncConfig(("a", "b"), jump_back_ns=500 * MS))
    sync.add(_frame("a", 1000), 0)
    events = sync.add(_frame("a", 990), 0)
    assert _codes(events) == ["out_of_order"]
    assert sync.stats()["a"].dropped_out_of_order == 1
    sync.add(_frame("b", 1000), 0)
    # The bag looped: camera a jumps back first; held until camera b follows.
    assert sync.add(_frame("a", 10), MS) == [] and sync.epoch == 0
    events = sync.add(_frame("b", 12), MS)
    assert _codes(events) == ["time_jump_reset"] and sync.epoch == 1
    assert events[0].camera == "a" and "jumped back by 0.990 s" in events[0].message
    snap, _ = sync.poll(MS)
    assert snap.epoch == 1 and snap.stamp_ns == 10 * MS  # the held frame is used


def _jump_sync(cameras=("a", "b"), **config) -> RigSynchronizer:
    return RigSynchronizer(SyncConfig(cameras, jump_back_ns=500 * MS,
                                      max_stamp_jump_ns=10_000 * MS, **config))


@pytest.mark.parametrize("outlier_ms", [10, 50_000, 0.5])  # behind, far ahead, near 0
def test_a_lone_outlier_stamp_is_refused_and_the_world_stays(outlier_ms):
    sync = _jump_sync()
    for t in (1000, 1100):
        sync.add(_frame("a", t), t * MS)
        sync.add(_frame("b", t), t * MS)
    assert sync.add(_frame("a", outlier_ms), 1150 * MS) == []  # held
    events = sync.add(_frame("b", 1200), 1200 * MS)  # b stays at the rig's time
    assert events == [] and sync.epoch == 0
    events = sync.add(_frame("a", 1200), 1200 * MS)  # a is back: its outlier is refused
    assert _codes(events) == ["stamp_rejected"] and events[0].level is Level.WARN
    assert "lone outlier" in events[0].message and events[0].stamp_ns == int(outlier_ms * MS)
    assert sync.epoch == 0 and sync.stats()["a"].rejected == 1
    snap, _ = sync.poll(1200 * MS)
    assert snap.stamp_ns == 1200 * MS and snap.epoch == 0


def test_a_sustained_forward_jump_of_every_camera_is_taken_without_a_reset():
    sync = _jump_sync()
    sync.add(_frame("a", 1000), 0)
    sync.add(_frame("b", 1000), 0)
    later = 1000 + 60_000  # both cameras resume a minute later (recording resumed)
    assert sync.add(_frame("a", later), MS) == []
    assert sync.add(_frame("b", later), MS) == [] and sync.epoch == 0
    assert sync.poll(MS)[0].stamp_ns == later * MS


def test_a_jump_of_a_single_camera_rig_needs_two_frames():
    sync = _jump_sync(cameras=("a",))
    sync.add(_frame("a", 5000), 0)
    assert sync.add(_frame("a", 10), 0) == [] and sync.epoch == 0
    assert _codes(sync.add(_frame("a", 20), 0)) == ["time_jump_reset"] and sync.epoch == 1
    sync.add(_frame("a", 5000), 0)
    sync.add(_frame("a", 1), 0)  # a lone outlier ...
    assert _codes(sync.add(_frame("a", 5100), 0)) == ["stamp_rejected"]  # ... refused
    assert sync.epoch == 1


def test_a_camera_stuck_on_another_clock_is_refused_frame_by_frame():
    sync = _jump_sync(queue_size=2)
    sync.add(_frame("a", 100_000), 0)
    codes = []
    for i in range(4):  # b's clock is 90 s behind a's, for good
        codes += _codes(sync.add(_frame("b", 10_000 + 100 * i), 0))
        codes += _codes(sync.add(_frame("a", 100_100 + 100 * i), 0))
    assert codes == ["stamp_rejected"] * 2 and sync.epoch == 0
    assert sync.stats()["b"].rejected == 2 and sync.stats()["b"].used == 0


def test_arrival_checks_use_the_model_input_size():
    sync = RigSynchronizer(SyncConfig(("a",), img_size=224))
    # 16 px high, 400 wide: one patch high at 504 px, but 9 px at 224 px.
    events = sync.add(_frame("a", 0, h=16, w=400), 0)
    assert _codes(events) == ["image_rejected"] and "img_size 224" in events[0].message
    assert sync.stats()["a"].rejected == 1
    sync = RigSynchronizer(SyncConfig(("a",)))  # until the model is known: 504
    assert sync.add(_frame("a", 0, h=16, w=400), 0) == []
    events = sync.set_img_size(224)  # the loaded model's: the queued frame goes
    assert _codes(events) == ["image_rejected"] and sync.poll(0)[0] is None


def test_images_refused_before_the_synchroniser_are_counted():
    sync = RigSynchronizer(SyncConfig(("a",)))
    sync.count_rejected("a")
    sync.count_rejected("unknown")
    stats = sync.stats()["a"]
    assert (stats.received, stats.rejected, stats.dropped) == (1, 1, 1)


def test_camera_timeout_continues_with_the_others_and_recovers():
    sync = RigSynchronizer(SyncConfig(("a", "b"), camera_timeout_ns=300 * MS))
    sync.add(_frame("a", 0), 0)
    sync.add(_frame("b", 0), 0)
    assert sync.poll(0)[0] is not None
    sync.add(_frame("a", 100), 100 * MS)
    assert sync.poll(100 * MS)[0] is None  # b is late but not yet timed out
    sync.add(_frame("a", 400), 400 * MS)
    snap, events = sync.poll(400 * MS)
    assert _codes(events) == ["camera_timeout"] and events[0].camera == "b"
    assert snap.cameras == ("a",) and snap.missing == ("b",) and snap.stamp_ns == 400 * MS
    events = sync.add(_frame("b", 500), 500 * MS)
    assert _codes(events) == ["camera_recovered"]
    sync.add(_frame("a", 501), 501 * MS)
    assert sync.poll(501 * MS)[0].cameras == ("a", "b")


def test_a_camera_that_never_publishes_times_out_from_start():
    sync = RigSynchronizer(SyncConfig(("a", "b"), camera_timeout_ns=300 * MS))
    sync.add(_frame("a", 0), 0)
    assert sync.poll(200 * MS)[0] is None
    sync.add(_frame("a", 350), 350 * MS)
    snap, events = sync.poll(350 * MS)
    assert "no frame" in events[0].message and snap.cameras == ("a",)


def test_resolution_mismatch_pad_or_reject():
    sync = RigSynchronizer(SyncConfig(("a", "b")))
    sync.add(_frame("a", 0), 0)
    events = sync.add(_frame("b", 0, h=24, w=20), 0)
    assert _codes(events) == ["resolution_mismatch"] and events[0].level is Level.INFO
    assert sync.add(_frame("b", 10, h=24, w=20), 0) == []  # reported once
    assert sync.poll(0)[0] is not None
    strict = RigSynchronizer(SyncConfig(("a", "b"), resolution_policy="reject"))
    strict.add(_frame("a", 0), 0)
    events = strict.add(_frame("b", 0, h=24, w=20), 0)
    assert events[0].level is Level.ERROR and strict.stats()["b"].rejected == 1
    assert strict.poll(0)[0] is None


def test_unknown_camera_and_config_validation():
    sync = RigSynchronizer(SyncConfig(("a",)))
    assert _codes(sync.add(_frame("x", 0), 0)) == ["camera_unknown"]
    assert sync.add(_frame("x", 1), 0) == []
    with pytest.raises(ValueError, match="unique"):
        SyncConfig(("a", "a"))
    with pytest.raises(ValueError, match="resolution_policy"):
        SyncConfig(("a",), resolution_policy="crop")
