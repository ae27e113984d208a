"""The Kafka connection settings: what librdkafka is given, what is refused and why,
and the start-up lines of a process that cannot use its cluster (no broker needed)."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from mysocial.config import PROJECT_ROOT, ConfigError, Settings
from mysocial.kafka.connection import KafkaConnection, kafka_connection
from mysocial.kafka.preflight import KafkaStartupError, check_cluster

CLUSTER = "broker-1.example.com:9092,broker-2.example.com:9092"


def secured(**changes: Any) -> Settings:
    base = Settings(
        kafka_bootstrap_servers=CLUSTER,
        kafka_security_protocol="SASL_SSL",
        kafka_sasl_mechanism="SCRAM-SHA-512",
        kafka_sasl_username="mysocial",
        kafka_sasl_password="s3cret",
    )
    return base.with_(**changes)


def test_sasl_ssl_properties_and_client_properties_win() -> None:
    conn = kafka_connection(secured(kafka_client_properties="client.id=x; linger.ms=9"))
    assert dict(conn.properties) == {
        "bootstrap.servers": CLUSTER,
        "security.protocol": "sasl_ssl",
        "sasl.mechanism": "SCRAM-SHA-512",
        "sasl.username": "mysocial",
        "sasl.password": "s3cret",
        "client.id": "x",
        "linger.ms": "9",
    }
    config = conn.config({"linger.ms": 0, "enable.idempotence": True})
    assert config["linger.ms"] == 0 and config["sasl.password"] == "s3cret"
    assert "logger" in config
    assert "s3cret" not in repr(conn) and "s3cret" not in repr(secured())
    assert conn.protocol == "SASL_SSL" and conn.mechanism == "SCRAM-SHA-512"


def test_the_default_is_plaintext_to_the_embedded_broker() -> None:
    assert dict(kafka_connection(Settings()).properties) == {
        "bootstrap.servers": "127.0.0.1:9092",
        "security.protocol": "plaintext",
    }
    assert KafkaConnection.plaintext("h:1").bootstrap == "h:1"


def test_secrets_and_properties_come_from_files(tmp_path: Path) -> None:
    (tmp_path / "password").write_text("from-a-file\n")
    (tmp_path / "ca.pem").write_text("not parsed here")
    props = tmp_path / "client.properties"
    props.write_text("# a comment\n\nclient.dns.lookup = use_all_dns_ips\nclient.id=file\n")
    conn = kafka_connection(
        secured(
            kafka_sasl_password="",
            kafka_sasl_password_file=str(tmp_path / "password"),
            kafka_ssl_ca_path=str(tmp_path / "ca.pem"),
            kafka_client_properties_file=str(props),
            kafka_client_properties="client.id=inline",
        )
    )
    got = dict(conn.properties)
    assert got["sasl.password"] == "from-a-file"
    assert got["ssl.ca.location"] == str(tmp_path / "ca.pem")
    assert got["client.dns.lookup"] == "use_all_dns_ips" and got["client.id"] == "inline"
    jwt = tmp_path / "jwt"
    jwt.write_text("a-long-random-secret\r\n")
    assert Settings(jwt_secret_file=str(jwt)).effective_jwt_secret == "a-long-random-secret"
    assert not Settings(jwt_secret_file=str(jwt)).uses_dev_jwt_secret


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"kafka_security_protocol": "TLS"}, "MYSOCIAL_KAFKA_SECURITY_PROTOCOL must be one of"),
        ({"kafka_sasl_mechanism": "GSSAPI"}, "MYSOCIAL_KAFKA_SASL_MECHANISM must be one of"),
        ({"kafka_sasl_mechanism": ""}, "needs MYSOCIAL_KAFKA_SASL_MECHANISM"),
        ({"kafka_sasl_username": ""}, "needs MYSOCIAL_KAFKA_SASL_USERNAME"),
        ({"kafka_sasl_password": ""}, "MYSOCIAL_KAFKA_SASL_PASSWORD"),
        ({"kafka_security_protocol": "SSL"}, "MYSOCIAL_KAFKA_SASL_* settings need"),
        ({"kafka_client_properties": "sasl.password=x"}, "use MYSOCIAL_KAFKA_SASL_PASSWORD"),
        ({"kafka_client_properties": "sasl.mechanism=PLAIN"}, "SASL mechanism is set twice"),
        ({"kafka_client_properties": "linger.ms"}, "expected name=value"),
        ({"kafka_client_properties": "error_cb=x"}, "a callback, not a property"),
        ({"kafka_bootstrap_servers": ""}, "the embedded broker listens in plaintext"),
    ],
)
def test_impossible_combinations_name_the_variable(changes: dict[str, str], message: str) -> None:
    settings = secured().with_(**changes)
    with pytest.raises(ConfigError, match=message.replace("*", r"\*")):
        kafka_connection(settings)


def test_files_are_checked_when_settings_are_read(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="MYSOCIAL_KAFKA_SSL_CA_PATH="):
        Settings.from_env({"MYSOCIAL_KAFKA_SSL_CA_PATH": str(tmp_path / "missing.pem")})
    (tmp_path / "pw").write_text("x")
    both = {"MYSOCIAL_JWT_SECRET": "a", "MYSOCIAL_JWT_SECRET_FILE": str(tmp_path / "pw")}
    with pytest.raises(ConfigError, match="MYSOCIAL_JWT_SECRET or MYSOCIAL_JWT_SECRET_FILE"):
        Settings.from_env(both)
    key = str(tmp_path / "pw")
    with pytest.raises(ConfigError, match="MYSOCIAL_KAFKA_SSL_KEY_PATH"):
        kafka_connection(secured(kafka_ssl_certificate_path=key))
    with pytest.raises(ConfigError, match="need MYSOCIAL_KAFKA_SECURITY_PROTOCOL=SSL"):
        kafka_connection(secured(kafka_security_protocol="SASL_PLAINTEXT", kafka_ssl_ca_path=key))


def test_an_unreachable_cluster_fails_the_check_within_its_timeout() -> None:
    started = time.monotonic()
    with pytest.raises(KafkaStartupError) as failure:
        check_cluster(KafkaConnection.plaintext("127.0.0.1:1"), timeout=1.0)
    assert failure.value.event == "kafka_unreachable"
    assert failure.value.settings == ("KAFKA_BOOTSTRAP_SERVERS",)
    assert "Connection refused" in failure.value.detail
    assert time.monotonic() - started < 5


def _start(module: str, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", module],
        env={"PATH": "/usr/bin:/bin", "MYSOCIAL_LOG_FORMAT": "json", **env},
        cwd=PROJECT_ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_a_service_that_cannot_reach_kafka_says_so_in_one_line() -> None:
    # Every service's check against a real broker: tests/system/test_kafka_sasl_ssl.py.
    result = _start(
        "query_service",
        KAFKA_BOOTSTRAP_SERVERS="127.0.0.1:1",
        MYSOCIAL_KAFKA_STARTUP_TIMEOUT_S="1",
        MYSOCIAL_DEV_MODE="1",
    )
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert result.returncode == 1, result.stderr
    assert len(lines) == 1 and "Traceback" not in result.stderr, result.stderr
    assert '"event": "kafka_unreachable"' in lines[0]
    assert '"setting": "KAFKA_BOOTSTRAP_SERVERS"' in lines[0]


def test_the_command_service_refuses_the_development_secret_outside_dev_mode() -> None:
    result = _start("command_service", KAFKA_BOOTSTRAP_SERVERS="127.0.0.1:1")
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert result.returncode == 2 and len(lines) == 1, result.stderr
    assert '"event": "dev_jwt_secret_refused"' in lines[0]
    assert "MYSOCIAL_DEV_MODE=1" in lines[0]


def test_an_invalid_setting_ends_start_up_in_one_line() -> None:
    result = _start("query_service", MYSOCIAL_KAFKA_SSL_CA_PATH="/nonexistent/ca.pem")
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert result.returncode == 2 and len(lines) == 1, result.stderr
    assert "MYSOCIAL_KAFKA_SSL_CA_PATH" in lines[0]
