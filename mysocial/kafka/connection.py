"""How every Kafka client reaches the cluster: one place turns settings into librdkafka's
connection properties (bootstrap servers, security protocol, SASL, TLS, pass-through).

Every client of the project (the command service's producer, directory and admin
client, the query tailer, the processor's consumers and producer, the audit, topic
provisioning, the benchmarks and the tests) is configured as

    kafka_connection(settings).config({...what this client needs for its job...})

the connection first, then the client's own properties, which win: a pass-through
property cannot turn off idempotence or read_committed. Impossible combinations
(a SASL mechanism without a user, TLS files with a plaintext protocol) fail here, with
the variable's name, before any client exists.
"""

from __future__ import annotations

import functools
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from mysocial.config import ConfigError, Settings, read_secret
from mysocial.kafka import client_logger

PROTOCOLS = ("PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL")
MECHANISMS = ("PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512")
PASS_THROUGH = "MYSOCIAL_KAFKA_CLIENT_PROPERTIES"

# Properties a dedicated setting owns: the pass-through may not set them too (two
# sources for one value is how a deployment ends up with the stale one).
OWNED = {
    "bootstrap.servers": "KAFKA_BOOTSTRAP_SERVERS",
    "security.protocol": "MYSOCIAL_KAFKA_SECURITY_PROTOCOL",
    "sasl.username": "MYSOCIAL_KAFKA_SASL_USERNAME",
    "sasl.password": "MYSOCIAL_KAFKA_SASL_PASSWORD",
    "ssl.ca.location": "MYSOCIAL_KAFKA_SSL_CA_PATH",
    "ssl.certificate.location": "MYSOCIAL_KAFKA_SSL_CERTIFICATE_PATH",
    "ssl.key.location": "MYSOCIAL_KAFKA_SSL_KEY_PATH",
    "ssl.key.password": "MYSOCIAL_KAFKA_SSL_KEY_PASSWORD",
}
_MECHANISM_KEYS = ("sasl.mechanism", "sasl.mechanisms")
# The Settings fields that say how to log in (KAFKA_BOOTSTRAP_SERVERS says where).
LOGIN_FIELDS = (
    "kafka_security_protocol",
    "kafka_sasl_mechanism",
    "kafka_sasl_username",
    "kafka_sasl_password",
    "kafka_sasl_password_file",
    "kafka_ssl_ca_path",
    "kafka_ssl_certificate_path",
    "kafka_ssl_key_path",
    "kafka_ssl_key_password",
    "kafka_ssl_key_password_file",
    "kafka_client_properties",
    "kafka_client_properties_file",
)


@dataclass(frozen=True)
class KafkaConnection:
    """The librdkafka properties that say where the cluster is and how to log in."""

    properties: tuple[tuple[str, str], ...]

    @classmethod
    def plaintext(cls, bootstrap: str) -> KafkaConnection:
        """A cluster reached without TLS or SASL (the embedded broker's own listener)."""
        return cls((("bootstrap.servers", bootstrap),))

    @property
    def bootstrap(self) -> str:
        return dict(self.properties)["bootstrap.servers"]

    @property
    def protocol(self) -> str:
        """The security protocol, upper case (PLAINTEXT when unset)."""
        return dict(self.properties).get("security.protocol", "plaintext").upper()

    @property
    def mechanism(self) -> str:
        props = dict(self.properties)
        return next((props[k] for k in _MECHANISM_KEYS if k in props), "").upper()

    def config(self, client: Mapping[str, Any] | None = None) -> dict[str, Any]:
        """One client's configuration: the connection, librdkafka's logs through
        structlog, then the client's own properties (they win)."""
        out: dict[str, Any] = dict(self.properties)
        out["logger"] = client_logger()
        out.update(client or {})
        return out

    def admin(self, **overrides: Any) -> Any:
        """An AdminClient of this cluster (`overrides`: e.g. a quieter `logger`)."""
        from confluent_kafka.admin import AdminClient

        return AdminClient(self.config(overrides))

    def __repr__(self) -> str:
        shown = ", ".join(f"{k}={_masked(k, v)}" for k, v in self.properties)
        return f"KafkaConnection({shown})"


def _masked(key: str, value: str) -> str:
    return "***" if "password" in key or "secret" in key else value


@functools.cache
def kafka_connection(settings: Settings) -> KafkaConnection:
    """The connection of `settings` (built once per settings: secrets files are read
    once, at start-up). Raises ConfigError naming the variable to fix."""
    protocol = settings.kafka_security_protocol.upper()
    mechanism = settings.kafka_sasl_mechanism.upper()
    extra = pass_through(settings)
    _check(settings, protocol, mechanism, extra)
    password = settings.kafka_sasl_password or read_secret(settings.kafka_sasl_password_file)
    key_password = settings.kafka_ssl_key_password or read_secret(
        settings.kafka_ssl_key_password_file
    )
    props = {
        "bootstrap.servers": settings.bootstrap,
        "security.protocol": protocol.lower(),
        "sasl.mechanism": mechanism,
        "sasl.username": settings.kafka_sasl_username,
        "sasl.password": password,
        "ssl.ca.location": settings.kafka_ssl_ca_path,
        "ssl.certificate.location": settings.kafka_ssl_certificate_path,
        "ssl.key.location": settings.kafka_ssl_key_path,
        "ssl.key.password": key_password,
    }
    props = {k: v for k, v in props.items() if v} | extra
    return KafkaConnection(tuple(props.items()))


