"""Keyed hashes under the server secret, for values the store compares but must never reveal: the
idempotency digest of a client's payload, end-user identifiers (user, session, rater) and the ids clients
choose for interactions and events.

Without the secret neither can be brute-forced (an unkeyed SHA-256 of a payload gave back the phone number
it held in under a second); with the same secret, equal inputs give equal hashes, so rows still join.
Identifiers and ids are keyed per tenant (a subkey of the secret per tenant id): one person using two
tenants' apps gets two unrelated pseudonyms, so the tenants' exports cannot be joined on them.
"""

from __future__ import annotations

import hashlib
import hmac
import re
from typing import Any

from tuneloop.store.repository import Tenant, payload_hash

IDENTIFIER_PREFIX = "anon-"
IDENTIFIER_HEX_CHARS = 32  # 128 bits: no collisions among any realistic number of users
REFERENCE_PREFIX = "ref-"
# Ids that cannot spell anything personal stay readable: a UUID (with or without dashes; its version and
# variant digits set, as a generated one has), alone or after one of tuneloop's id prefixes, and tuneloop's
# own keyed ids. Any other id ("jane-doe-7", "555-0142", a name before a UUID) might, and so might bare hex
# of a UUID's length: md5(email) is a common conversation id, the same in every app and open to a dictionary.
_UUID = r"[0-9a-f]{8}(-?)[0-9a-f]{4}\1[1-8][0-9a-f]{3}\1[89ab][0-9a-f]{3}\1[0-9a-f]{12}"
_OPAQUE_ID = re.compile(rf"(?:(?:int|chatcmpl|cmpl)-)?{_UUID}|(?:ref|anon)-[0-9a-f]{{32}}")


def key_scope(tenant: Tenant) -> str | None:
    """What keys `tenant`'s pseudonyms and hash placeholders: its id, or None (the server-wide key) for a
    tenant whose rows were keyed before tenants had their own."""
    return tenant.id if tenant.pseudonyms == "tenant" else None


def _subkey(secret: bytes, purpose: str) -> bytes:
    # One secret, a separate key per use: a digest can never be replayed as an identifier or a placeholder.
    return hmac.new(secret, f"tuneloop/{purpose}".encode(), hashlib.sha256).digest()


class _Mac:
    """HMAC-SHA256 under one key, from a keyed state copied per message: cheaper than keying each time, and
    unlike `hmac.digest` (OpenSSL's one-shot, which drops the GIL on every call) it keeps the GIL, so a
    server thread hashing events never waits a switch interval (5 ms) for another thread to hand it back."""

    def __init__(self, key: bytes) -> None:
        self._keyed = hmac.new(key, digestmod=hashlib.sha256)

    def __call__(self, message: bytes) -> str:
        mac = self._keyed.copy()
        mac.update(message)
        return mac.hexdigest()


class Pseudonyms:
    """Keyed digests and identifier hashes derived from one server secret (`Settings.hash_key()`)."""

    def __init__(self, secret: bytes) -> None:
        if not secret:
            raise ValueError("the server secret is empty")
        self._secret = secret
        self._digest = _Mac(_subkey(secret, "payload-digest"))
        self._identifier = _Mac(_subkey(secret, "identifier"))
        self._reference = _Mac(_subkey(secret, "reference"))
        self._scoped: dict[str, tuple[_Mac, _Mac]] = {}

    def _macs(self, tenant: str | None) -> tuple[_Mac, _Mac]:
        """The identifier and reference keys of `tenant`, or the server-wide ones (None: a tenant whose rows
        were keyed before tenants had their own)."""
        if tenant is None:
            return self._identifier, self._reference
        macs = self._scoped.get(tenant)
        if macs is None:
            macs = self._scoped[tenant] = (
                _Mac(_subkey(self._secret, f"identifier/{tenant}")),
                _Mac(_subkey(self._secret, f"reference/{tenant}")),
            )
        return macs

    def digest(self, payload: dict[str, Any]) -> str:
        """The stored idempotency digest of a client payload: equal payloads match, none can be inverted."""
        return self.rekey(payload_hash(payload))

    def rekey(self, unkeyed: str) -> str:
        """The keyed digest from a payload's plain SHA-256 (the form rows held before migration 0008)."""
        return self._digest(unkeyed.encode())

    def identifier(self, value: str | None, tenant: str | None = None) -> str | None:
        """`anon-` and 32 hex characters for an end-user identifier, keyed for `tenant` (None: server-wide);
        None and "" (anonymous) stay as is."""
        if not value:
            return value
        mac = self._macs(tenant)[0](value.encode("utf-8", "surrogatepass"))
        return IDENTIFIER_PREFIX + mac[:IDENTIFIER_HEX_CHARS]

    def reference(self, value: str, tenant: str | None = None) -> str:
        """A client-chosen interaction or event id as stored (keyed as `identifier` is): opaque ids as they
        are, any other as `ref-` and its keyed hash. Idempotent, so a stored id names the same row as the id
        the client sent."""
        if _OPAQUE_ID.fullmatch(value):
            return value
        mac = self._macs(tenant)[1](value.encode("utf-8", "surrogatepass"))
        return REFERENCE_PREFIX + mac[:IDENTIFIER_HEX_CHARS]
