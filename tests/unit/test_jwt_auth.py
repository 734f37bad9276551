"""JWTs from an identity provider: tokens this test signs itself (keys made with
``cryptography``), checked through the same ``Auth.require`` the guard calls."""

from __future__ import annotations

import json
import time

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from pydantic import SecretStr

from adapters.errors import Unauthorized
from service.auth import Auth, authorize
from service.errors import status_for
from service.jwt_auth import JwtVerifier

GRANT = {"role": "register", "namespaces": ["vision"]}


def _pem(private) -> bytes:
    return private.public_key().public_bytes(serialization.Encoding.PEM,
                                             serialization.PublicFormat.SubjectPublicKeyInfo)


@pytest.fixture(scope="module")
def keys():
    return {"rsa": rsa.generate_private_key(public_exponent=65537, key_size=2048),
            "ec": ec.generate_private_key(ec.SECP256R1()),
            "other": rsa.generate_private_key(public_exponent=65537, key_size=2048)}


def _sign(private, alg="RS256", kid=None, **claims) -> str:
    body = {"sub": "ci@vision", "exp": int(time.time()) + 300, "taskswap": GRANT, **claims}
    return jwt.encode({k: v for k, v in body.items() if v is not None}, private, algorithm=alg,
                      headers={"kid": kid} if kid else None)


def _auth(verifier) -> Auth:
    return Auth(SecretStr("a" * 32), SecretStr("i" * 32), jwt=verifier)


def test_a_signed_token_grants_its_claim(keys):
    auth = _auth(JwtVerifier({None: _pem(keys["rsa"])}))
    p = auth.require("admin", f"Bearer {_sign(keys['rsa'])}")
    assert (p.id, p.role, p.namespaces) == ("jwt:ci@vision", "register", frozenset({"vision"}))
    authorize(p, "register", "vision/defects")
    with pytest.raises(Exception) as hidden:
        authorize(p, "infer", "audio/x")
    assert status_for(hidden.value)[0] == 404  # another namespace: the missing task's 404


@pytest.mark.parametrize("case", ["expired", "other_key", "hs256_with_the_public_key", "no_claim",
                                  "bad_role", "no_sub", "wrong_audience", "none_alg"])
def test_bad_tokens_get_401(keys, case):
    pem = _pem(keys["rsa"])
    auth = _auth(JwtVerifier({None: pem}, audience="taskswap"))
    token = {
        "expired": lambda: _sign(keys["rsa"], exp=int(time.time()) - 10, aud="taskswap"),
        "other_key": lambda: _sign(keys["other"], aud="taskswap"),
        "hs256_with_the_public_key": lambda: _hs256(pem),
        "no_claim": lambda: _sign(keys["rsa"], taskswap=None, aud="taskswap"),
        "bad_role": lambda: _sign(keys["rsa"], taskswap={"role": "owner", "namespaces": ["x"]}, aud="taskswap"),
        "no_sub": lambda: _sign(keys["rsa"], sub=None, aud="taskswap"),
        "wrong_audience": lambda: _sign(keys["rsa"], aud="someone-else"),
        "none_alg": lambda: jwt.encode({"sub": "x", "exp": int(time.time()) + 60, "taskswap": GRANT,
                                        "aud": "taskswap"}, None, algorithm="none"),
    }[case]()
    with pytest.raises(Unauthorized) as info:
        auth.require("read", f"Bearer {token}")
    assert status_for(info.value)[0] == 401


def _hs256(secret: bytes) -> str:
    """The classic confusion: an HMAC token keyed with the public key's PEM."""
    import base64
    import hashlib
    import hmac
    enc = lambda b: base64.urlsafe_b64encode(b).rstrip(b"=")  # noqa: E731
    head = enc(json.dumps({"alg": "HS256", "typ": "JWT"}).encode())
    body = enc(json.dumps({"sub": "x", "exp": int(time.time()) + 60, "taskswap": GRANT, "aud": "taskswap"}).encode())
    sig = enc(hmac.new(secret, head + b"." + body, hashlib.sha256).digest())
    return (head + b"." + body + b"." + sig).decode()


def test_jwks_file_picks_the_key_by_kid(keys, tmp_path):
    jwks = {"keys": [
        {**json.loads(jwt.algorithms.RSAAlgorithm.to_jwk(keys["rsa"].public_key())), "kid": "r1", "alg": "RS256"},
        {**json.loads(jwt.algorithms.ECAlgorithm.to_jwk(keys["ec"].public_key())), "kid": "e1", "alg": "ES256"}]}
    path = tmp_path / "jwks.json"
    path.write_text(json.dumps(jwks))
    auth = _auth(JwtVerifier.from_files(None, path, "taskswap", None, None))
    assert auth.require("read", f"Bearer {_sign(keys['ec'], 'ES256', kid='e1')}").role == "register"
    assert auth.require("read", f"Bearer {_sign(keys['rsa'], kid='r1')}").namespaces == frozenset({"vision"})
    for token in (_sign(keys["ec"], "ES256", kid="r1"), _sign(keys["rsa"], kid="nope"), _sign(keys["rsa"])):
        with pytest.raises(Unauthorized):
            auth.require("read", f"Bearer {token}")


def test_without_a_configured_key_a_jwt_is_just_a_wrong_token(keys):
    with pytest.raises(Unauthorized) as info:
        _auth(None).require("read", f"Bearer {_sign(keys['rsa'])}")
    assert info.value.message == "wrong bearer token"
