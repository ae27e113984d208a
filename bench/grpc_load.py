"""Unary gRPC load with ghz (the standard Go load tool): same driver for B1 and T1.

ghz is installed by `make bench-tools` (pinned in the Makefile) into .cache/bin.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import tempfile
from pathlib import Path
from typing import Any

from mysocial.config import PROJECT_ROOT

GHZ = PROJECT_ROOT / ".cache" / "bin" / "ghz"
PROTOS = PROJECT_ROOT / "protos"


def ghz_path() -> str:
    if GHZ.exists():
        return str(GHZ)
    found = shutil.which("ghz")
    if not found:
        raise RuntimeError("ghz is missing: run `make bench-tools`")
    return found


def run_ghz(
    addr: str,
    method: str,
    requests: list[dict[str, Any]],
    metadata: dict[str, str] | None = None,
    duration_s: float = 10.0,
    concurrency: int = 64,
    connections: int = 8,
    rps: int = 0,
) -> dict[str, Any]:
    """Run ghz against addr; returns rps, latency percentiles and status counts."""
    with tempfile.TemporaryDirectory() as tmp:
        data = Path(tmp) / "data.json"
        data.write_text(json.dumps(requests))
        cmd = [
            ghz_path(),
            "--insecure",
            "--proto",
            str(PROTOS / "mysocial" / "v1" / "command_service.proto"),
            "--import-paths",
            str(PROTOS),
            "--call",
            method,
            "--data-file",
            str(data),
            "-z",
            f"{duration_s}s",
            "-c",
            str(concurrency),
            "--connections",
            str(connections),
            "--format",
            "json",
            "--timeout",
            "30s",
        ]
        if metadata:
            cmd += ["-m", json.dumps(metadata)]
        if rps:
            cmd += ["--rps", str(rps)]
        cmd.append(addr)
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=duration_s + 120)
    if out.returncode not in (0, 1) or not out.stdout.strip():
        raise RuntimeError(f"ghz failed ({out.returncode}): {out.stderr[-2000:]}")
    report = json.loads(out.stdout)
    lat = {d["percentage"]: d["latency"] / 1e6 for d in report.get("latencyDistribution") or []}
    return {
        "rps": report["rps"],
        "count": report["count"],
        "status": report.get("statusCodeDistribution", {}),
        "errors": report.get("errorDistribution", {}),
        "p50_ms": lat.get(50),
        "p99_ms": lat.get(99),
        "average_ms": report["average"] / 1e6,
    }
