"""Request rules of the read side as plain functions: page sizes, page tokens, ids.

Page tokens (AIP-158) are opaque to clients: base64 of the position of the last item
returned plus the filter it was issued for. Paging resumes strictly after that
position in the newest-first order, so new posts arriving meanwhile can neither
repeat an item nor hide one that existed when paging started.
"""

from __future__ import annotations

import base64
import binascii

from mysocial import ids
from mysocial.errors import InvalidArgument
from query_service.models import FeedKey

DEFAULT_PAGE_SIZE = 20
MAX_PAGE_SIZE = 100
MAX_BATCH = 100


def page_size(value: int, field: str = "page_size") -> int:
    """0 means the default, negative is invalid, too large is capped."""
    if value < 0:
        raise InvalidArgument(f"{field} must not be negative, got {value}", field=field)
    if value == 0:
        return DEFAULT_PAGE_SIZE
    return min(value, MAX_PAGE_SIZE)


def encode_page_token(kind: str, scope: str, key: FeedKey) -> str:
    raw = f"1\x1f{kind}\x1f{scope}\x1f{key[0]}\x1f{key[1]}"
    return base64.urlsafe_b64encode(raw.encode()).decode().rstrip("=")


def decode_page_token(token: str, kind: str, scope: str) -> FeedKey | None:
    """The cursor of a token issued for the same listing (kind and scope), or None."""
    if not token:
        return None
    try:
        raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)).decode()
        version, got_kind, got_scope, position, item_id = raw.split("\x1f")
        if version != "1" or not ids.is_entity_id(item_id):
            raise ValueError(raw)
        cursor = (int(position), item_id)
    except (binascii.Error, UnicodeDecodeError, ValueError):
        raise InvalidArgument("page_token is malformed", field="page_token") from None
    if (got_kind, got_scope) != (kind, scope):
        raise InvalidArgument(
            "page_token was issued for a different listing (filters must not change while paging)",
            field="page_token",
        )
    return cursor


post_id = ids.require_entity_id


def author_id(value: str, field: str = "author_id") -> str:
    if value and not ids.is_user_id(value):
        raise InvalidArgument(f"{field} is not a valid user id", field=field)
    return value


def post_ids(values: list[str], field: str = "post_ids", limit: int = MAX_BATCH) -> list[str]:
    """Validated, de-duplicated ids in request order."""
    if not values:
        raise InvalidArgument(f"{field} must name at least one post", field=field)
    if len(values) > limit:
        raise InvalidArgument(f"{field} has {len(values)} ids; at most {limit}", field=field)
    seen: dict[str, None] = {}
    for i, value in enumerate(values):
        seen[post_id(value, f"{field}[{i}]")] = None
    return list(seen)


def limit(value: int, field: str = "limit") -> int:
    if value < 0:
        raise InvalidArgument(f"{field} must not be negative, got {value}", field=field)
    return value
