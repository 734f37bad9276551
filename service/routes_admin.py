"""``/admin/...``: scoped credentials and the audit log (role ``admin``; every route under
``/admin`` needs it, :mod:`service.auth`).

An admin token scoped to some namespaces manages only tokens whose namespaces all lie
within its own, and reads only those namespaces' audit records; a token outside its reach
is "not found", like a task in a namespace it cannot read. Only an admin over ``*``
creates ``*`` tokens.
"""

from __future__ import annotations

from typing import Annotated

import anyio
from fastapi import APIRouter, Path, Query

from service import access, audit
from service.admin_schemas import AuditPage, AuditRecord, TokenCreate, TokenInfo, TokenList, TokenSecret
from service.errors import Forbidden
from service.routes_common import Svc
from service.schemas import ERROR_RESPONSES
from service.tokens import TokenBook, missing

router = APIRouter(prefix="/admin")
TokenId = Annotated[str, Path(min_length=1, max_length=64, description="The token's id.")]


def _token_namespace(namespaces: list[str]) -> str | None:
    """The audit record's namespace for a token: its one namespace, else None (``*`` readers)."""
    return namespaces[0] if len(namespaces) == 1 and namespaces[0] != access.ALL else None


def _book(svc) -> TokenBook:
    svc.engine.require_ready()
    return svc.engine.tokens


def _reachable(svc, token_id: str) -> dict:
    record = _book(svc).get(token_id)
    if not access.current().covers(record["namespaces"]):
        raise missing(token_id)
    return record


@router.post("/tokens", status_code=201, response_model=TokenSecret, responses=ERROR_RESPONSES)
async def create_token(body: TokenCreate, svc: Svc) -> TokenSecret:
    """Create a token with one role over some namespaces; the answer holds the secret, once."""
    principal = access.current()
    if not principal.covers(body.namespaces):
        raise Forbidden(f"this token ({principal.id}) administers {sorted(principal.namespaces)}; it cannot "
                        f"grant {sorted(body.namespaces)}")
    record, token = await anyio.to_thread.run_sync(
        _book(svc).create, body.role, body.namespaces, body.name, principal.id)
    audit.record(svc.engine.store, principal.id, "token_create", namespace=_token_namespace(record["namespaces"]),
                 detail={"token": record["id"], "role": record["role"], "namespaces": record["namespaces"]})
    return TokenSecret(**record, token=token)


@router.get("/tokens", response_model=TokenList, responses=ERROR_RESPONSES)
async def list_tokens(svc: Svc) -> TokenList:
    """The tokens this caller administers (revoked ones too; never a secret or a hash)."""
    principal = access.current()
    records = await anyio.to_thread.run_sync(_book(svc).list)
    return TokenList(tokens=[TokenInfo(**r) for r in records if principal.covers(r["namespaces"])])


@router.post("/tokens/{token_id}/rotate", response_model=TokenSecret, responses=ERROR_RESPONSES)
async def rotate_token(token_id: TokenId, svc: Svc) -> TokenSecret:
    """A new secret for the token; the old one stops working (on every replica within the
    token cache's TTL). The answer holds the new secret, once."""
    principal = access.current()
    await anyio.to_thread.run_sync(_reachable, svc, token_id)
    _, after, token = await anyio.to_thread.run_sync(_book(svc).rotate, token_id)
    audit.record(svc.engine.store, principal.id, "token_rotate", namespace=_token_namespace(after["namespaces"]),
                 detail={"token": token_id})
    return TokenSecret(**after, token=token)


@router.delete("/tokens/{token_id}", response_model=TokenInfo, responses=ERROR_RESPONSES)
async def revoke_token(token_id: TokenId, svc: Svc) -> TokenInfo:
    """Revoke the token (every replica refuses it within the token cache's TTL)."""
    principal = access.current()
    await anyio.to_thread.run_sync(_reachable, svc, token_id)
    after = await anyio.to_thread.run_sync(_book(svc).revoke, token_id)
    audit.record(svc.engine.store, principal.id, "token_revoke", namespace=_token_namespace(after["namespaces"]),
                 detail={"token": token_id})
    return TokenInfo(**after)


@router.get("/audit", response_model=AuditPage, responses=ERROR_RESPONSES)
async def read_audit(
    svc: Svc,
    namespace: Annotated[str | None, Query(max_length=32, description="Only this namespace's records.")] = None,
    since: Annotated[str | None, Query(max_length=40, description="ISO-8601 time: records at or after it.")] = None,
    after: Annotated[str | None, Query(max_length=40, description="The cursor a previous page returned.")] = None,
    limit: Annotated[int, Query(ge=1, le=1000, description="At most this many records (1-1000).")] = 100,
) -> AuditPage:
    """Admin actions, oldest first, of the namespaces this caller administers."""
    principal = access.current()
    records, next_after = await anyio.to_thread.run_sync(
        lambda: audit.read(svc.engine.store, lambda ns: principal.covers([ns]), namespace, since, after, limit))
    return AuditPage(records=[AuditRecord(**r) for r in records], next_after=next_after)
