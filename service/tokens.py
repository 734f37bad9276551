"""Scoped credentials kept in the store, so every replica sees them.

A token reads ``tsw_<id>_<secret>``: ``id`` (16 hex characters) names its record,
``meta/tokens/<id>.json`` (one store document, found without scanning), and ``secret`` (32
random bytes, URL-safe base64) is shown once, at creation or rotation. The record keeps
only a salted hash of the secret (``hashlib.scrypt``, n=2**14, r=8, p=1; a new 16-byte
salt per secret), the role, the namespaces, a label and timestamps; a revoked token's
record stays with ``revoked_at`` set, for the audit trail.

**Convergence.** Each process caches a record for ``ttl_s`` (``TASKSWAP_TOKEN_TTL_S``),
an unknown id included. A token created, rotated or revoked on one replica is seen by
every other within ``ttl_s`` (the replica that made the change sees it at once). A
verified secret is remembered with the record's hash, so scrypt runs once per token and
record version, not per request.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
import threading
import time
from datetime import datetime, timezone

from adapters.errors import InvalidInput, NotFound
from adapters.store.base import AdapterStore
from service.access import ALL, ROLES, Principal

PREFIX = "tsw_"
_TOKEN = re.compile(r"^tsw_([0-9a-f]{16})_([A-Za-z0-9_-]{43})$")
_ID = re.compile(r"^[0-9a-f]{16}$")
_SCRYPT = {"n": 2 ** 14, "r": 8, "p": 1, "dklen": 32}


def _now() -> str:
    return datetime.now(timezone.utc).isoformat()


def _hash(secret: str, salt: bytes) -> str:
    return hashlib.scrypt(secret.encode(), salt=salt, maxmem=64 << 20, **_SCRYPT).hex()


def looks_scoped(token: str) -> bool:
    """Whether ``token`` has the shape of a scoped token (``tsw_<id>_<secret>``)."""
    return token.startswith(PREFIX)


def public(record: dict) -> dict:
    """A record without its hash and salt: what the admin API shows."""
    return {k: v for k, v in record.items() if k not in ("hash", "salt")}


class TokenBook:
    """``TokenBook(store, ttl_s=5).create("infer", ["vision"], "ci")`` → (record, token)."""

    def __init__(self, store: AdapterStore, ttl_s: float = 5.0):
        self.store = store
        self.ttl_s = ttl_s
        self._records: dict[str, tuple[float, dict | None]] = {}  # id -> (read at, record or None)
        self._verified: dict[str, str] = {}  # sha256(token) -> the record hash it matched
        self._lock = threading.Lock()

    # ---- verification (the request path) ------------------------------------------------
    def principal(self, token: str) -> Principal | None:
        """The principal of a valid, unrevoked token, or None. Store reads and scrypt may
        block: call it off the event loop unless :meth:`cached` answered."""
        m = _TOKEN.fullmatch(token)
        if m is None:
            return None
        record = self._record(m.group(1))
        if record is None or record.get("revoked_at"):
            return None
        digest = hashlib.sha256(token.encode()).hexdigest()
        if self._verified.get(digest) != record["hash"]:
            if not hmac.compare_digest(_hash(m.group(2), bytes.fromhex(record["salt"])), record["hash"]):
                return None
            self._verified[digest] = record["hash"]
        return Principal(record["id"], record["role"], frozenset(record["namespaces"]))

    def cached(self, token: str) -> bool:
        """True when :meth:`principal` would answer from memory (no store read, no scrypt)."""
        m = _TOKEN.fullmatch(token)
        if m is None:
            return True
        hit = self._records.get(m.group(1))
        if hit is None or time.monotonic() - hit[0] > self.ttl_s:
            return False
        record = hit[1]
        return record is None or bool(record.get("revoked_at")) or \
            self._verified.get(hashlib.sha256(token.encode()).hexdigest()) == record["hash"]

    def _record(self, token_id: str) -> dict | None:
        hit = self._records.get(token_id)
        if hit is not None and time.monotonic() - hit[0] <= self.ttl_s:
            return hit[1]
        record = self.store.get_document(f"tokens/{token_id}")
        with self._lock:
            if len(self._records) > 100_000:  # a flood of made-up ids must not grow memory
                self._records.clear()
            self._records[token_id] = (time.monotonic(), record)
        return record

    # ---- the admin verbs ----------------------------------------------------------------
    def create(self, role: str, namespaces: list[str], name: str, by: str) -> tuple[dict, str]:
        """Store a new token's record; returns (its public record, the token, shown once)."""
        check_grant(role, namespaces)
        token_id = secrets.token_hex(8)
        secret = secrets.token_urlsafe(32)
        salt = secrets.token_bytes(16)
        record = {"id": token_id, "name": name, "role": role, "namespaces": sorted(set(namespaces)),
                  "created_at": _now(), "created_by": by, "rotated_at": None, "revoked_at": None,
                  "salt": salt.hex(), "hash": _hash(secret, salt)}
        if not self.store.create_document(f"tokens/{token_id}", record):
            raise InvalidInput("a token id collided; retry")  # 64 random bits: never in practice
        self._forget(token_id)
        return public(record), f"{PREFIX}{token_id}_{secret}"

    def rotate(self, token_id: str) -> tuple[dict, dict, str]:
        """A new secret for the token (the old one stops working); returns (before, after, token)."""
        secret = secrets.token_urlsafe(32)
        salt = secrets.token_bytes(16)
        before: list[dict] = []

        def change(record: dict | None) -> dict:
            if record is None or record.get("revoked_at"):
                raise missing(token_id)
            before.append(record)
            return {**record, "salt": salt.hex(), "hash": _hash(secret, salt), "rotated_at": _now()}
        after = self.store.update_document(f"tokens/{self._id(token_id)}", change)
        self._forget(token_id)
        return public(before[-1]), public(after), f"{PREFIX}{token_id}_{secret}"

    def revoke(self, token_id: str) -> dict:
        """Mark the token revoked (its record stays, without a usable hash)."""
        def change(record: dict | None) -> dict:
            if record is None or record.get("revoked_at"):
                raise missing(token_id)
            return {**record, "hash": "", "revoked_at": _now()}
        after = self.store.update_document(f"tokens/{self._id(token_id)}", change)
        self._forget(token_id)
        return public(after)

    def get(self, token_id: str) -> dict:
        record = self.store.get_document(f"tokens/{self._id(token_id)}")
        if record is None:
            raise missing(token_id)
        return public(record)

    def list(self) -> list[dict]:
        """Every token's public record (revoked ones included), by creation time."""
        records = [self.store.get_document(k) for k in self.store.list_documents("tokens")]
        return sorted((public(r) for r in records if r is not None), key=lambda r: r["created_at"])

    def _id(self, token_id: str) -> str:
        if not isinstance(token_id, str) or not _ID.fullmatch(token_id):
            raise missing(token_id)
        return token_id

    def _forget(self, token_id: str) -> None:
        with self._lock:
            self._records.pop(token_id, None)


def missing(token_id: str) -> NotFound:
    return NotFound(f"token {str(token_id)[:40]!r} does not exist (GET /admin/tokens lists them)")


def check_grant(role: str, namespaces: list[str]) -> None:
    """A grant's role is one of :data:`ROLES`; its namespaces are names or ``*``."""
    problems = []
    if role not in ROLES:
        problems.append(f"role {role!r} is unknown: use one of {', '.join(ROLES)}")
    if not namespaces:
        problems.append("namespaces is empty: name at least one namespace, or '*' for all")
    bad = [n for n in namespaces if n != ALL and not re.fullmatch(r"[a-z0-9][a-z0-9_.-]{0,31}", n)]
    if bad:
        problems.append(f"namespaces {bad[:5]} are invalid: 1-32 lowercase letters, digits, '_', '-' "
                        "or '.', or '*' for all")
    if problems:
        raise InvalidInput("; ".join(problems), problems)
