"""Kafka plumbing: the embedded broker, topic provisioning, producers and consumers."""

from __future__ import annotations

import logging
from typing import Any

import structlog


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


def admin_client(bootstrap: str, **overrides: Any) -> Any:
    """An AdminClient whose librdkafka logs go through structlog."""
    from confluent_kafka.admin import AdminClient

    config: dict[str, Any] = {"bootstrap.servers": bootstrap, "logger": client_logger()}
    config.update(overrides)
    return AdminClient(config)
