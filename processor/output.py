"""Writing into the open transaction: records, and dead letters for bad input."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from confluent_kafka import KafkaError, Message, Producer

from mysocial.log import get_logger

log = get_logger("processor.output")

OnDelivery = Callable[[KafkaError | None, Message], None]


class Output:
    """The transactional producer as projections use it."""

    def __init__(self, producer: Producer, dead_letter_topic: str) -> None:
        self.producer = producer
        self.dead_letter_topic = dead_letter_topic
        self.dead_letters = 0

    def produce(
        self,
        topic: str,
        key: bytes | None,
        value: bytes | None,
        partition: int,
        headers: list[tuple[str, bytes]] | None = None,
        timestamp: int = 0,
        on_delivery: OnDelivery | None = None,
    ) -> None:
        """Produce, waiting for room when the local queue is full (back-pressure)."""
        kwargs: dict[str, Any] = {"partition": partition}
        if headers:
            kwargs["headers"] = headers
        if timestamp > 0:
            kwargs["timestamp"] = timestamp
        if on_delivery is not None:
            kwargs["on_delivery"] = on_delivery
        while True:
            try:
                self.producer.produce(topic, value, key, **kwargs)
                return
            except BufferError:
                self.producer.poll(0.05)

    def dead_letter(self, msg: Message, reason: str) -> None:
        """Park a record that cannot be applied, with where it came from and why
        (in the same transaction as the offsets that move past it: exactly once)."""
        self.dead_letters += 1
        log.warning(
            "dead_letter",
            topic=msg.topic(),
            partition=msg.partition(),
            offset=msg.offset(),
            reason=reason,
        )
        self.produce(
            self.dead_letter_topic,
            msg.key(),
            msg.value(),
            0,
            headers=[
                ("source-topic", (msg.topic() or "").encode()),
                ("source-partition", str(msg.partition()).encode()),
                ("source-offset", str(msg.offset()).encode()),
                ("reason", reason.encode()),
            ],
        )
