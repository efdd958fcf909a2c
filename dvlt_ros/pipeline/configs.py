"""The pipeline-core configurations built from the settings
(:mod:`dvlt_ros.pipeline.settings`): one place, used by the session, so the live node and
offline tools (``dvlt-ros process``) build identical pipelines from the same values."""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from dvlt_core.mapping.loop_closer import LoopOptions
from dvlt_ros.pipeline.engine import PipelineConfig
from dvlt_ros.pipeline.grounding import GroundingConfig
from dvlt_ros.pipeline.k_policy import KPolicyConfig
from dvlt_ros.pipeline.products import CloudConfig
from dvlt_ros.pipeline.settings import camera_label
from dvlt_ros.pipeline.sync import SyncConfig
from dvlt_ros.pipeline.window import WindowConfig
from dvlt_ros.pipeline.world import WorldConfig

# Rotation of an optical frame (x right, y down, z forward) in its REP 103 body frame.
BODY_FROM_OPTICAL = np.array([[0.0, 0.0, 1.0], [-1.0, 0.0, 0.0], [0.0, -1.0, 0.0]])

Params = Mapping[str, object]


def seconds_to_ns(seconds: float) -> int:
    return round(seconds * 1e9)


def sync_config(p: Params) -> SyncConfig:
    return SyncConfig(
        cameras=tuple(camera_label(ns) for ns in p["cameras"]),
        slop_ns=seconds_to_ns(p["sync_slop"]),
        queue_size=p["sync_queue_size"],
        camera_timeout_ns=seconds_to_ns(p["camera_timeout"]),
        jump_back_ns=seconds_to_ns(p["time_jump_threshold"]),
        max_stamp_jump_ns=seconds_to_ns(p["max_stamp_jump"]),
        resolution_policy=p["resolution_policy"],
        max_pixels=p["max_pixels"],
        img_size=p["img_size"] or None,
    )


def window_config(p: Params) -> WindowConfig:
    return WindowConfig(
        max_timesteps=p["window_timesteps"],
        max_views=p["max_views"],
        keyframe_min_spacing_ns=seconds_to_ns(p["keyframe_min_spacing"]),
        keyframe_min_change=p["keyframe_min_change"],
    )


def k_policy_config(p: Params) -> KPolicyConfig:
    return KPolicyConfig(
        mode=p["num_steps_mode"],
        num_steps=p["num_steps"],
        k_min=p["budget_min_num_steps"],
        k_max=p["budget_max_num_steps"],
        latency_budget_ms=p["latency_budget_ms"],
    )


def pipeline_config(p: Params) -> PipelineConfig:
    return PipelineConfig(
        img_size=p["img_size"] or None,
        use_input_camera_info=p["use_input_camera_info"],
        frame_suffix=p["frame_suffix"],
        cloud=CloudConfig(
            confidence_threshold=p["confidence_threshold"],
            stride=p["cloud_stride"],
            max_points=p["max_points"],
        ),
        frustum_size=p["frustum_scale"],
    )


def world_config(p: Params) -> WorldConfig:
    """``world_axes: body`` puts the world in the first reference camera's REP 103 body
    frame; ``optical`` in its optical frame."""
    initial = np.eye(4)
    if p["world_axes"] == "body":
        initial[:3, :3] = BODY_FROM_OPTICAL
    return WorldConfig(initial_world_from_reference=initial)


def grounding_config(p: Params) -> GroundingConfig:
    """Scale source and anchor; depth images match a view within ``sync_slop``."""
    return GroundingConfig(
        scale_source=p["scale_source"],
        anchor=p["anchor"],
        world_frame=p["world_frame"],
        odom_frame=p["odom_frame"],
        base_frame=p["base_frame"],
        min_baseline=p["min_baseline"],
        min_motion=p["min_motion"],
        depth_slop_ns=seconds_to_ns(p["sync_slop"]),
    )


def loop_options(p: Params) -> LoopOptions:
    """The keyframe graph's odometry edge sigmas (the other loop options keep defaults)."""
    return LoopOptions(
        odometry_rates=(p["loop_odometry_rotation_sigma"], p["loop_odometry_translation_sigma"]),
        odometry_min_sigmas=(p["loop_odometry_min_rotation_sigma"],
                             p["loop_odometry_min_translation_sigma"],
                             LoopOptions().odometry_min_sigmas[2]))
