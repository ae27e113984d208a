"""The whole pipeline over SASL_SSL, as a managed Kafka requires: an embedded broker
with a SASL_SSL listener (SCRAM-SHA-512 user written at format time, a certificate from
a throwaway CA), and the command service, processor and query service connecting only
through it. A bad password, an unknown CA or a plaintext client end start-up with one
log line naming the setting to check."""

from __future__ import annotations

import json
import secrets
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from mysocial.config import PROJECT_ROOT, Settings
from mysocial.kafka.cluster import EmbeddedCluster
from mysocial.kafka.node import ScramUser
from mysocial.kafka.topics import provision
from mysocial.v1 import command_service_pb2 as cmd
from mysocial.v1 import query_service_pb2 as q
from tests.support.certs import TestCA
from tests.support.helpers import auth, make_settings, python_env
from tests.support.services import System

USER = "mysocial-app"
LISTENER = "SECURE"


@pytest.fixture(scope="module")
def secure_kafka(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, Path, str]]:
    """A one-node cluster with a SASL_SSL listener: (its bootstrap, the CA, the password)."""
    folder = tmp_path_factory.mktemp("secure-kafka")
    ca = TestCA(folder / "pki")
    keystore = ca.keystore(ca.issue("broker"))
    password = secrets.token_urlsafe(18)
    prefix = f"listener.name.{LISTENER.lower()}"
    cluster = EmbeddedCluster.on_free_ports(
        1,
        folder / "kafka",
        listeners=[(LISTENER, "SASL_SSL")],
        overrides={
            "sasl.enabled.mechanisms": "SCRAM-SHA-512",
            f"{prefix}.sasl.enabled.mechanisms": "SCRAM-SHA-512",
            f"{prefix}.scram-sha-512.sasl.jaas.config": (
                "org.apache.kafka.common.security.scram.ScramLoginModule required;"
            ),
            f"{prefix}.ssl.keystore.type": "PEM",
            f"{prefix}.ssl.keystore.location": str(keystore),
        },
        scram_users=[ScramUser(USER, password, "SCRAM-SHA-512")],
    )
    cluster.start()
    try:
        yield cluster.bootstrap_for(LISTENER), ca.cert, password
    finally:
        cluster.stop()


def secure_settings(
    secure_kafka: tuple[str, Path, str], tmp_path: Path, **changes: object
) -> Settings:
    bootstrap, ca, password = secure_kafka
    password_file = tmp_path / "kafka-password"
    password_file.write_text(password + "\n")  # as a mounted secret often ends
    settings = make_settings(
        bootstrap,
        kafka_security_protocol="SASL_SSL",
        kafka_sasl_mechanism="SCRAM-SHA-512",
        kafka_sasl_username=USER,
        kafka_sasl_password_file=str(password_file),
        kafka_ssl_ca_path=str(ca),
        processor_state_dir=str(tmp_path / "state"),
        media_dir=str(tmp_path / "media"),
        kafka_startup_timeout_s=5.0,
    )
    return settings.with_(**changes)


def test_the_pipeline_runs_over_sasl_ssl(
    secure_kafka: tuple[str, Path, str], tmp_path: Path, log_dir: Path
) -> None:
    settings = secure_settings(secure_kafka, tmp_path)
    provision(settings)
    with System(settings, log_dir) as system:
        commands, queries = system.commands(), system.queries()
        post = commands.CreatePost(cmd.CreatePostRequest(caption="sealed"), metadata=auth("ann"))
        stream = queries.WatchPosts(
            q.WatchPostsRequest(post_ids=[post.post_id], consistency_token=post.consistency_token),
            timeout=60,
        )
        commands.LikePost(cmd.LikePostRequest(post_id=post.post_id), metadata=auth("bob"))
        counts = []
        for message in stream:  # the RPC's deadline bounds the wait
            counts.append(message.post.like_count)
            if message.post.like_count == 1:
                break
        stream.cancel()
        assert counts[-1] == 1


def start_up_failure(settings: Settings, module: str) -> tuple[int, list[str], float]:
    """Run a service that must fail its Kafka check: exit code, log lines, seconds."""
    started = time.monotonic()
    result = subprocess.run(
        [sys.executable, "-m", module],
        env=python_env(settings, MYSOCIAL_LOG_FORMAT="json"),
        cwd=PROJECT_ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    lines = [line for line in (result.stdout + result.stderr).splitlines() if line.strip()]
    return result.returncode, lines, time.monotonic() - started


@pytest.mark.parametrize(
    ("module", "change", "event", "setting"),
    [
        (
            "processor",
            "bad_password",
            "kafka_authentication_failed",
            "MYSOCIAL_KAFKA_SASL_USERNAME,MYSOCIAL_KAFKA_SASL_PASSWORD",
        ),
        (
            "query_service",
            "bad_password",
            "kafka_authentication_failed",
            "MYSOCIAL_KAFKA_SASL_USERNAME,MYSOCIAL_KAFKA_SASL_PASSWORD",
        ),
        ("command_service", "unknown_ca", "kafka_tls_failed", "MYSOCIAL_KAFKA_SSL_CA_PATH"),
        (
            "processor",
            "plaintext",
            "kafka_protocol_mismatch",
            "MYSOCIAL_KAFKA_SECURITY_PROTOCOL,KAFKA_BOOTSTRAP_SERVERS",
        ),
    ],
)
def test_a_wrong_connection_setting_ends_start_up_in_one_line(
    secure_kafka: tuple[str, Path, str],
    tmp_path: Path,
    module: str,
    change: str,
    event: str,
    setting: str,
) -> None:
    settings = secure_settings(secure_kafka, tmp_path)
    if change == "bad_password":
        settings = settings.with_(
            kafka_sasl_password_file="", kafka_sasl_password="not-the-password"
        )
    elif change == "unknown_ca":
        settings = settings.with_(kafka_ssl_ca_path=str(TestCA(tmp_path / "other").cert))
    else:
        settings = settings.with_(
            kafka_security_protocol="PLAINTEXT",
            kafka_sasl_mechanism="",
            kafka_sasl_username="",
            kafka_sasl_password_file="",
            kafka_ssl_ca_path="",
        )
    code, lines, seconds = start_up_failure(settings, module)
    assert code == 1 and len(lines) == 1, lines
    line = json.loads(lines[0])
    assert (line["event"], line["setting"], line["level"]) == (event, setting, "error")
    assert seconds < 20, f"{module} took {seconds:.1f}s to give up"
