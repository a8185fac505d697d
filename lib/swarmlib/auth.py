"""The one secret-checking rule of swarmd and gatewayd.

- ``bearer_ok``: ``Authorization: Bearer <token>``. The scheme name is case-insensitive
  (RFC 9110, section 11.1), so ``bearer`` and ``BEARER`` are accepted; spaces around the token
  are ignored. No token configured means open (the daemon warned once at start).
- ``secret_in``: a presented secret against every configured key (rotation lists), each
  compared with ``hmac.compare_digest`` and all of them always tried, so the time taken does
  not tell which key, or how much of one, matched. An empty secret never matches.
"""

from __future__ import annotations

import hmac
from collections.abc import Iterable


def secret_in(keys: Iterable[str | bytes], presented: str | None) -> bool:
    if not presented:
        return False
    candidate = presented.encode("utf-8", "surrogateescape")
    matched = False
    for k in keys:
        kb = k if isinstance(k, bytes) else k.encode("utf-8", "surrogateescape")
        matched |= hmac.compare_digest(candidate, kb)
    return matched


def bearer_token(header: str | None) -> str | None:
    """The token of an ``Authorization: Bearer`` header, or None."""
    if not header:
        return None
    scheme, _, token = header.strip().partition(" ")
    if scheme.lower() != "bearer":
        return None
    token = token.strip()
    return token or None


def bearer_ok(expected: str, header: str | None) -> bool:
    if not expected:
        return True
    return secret_in([expected], bearer_token(header))
