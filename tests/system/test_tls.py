"""gRPC TLS: both services serve TLS (health and reflection too), refuse plaintext,
and with a client CA refuse clients without a certificate; the CLI reaches them with
--cacert and a bearer token from --token or MYSOCIAL_TOKEN, without the JWT secret."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
from grpc_reflection.v1alpha.proto_reflection_descriptor_database import (
    ProtoReflectionDescriptorDatabase,
)

from mysocial import tls
from mysocial.auth import mint_token
from mysocial.config import PROJECT_ROOT, Settings
from mysocial.kafka.topics import provision
from tests.support.certs import Issued, TestCA
from tests.support.helpers import free_ports, make_settings, wait_until
from tests.support.services import SERVING, ProcessorProc, Service, health

SECRET = "a-deployment-secret-the-cli-does-not-hold"
COMMAND, QUERY = "mysocial.v1.CommandService", "mysocial.v1.QueryService"


@pytest.fixture
def ca(tmp_path: Path) -> TestCA:
    return TestCA(tmp_path / "pki")


def tls_settings(kafka_bootstrap: str, tmp_path: Path, server: Issued, **extra: str) -> Settings:
    command_port, query_port = free_ports(2)
    settings = make_settings(
        kafka_bootstrap,
        command_addr=f"127.0.0.1:{command_port}",
        query_addr=f"127.0.0.1:{query_port}",
        processor_state_dir=str(tmp_path / "state"),
        media_dir=str(tmp_path / "media"),
        tls_cert_path=str(server.cert),
        tls_key_path=str(server.key),
        jwt_secret=SECRET,
        dev_mode=False,  # a real secret: the development one is not needed
        log_level="info",
        **extra,
    )
    provision(settings)
    return settings


def cli(*args: str, token: str = "") -> subprocess.CompletedProcess[str]:
    """The `mysocial` CLI in an environment without the deployment's JWT secret."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MYSOCIAL_", "KAFKA_"))}
    if token:
        env["MYSOCIAL_TOKEN"] = token
    return subprocess.run(
        [sys.executable, "-m", "client.cli", *args],
        env=env,
        cwd=PROJECT_ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )


@pytest.fixture
def services(
    kafka_bootstrap: str, tmp_path: Path, log_dir: Path, ca: TestCA
) -> Iterator[tuple[Settings, grpc.ChannelCredentials]]:
    settings = tls_settings(kafka_bootstrap, tmp_path, ca.issue("server"))
    creds = tls.channel_credentials(str(ca.cert))
    processor = ProcessorProc(settings, "a", log_dir)
    command = Service(
        "command_service", settings, settings.command_addr, log_dir / "c.log", COMMAND, creds
    )
    query = Service("query_service", settings, settings.query_addr, log_dir / "q.log", QUERY, creds)
    processor.start()
    try:
        command.start()
        query.start()
        yield settings, creds
    finally:
        assert query.stop() == 0 and command.stop() == 0
        assert processor.terminate() == 0


def test_both_services_serve_tls_and_the_cli_uses_cacert_and_a_token(
    services: tuple[Settings, grpc.ChannelCredentials], ca: TestCA
) -> None:
    settings, creds = services
    for addr, name in ((settings.command_addr, COMMAND), (settings.query_addr, QUERY)):
        assert health(addr, name, credentials=creds) == SERVING
        assert health(addr, name) is None  # plaintext is not served
        with tls.channel(addr, creds) as channel:
            names = set(ProtoReflectionDescriptorDatabase(channel).get_services())
            assert {name, "grpc.health.v1.Health"} <= names

    where = ["--command-addr", settings.command_addr, "--query-addr", settings.query_addr]
    tls_flags = [*where, "--cacert", str(ca.cert)]
    alice = mint_token("alice", SECRET)
    made = cli(*tls_flags, "--json", "--token", alice, "post", "over TLS")
    assert made.returncode == 0, made.stderr
    post_id = json.loads(made.stdout)["post_id"]
    liked = cli(*tls_flags, "like", post_id, token=mint_token("bob", SECRET))  # MYSOCIAL_TOKEN
    assert liked.returncode == 0, liked.stderr

    def like_count() -> int:
        got = cli(*tls_flags, "--json", "get", post_id)
        return (
            int(json.loads(got.stdout)["post"].get("like_count", 0)) if got.returncode == 0 else 0
        )

    wait_until(lambda: like_count() == 1, timeout=60, what="the like over TLS")

    # The development token the CLI mints without --token is not this deployment's.
    minted = cli(*tls_flags, "--user", "mallory", "like", post_id)
    assert minted.returncode == 1 and "UNAUTHENTICATED" in minted.stderr
    plain = cli(*where, "--plaintext", "get", post_id)
    assert plain.returncode == 1 and "UNAVAILABLE" in plain.stderr
    both = cli(*tls_flags, "--plaintext", "get", post_id)
    assert both.returncode == 1 and "--plaintext contradicts" in both.stderr


def test_mutual_tls_refuses_a_client_without_a_certificate(
    kafka_bootstrap: str, tmp_path: Path, log_dir: Path, ca: TestCA
) -> None:
    settings = tls_settings(
        kafka_bootstrap, tmp_path, ca.issue("server"), tls_client_ca_path=str(ca.cert)
    )
    client = ca.issue("client")
    with_cert = tls.channel_credentials(str(ca.cert), str(client.cert), str(client.key))
    query = Service(
        "query_service", settings, settings.query_addr, log_dir / "q.log", QUERY, with_cert
    )
    query.start()
    try:
        assert health(settings.query_addr, QUERY, credentials=with_cert) == SERVING
        no_cert = tls.channel_credentials(str(ca.cert))
        assert health(settings.query_addr, QUERY, credentials=no_cert) is None
        other = TestCA(tmp_path / "other-pki").issue("client")
        foreign = tls.channel_credentials(str(ca.cert), str(other.cert), str(other.key))
        assert health(settings.query_addr, QUERY, credentials=foreign) is None
    finally:
        assert query.stop() == 0
