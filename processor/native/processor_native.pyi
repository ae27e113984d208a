"""Type stubs of the compiled processor core (processor/native/src/lib.rs)."""

from collections.abc import Callable, Iterable
from typing import Any

ROUTE_POSTS: int
ROUTE_CANDIDATES: int
ROUTE_POSTS_BY_ID: int
ROUTE_LIKES: int
ROUTE_COMMENTS: int
DONE: int
STOP_ERROR: int
STOP_POSTS: int
STOP_CANDIDATES: int
STOP_PYTHON: int

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
    def drain(self, partition: int) -> list[tuple[str, bytes | None, bytes]]: ...
    def produce_changelog(
        self, partition: int, producer: Any, topic: str, on_delivery: Callable[[Any, Any], None]
    ) -> int: ...
    def write_batch(self, partition: int, batch: Any, prefix: bytes) -> int: ...
    def discard(self, partition: int) -> None: ...
    def trim_cache(self, partition: int, max_posts: int) -> None: ...
    def post(self, partition: int, post_id: str) -> bytes | None: ...
    def stats(self, partition: int) -> tuple[int, int, int, int, int, int]: ...
    def take_warnings(self) -> list[tuple[str, dict[str, str]]]: ...

def murmur2(data: bytes) -> int: ...
def check(
    route: int, key: bytes | None, value: bytes, partition: int, partitions: int
) -> tuple[str, str, str, str] | None: ...
