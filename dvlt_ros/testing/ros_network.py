"""Keep every ROS 2 process that tests, demos and CI start on loopback, in its own domain.

By default Fast DDS multicasts discovery out of the network interface. Processes started
by this project's tests and scripts must run with ``ROS_AUTOMATIC_DISCOVERY_RANGE=LOCALHOST``
and a ``ROS_DOMAIN_ID`` no other run on the machine uses. Domain IDs are claimed with an
exclusive lock file held for the life of the claiming process, so concurrent test sessions
never share one. The node itself never forces these: on a robot, discovery is the user's
configuration.
"""

from __future__ import annotations

import fcntl
import os
import tempfile
from pathlib import Path

# Fast DDS maps a domain to UDP ports 7400 + 250 * id; ids above 101 overflow the port
# range together with participant ids. 0 is the default domain other software uses.
DOMAIN_IDS = range(1, 102)
LOCK_DIR = Path(tempfile.gettempdir()) / "dvlt_ros_domains"

_held_locks: dict[int, int] = {}


def claim_domain_id() -> int:
    """Claim a ROS domain ID unused by any other process on this machine; kept until exit."""
    LOCK_DIR.mkdir(exist_ok=True)
    start = os.getpid() % len(DOMAIN_IDS)
    ids = list(DOMAIN_IDS)
    for domain_id in ids[start:] + ids[:start]:
        fd = os.open(LOCK_DIR / f"{domain_id}.lock", os.O_CREAT | os.O_RDWR, 0o666)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            continue
        _held_locks[domain_id] = fd
        return domain_id
    raise RuntimeError(
        f"all ROS domain IDs {DOMAIN_IDS.start}-{DOMAIN_IDS.stop - 1} are claimed by other "
        f"processes (lock files in {LOCK_DIR}): stop stale test runs and try again"
    )


def isolate_ros_network(env: dict[str, str] | None = None) -> dict[str, str]:
    """Set loopback-only discovery and a claimed domain ID in ``env`` (default: os.environ).

    Must run before ``rclpy.init()``; child processes inherit the variables. A domain ID
    already claimed by this process is reused.
    """
    target = os.environ if env is None else env
    domain_id = next(iter(_held_locks), None)
    if domain_id is None:
        domain_id = claim_domain_id()
    target["ROS_AUTOMATIC_DISCOVERY_RANGE"] = "LOCALHOST"
    target["ROS_DOMAIN_ID"] = str(domain_id)
    return target


def check_ros_network_isolated(env: dict[str, str] | None = None) -> None:
    """Raise RuntimeError unless ``env`` keeps ROS traffic on loopback in a non-default domain."""
    env = os.environ if env is None else env
    problems = []
    if env.get("ROS_AUTOMATIC_DISCOVERY_RANGE") != "LOCALHOST":
        problems.append("ROS_AUTOMATIC_DISCOVERY_RANGE is not LOCALHOST")
    domain = env.get("ROS_DOMAIN_ID", "")
    if not domain.isdigit() or int(domain) not in DOMAIN_IDS:
        problems.append(f"ROS_DOMAIN_ID={domain!r} is not a claimed test domain")
    if problems:
        raise RuntimeError(
            "refusing to start ROS here: " + "; ".join(problems)
            + ". Call dvlt_ros.testing.ros_network.isolate_ros_network() before rclpy.init()"
        )
