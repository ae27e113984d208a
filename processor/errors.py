"""Errors that end a processor instance (its supervisor restarts it)."""


class FatalProcessorError(RuntimeError):
    """The instance must stop: fenced by a newer instance with its transactional id, a
    fatal Kafka error, or state that cannot be restored. Its partitions continue from
    the last commit wherever they are assigned next."""
