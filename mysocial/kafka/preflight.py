"""Start-up check: does the cluster answer, and does it accept these credentials?

Without it a wrong password shows up as clients retrying forever, and an unreachable
cluster as a reader timing out with a traceback half a minute later. Each service, the
processor and `make run` first ask the cluster for its metadata over the configured
connection; when that fails they log ONE error line naming the settings to check and
exit 1 (2 for settings that cannot work at all):

    kafka_authentication_failed   the SASL user or password (or the client certificate)
    kafka_tls_failed              the CA file, or the client certificate and key
    kafka_protocol_mismatch       MYSOCIAL_KAFKA_SECURITY_PROTOCOL vs the listener's
    kafka_unreachable             nothing answered within MYSOCIAL_KAFKA_STARTUP_TIMEOUT_S
    kafka_settings_invalid        an impossible combination (the message names it)

Refused credentials and TLS failures end the check at once (librdkafka reports them
through error_cb), a listener that drops every connection (another protocol) within a
few seconds; connection failures are retried until the timeout, since a cluster may be
starting at the same time.
"""

from __future__ import annotations

import logging
import time

from confluent_kafka import KafkaError, KafkaException

from mysocial.config import ConfigError, Settings
from mysocial.kafka.connection import OWNED, PASS_THROUGH, KafkaConnection, kafka_connection
from mysocial.log import get_logger

log = get_logger("kafka.preflight")

BOOTSTRAP = "KAFKA_BOOTSTRAP_SERVERS"
PROTOCOL = "MYSOCIAL_KAFKA_SECURITY_PROTOCOL"
SASL_CREDENTIALS = ("MYSOCIAL_KAFKA_SASL_USERNAME", "MYSOCIAL_KAFKA_SASL_PASSWORD")
CLIENT_CERT = ("MYSOCIAL_KAFKA_SSL_CERTIFICATE_PATH", "MYSOCIAL_KAFKA_SSL_KEY_PATH")
CA = "MYSOCIAL_KAFKA_SSL_CA_PATH"
# librdkafka's own words when a listener speaks another protocol than the client.
_MISMATCH_HINTS = ("security.protocol", "PLAINTEXT broker listener", "wrong version number")
# Without such words, a protocol mismatch looks like this: the broker accepts each
# connection and closes it at the first request. A broker shutting down does that too,
# once; many times over a few seconds, never answering, settles it.
_CLOSED_BY_PEER = "closed by peer"
_MISMATCH_CLOSES = 5
_MISMATCH_AFTER_S = 2.0


class KafkaStartupError(Exception):
    """The cluster cannot be used with these settings: `event` names the failure,
    `settings` the variables to check."""

    def __init__(self, event: str, settings: tuple[str, ...], detail: str) -> None:
        super().__init__(f"{event}: {detail} (check {', '.join(settings)})")
        self.event = event
        self.settings = settings
        self.detail = detail


def check_cluster(conn: KafkaConnection, timeout: float) -> None:
    """Return once the cluster answers a metadata request over `conn`; raise
    KafkaStartupError at the first refused login or TLS failure, on a protocol
    mismatch, or after timeout."""
    errors: list[KafkaError] = []
    logs = _Collected()
    try:
        admin = conn.admin(error_cb=errors.append, logger=logs.logger)
    except KafkaException as exc:  # a property librdkafka rejects, e.g. an unusable CA file
        text = exc.args[0].str()
        owner = next((env for key, env in OWNED.items() if key in text), PASS_THROUGH)
        raise KafkaStartupError("kafka_settings_invalid", (owner,), text) from None
    started = time.monotonic()
    deadline = started + timeout
    last, closes = "no answer", 0
    while True:
        try:
            md = admin.list_topics(timeout=max(0.1, min(1.0, deadline - time.monotonic())))
            if md.brokers:
                return
        except KafkaException as exc:
            last = exc.args[0].str()
        admin.poll(0)  # serves error_cb and the log lines
        for err in errors:
            failure = _fatal(conn, err)
            if failure is not None:
                raise failure
            if err.code() != KafkaError._ALL_BROKERS_DOWN:  # says less than what led to it
                last = err.str()
        errors.clear()
        for line in logs.take():
            if _CLOSED_BY_PEER in line:
                closes, last = closes + 1, line.partition("]: ")[2] or line
        if closes >= _MISMATCH_CLOSES and time.monotonic() - started >= _MISMATCH_AFTER_S:
            raise KafkaStartupError("kafka_protocol_mismatch", (PROTOCOL, BOOTSTRAP), last)
        if time.monotonic() >= deadline:
            raise KafkaStartupError("kafka_unreachable", (BOOTSTRAP,), last)


def _fatal(conn: KafkaConnection, err: KafkaError) -> KafkaStartupError | None:
    """The startup error an error callback settles, or None if it may pass."""
    code, text = err.code(), err.str()
    if _mismatch(text):
        return KafkaStartupError("kafka_protocol_mismatch", (PROTOCOL, BOOTSTRAP), text)
    if code == KafkaError._AUTHENTICATION:
        if "unsupported sasl mechanism" in text.lower():
            return KafkaStartupError(
                "kafka_authentication_failed", (_mechanism_setting(conn),), text
            )
        if conn.protocol.startswith("SASL_"):
            return KafkaStartupError("kafka_authentication_failed", SASL_CREDENTIALS, text)
        return KafkaStartupError("kafka_authentication_failed", CLIENT_CERT, text)
    if code == KafkaError._SSL:
        names = (CA, *CLIENT_CERT) if "ssl.certificate.location" in dict(conn.properties) else (CA,)
        return KafkaStartupError("kafka_tls_failed", names, text)
    if code in (KafkaError._FATAL, KafkaError._INVALID_ARG):
        return KafkaStartupError("kafka_client_failed", (PASS_THROUGH,), text)
    return None


def _mechanism_setting(conn: KafkaConnection) -> str:
    props = dict(conn.properties)
    return "MYSOCIAL_KAFKA_SASL_MECHANISM" if "sasl.mechanism" in props else PASS_THROUGH


def _mismatch(text: str) -> bool:
    return any(hint in text for hint in _MISMATCH_HINTS)


class _Collected(logging.Handler):
    """librdkafka's own log lines of the check, kept for it to read: printed, they
    would bury the one line that explains them."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.lines: list[str] = []
        # Not registered with logging: one per check, gone with it.
        self.logger = logging.Logger("mysocial.kafka.preflight-client", logging.DEBUG)
        self.logger.addHandler(self)

    def emit(self, record: logging.LogRecord) -> None:
        if len(self.lines) < 1000:
            self.lines.append(record.getMessage())

    def take(self) -> list[str]:
        lines, self.lines = self.lines, []
        return lines


def preflight(settings: Settings) -> int:
    """0 when the cluster of `settings` answers and accepts them; otherwise log one
    error line naming the settings to check and return the exit code to use."""
    try:
        conn = kafka_connection(settings)
    except (ConfigError, OSError) as exc:
        log.error("kafka_settings_invalid", error=str(exc))
        return 2
    started = time.monotonic()
    try:
        check_cluster(conn, settings.kafka_startup_timeout_s)
    except KafkaStartupError as exc:
        log.error(
            exc.event,
            setting=",".join(exc.settings),
            bootstrap=conn.bootstrap,
            protocol=conn.protocol,
            error=exc.detail,
        )
        return 1
    log.debug("kafka_reachable", bootstrap=conn.bootstrap, s=round(time.monotonic() - started, 3))
    return 0
