"""What every long-running process does first: read its settings, set up logging and
check the Kafka cluster. A wrong value ends the process there with one log line that
names the variable, and a non-zero exit code, instead of a traceback or a hang."""

from __future__ import annotations

import os
import sys

from mysocial import log as logconf
from mysocial.config import ConfigError, Settings
from mysocial.kafka.preflight import preflight
from mysocial.metrics import MetricsServer
from mysocial.metrics import serve as serve_metrics


def settings_or_exit(component: str) -> Settings:
    """The settings from the environment, logging configured; exit 2 if one is invalid."""
    try:
        settings = Settings.from_env()
    except ConfigError as exc:
        fmt = "json" if os.environ.get("MYSOCIAL_LOG_FORMAT") == "json" else "console"
        logconf.configure("info", fmt, component)
        logconf.get_logger("startup").error("invalid_setting", error=str(exc))
        sys.exit(2)
    logconf.configure(settings.log_level, settings.log_format, component)
    return settings


def kafka_or_exit(settings: Settings) -> None:
    """Return once the cluster answers with these settings; otherwise exit (the check
    logged the one line saying which setting to look at)."""
    code = preflight(settings)
    if code:
        sys.exit(code)


def metrics_or_exit(settings: Settings, service: str) -> MetricsServer | None:
    """Serve /metrics, /healthz and /readyz (mysocial.metrics); exit 2 with one line
    when the address cannot be bound."""
    try:
        return serve_metrics(settings, service)
    except OSError as exc:
        logconf.get_logger("startup").error("metrics_unavailable", error=str(exc))
        sys.exit(2)
