"""Bearer JWTs from an identity provider (optional), verified with PyJWT.

Configured by ``TASKSWAP_JWT_PUBLIC_KEY_FILE`` (one PEM public key) or
``TASKSWAP_JWT_JWKS_FILE`` (a JSON Web Key Set; a token's ``kid`` picks the key), with
``TASKSWAP_JWT_AUDIENCE`` / ``TASKSWAP_JWT_ISSUER`` when the provider sets them. Only
RS256 and ES256 are accepted (never ``none`` or an HMAC algorithm, so a public key can not
be used as a shared secret); ``exp`` and ``sub`` are required.

The claim named by ``TASKSWAP_JWT_CLAIM`` (default ``taskswap``) grants the role, the same
grant a scoped token holds::

    {"sub": "ci@vision", "exp": ..., "taskswap": {"role": "register", "namespaces": ["vision"]}}

The caller's id (audit records, errors) is ``jwt:<sub>``. Keys are read once, at start-up;
rotating the provider's keys means updating the file and restarting.
"""

from __future__ import annotations

import json
from pathlib import Path

import jwt

from adapters.errors import InvalidInput
from service.access import Principal
from service.tokens import check_grant

ALGORITHMS = ["RS256", "ES256"]


class JwtVerifier:
    """``JwtVerifier({None: pem_bytes}, "taskswap").principal(token)`` → a Principal or None."""

    def __init__(self, keys: dict, claim: str = "taskswap", audience: str | None = None,
                 issuer: str | None = None):
        self.keys = keys  # kid (None: the one key of a PEM file) -> key
        self.claim = claim
        self.audience = audience
        self.issuer = issuer

    @classmethod
    def from_files(cls, public_key_file: Path | None, jwks_file: Path | None, claim: str,
                   audience: str | None, issuer: str | None) -> "JwtVerifier | None":
        """The verifier the settings describe, or None when no key is configured."""
        if public_key_file is not None:
            return cls({None: Path(public_key_file).read_bytes()}, claim, audience, issuer)
        if jwks_file is not None:
            try:
                keys = jwt.PyJWKSet.from_dict(json.loads(Path(jwks_file).read_text()))
            except (ValueError, jwt.PyJWTError) as exc:
                raise InvalidInput(f"TASKSWAP_JWT_JWKS_FILE {str(jwks_file)!r} is not a usable JWKS: {exc}") from exc
            return cls({k.key_id: k.key for k in keys.keys}, claim, audience, issuer)
        return None

    def principal(self, token: str) -> Principal | None:
        """The token's grant if its signature, algorithm, expiry, audience, issuer and claim
        all check out; None otherwise (the guard answers 401)."""
        try:
            header = jwt.get_unverified_header(token)
            key = self.keys.get(header.get("kid")) if len(self.keys) > 1 else next(iter(self.keys.values()))
            if key is None or header.get("alg") not in ALGORITHMS:
                return None
            claims = jwt.decode(token, key, algorithms=ALGORITHMS, audience=self.audience, issuer=self.issuer,
                                options={"require": ["exp", "sub"], "verify_aud": self.audience is not None})
            grant = claims.get(self.claim)
            if not isinstance(grant, dict):
                return None
            role, namespaces = grant.get("role"), grant.get("namespaces")
            if not isinstance(role, str) or not isinstance(namespaces, list) or \
                    not all(isinstance(n, str) for n in namespaces):
                return None
            check_grant(role, namespaces)
        except (jwt.PyJWTError, InvalidInput, ValueError, TypeError):
            return None
        return Principal(f"jwt:{str(claims['sub'])[:80]}", role, frozenset(namespaces))


def looks_like_jwt(token: str) -> bool:
    """Three base64url parts: ``header.payload.signature``."""
    return token.count(".") == 2 and not token.startswith("tsw_")
