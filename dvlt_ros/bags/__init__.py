"""Recorded data: replay rosbag2 files into a live graph, and reconstruct them offline.

Nothing here needs rosbag2 (``rosbags`` reads and writes sqlite3 and mcap bags).

* :mod:`~dvlt_ros.bags.source`: open a bag (damaged ones as far as readable), stream its
  raw messages; :mod:`~dvlt_ros.bags.writer`: write rclpy messages into a bag.
* :mod:`~dvlt_ros.bags.player`: ``dvlt-ros replay`` (``/clock``, rate, topics, remap,
  loop, start offset, latched ``/tf_static``, lossless handshake of
  :mod:`~dvlt_ros.bags.handshake`).
* :mod:`~dvlt_ros.bags.processor`: ``dvlt-ros process`` (the node's session,
  :mod:`dvlt_ros.pipeline.session`, on every rig snapshot, outputs written atomically);
  :mod:`~dvlt_ros.bags.evaluation` scores trajectories (ATE/RPE after Sim(3)).
* :mod:`~dvlt_ros.bags.sample`: ``dvlt-ros sample-bag``, a synthetic multi-camera bag with
  ground truth.
* :mod:`~dvlt_ros.bags.to_dataset`: a bag -> a training scene (``dvlt-bag-to-dataset``);
  :mod:`~dvlt_ros.bags.training_source`: the ``rosbag`` source of ``dvlt-train``, converted
  once into a cache.

See docs/replay.md.
"""

from dvlt_ros.bags.issues import BagError, BagIssue, IssueLog

__all__ = ["BagError", "BagIssue", "IssueLog"]
