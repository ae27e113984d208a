"""Settings: the one place that reads environment variables.

Every process builds one frozen :class:`Settings` at start-up and passes it down, so
a value cannot change under a running service and tests can build their own.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, fields, replace
from typing import Any

from mysocial import settings_doc
from mysocial.config_kafka import KafkaSettings
from mysocial.config_values import PROJECT_ROOT as PROJECT_ROOT
from mysocial.config_values import ConfigError as ConfigError
from mysocial.config_values import parse_value
from mysocial.config_values import read_secret as read_secret
from mysocial.config_values import setting as _setting
from mysocial.config_values import split_addr as split_addr
from mysocial.settings_doc import Setting

DEV_JWT_SECRET = "mysocial-dev-secret-do-not-use-in-production"
DAY_MS = 24 * 60 * 60 * 1000


@dataclass(frozen=True)
class Settings(KafkaSettings):
    """All configuration, with documented defaults (see docs/SETTINGS.md); where Kafka
    is and how to log in to it are in KafkaSettings."""

    topic_namespace: str = _setting(
        "MYSOCIAL_TOPIC_NAMESPACE",
        "",
        "Prefix for every topic and consumer group (e.g. 'staging.'); empty in production "
        "so the topics carry their contract names.",
    )
    replication_factor: int = _setting(
        "MYSOCIAL_REPLICATION_FACTOR",
        0,
        "Replication factor of every topic the project creates; 0 = min(3, live brokers "
        "in the cluster's metadata). Provisioning stops at an existing topic with fewer "
        "replicas and prints the reassignment that adds them.",
    )
    min_insync_replicas: int = _setting(
        "MYSOCIAL_MIN_INSYNC_REPLICAS",
        0,
        "`min.insync.replicas` of every topic the project creates: an acks=all write fails "
        "(NOT_ENOUGH_REPLICAS) rather than be acknowledged by fewer in-sync replicas. 0 = "
        "2 when the topic's replication factor is 3 or more, else 1. Provisioning stops at "
        "an existing topic with another value and prints the kafka-configs command.",
    )
    posts_partitions: int = _setting("MYSOCIAL_POSTS_PARTITIONS", 32, "Partitions of `posts`.")
    copartitions: int = _setting(
        "MYSOCIAL_COPARTITIONS",
        48,
        "Partitions of `likes`, `comments`, `posts_with_counts` and the processor's "
        "internal topics: they are co-partitioned by post id, so one count serves all "
        "(the older name MYSOCIAL_LIKES_PARTITIONS still works).",
        aliases=("MYSOCIAL_LIKES_PARTITIONS",),
    )
    engagement_retention_ms: int = _setting(
        "MYSOCIAL_ENGAGEMENT_RETENTION_MS", 7 * DAY_MS, "retention.ms of `likes` and `comments`."
    )
    command_addr: str = _setting(
        "MYSOCIAL_COMMAND_ADDR", "127.0.0.1:50051", "Listen address of the command service."
    )
    query_addr: str = _setting(
        "MYSOCIAL_QUERY_ADDR", "127.0.0.1:50052", "Listen address of the query service."
    )
    metrics_addr: str = _setting(
        "MYSOCIAL_METRICS_ADDR",
        "",
        "host:port where this process serves Prometheus metrics (`/metrics`) and HTTP "
        "liveness and readiness (`/healthz`, `/readyz`); empty: the service's default "
        "(command 127.0.0.1:9464, query :9465, processor :9466, `processor audit --every` "
        ":9467); `off`: none.",
    )
    otlp_endpoint: str = _setting(
        "MYSOCIAL_OTLP_ENDPOINT",
        "",
        "OTLP/HTTP traces endpoint (e.g. `http://127.0.0.1:4318/v1/traces`) that receives "
        "OpenTelemetry spans of command calls, processor commits and stream deliveries; "
        "empty: no spans (the correlation ids and traceparents travel regardless).",
    )
    command_workers: int = _setting(
        "MYSOCIAL_COMMAND_WORKERS",
        0,
        "Command service processes sharing the port (SO_REUSEPORT); 0 = number of cores.",
    )
    command_max_in_flight: int = _setting(
        "MYSOCIAL_COMMAND_MAX_IN_FLIGHT",
        1000,
        "Commands one worker handles at once; past it a new one is refused at once "
        "(RESOURCE_EXHAUSTED, reason OVERLOADED, with RetryInfo) instead of queueing "
        "until its deadline, so accepted commands keep a bounded latency. 0: no bound.",
    )
    quota_points: int = _setting(
        "MYSOCIAL_QUOTA_POINTS",
        300,
        "Per-user write budget, in points (CreatePost 3, AddComment 2, other commands 1); "
        "past it RESOURCE_EXHAUSTED with RetryInfo and QuotaFailure. 0: no quota. "
        "Shared by the workers (command_service/quota.py says why these defaults).",
    )
    quota_refill_per_s: float = _setting(
        "MYSOCIAL_QUOTA_REFILL_PER_S", 1.0, "Points a user's write budget gets back per second."
    )
    quota_hold_s: float = _setting(
        "MYSOCIAL_QUOTA_HOLD_S",
        1.0,
        "A user's first refusal over quota is answered at once; one for a call sent "
        "before the RetryInfo time it was given is held until the points are back, at "
        "most this long (within the call's deadline), so a client that does not back off "
        "sends one call per held call, not hundreds a second. 0: never hold.",
    )
    upload_quota: int = _setting(
        "MYSOCIAL_UPLOAD_QUOTA", 30, "Uploads a user may make in a burst (0: no quota)."
    )
    upload_refill_s: float = _setting(
        "MYSOCIAL_UPLOAD_REFILL_S", 60.0, "Seconds until a user gets one more upload back."
    )
    command_state_dir: str = _setting(
        "MYSOCIAL_COMMAND_STATE_DIR",
        "",
        "Where command workers keep their directory of posts and comments (RocksDB, a "
        "cache of the topics), each in the first free `<namespace>command-<n>` under it; "
        "empty: MYSOCIAL_PROCESSOR_STATE_DIR.",
    )
    command_directory_cache: int = _setting(
        "MYSOCIAL_COMMAND_DIRECTORY_CACHE",
        200_000,
        "Directory entries (posts and comments) a command worker keeps in memory, the most "
        "recently used (~150 B each); lookups of the others read its RocksDB.",
    )
    jwt_secret: str = _setting(
        "MYSOCIAL_JWT_SECRET",
        "",
        "HS256 secret of bearer tokens (`sub` = user id, `exp` enforced); or "
        "MYSOCIAL_JWT_SECRET_FILE. Empty: the public development secret, which the command "
        "service accepts only with MYSOCIAL_DEV_MODE=1.",
        secret=True,
    )
    jwt_secret_file: str = _setting(
        "MYSOCIAL_JWT_SECRET_FILE", "", "A file holding the JWT secret (final newline ignored)."
    )
    dev_mode: bool = _setting(
        "MYSOCIAL_DEV_MODE",
        False,
        "Development: allows the development JWT secret. `make run` and the tests set it; "
        "never set it in production.",
    )
    tls_cert_path: str = _setting(
        "MYSOCIAL_TLS_CERT_PATH",
        "",
        "Certificate chain (PEM) both gRPC services serve TLS with; empty: plaintext "
        "(`make run`, or behind a proxy that terminates TLS).",
    )
    tls_key_path: str = _setting(
        "MYSOCIAL_TLS_KEY_PATH", "", "Private key (PEM, unencrypted) of that certificate."
    )
    tls_client_ca_path: str = _setting(
        "MYSOCIAL_TLS_CLIENT_CA_PATH",
        "",
        "Mutual TLS: CA certificates (PEM) of client certificates; set, a call without a "
        "client certificate signed by one of them is refused.",
    )
    token_ttl_s: int = _setting(
        "MYSOCIAL_TOKEN_TTL_S", 24 * 3600, "Lifetime of tokens minted by `mysocial token`."
    )
    max_caption_chars: int = _setting(
        "MYSOCIAL_MAX_CAPTION_CHARS", 2200, "Longest caption accepted (Unicode code points)."
    )
    max_comment_chars: int = _setting(
        "MYSOCIAL_MAX_COMMENT_CHARS", 1000, "Longest comment accepted (Unicode code points)."
    )
    media_dir: str = _setting(
        "MYSOCIAL_MEDIA_DIR",
        str(PROJECT_ROOT / ".cache" / "media"),
        "Where uploaded images are stored (content-addressed, `ab/cd/<sha256>/`); the "
        "command and query services must share it.",
    )
    media_max_bytes: int = _setting(
        "MYSOCIAL_MEDIA_MAX_BYTES",
        10 * 1024 * 1024,
        "Largest image upload accepted, in bytes; larger ones fail with RESOURCE_EXHAUSTED "
        "as soon as the declared or received size passes it.",
    )
    media_max_pixels: int = _setting(
        "MYSOCIAL_MEDIA_MAX_PIXELS",
        40_000_000,
        "Most pixels (width x height) an uploaded image may have; checked from the header "
        "before decoding, so decompression bombs cost nothing.",
    )
    produce_timeout_s: float = _setting(
        "MYSOCIAL_PRODUCE_TIMEOUT_S",
        10.0,
        "Longest a command waits for the broker's acknowledgement (the call's deadline "
        "applies first); past it the call fails with UNAVAILABLE.",
    )
    grace_period_s: float = _setting(
        "MYSOCIAL_GRACE_PERIOD_S", 10.0, "SIGTERM: how long in-flight RPCs may take to finish."
    )
    processor_instance_id: str = _setting(
        "MYSOCIAL_PROCESSOR_INSTANCE_ID",
        "0",
        "Stable identity of a processor instance: its two transactional ids "
        "(`<group>.<id>`, `<group>.<id>.txn1`) and its state folder derive from it. Give "
        "each concurrently running instance its own; a restarted instance must reuse its "
        "id so its unfinished transactions are aborted at once.",
    )
    processor_state_dir: str = _setting(
        "MYSOCIAL_PROCESSOR_STATE_DIR",
        str(PROJECT_ROOT / ".cache" / "processor-state"),
        "Where processor instances keep their local RocksDB (a cache of the changelogs).",
    )
    query_state_dir: str = _setting(
        "MYSOCIAL_QUERY_STATE_DIR",
        "",
        "Where query replicas keep their read models (RocksDB, a cache of the topics: a restart "
        "replays only what is new), each in `<namespace>query-<replica id>`; empty: "
        "MYSOCIAL_PROCESSOR_STATE_DIR.",
    )
    query_replica_id: str = _setting(
        "MYSOCIAL_QUERY_REPLICA_ID", "0", "Names a query replica's state folder: one per replica."
    )
    query_max_streams: int = _setting(
        "MYSOCIAL_QUERY_MAX_STREAMS",
        20_000,
        "Watch streams one query service process serves at once; past it new ones are "
        "refused at once (RESOURCE_EXHAUSTED, reason STREAM_LIMIT, with RetryInfo). 0: none.",
    )
    query_max_streams_per_user: int = _setting(
        "MYSOCIAL_QUERY_MAX_STREAMS_PER_USER",
        100,
        "Watch streams open at once per user (calls with a valid bearer token). 0: no cap.",
    )
    query_max_streams_per_address: int = _setting(
        "MYSOCIAL_QUERY_MAX_STREAMS_PER_ADDRESS",
        2_000,
        "Watch streams open at once per client address without a token (larger: one "
        "address may be a NAT or proxy in front of many people). 0: no cap.",
    )
    query_cache_posts: int = _setting(
        "MYSOCIAL_QUERY_CACHE_POSTS", 50_000, "Posts a query replica keeps in memory (~1 KiB each)."
    )
    processor_commit_interval_ms: int = _setting(
        "MYSOCIAL_PROCESSOR_COMMIT_INTERVAL_MS",
        100,
        "How often the processor commits its transaction: lower = fresher counts, "
        "higher = more coalescing and throughput.",
    )
    processor_catchup_commit_interval_ms: int = _setting(
        "MYSOCIAL_PROCESSOR_CATCHUP_COMMIT_INTERVAL_MS",
        1000,
        "Commit interval while working through a backlog (consume returns full batches): "
        "fewer, larger transactions; live traffic keeps the commit interval above.",
    )
    processor_batch_size: int = _setting(
        "MYSOCIAL_PROCESSOR_BATCH_SIZE", 10000, "Most records the processor takes per consume()."
    )
    processor_core: str = _setting(
        "MYSOCIAL_PROCESSOR_CORE",
        "native",
        "The processor's per-event rules: 'native' (compiled, processor/native) or "
        "'python' (processor/rules.py, the tested reference; a few times slower).",
    )
    processor_cache_mb: int = _setting(
        "MYSOCIAL_PROCESSOR_CACHE_MB", 64, "RocksDB block cache of a processor instance."
    )
    processor_session_timeout_ms: int = _setting(
        "MYSOCIAL_PROCESSOR_SESSION_TIMEOUT_MS",
        10000,
        "Consumer group session timeout: how soon a dead instance's partitions move.",
    )
    processor_transaction_timeout_ms: int = _setting(
        "MYSOCIAL_PROCESSOR_TRANSACTION_TIMEOUT_MS",
        10000,
        "Broker aborts a processor transaction left open this long (a killed instance).",
    )
    processor_offsets_wait_ms: int = _setting(
        "MYSOCIAL_PROCESSOR_OFFSETS_WAIT_MS",
        120000,
        "How long new tasks wait for committed offsets (a cluster down, an open "
        "transaction) before the instance stops, saying why.",
    )
    trending_half_life_s: float = _setting(
        "MYSOCIAL_TRENDING_HALF_LIFE_S", 3600.0, "Half-life of an engagement's weight in the score."
    )
    trending_like_weight: float = _setting(
        "MYSOCIAL_TRENDING_LIKE_WEIGHT", 1.0, "Weight of a user who likes a post."
    )
    trending_comment_weight: float = _setting(
        "MYSOCIAL_TRENDING_COMMENT_WEIGHT",
        3.0,
        "Weight of a user who has a live comment on a post (instead of the like weight).",
    )
    trending_min_users: int = _setting(
        "MYSOCIAL_TRENDING_MIN_USERS",
        3,
        "Distinct users (author excluded) a post needs before it can trend.",
    )
    trending_horizon_s: float = _setting(
        "MYSOCIAL_TRENDING_HORIZON_S",
        48 * 3600.0,
        "A post whose newest counted engagement is older than this leaves trending.",
    )
    trending_top_k: int = _setting("MYSOCIAL_TRENDING_TOP_K", 50, "Length of the ranking.")
    trending_interval_ms: int = _setting(
        "MYSOCIAL_TRENDING_INTERVAL_MS",
        1000,
        "How often the ranking is recomputed (scores decay even without events).",
    )
    log_format: str = _setting(
        "MYSOCIAL_LOG_FORMAT", "console", "`console` (readable) or `json` (one object per line)."
    )
    log_level: str = _setting("MYSOCIAL_LOG_LEVEL", "info", "debug, info, warning or error.")

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Settings:
        """Build settings from environment variables, falling back to the defaults."""
        env = os.environ if env is None else env
        values: dict[str, Any] = {}
        for f in fields(cls):
            name = f.metadata["env"]
            raw = env.get(name)
            for alias in f.metadata["aliases"]:
                if raw is None or raw == "":
                    name, raw = alias, env.get(alias)
            if raw is None or raw == "":
                continue
            values[f.name] = parse_value(name, raw, f.default)
        settings = cls(**values)
        settings.validate()
        return settings

    def validate(self) -> None:
        """Reject values that would only fail later, with the variable's name."""
        for f in fields(self):
            value = getattr(self, f.name)
            if isinstance(value, int | float) and not isinstance(value, bool) and value < 0:
                raise ConfigError(f"{f.metadata['env']} must not be negative, got {value}")
        at_least_1 = ("posts_partitions", "copartitions", "kafka_brokers", "media_max_bytes")
        for name in (*at_least_1, "media_max_pixels"):
            if getattr(self, name) < 1:
                raise ConfigError(f"{_env_name(name)} must be at least 1")
        if self.log_format not in ("console", "json"):
            raise ConfigError(
                f"MYSOCIAL_LOG_FORMAT must be console or json, not {self.log_format!r}"
            )
        for name in ("command_addr", "query_addr"):
            split_addr(getattr(self, name), _env_name(name))
        if self.metrics_addr not in ("", "off"):
            split_addr(self.metrics_addr, "MYSOCIAL_METRICS_ADDR")
        if self.processor_core not in ("native", "python"):
            raise ConfigError(
                f"MYSOCIAL_PROCESSOR_CORE must be native or python, not {self.processor_core!r}"
            )
        if 0 < self.replication_factor < self.min_insync_replicas:
            raise ConfigError(
                f"MYSOCIAL_MIN_INSYNC_REPLICAS={self.min_insync_replicas} exceeds "
                f"MYSOCIAL_REPLICATION_FACTOR={self.replication_factor}: no write could succeed"
            )
        # Files named by settings; Kafka security combinations: mysocial.kafka.connection.
        secrets = {f.name for f in fields(self) if not f.repr}
        for f in fields(self):
            env, value = f.metadata["env"], getattr(self, f.name)
            if env.endswith(("_PATH", "_FILE")) and value and not os.access(value, os.R_OK):
                raise ConfigError(f"{env}={value!r}: no readable file there")
            secret = f.name.removesuffix("_file")
            if value and secret != f.name and secret in secrets and getattr(self, secret):
                raise ConfigError(f"set {env.removesuffix('_FILE')} or {env}, not both")
        if bool(self.tls_cert_path) != bool(self.tls_key_path) or (
            self.tls_client_ca_path and not self.tls_cert_path
        ):
            raise ConfigError(
                "MYSOCIAL_TLS_CERT_PATH and MYSOCIAL_TLS_KEY_PATH go together, and "
                "MYSOCIAL_TLS_CLIENT_CA_PATH needs them"
            )

    def with_(self, **changes: Any) -> Settings:
        """Return a copy with some values changed (tests, sub-processes)."""
        out = replace(self, **changes)
        out.validate()
        return out

    def to_env(self) -> dict[str, str]:
        """Environment variables reproducing these settings in a child process."""
        return {f.metadata["env"]: str(getattr(self, f.name)) for f in fields(self)}

    @property
    def bootstrap(self) -> str:
        """Bootstrap servers: the configured cluster or the embedded broker."""
        if self.kafka_bootstrap_servers:
            return self.kafka_bootstrap_servers
        ports = (self.kafka_port + 2 * i for i in range(self.kafka_brokers))
        return ",".join(f"127.0.0.1:{port}" for port in ports)

    @property
    def embedded_broker(self) -> bool:
        """True when the project itself must run the broker."""
        return not self.kafka_bootstrap_servers

    @property
    def effective_jwt_secret(self) -> str:
        """The configured secret (or its file's), else the public development one."""
        return self.jwt_secret or read_secret(self.jwt_secret_file) or DEV_JWT_SECRET

    @property
    def uses_dev_jwt_secret(self) -> bool:
        return not (self.jwt_secret or self.jwt_secret_file)

    @property
    def effective_command_workers(self) -> int:
        return self.command_workers or (os.cpu_count() or 1)

    def topic(self, name: str) -> str:
        """Full topic name for a contract name such as ``posts``."""
        return f"{self.topic_namespace}{name}"


def _env_name(attr: str) -> str:
    return str(Settings.__dataclass_fields__[attr].metadata["env"])


def documented_settings() -> list[Setting]:
    """Every setting with its default and meaning, for docs and `mysocial settings`."""
    return [Setting(f.metadata["env"], str(f.default), f.metadata["doc"]) for f in fields(Settings)]


def settings_markdown() -> str:
    """The settings table of docs/SETTINGS.md (kept in sync by `python -m mysocial.config`)."""
    return settings_doc.markdown(documented_settings())


if __name__ == "__main__":
    done = "updated" if settings_doc.sync(documented_settings()) else "already up to date"
    print(f"{settings_doc.SETTINGS_DOC.relative_to(PROJECT_ROOT)} {done}")
