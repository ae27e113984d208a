"""Kafka plumbing: the embedded broker, topic provisioning, producers and consumers."""

from __future__ import annotations

import logging
from typing import Any

import structlog

# fetch.wait.max.ms for readers that follow live non-transactional topics. The broker
# answers a fetch as soon as data arrives (fetch.min.bytes 1), so this bounds only how
# often an idle reader asks: at 5 ms, the command directory's empty fetches alone cost
# the broker a third of a core (measured).
LONG_POLL_MS = 500


class _ToStructlog(logging.Handler):
    def emit(self, record: logging.LogRecord) -> None:
        structlog.get_logger(component="librdkafka").log(record.levelno, record.getMessage())


def client_logger() -> logging.Logger:
    """A logger for librdkafka clients (`logger` config) that emits through structlog."""
    logger = logging.getLogger("mysocial.librdkafka")
    if not logger.handlers:
        logger.addHandler(_ToStructlog())
        logger.setLevel(logging.WARNING)
        logger.propagate = False
    return logger


def consume_batch(consumer: Any, max_messages: int, timeout: float) -> list[Any]:
    """Wait up to `timeout` for the first record, then take what else is ready at once.

    confluent-kafka's consume(n, timeout) waits until n records or the timeout, so a
    lone record would sit for the whole timeout; this returns as soon as one arrives
    while still batching under load.
    """
    first = consumer.poll(timeout)
    if first is None:
        return []
    if max_messages <= 1:
        return [first]
    return [first, *consumer.consume(max_messages - 1, 0)]
