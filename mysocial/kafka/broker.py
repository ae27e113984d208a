"""The embedded Kafka: fetch the jars, run one broker or a cluster of N nodes.

The official Apache Kafka jars come from Maven Central (pinned in kafka/pom.xml) into
`.cache/` (mysocial.kafka.node); a cluster of N KRaft nodes is
mysocial.kafka.cluster.EmbeddedCluster, and EmbeddedBroker is its one-node case.

    python -m mysocial.kafka.broker fetch        # download only (idempotent)
    python -m mysocial.kafka.broker run          # MYSOCIAL_KAFKA_BROKERS nodes in the
                                                 # foreground until SIGTERM/Ctrl-C
"""

from __future__ import annotations

import argparse
import signal
import subprocess
import sys
import time
from collections.abc import Mapping
from pathlib import Path

from mysocial.config import Settings
from mysocial.kafka.cluster import EmbeddedCluster
from mysocial.kafka.node import BrokerError as BrokerError
from mysocial.kafka.node import NodeSpec
from mysocial.kafka.node import fetch as fetch
from mysocial.kafka.node import free_port as free_port
from mysocial.kafka.node import free_ports as free_ports
from mysocial.kafka.node import kafka_version as kafka_version
from mysocial.kafka.node import port_is_free as port_is_free
from mysocial.kafka.node import wait_until_serving as wait_until_serving


class EmbeddedBroker(EmbeddedCluster):
    """A single-node KRaft broker on 127.0.0.1 (controller on port+1), data in data_dir."""

    def __init__(
        self,
        port: int,
        data_dir: Path,
        heap: str = "1g",
        overrides: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__([NodeSpec(1, port, port + 1, Path(data_dir))], heap, overrides)
        self.port = port
        self.data_dir = Path(data_dir)
        self.heap = heap

    @property
    def proc(self) -> subprocess.Popen[bytes] | None:
        return self.nodes[1].proc

    @property
    def log_file(self) -> Path:
        return self.nodes[1].log_file


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m mysocial.kafka.broker")
    parser.add_argument("action", choices=["fetch", "run"])
    args = parser.parse_args(argv)
    if args.action == "fetch":
        print(fetch(quiet=False))
        return 0
    cluster = EmbeddedCluster.from_settings(Settings.from_env())
    stop = False

    def on_signal(signum: int, _frame: object) -> None:
        nonlocal stop
        stop = True

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    cluster.start()
    logs = ", ".join(str(n.log_file) for n in cluster.nodes.values())
    print(f"Kafka {kafka_version()} serving on {cluster.bootstrap} (logs: {logs})", flush=True)
    while not stop and len(cluster.running_ids()) == len(cluster.nodes):
        time.sleep(0.2)
    cluster.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
