"""An instance the group never gives an assignment to stops, saying so, instead of
living on with nothing to do (processor/membership.py). The group is held in a
rebalance by a member that joined and then stopped polling: the coordinator waits for
it to rejoin for its whole rebalance timeout (5 minutes), and the processor's join
waits with it."""

from __future__ import annotations

import logging
import time
from pathlib import Path

from confluent_kafka import Consumer

from mysocial.config import Settings
from mysocial.kafka import topics
from mysocial.kafka.connection import kafka_connection
from processor.clients import group_id
from processor.membership import join_deadline_s
from tests.support.helpers import wait_until
from tests.support.services import ProcessorProc


def test_an_instance_kept_out_of_its_group_stops_and_says_why(
    proc_settings: Settings, log_dir: Path
) -> None:
    quiet = logging.getLogger("tests.membership")
    quiet.addHandler(logging.NullHandler())
    quiet.propagate = False
    blocker = Consumer(
        kafka_connection(proc_settings).config(
            {
                "group.id": group_id(proc_settings),
                "partition.assignment.strategy": "range",
                "session.timeout.ms": 6000,
                "max.poll.interval.ms": 300_000,
                "logger": quiet,
            }
        )
    )
    blocker.subscribe([proc_settings.topic(topics.LIKES)])

    def joined() -> bool:
        blocker.poll(0.2)
        return bool(blocker.assignment())

    processor = ProcessorProc(proc_settings, "a", log_dir)
    try:
        wait_until(joined, 60, what="the blocking member to join")
        processor.start()  # its join starts a rebalance that the blocker never answers
        started = time.monotonic()
        deadline = join_deadline_s(proc_settings.processor_session_timeout_ms)
        code = processor.wait(deadline + 60)
        waited = time.monotonic() - started
        log = processor.log_path.read_text()
        assert code == 1, log[-3000:]
        assert "processor_not_in_group" in log and "join_state" in log, log[-3000:]
        assert "partitions_assigned" not in log
        assert deadline <= waited < deadline + 60
    finally:
        processor.terminate()
        blocker.close()
