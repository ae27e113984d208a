"""Handing partitions over while a transaction of a stopped instance is still open.

A stopped (or partitioned-away) instance can leave a transaction open on the
changelog; the partitions' next owner commits its own changelog records after it.
When the partitions move again, the new owner's restore reads the changelog with
read_committed, whose end is the last stable offset: the open transaction. Stopping
there loses the committed records behind it, and the counts built on the restored
state go wrong (Kafka Streams restores to the high watermark for this reason,
KAFKA-10167). The restore must wait for the transaction to be resolved instead.
"""

from __future__ import annotations

import asyncio
import contextlib
from pathlib import Path

from confluent_kafka import KafkaException, Producer

from mysocial.config import Settings
from mysocial.kafka import topics
from mysocial.kafka.connection import kafka_connection
from processor.audit import wait_caught_up
from tests.support.services import ProcessorProc, command_service
from tests.support.workload import Workload, check_exact

ZOMBIE_TIMEOUT_MS = 20_000  # the broker aborts the stopped instance's transaction then


def open_transaction_on_every_partition(settings: Settings) -> Producer:
    """A transaction that writes one record to each changelog partition and is never
    committed: what an instance stopped in the middle of its commit leaves behind."""
    zombie = Producer(
        kafka_connection(settings).config(
            {
                "transactional.id": settings.topic("stopped-instance"),
                "transaction.timeout.ms": ZOMBIE_TIMEOUT_MS,
            }
        )
    )
    zombie.init_transactions(30)
    zombie.begin_transaction()
    for p in range(settings.copartitions):
        # A key no rule writes: were it ever read, the audit would not notice it, but
        # it is never committed, so no reader may see it.
        zombie.produce(settings.topic(topics.PROCESSOR_CHANGELOG), b"x", b"\xfezombie", p)
    zombie.flush(30)
    return zombie


def test_a_second_handover_past_an_open_transaction_keeps_counts_exact(
    proc_settings: Settings, log_dir: Path
) -> None:
    first = ProcessorProc(proc_settings, "a", log_dir)
    second = ProcessorProc(proc_settings, "b", log_dir)
    first.start()
    zombie = None
    try:
        with command_service(proc_settings, log_dir) as addr:
            workload = Workload(addr, seed=31, users=30)
            asyncio.run(workload.run(1500))
            assert wait_caught_up(proc_settings, 60)
            zombie = open_transaction_on_every_partition(proc_settings)
            asyncio.run(workload.run(3000))  # "a" commits changelog records past it
            assert wait_caught_up(proc_settings, 60)
            # Second handover: "b" has no local state; it must rebuild every task from
            # the changelog, including what "a" committed after the open transaction.
            assert first.terminate() == 0
            second.start()
            model = asyncio.run(workload.run(4500))
            assert workload.errors == []
        check_exact(proc_settings, model)
        assert "partitions_assigned" in second.log_path.read_text()
    finally:
        first.terminate()
        second.terminate()
        if zombie is not None:  # end the stopped instance's transaction (the test is over)
            with contextlib.suppress(KafkaException):
                zombie.abort_transaction(5)