def _check(settings: Settings, protocol: str, mechanism: str, extra: Mapping[str, str]) -> None:
    if protocol not in PROTOCOLS:
        raise ConfigError(
            f"MYSOCIAL_KAFKA_SECURITY_PROTOCOL must be one of {', '.join(PROTOCOLS)}, "
            f"not {settings.kafka_security_protocol!r}"
        )
    if protocol != "PLAINTEXT" and settings.embedded_broker:
        raise ConfigError(
            f"MYSOCIAL_KAFKA_SECURITY_PROTOCOL={protocol} needs KAFKA_BOOTSTRAP_SERVERS "
            "(the embedded broker listens in plaintext)"
        )
    if mechanism and mechanism not in MECHANISMS:
        raise ConfigError(
            f"MYSOCIAL_KAFKA_SASL_MECHANISM must be one of {', '.join(MECHANISMS)} (another "
            f"mechanism: sasl.mechanism in {PASS_THROUGH}), not {mechanism!r}"
        )
    sasl = protocol.startswith("SASL_")
    password = settings.kafka_sasl_password or settings.kafka_sasl_password_file
    if (mechanism or settings.kafka_sasl_username or password) and not sasl:
        raise ConfigError(
            "MYSOCIAL_KAFKA_SASL_* settings need MYSOCIAL_KAFKA_SECURITY_PROTOCOL=SASL_SSL "
            f"(or SASL_PLAINTEXT), not {protocol}"
        )
    other = next((extra[k] for k in _MECHANISM_KEYS if k in extra), "")
    if mechanism and other:
        raise ConfigError(
            f"the SASL mechanism is set twice: MYSOCIAL_KAFKA_SASL_MECHANISM and {PASS_THROUGH}"
        )
    if sasl and not (mechanism or other):
        raise ConfigError(
            f"MYSOCIAL_KAFKA_SECURITY_PROTOCOL={protocol} needs MYSOCIAL_KAFKA_SASL_MECHANISM"
        )
    if mechanism and not (settings.kafka_sasl_username and password):
        raise ConfigError(
            f"MYSOCIAL_KAFKA_SASL_MECHANISM={mechanism} needs MYSOCIAL_KAFKA_SASL_USERNAME and "
            "MYSOCIAL_KAFKA_SASL_PASSWORD (or MYSOCIAL_KAFKA_SASL_PASSWORD_FILE)"
        )
    tls = (
        settings.kafka_ssl_ca_path,
        settings.kafka_ssl_certificate_path,
        settings.kafka_ssl_key_path,
    )
    if any(tls) and not protocol.endswith("SSL"):
        raise ConfigError(
            "MYSOCIAL_KAFKA_SSL_*_PATH settings need MYSOCIAL_KAFKA_SECURITY_PROTOCOL=SSL or "
            f"SASL_SSL, not {protocol}"
        )
    if bool(settings.kafka_ssl_certificate_path) != bool(settings.kafka_ssl_key_path):
        raise ConfigError(
            "set both MYSOCIAL_KAFKA_SSL_CERTIFICATE_PATH and MYSOCIAL_KAFKA_SSL_KEY_PATH, "
            "or neither"
        )


def pass_through(settings: Settings) -> dict[str, str]:
    """The pass-through properties: the file's, then the variable's (which win)."""
    out: dict[str, str] = {}
    if settings.kafka_client_properties_file:
        with open(settings.kafka_client_properties_file) as f:
            text = f.read()
        out.update(parse_properties(text.splitlines(), f"{PASS_THROUGH}_FILE"))
    out.update(parse_properties(settings.kafka_client_properties.split(";"), PASS_THROUGH))
    return out


def parse_properties(entries: list[str], setting: str) -> dict[str, str]:
    """`name=value` entries (blank ones and `#` comments skipped) as a dict."""
    out: dict[str, str] = {}
    for entry in _entries(entries):
        name, sep, value = entry.partition("=")
        name, value = name.strip(), value.strip()
        if not sep or not name:
            raise ConfigError(f"{setting}: expected name=value, got {entry!r}")
        if name in OWNED:
            raise ConfigError(f"{setting} sets {name}: use {OWNED[name]} instead")
        if name in ("logger", "error_cb", "stats_cb", "oauth_cb"):
            raise ConfigError(f"{setting} sets {name}: a callback, not a property")
        out[name] = value
    return out


def _entries(entries: list[str]) -> Iterator[str]:
    for raw in entries:
        entry = raw.strip()
        if entry and not entry.startswith(("#", "!")):
            yield entry


Cluster = Settings | KafkaConnection


def connection_of(cluster: Cluster) -> KafkaConnection:
    """Helpers that read topics take either the settings or a connection."""
    return cluster if isinstance(cluster, KafkaConnection) else kafka_connection(cluster)


def login_settings(settings: Settings) -> dict[str, Any]:
    """How `settings` log in to their cluster, as Settings fields: benchmarks and tests
    that build their own settings for the cluster KAFKA_BOOTSTRAP_SERVERS names keep
    its TLS and SASL with `Settings(..., **login_settings(Settings.from_env()))`."""
    return {name: getattr(settings, name) for name in LOGIN_FIELDS}
