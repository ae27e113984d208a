"""Caps on concurrent Watch streams: per process and per client.

A stream costs the query service memory and a share of every fan-out; one client
opening thousands (a bug in an app, a script) must not take them from everyone. A
client is the user its bearer token names when the call carries a valid one (reads
need no token; MYSOCIAL_QUERY_MAX_STREAMS_PER_USER), else its network address, with
a larger cap since one address may be a NAT or a proxy in front of many people
(MYSOCIAL_QUERY_MAX_STREAMS_PER_ADDRESS). Past a cap the call fails
RESOURCE_EXHAUSTED at once (reason STREAM_LIMIT, with RetryInfo); the count drops
when a stream ends, however it ends (grpc's done callback).
"""

from __future__ import annotations

from collections import Counter

from mysocial.auth import actor_from_metadata
from mysocial.errors import ResourceExhausted, Unauthenticated
from mysocial.rpc import Ctx

RETRY_AFTER_S = 5.0


class StreamLimits:
    def __init__(self, per_process: int, per_user: int, per_address: int, secret: str) -> None:
        self.per_process = per_process
        self.per_user = per_user
        self.per_address = per_address
        self.secret = secret
        self.open = 0
        self.by_client: Counter[str] = Counter()

    def client_of(self, context: Ctx) -> str:
        try:
            return "user:" + actor_from_metadata(context.invocation_metadata(), self.secret)
        except Unauthenticated:
            peer = context.peer() or "unknown"
            return "peer:" + peer.rsplit(":", 1)[0]  # the address without its port

    def admit(self, context: Ctx) -> None:
        """Count this stream for its client until it ends; ResourceExhausted past a cap."""
        client = self.client_of(context)
        if self.per_process and self.open >= self.per_process:
            raise ResourceExhausted(
                f"this query service instance has {self.open} streams open, its maximum; "
                "retry after the delay in RetryInfo (or on another instance)",
                reason="STREAM_LIMIT",
                retry_after_s=RETRY_AFTER_S,
            )
        cap = self.per_user if client.startswith("user:") else self.per_address
        if cap and self.by_client[client] >= cap:
            raise ResourceExhausted(
                f"{client} has {self.by_client[client]} streams open, the maximum per client; "
                "close one, or retry after the delay in RetryInfo",
                reason="STREAM_LIMIT",
                retry_after_s=RETRY_AFTER_S,
            )
        self.open += 1
        self.by_client[client] += 1

        def release(_: Ctx) -> None:
            self.open -= 1
            self.by_client[client] -= 1
            if self.by_client[client] <= 0:
                del self.by_client[client]

        context.add_done_callback(release)  # type: ignore[arg-type]  # stub: a class, not a Protocol
