"""Type stubs of the compiled processor core (processor/native/src/lib.rs)."""

from collections.abc import Callable, Iterable
from typing import Any

class Core:
    def __init__(
        self,
        topics: list[tuple[str, int]],
        partitions: int,
        half_life_ms: float,
        like_weight: float,
        comment_weight: float,
        max_pending: int,
        names: tuple[str, str, str],
        routes: dict[str, int],
        stops: dict[str, int],
        src_offset: str,
    ) -> None: ...
    def add_task(
        self,
        partition: int,
        store_get: Callable[[bytes], bytes | None],
        known_keys: Iterable[bytes],
    ) -> None: ...
    def remove_task(self, partition: int) -> None: ...
    def has_task(self, partition: int) -> bool: ...
    def process(
        self,
        msgs: list[Any],
        start: int,
        positions: dict[tuple[str, int], int],
        consumed: dict[tuple[str, int], int],
    ) -> tuple[int, int]: ...
    def apply(
        self, partition: int, route: int, offset: int, event: bytes, time_ms: int
    ) -> bool: ...
    def drain_comments(self, partition: int) -> list[tuple[int, str, str, bytes | None]]: ...
    def drain(
        self, partition: int
    ) -> list[tuple[str, bytes | None, bytes, tuple[list[str], list[str]]]]: ...
    def produce_changelog(
        self, partition: int, producer: Any, topic: str, on_delivery: Callable[[Any, Any], None]
    ) -> int: ...
    def write_batch(self, partition: int, batch: Any, prefix: bytes) -> int: ...
    def discard(self, partition: int) -> None: ...
    def trim_cache(self, partition: int, max_posts: int) -> None: ...
    def post(self, partition: int, post_id: str) -> bytes | None: ...
    def stats(self, partition: int) -> dict[str, int]: ...
    def check(
        self, route: int, key: bytes | None, value: bytes, partition: int
    ) -> tuple[str, str, str, str] | None: ...
    def take_warnings(self) -> list[tuple[str, dict[str, str]]]: ...

def murmur2(data: bytes) -> int: ...

MAX_TRACES: int
