"""Consistency tokens: which event a command wrote, opaque to clients.

A token names the event's topic, partition and offset plus the post it concerns, so
the query side can wait until exactly that post reflects the event (read-your-writes)
without a global barrier.
"""

from __future__ import annotations

import base64
import binascii
from dataclasses import dataclass

from mysocial.errors import InvalidArgument
from mysocial.ids import is_entity_id

_VERSION = "1"


@dataclass(frozen=True)
class ConsistencyToken:
    topic: str
    partition: int
    offset: int
    post_id: str

    def encode(self) -> str:
        raw = "\x1f".join(
            (_VERSION, self.topic, str(self.partition), str(self.offset), self.post_id)
        )
        return base64.urlsafe_b64encode(raw.encode()).decode().rstrip("=")

    @classmethod
    def decode(cls, token: str) -> ConsistencyToken:
        """Parse a token; InvalidArgument if it was not made by encode()."""
        try:
            raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)).decode()
            version, topic, partition, offset, post_id = raw.split("\x1f")
            token_ = cls(topic, int(partition), int(offset), post_id)
            if version != _VERSION or token_.partition < 0 or token_.offset < 0 or not topic:
                raise ValueError(version)
            if not is_entity_id(post_id):
                raise ValueError(post_id)
            return token_
        except (binascii.Error, UnicodeDecodeError, ValueError):
            raise InvalidArgument(
                "consistency_token is malformed", field="consistency_token"
            ) from None
