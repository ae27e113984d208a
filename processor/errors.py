"""Errors that end a processor instance (its supervisor restarts it)."""

from confluent_kafka import KafkaError


class FatalProcessorError(RuntimeError):
    """The instance must stop: fenced by a newer instance with its transactional id, a
    fatal Kafka error, or state that cannot be restored. Its partitions continue from
    the last commit wherever they are assigned next."""


def is_fatal(err: KafkaError) -> bool:
    """A client that reported this is unusable. librdkafka's fatal error event (code
    _FATAL, e.g. a static member fenced by another with its id) is not marked fatal()."""
    return bool(err.fatal()) or err.code() == KafkaError._FATAL
