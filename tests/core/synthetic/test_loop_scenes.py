"""The closed-loop path and the repeated-texture room of the synthetic rig."""

from __future__ import annotations

import numpy as np

from dvlt_core.synthetic import Texture, default_rig, repeated_texture_scene


def test_the_rig_is_back_at_its_start_after_one_lap():
    rig = default_rig(64, 48, num_cameras=2)
    lap = rig.trajectory.lap_time
    for name in rig.names:
        np.testing.assert_allclose(rig.camera_pose(name, lap), rig.camera_pose(name, 0.0),
                                   atol=1e-12)
        assert np.linalg.norm(rig.camera_pose(name, lap / 2)[:3, 3]
                              - rig.camera_pose(name, 0.0)[:3, 3]) > 2.5


def test_a_periodic_texture_repeats_every_period_cells():
    texture = Texture(seed=3, cell=0.5, period=4)
    a = np.array([0.1, 0.7, 1.3]), np.array([0.2, 0.9, 1.6])
    np.testing.assert_array_equal(texture.colour(*a), texture.colour(a[0] + 2.0, a[1] - 4.0))
    plain = Texture(seed=3, cell=0.5)
    assert not np.array_equal(plain.colour(*a), plain.colour(a[0] + 2.0, a[1]))


def test_the_repeated_texture_room_renders_look_alike_quarter_turns():
    rig = default_rig(64, 48, num_cameras=1, scene=repeated_texture_scene())
    lap = rig.trajectory.lap_time
    start, quarter, half = (rig.render(rig.names[0], t) for t in (0.0, lap / 4, lap / 8))
    assert (start.depth > 0).all()
    # Four-fold symmetric boxes: a quarter turn sees the same depth; an eighth does not.
    np.testing.assert_allclose(quarter.depth, start.depth, rtol=1e-6)
    assert not np.allclose(half.depth, start.depth, rtol=1e-2)
