"""The Kafka part of the settings: which cluster, and how every client logs in to it.

A base of mysocial.config.Settings (which every process builds once); kept apart so
the settings of the services stay readable.
"""

from __future__ import annotations

from dataclasses import dataclass

from mysocial.config_values import PROJECT_ROOT
from mysocial.config_values import setting as _setting


@dataclass(frozen=True)
class KafkaSettings:
    """Where the cluster is and how to reach it (docs/OPERATIONS.md)."""

    kafka_bootstrap_servers: str = _setting(
        "KAFKA_BOOTSTRAP_SERVERS",
        "",
        "Kafka cluster to use. Empty: `make run`/`make test` start the embedded broker "
        "and use it; set: nothing local is started.",
    )
    kafka_port: int = _setting(
        "MYSOCIAL_KAFKA_PORT",
        9092,
        "Port of the embedded broker (its controller uses port+1); node i of an embedded "
        "cluster uses port+2(i-1) and the port after it.",
    )
    kafka_data_dir: str = _setting(
        "MYSOCIAL_KAFKA_DATA_DIR",
        str(PROJECT_ROOT / ".cache" / "kafka-data"),
        "Data folder of the embedded broker; an embedded cluster of N nodes keeps node i "
        "in `cluster-of-N/node-i` under it.",
    )
    kafka_brokers: int = _setting(
        "MYSOCIAL_KAFKA_BROKERS",
        1,
        "Nodes of the embedded KRaft cluster `make run` starts (each broker and "
        "controller, one quorum of all); at 3 or more, topics get replication factor 3 "
        "and min.insync.replicas 2. Unused when KAFKA_BOOTSTRAP_SERVERS is set.",
    )
    kafka_security_protocol: str = _setting(
        "MYSOCIAL_KAFKA_SECURITY_PROTOCOL",
        "PLAINTEXT",
        "How every Kafka client connects: PLAINTEXT, SSL, SASL_PLAINTEXT or SASL_SSL (what "
        "managed clusters require); see docs/OPERATIONS.md.",
    )
    kafka_sasl_mechanism: str = _setting(
        "MYSOCIAL_KAFKA_SASL_MECHANISM",
        "",
        "PLAIN, SCRAM-SHA-256 or SCRAM-SHA-512; required by the SASL_* protocols (another "
        "mechanism: `sasl.mechanism` in MYSOCIAL_KAFKA_CLIENT_PROPERTIES).",
    )
    kafka_sasl_username: str = _setting(
        "MYSOCIAL_KAFKA_SASL_USERNAME", "", "SASL user name (Confluent Cloud: the API key)."
    )
    kafka_sasl_password: str = _setting(
        "MYSOCIAL_KAFKA_SASL_PASSWORD",
        "",
        "SASL password (Confluent Cloud: the API secret); or MYSOCIAL_KAFKA_SASL_PASSWORD_FILE.",
        secret=True,
    )
    kafka_sasl_password_file: str = _setting(
        "MYSOCIAL_KAFKA_SASL_PASSWORD_FILE",
        "",
        "A file holding the SASL password (e.g. a mounted secret; a final newline is ignored).",
    )
    kafka_ssl_ca_path: str = _setting(
        "MYSOCIAL_KAFKA_SSL_CA_PATH",
        "",
        "PEM file of the CA certificates the brokers' certificates are checked against; "
        "empty: the system's CA certificates (enough for public managed clusters).",
    )
    kafka_ssl_certificate_path: str = _setting(
        "MYSOCIAL_KAFKA_SSL_CERTIFICATE_PATH",
        "",
        "Client certificate (PEM) for clusters that authenticate clients by mutual TLS.",
    )
    kafka_ssl_key_path: str = _setting(
        "MYSOCIAL_KAFKA_SSL_KEY_PATH", "", "Private key (PEM) of the client certificate."
    )
    kafka_ssl_key_password: str = _setting(
        "MYSOCIAL_KAFKA_SSL_KEY_PASSWORD",
        "",
        "Password of an encrypted client key; or MYSOCIAL_KAFKA_SSL_KEY_PASSWORD_FILE.",
        secret=True,
    )
    kafka_ssl_key_password_file: str = _setting(
        "MYSOCIAL_KAFKA_SSL_KEY_PASSWORD_FILE", "", "A file holding the client key's password."
    )
    kafka_client_properties: str = _setting(
        "MYSOCIAL_KAFKA_CLIENT_PROPERTIES",
        "",
        "Any other librdkafka properties for every Kafka client, `name=value;name=value` "
        "(e.g. `client.dns.lookup=use_all_dns_ips`). They cannot replace a setting above "
        "nor what a client sets for its own correctness (group, isolation, idempotence).",
    )
    kafka_client_properties_file: str = _setting(
        "MYSOCIAL_KAFKA_CLIENT_PROPERTIES_FILE",
        "",
        "A Java-style .properties file (`name=value` lines, `#` comments) of such "
        "properties; MYSOCIAL_KAFKA_CLIENT_PROPERTIES wins for a name in both.",
    )
    kafka_startup_timeout_s: float = _setting(
        "MYSOCIAL_KAFKA_STARTUP_TIMEOUT_S",
        30.0,
        "How long a service waits at start for the cluster to answer; then (or at once on "
        "refused credentials) it exits with one log line naming the setting to check.",
    )
