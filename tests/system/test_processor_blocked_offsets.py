"""A transaction that never ends holds the group's committed offsets: the instance
stops after processor_offsets_wait_ms naming the partition of __consumer_offsets and
the last stable offset, instead of a bare "Timed out" on every restart.

The hold is a real open transaction: a transactional producer (transaction timeout
15 minutes) commits offsets for the processor's group and neither commits nor aborts,
as a transaction that Kafka forgot to send markers for would (docs/OPERATIONS.md,
"Hanging transactions")."""

from __future__ import annotations

import logging
import re
from pathlib import Path

from confluent_kafka import Consumer, Producer, TopicPartition

from mysocial.kafka import topics
from mysocial.kafka.connection import kafka_connection
from processor.clients import group_id
from processor.hanging import open_offsets_transaction
from tests.support.helpers import processor_settings
from tests.support.services import ProcessorProc

WAIT_MS = 5000


def test_offsets_held_by_an_open_transaction_stop_the_instance_with_the_partition_named(
    kafka_bootstrap: str, tmp_path: Path, log_dir: Path
) -> None:
    settings = processor_settings(
        kafka_bootstrap, tmp_path / "state", processor_offsets_wait_ms=WAIT_MS
    )
    group = group_id(settings)
    quiet = logging.getLogger("tests.blocked_offsets")
    quiet.addHandler(logging.NullHandler())
    quiet.propagate = False
    conn = kafka_connection(settings)
    member = Consumer(conn.config({"group.id": group, "logger": quiet}))
    holder = Producer(
        conn.config(
            {
                "transactional.id": f"{group}.test-holder",
                "transaction.timeout.ms": 900_000,
                "logger": quiet,
            }
        )
    )
    processor = ProcessorProc(settings, "a", log_dir)
    try:
        holder.init_transactions(30)
        holder.begin_transaction()
        likes = TopicPartition(settings.topic(topics.LIKES), 0, 0)
        holder.send_offsets_to_transaction([likes], member.consumer_group_metadata(), 30)
        held = open_offsets_transaction(settings, group)
        assert held is not None and held.group == group

        processor.start()
        code = processor.wait(WAIT_MS / 1000 + 120)
        log = processor.log_path.read_text()
        assert code == 1, log[-3000:]
        stop = next(line for line in log.splitlines() if "processor_stopping_fatal" in line)
        assert f"__consumer_offsets-{held.partition}" in stop, stop
        assert re.search(rf"last stable offset {held.stable_offset}\b", stop), stop
        assert "Hanging transactions" in stop, stop
        assert "partitions_assigned" not in log

        holder.abort_transaction(30)
        assert open_offsets_transaction(settings, group) is None
    finally:
        processor.terminate()
        member.close()
