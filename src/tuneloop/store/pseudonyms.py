"""Keyed hashes under the server secret, for values the store compares but must never reveal: the
idempotency digest of a client's payload and end-user identifiers (user, session, rater).

Without the secret neither can be brute-forced (an unkeyed SHA-256 of a payload gave back the phone number
it held in under a second); with the same secret, equal inputs give equal hashes, so rows still join.
"""

from __future__ import annotations

import hashlib
import hmac
from typing import Any

from tuneloop.store.repository import payload_hash

IDENTIFIER_PREFIX = "anon-"
IDENTIFIER_HEX_CHARS = 32  # 128 bits: no collisions among any realistic number of users


def _subkey(secret: bytes, purpose: str) -> bytes:
    # One secret, a separate key per use: a digest can never be replayed as an identifier or a placeholder.
    return hmac.new(secret, f"tuneloop/{purpose}".encode(), hashlib.sha256).digest()


class Pseudonyms:
    """Keyed digests and identifier hashes derived from one server secret (`Settings.hash_key()`)."""

    def __init__(self, secret: bytes) -> None:
        if not secret:
            raise ValueError("the server secret is empty")
        self._digest_key = _subkey(secret, "payload-digest")
        self._identifier_key = _subkey(secret, "identifier")

    def digest(self, payload: dict[str, Any]) -> str:
        """The stored idempotency digest of a client payload: equal payloads match, none can be inverted."""
        return self.rekey(payload_hash(payload))

    def rekey(self, unkeyed: str) -> str:
        """The keyed digest from a payload's plain SHA-256 (the form rows held before migration 0008)."""
        return hmac.new(self._digest_key, unkeyed.encode(), hashlib.sha256).hexdigest()

    def identifier(self, value: str | None) -> str | None:
        """`anon-` and 32 hex characters for an end-user identifier; None and "" (anonymous) stay as is."""
        if not value:
            return value
        mac = hmac.new(self._identifier_key, value.encode("utf-8", "surrogatepass"), hashlib.sha256)
        return IDENTIFIER_PREFIX + mac.hexdigest()[:IDENTIFIER_HEX_CHARS]
