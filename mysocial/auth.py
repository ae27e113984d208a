"""Bearer tokens: HS256 JWTs whose `sub` claim is the acting user's id.

The command service never trusts a user id in a request body; the actor is whatever
a valid, unexpired token signed with the shared secret says.
"""

from __future__ import annotations

import time
from collections.abc import Iterable

import jwt

from mysocial.errors import Unauthenticated
from mysocial.ids import is_user_id

ALGORITHM = "HS256"


def mint_token(user_id: str, secret: str, ttl_s: int = 24 * 3600, now: float | None = None) -> str:
    """A signed token for user_id valid for ttl_s seconds (development and tests)."""
    if not is_user_id(user_id):
        raise ValueError(f"invalid user id {user_id!r}")
    issued = int(time.time() if now is None else now)
    return jwt.encode({"sub": user_id, "iat": issued, "exp": issued + ttl_s}, secret, ALGORITHM)


class TokenCache:
    """Verified tokens → (user id, expiry), so a client's every call does not pay for
    HMAC and JSON again (a token is reused for hours). Expiry is checked on each hit;
    only tokens that verified are cached, keyed by their exact text and secret."""

    def __init__(self, size: int = 50_000) -> None:
        self.size = size
        self.entries: dict[tuple[str, str], tuple[str, float]] = {}

    def verify(self, token: str, secret: str) -> str:
        key = (token, secret)
        hit = self.entries.get(key)
        if hit is not None:
            if time.time() < hit[1]:
                return hit[0]
            del self.entries[key]
            raise Unauthenticated("bearer token expired")
        user_id, expires = _verify(token, secret)
        if len(self.entries) >= self.size:
            self.entries.pop(next(iter(self.entries)))
        self.entries[key] = (user_id, expires)
        return user_id


_CACHE = TokenCache()


def verify_token(token: str, secret: str) -> str:
    """Return the token's user id; raise Unauthenticated saying what is wrong."""
    return _CACHE.verify(token, secret)


def _verify(token: str, secret: str) -> tuple[str, float]:
    try:
        claims = jwt.decode(
            token, secret, algorithms=[ALGORITHM], options={"require": ["exp", "sub"]}
        )
    except jwt.ExpiredSignatureError:
        raise Unauthenticated("bearer token expired") from None
    except jwt.InvalidSignatureError:
        raise Unauthenticated("bearer token signature is invalid") from None
    except jwt.MissingRequiredClaimError as exc:
        raise Unauthenticated(f"bearer token lacks the {exc.claim!r} claim") from None
    except jwt.InvalidTokenError:
        raise Unauthenticated("bearer token is malformed") from None
    user_id = claims.get("sub")
    if not isinstance(user_id, str) or not is_user_id(user_id):
        raise Unauthenticated("bearer token subject is not a valid user id")
    return user_id, float(claims["exp"])


def actor_from_metadata(metadata: Iterable[tuple[str, str | bytes]] | None, secret: str) -> str:
    """The user id of an `authorization: Bearer <token>` metadata entry."""
    for key, value in metadata or ():
        if key.lower() != "authorization":
            continue
        text = value.decode() if isinstance(value, bytes) else value
        scheme, _, token = text.strip().partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise Unauthenticated("authorization metadata must be 'Bearer <token>'")
        return verify_token(token.strip(), secret)
    raise Unauthenticated("missing authorization metadata (expected 'Bearer <token>')")
