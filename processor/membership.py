"""Whether this instance is really in its consumer group.

Every rebalance ends in an assignment callback, an empty one too (more instances than
partitions), and members rejoin at their next poll, which the loop makes at least every
commit interval: a join takes seconds. A consumer left without an assignment for much
longer is not waiting, it is stuck. CI caught one: an instance restarted while its
broker came back from a 30 s stall (the group's coordinator moved away and back) never
got an assignment, and stayed alive for minutes committing empty transactions and
processing nothing.

Such an instance stops with one `processor_stopping_fatal` line saying so and naming
the consumer's group state as librdkafka's statistics last reported it (exit code 1):
its supervisor starts it again with a fresh consumer. When another member is stuck itself,
a rebalance may legitimately wait for it longer (up to its session timeout after its
own watchdog ends it); this instance then restarts once for nothing, which costs a
rejoin and loses nothing.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from typing import Any

from processor.errors import FatalProcessorError

# The parts of librdkafka's `cgrp` statistics that say where a join is stuck.
GROUP_STATE_KEYS = (
    "state",
    "stateage",
    "join_state",
    "rebalance_age",
    "rebalance_cnt",
    "rebalance_reason",
)


def join_deadline_s(session_timeout_ms: int) -> float:
    """How long a member may wait for an assignment: three session timeouts (a dead
    member's partitions move after one), at least a minute."""
    return max(60.0, 3 * session_timeout_ms / 1000.0)


class Membership:
    """Tracks the time since the last assignment was taken away or never came."""

    def __init__(self, deadline_s: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.deadline_s = deadline_s
        self.clock = clock
        self.waiting_since: float | None = clock()  # subscribed, no assignment yet
        self.group_state: dict[str, Any] = {}

    def subscribed(self) -> None:
        """The wait starts at the subscription, not when the instance was built (starting
        its transactions may take a while against a slow cluster)."""
        self.waiting_since = self.clock()

    def assigned(self) -> None:
        self.waiting_since = None

    def unassigned(self) -> None:
        """Partitions revoked or lost: the next assignment is due within the deadline."""
        if self.waiting_since is None:
            self.waiting_since = self.clock()

    def on_stats(self, stats_json: str) -> None:
        """librdkafka's `stats_cb`: keeps the consumer group's part."""
        cgrp = json.loads(stats_json).get("cgrp") or {}
        self.group_state = {k: cgrp[k] for k in GROUP_STATE_KEYS if k in cgrp}

    def check(self) -> None:
        """Raise FatalProcessorError when the member has waited past the deadline."""
        if self.waiting_since is None:
            return
        waited = self.clock() - self.waiting_since
        if waited > self.deadline_s:
            raise FatalProcessorError(
                f"processor_not_in_group: no assignment from the group coordinator for "
                f"{waited:.0f} s (limit {self.deadline_s:.0f} s); consumer group state "
                f"{self.group_state or 'not reported yet'}"
            )
