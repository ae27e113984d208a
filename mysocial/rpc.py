"""gRPC plumbing shared by both services.

- `unary` / `stream` wrap servicer methods: they bind a correlation id to every log
  line of the call, turn ServiceError into its status (with google.rpc details), and
  turn anything unexpected into INTERNAL without leaking a traceback.
- `start_server` builds a grpc.aio server with health and reflection and returns the
  bound port (port 0 picks a free one, as tests do).
- `start_unless_signalled` lets a stop signal end a long start-up cleanly.
- `run_until_stopped` implements graceful shutdown: SIGTERM only wakes it; the
  service then stops accepting, drains in-flight calls and flushes. A failure the
  service cannot serve through (its Kafka reader died) stops it the same way, with
  a non-zero exit code.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import functools
import signal
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from dataclasses import dataclass
from typing import Any, TypeVar

import grpc
import structlog
from google.protobuf import any_pb2
from google.rpc import code_pb2, error_details_pb2, status_pb2
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection
from grpc_status import rpc_status

from mysocial import otel
from mysocial.errors import QuotaExceeded, ServiceError
from mysocial.log import CORRELATION_HEADER, clean_correlation_id, get_logger
from mysocial.metrics import SERVING, Rpc
from mysocial.trace import TRACEPARENT_HEADER, clean_traceparent, trace_id

log = get_logger("rpc")

Req = TypeVar("Req")
Resp = TypeVar("Resp")
Self = TypeVar("Self")
T = TypeVar("T")

ERROR_DOMAIN = "mysocial.v1"

Ctx = grpc.aio.ServicerContext[Any, Any]


@dataclass(frozen=True)
class CallTrace:
    """The trace context of the current call (see mysocial/trace.py)."""

    correlation_id: str
    traceparent: str = ""


_CALL_TRACE: contextvars.ContextVar[CallTrace | None] = contextvars.ContextVar(
    "call_trace", default=None
)


def current_trace() -> CallTrace:
    """The correlation id bound for this call (the one its logs and trailing metadata
    carry) and the caller's traceparent; set by the unary/stream wrappers."""
    return _CALL_TRACE.get() or CallTrace(clean_correlation_id(None))


def _trace_of(context: Ctx) -> CallTrace:
    cid: str | None = None
    parent = ""
    for key, value in context.invocation_metadata() or ():
        text = value if isinstance(value, str) else value.decode("ascii", "replace")
        if key == CORRELATION_HEADER:
            cid = text
        elif key == TRACEPARENT_HEADER:
            parent = clean_traceparent(text)
    return CallTrace(clean_correlation_id(cid), parent)


def _packed(detail: Any) -> any_pb2.Any:
    packed = any_pb2.Any()
    packed.Pack(detail)
    return packed


def _status_for(exc: ServiceError) -> status_pb2.Status:
    details = []
    if exc.field:
        violation = error_details_pb2.BadRequest.FieldViolation(
            field=exc.field, description=exc.message
        )
        details.append(_packed(error_details_pb2.BadRequest(field_violations=[violation])))
    if exc.reason:
        details.append(_packed(error_details_pb2.ErrorInfo(reason=exc.reason, domain=ERROR_DOMAIN)))
    if isinstance(exc, QuotaExceeded):
        quota = error_details_pb2.QuotaFailure.Violation(
            subject=exc.subject, description=exc.description
        )
        details.append(_packed(error_details_pb2.QuotaFailure(violations=[quota])))
    if exc.retry_after_s > 0:
        retry = error_details_pb2.RetryInfo()
        retry.retry_delay.FromMilliseconds(round(exc.retry_after_s * 1000))
        details.append(_packed(retry))
    return status_pb2.Status(code=exc.code.value[0], message=exc.message, details=details)


# Refusals that come in floods (one abusive user, an overload) would write hundreds of
# lines a second, each costing the worker the CPU its other callers need: one line per
# reason every FLOOD_LOG_EVERY_S, saying how many were not logged (the metrics count
# every one: mysocial_rpc_rejected_total).
FLOOD_REASONS = frozenset({"QUOTA_EXCEEDED", "OVERLOADED", "STREAM_LIMIT"})
FLOOD_LOG_EVERY_S = 10.0
_flood_logged: dict[str, float] = {}
_flood_unlogged: dict[str, int] = {}


