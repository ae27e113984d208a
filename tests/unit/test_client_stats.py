"""Record totals from librdkafka's statistics, as the processor's metrics read them."""

from __future__ import annotations

import json

from mysocial.metrics import ClientStats


def _stats(client: str, txmsgs: int) -> str:
    partition = {"txmsgs": txmsgs}
    return json.dumps(
        {"name": client, "topics": {"out": {"partitions": {"0": partition, "-1": {"txmsgs": 7}}}}}
    )


def test_clients_reporting_into_one_counter_add_up() -> None:
    # The processor's two transactional producers write the same partitions in turn.
    stats = ClientStats("txmsgs")
    stats.update(_stats("producer-1", 10))
    stats.update(_stats("producer-2", 4))
    stats.update(_stats("producer-1", 15))
    stats.update(_stats("producer-2", 9))
    assert stats.snapshot()[0] == {"out": 24}


def test_a_partition_counted_again_from_zero_is_not_lost() -> None:
    stats = ClientStats("txmsgs")
    stats.update(_stats("producer-1", 10))
    stats.update(_stats("producer-1", 3))  # librdkafka created the partition object anew
    assert stats.snapshot()[0] == {"out": 13}
