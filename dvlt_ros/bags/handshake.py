"""The lossless replay handshake between ``dvlt-ros replay --lossless`` and a
``reconstruct_node`` started with ``lossless:=true``.

The node publishes on ``~/consumed`` (``std_msgs/msg/UInt64``; reliable, transient local,
depth 1) the number of camera image messages it has received *and fully handled*: every
rig snapshot those images completed has been reconstructed and its products published.
It publishes 0 when it starts, and a new count after every image that completes no
snapshot and after every reconstructed snapshot. The count is cumulative, so a late or
coalesced message never loses information.

The player reads the count once before it starts (its baseline), then, after publishing
each image message on a topic the node subscribes to, waits until the count reaches
``baseline + images published`` before it publishes anything else. /clock stands still
while it waits. The node therefore never has more than one image in flight and never
drops a window, however slow the model is; memory stays bounded on both sides.
"""

from __future__ import annotations

from rclpy.qos import DurabilityPolicy, HistoryPolicy, QoSProfile, ReliabilityPolicy

ACK_TOPIC = "~/consumed"
ACK_TYPE = "std_msgs/msg/UInt64"
ACK_QOS = QoSProfile(
    history=HistoryPolicy.KEEP_LAST,
    depth=1,
    reliability=ReliabilityPolicy.RELIABLE,
    durability=DurabilityPolicy.TRANSIENT_LOCAL,
)