def _log_rejected(exc: ServiceError) -> None:
    if exc.reason in FLOOD_REASONS:
        now = time.monotonic()
        if now - _flood_logged.get(exc.reason, -FLOOD_LOG_EVERY_S) < FLOOD_LOG_EVERY_S:
            _flood_unlogged[exc.reason] = _flood_unlogged.get(exc.reason, 0) + 1
            return
        _flood_logged[exc.reason] = now
        unlogged = _flood_unlogged.pop(exc.reason, 0)
        log.info("rpc_rejected", code=exc.code.name, reason=exc.message, not_logged_before=unlogged)
        return
    log.info("rpc_rejected", code=exc.code.name, reason=exc.message)


async def _abort(context: Ctx, exc: BaseException, rpc_name: str) -> None:
    if isinstance(exc, ServiceError):
        _log_rejected(exc)
        await context.abort_with_status(rpc_status.to_status(_status_for(exc)))
    log.exception("rpc_failed", rpc=rpc_name)
    cid = structlog.contextvars.get_contextvars().get("correlation_id", "")
    await context.abort_with_status(
        rpc_status.to_status(
            status_pb2.Status(
                code=code_pb2.INTERNAL, message=f"internal error (correlation id {cid})"
            )
        )
    )


def _bind(context: Ctx, rpc_name: str) -> str:
    trace = _trace_of(context)
    _CALL_TRACE.set(trace)
    structlog.contextvars.clear_contextvars()
    if trace.traceparent:
        structlog.contextvars.bind_contextvars(
            correlation_id=trace.correlation_id,
            rpc=rpc_name,
            trace_id=trace_id(trace.traceparent),
        )
    else:
        structlog.contextvars.bind_contextvars(correlation_id=trace.correlation_id, rpc=rpc_name)
    context.set_trailing_metadata(((CORRELATION_HEADER, trace.correlation_id),))
    return trace.correlation_id


def _rpc_metrics(kind: str, name: str) -> Callable[[object], Rpc]:
    """The method's metric children, bound on its first call (the service name is the
    servicer's SERVICE_NAME)."""
    bound: dict[type, Rpc] = {}

    def of(servicer: object) -> Rpc:
        rpc = bound.get(type(servicer))
        if rpc is None:
            service = getattr(servicer, "SERVICE_NAME", type(servicer).__name__)
            rpc = bound[type(servicer)] = Rpc(kind, service, name)
        return rpc

    return of


def _code_of(exc: BaseException) -> str:
    if isinstance(exc, ServiceError):
        return exc.code.name
    if isinstance(exc, asyncio.CancelledError):
        return "CANCELLED"
    return "INTERNAL"


def unary(
    fn: Callable[[Self, Req, Ctx], Awaitable[Resp]],
) -> Callable[[Self, Req, Ctx], Awaitable[Resp]]:
    """Wrap a unary (or client-streaming) handler: correlation id, error mapping,
    metrics (mysocial.metrics)."""
    name = fn.__name__
    metrics = _rpc_metrics("unary", name)

    @functools.wraps(fn)
    async def wrapper(self: Self, request: Req, context: Ctx) -> Resp:
        cid = _bind(context, name)
        rpc = metrics(self)
        rpc.started.inc()
        rpc.in_flight.inc()
        began = time.perf_counter()
        code = "OK"
        span = None
        if otel.enabled():
            # The call's span continues the caller's trace; its events continue it.
            span = otel.start_server(
                f"{rpc.service}/{name}",
                current_trace().traceparent,
                correlation_id=cid,
                **{"rpc.system": "grpc", "rpc.service": rpc.service, "rpc.method": name},
            )
            parent = otel.traceparent_of(span)
            _CALL_TRACE.set(CallTrace(cid, parent))
            structlog.contextvars.bind_contextvars(trace_id=trace_id(parent))
        try:
            return await fn(self, request, context)
        except grpc.aio.AbortError:
            code = "UNKNOWN"  # the handler aborted with a status of its own
            raise
        except asyncio.CancelledError:
            code = "CANCELLED"
            raise
        except Exception as exc:
            code = _code_of(exc)
            if isinstance(exc, ServiceError):
                rpc.rejected(code, exc.reason)
            await _abort(context, exc, name)
            raise  # unreachable: abort raises
        finally:
            rpc.handled(code, time.perf_counter() - began)
            if span is not None:
                span.set_attribute("rpc.grpc.status_code", code)
                span.end()

    return wrapper


