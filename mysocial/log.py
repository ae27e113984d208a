"""structlog set-up shared by every process.

One event per line; JSON in production, a readable console format in development.
Request-scoped values (correlation id, RPC name, user) are bound with contextvars so
every line a request logs carries them without passing a logger around.
"""

from __future__ import annotations

import asyncio
import logging
import sys
import uuid
from typing import Any

import structlog

CORRELATION_HEADER = "x-correlation-id"


def configure(level: str = "info", fmt: str = "console", service: str = "") -> None:
    """Configure structlog (and stdlib logging) once per process."""
    numeric = logging.getLevelNamesMapping().get(level.upper(), logging.INFO)
    renderer: Any
    if fmt == "json":
        renderer = structlog.processors.JSONRenderer()
    else:
        renderer = structlog.dev.ConsoleRenderer(colors=sys.stderr.isatty())
    shared: list[Any] = [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
    ]
    if service:
        shared.append(_add_service(service))
    structlog.configure(
        processors=[
            *shared,
            structlog.processors.StackInfoRenderer(),
            structlog.processors.format_exc_info,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(numeric),
        logger_factory=structlog.PrintLoggerFactory(file=sys.stderr),
        cache_logger_on_first_use=True,
    )
    # Libraries log through the standard library (grpc, asyncio, kafka clients'
    # wrappers): their records are rendered the same way, one event per line, with a
    # traceback in the line's `exception` field instead of lines of its own.
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(
        structlog.stdlib.ProcessorFormatter(
            foreign_pre_chain=[
                *shared,
                structlog.stdlib.add_logger_name,
                structlog.stdlib.ExtraAdder(allow=["rpc"]),
            ],
            processors=[
                structlog.stdlib.ProcessorFormatter.remove_processors_meta,
                structlog.processors.format_exc_info,
                renderer,
            ],
        )
    )
    handler.addFilter(ShutdownCancellation())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(max(numeric, logging.WARNING))


GRPC_UNHANDLED = "Exception not handled by _handle_exceptions"


class ShutdownCancellation(logging.Filter):
    """grpc.aio logs a traceback for each call still open when the event loop ends
    (the CancelledError asyncio.run uses to end leftover tasks reaches grpc's call
    scheduler, outside any handler): at a process's exit, an open Watch stream is
    expected, not an error. Such a record becomes one info line naming the call; any
    other exception grpc logs keeps its level and traceback. (grpc also prints that
    traceback to stderr itself, which no filter reaches: `rpc.run_until_stopped` lets
    the cancelled calls end before the loop does, and this covers one that outlasts it.)"""

    def filter(self, record: logging.LogRecord) -> bool:
        exc = record.exc_info[0] if record.exc_info else None
        if (
            exc is not None
            and issubclass(exc, asyncio.CancelledError)
            and record.getMessage().startswith(GRPC_UNHANDLED)
        ):
            message = record.getMessage()
            record.rpc = message[message.find("[") + 1 : message.rfind("]")]
            record.msg, record.args = "rpc_cancelled_at_exit", ()
            record.levelno, record.levelname = logging.INFO, "INFO"
            record.exc_info = record.exc_text = None
        return True


def _add_service(service: str) -> Any:
    def processor(_: Any, __: str, event_dict: dict[str, Any]) -> dict[str, Any]:
        event_dict.setdefault("service", service)
        return event_dict

    return processor


def get_logger(name: str) -> Any:
    """A structlog logger tagged with the component name."""
    return structlog.get_logger(component=name)


def new_correlation_id() -> str:
    return uuid.uuid4().hex


def clean_correlation_id(value: str | None) -> str:
    """Accept a caller's correlation id if it is short and printable, else mint one."""
    if value and len(value) <= 64 and value.isascii() and value.isprintable():
        return value
    return new_correlation_id()
