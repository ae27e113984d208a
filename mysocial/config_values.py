"""Turning environment strings into setting values, and the error that names a bad one.

Kept apart from mysocial.config (which re-exports them) so the settings class stays
the list of settings.
"""

from __future__ import annotations

from dataclasses import field
from pathlib import Path
from typing import Any

PROJECT_ROOT = Path(__file__).resolve().parent.parent

__all__ = ["PROJECT_ROOT", "ConfigError", "parse_value", "read_secret", "setting", "split_addr"]


class ConfigError(ValueError):
    """A setting has a value that cannot be used."""


def parse_value(name: str, raw: str, default: Any) -> Any:
    try:
        if isinstance(default, bool):
            return raw.strip().lower() in ("1", "true", "yes", "on")
        if isinstance(default, int):
            return int(raw)
        if isinstance(default, float):
            return float(raw)
    except ValueError as exc:
        raise ConfigError(f"{name}={raw!r} is not a valid {type(default).__name__}") from exc
    return raw


def read_secret(path: str) -> str:
    """The secret in a `*_FILE` setting's file ("" when unset); a final newline is not
    part of it (`echo secret > file` adds one)."""
    return Path(path).read_text().rstrip("\r\n") if path else ""


def split_addr(addr: str, what: str = "address") -> tuple[str, int]:
    """Split ``host:port``; raises ConfigError naming the setting when malformed."""
    host, sep, port = addr.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 <= int(port) < 65536:
        raise ConfigError(f"{what} must look like host:port, got {addr!r}")
    return host, int(port)


def setting(
    env: str, default: Any, doc: str, *, aliases: tuple[str, ...] = (), secret: bool = False
) -> Any:
    """A field read from `env` (or a renamed setting's older names in `aliases`); a
    secret is left out of the repr, so it never reaches a log line."""
    return field(
        default=default, repr=not secret, metadata={"env": env, "doc": doc, "aliases": aliases}
    )