def stream(
    fn: Callable[[Self, Req, Ctx], Awaitable[AsyncIterator[Resp]]],
) -> Callable[[Self, Req, Ctx], Awaitable[None]]:
    """Wrap a server-streaming handler the same way.

    The handler does its checks and returns the iterator of messages; the wrapper
    writes them with context.write. grpc.aio then drives one coroutine instead of a
    chain of async generators: fan-out to many streams pays per message, and every
    generator layer costs a few microseconds there.
    """
    name = fn.__name__
    metrics = _rpc_metrics("server_stream", name)

    @functools.wraps(fn)
    async def wrapper(self: Self, request: Req, context: Ctx) -> None:
        _bind(context, name)
        rpc = metrics(self)
        rpc.started.inc()
        rpc.in_flight.inc()
        began = time.perf_counter()
        code = "OK"
        sent = rpc.sent
        try:
            messages = await fn(self, request, context)
            write = context.write
            try:
                async for item in messages:
                    await write(item)
                    sent.inc()
            finally:
                # Unsubscribe now, not when the garbage collector finalizes the generator.
                aclose = getattr(messages, "aclose", None)
                if aclose is not None:
                    await aclose()
        except (asyncio.CancelledError, GeneratorExit):
            code = "CANCELLED"
            raise
        except grpc.aio.AbortError:
            code = "UNKNOWN"  # the handler aborted with a status of its own
            raise
        except Exception as exc:
            code = _code_of(exc)
            if isinstance(exc, ServiceError):
                rpc.rejected(code, exc.reason)
            await _abort(context, exc, name)
        finally:
            rpc.handled(code, time.perf_counter() - began)

    return wrapper


def time_left(context: Ctx, default: float, margin: float = 0.05) -> float:
    """Seconds this call may still use: its deadline minus a margin, capped by default.

    The margin lets the server answer with its own precise status (e.g. UNAVAILABLE)
    before the client's deadline turns it into a bare DEADLINE_EXCEEDED.
    """
    remaining = context.time_remaining()
    if remaining is None:
        return default
    return max(0.0, min(default, remaining - max(margin, remaining * 0.05)))


MAX_MESSAGE_BYTES = 4 * 1024 * 1024  # both ways; images travel in smaller chunks
# Clients may ping an idle connection or stream every 5 s or more (mobile apps ping
# every 10-30 s to keep NATs open); grpc's default (5 minutes) would answer their
# pings with GOAWAY "too_many_pings" and cut their streams. The bound sits below 5 s:
# a client's 5 s timer fires a little early now and then, and two strikes end it.
CLIENT_PING_MIN_MS = 4_000

SERVER_OPTIONS = [
    ("grpc.so_reuseport", 1),
    ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
    ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
    ("grpc.keepalive_time_ms", 60_000),
    ("grpc.keepalive_timeout_ms", 20_000),
    ("grpc.http2.max_pings_without_data", 0),
    ("grpc.keepalive_permit_without_calls", 1),
    ("grpc.http2.min_ping_interval_without_data_ms", CLIENT_PING_MIN_MS),  # received pings
    ("grpc.http2.max_ping_strikes", 2),
    ("grpc.max_concurrent_streams", 10_000),
    # Calls gRPC's core has received but the event loop has not taken yet. Past
    # max_pending_requests (default 1,000) the core drops them at random, all of them
    # past the hard limit (3,000), and the client sees CANCELLED: no reason, no
    # RetryInfo, and a client cannot tell it from its own cancellation. A burst of
    # 3,000 commands on one worker, or a worker starved of CPU for a second, lost
    # hundreds that way (tests/system/test_overload.py). Above our own bounds
    # (MYSOCIAL_COMMAND_MAX_IN_FLIGHT, the stream caps), a call is taken and answered
    # with a precise status instead; the core's limit stays as the last resort.
    ("grpc.server.max_pending_requests", 5_000),
    ("grpc.server.max_pending_requests_hard_limit", 10_000),
]


@dataclass
class RunningServer:
    server: grpc.aio.Server
    port: int
    health: health.aio.HealthServicer

    async def set_serving(self, services: Iterable[str], serving: bool) -> None:
        status = (
            health_pb2.HealthCheckResponse.SERVING
            if serving
            else health_pb2.HealthCheckResponse.NOT_SERVING
        )
        for name in ("", *services):
            await self.health.set(name, status)
        SERVING.set(1 if serving else 0)


async def start_server(
    addr: str,
    register: Callable[[grpc.aio.Server], None],
    service_names: Iterable[str],
    *,
    serving: bool = True,
    options: list[tuple[str, Any]] | None = None,
    credentials: grpc.ServerCredentials | None = None,
) -> RunningServer:
    """Start a grpc.aio server with health and reflection; returns it with its port.
    With credentials (mysocial.tls) it serves TLS only, else plaintext."""
    server = grpc.aio.server(options=options or SERVER_OPTIONS)
    register(server)
    health_servicer = health.aio.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    names = list(service_names)
    reflection.enable_server_reflection(
        [
            *names,
            health_pb2.DESCRIPTOR.services_by_name["Health"].full_name,
            reflection.SERVICE_NAME,
        ],
        server,
    )
    if credentials is None:
        port = server.add_insecure_port(addr)
    else:
        port = server.add_secure_port(addr, credentials)
    if port == 0:
        raise OSError(f"could not bind {addr}")
    await server.start()
    running = RunningServer(server, port, health_servicer)
    await running.set_serving(names, serving)
    return running


def signal_received(
    signals: Iterable[int] = (signal.SIGTERM, signal.SIGINT),
) -> asyncio.Future[int]:
    """The first of the given signals, as a future; the handlers, installed before this
    returns, only set it.

    The handlers stay installed: a later signal during the graceful shutdown is
    ignored. Ctrl-C in a terminal sends SIGINT to the whole process group and the
    command service's parent then sends its workers SIGTERM; with the default action
    restored, that second signal killed the workers in the middle of their drain.
    """
    loop = asyncio.get_running_loop()
    received: asyncio.Future[int] = loop.create_future()

    def on_signal(sig: int) -> None:
        if not received.done():
            received.set_result(sig)
        else:
            log.info("signal_ignored_shutdown_in_progress", signal=signal.Signals(sig).name)

    for sig in signals:
        loop.add_signal_handler(sig, on_signal, sig)
    return received


async def start_unless_signalled(start: Awaitable[T], signalled: asyncio.Future[int]) -> T | None:
    """Start-up (which may load state for a while) raced against a stop signal.

    None when the signal came first: start-up is cancelled (it closes what it opened)
    and one `shutdown_requested` line says so. Without this, Ctrl-C reaching a command
    worker still loading its directory raised KeyboardInterrupt in it, and the
    parent's SIGTERM then killed it without a word.
    """
    starting = asyncio.ensure_future(start)
    pending: set[asyncio.Future[Any]] = {starting, signalled}
    await asyncio.wait(pending, return_when=asyncio.FIRST_COMPLETED)
    if starting.done():
        return starting.result()
    starting.cancel()
    with contextlib.suppress(asyncio.CancelledError, Exception):
        await starting
    log.info(
        "shutdown_requested", signal=signal.Signals(signalled.result()).name, during="start-up"
    )
    return None


async def run_until_stopped(
    stop: Callable[[], Awaitable[None]],
    failure: asyncio.Future[BaseException],
    signalled: asyncio.Future[int] | None = None,
) -> int:
    """Serve until SIGTERM/SIGINT or until `failure` completes, then `stop()`; the exit code.

    stop() is the service's graceful shutdown: health NOT_SERVING first, then drain.
    A signal exits 0. A failure (the service's Kafka reader died, and logged why)
    exits 1: the in-memory view no longer follows the topics, so answering from it
    would be wrong until a supervisor restarts the process (make run does, and so
    does the command service's parent for its workers).
    """
    if signalled is None:
        signalled = signal_received()
    waiting: set[asyncio.Future[Any]] = {signalled, failure}
    await asyncio.wait(waiting, return_when=asyncio.FIRST_COMPLETED)
    if failure.done():
        signalled.cancel()  # the handlers stay: a later signal does not cut the drain short
        log.info("shutdown_after_failure", error=repr(failure.result()))
        code = 1
    else:
        log.info("shutdown_requested", signal=signal.Signals(signalled.result()).name)
        code = 0
    await stop()
    await calls_finished()
    return code


# The names grpc.aio gives each call's tasks (its server.pyx.pxi, grpcio 1.85).
GRPC_CALL_TASKS = ("rpc_task", "HandleExceptions[")


async def calls_finished(timeout: float = 2.0) -> None:
    """Wait (bounded) for the calls the server's stop has just cancelled to end.

    Why: stop() returns once gRPC's core is shut down, while each cancelled call's
    task still has a step to run. If asyncio.run's exit cancels that task first,
    grpc.aio logs it and also prints the traceback to stderr itself, outside logging,
    so a stray non-JSON traceback ends the log of a clean shutdown (seen in CI with an
    open health Watch). Tasks that are not gRPC calls are left to asyncio.run.
    """
    calls = [
        task
        for task in asyncio.all_tasks()
        if task is not asyncio.current_task() and task.get_name().startswith(GRPC_CALL_TASKS)
    ]
    if calls:
        await asyncio.wait(calls, timeout=timeout)


def monotonic_ms() -> float:
    return time.monotonic() * 1000.0
