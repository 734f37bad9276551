"""``GET / PUT / DELETE /admin/namespaces/{namespace}/quota`` (admin): a namespace's quota.

The quota is a store document (:mod:`adapters.quotas`), so every replica applies it: this
process at once, the others within ``TASKSWAP_QUOTA_TTL_S`` plus one watcher interval. PUT
replaces the whole quota (a field left out is no limit); DELETE removes it (no limits,
weight 1). A namespace without a quota is a 404 for GET and DELETE (like a deleted task:
nothing is there). Each answer carries the namespace's usage as this worker sees it.

Who: an admin token over the namespace may read its quota; only an admin over every
namespace (``*``, or the bootstrap admin token) may set or clear one — a team's own admin
cannot raise its limits or its weight. Every change appends an audit record.
"""

from __future__ import annotations

from typing import Annotated

import anyio
from fastapi import APIRouter, Path
from pydantic import BaseModel, Field

from adapters.errors import NotFound
from service import access, audit
from service.errors import Forbidden
from adapters.quota_checks import usage
from adapters.quotas import Quota, check_namespace
from service.routes_common import Svc
from service.schemas import ERROR_RESPONSES

router = APIRouter()


def _may_change() -> str:
    """The caller's id when it may set or clear quotas (an admin over every namespace)."""
    principal = access.current()
    if not (principal.everywhere and principal.has("admin", "default")):
        raise Forbidden(f"this token ({principal.id}) is not an admin over every namespace ('*'); "
                        "only such a token (or the bootstrap admin token) sets or clears quotas")
    return principal.id


def _may_read(namespace: str) -> None:
    principal = access.current()
    if not principal.has("admin", namespace):
        raise Forbidden(f"this token ({principal.id}) is not an admin over namespace {namespace!r}; "
                        "its quota is read by that namespace's admins")
NamespacePath = Annotated[str, Path(min_length=1, max_length=64, description=(
    "Namespace: 'default' holds the unqualified task names."))]


class QuotaUsage(BaseModel):
    tasks: int = Field(description="Tasks the namespace holds (the store, as this worker follows it).")
    stored_bytes: int = Field(description="Bytes of its tasks' stored versions (as recorded at registration).")
    resident_bytes: int = Field(description="Its evictable adapters resident in this worker.")
    jobs: int = Field(description="Its fit/adapt jobs queued or running on this worker.")
    in_flight: int = Field(description="Its requests past admission on this worker now (max_inflight).")


class QuotaInfo(BaseModel):
    namespace: str
    quota: Quota = Field(description="The limits in force (a field that is null: no limit).")
    stored: bool = Field(description="Whether the store holds a quota for it (false: no limits, weight 1).")
    usage: QuotaUsage


def _info(svc, namespace: str, quota: Quota | None) -> QuotaInfo:
    engine = svc.engine
    engine.sync(wait=False)
    registry = engine.registry
    used = usage(registry.table.aliases().items(), namespace)
    with registry.table.lock:
        resident = registry.residency.namespace_bytes().get(namespace, 0)
    return QuotaInfo(namespace=namespace, quota=quota or Quota(), stored=quota is not None,
                     usage=QuotaUsage(tasks=used.tasks, stored_bytes=used.stored_bytes,
                                      resident_bytes=resident, jobs=engine.rollouts.jobs.live(namespace),
                                      in_flight=engine.gate.in_flight(namespace)))


def _stored(svc, namespace: str) -> Quota:
    quota = svc.engine.quotas.read(namespace)
    if quota is None:
        raise NotFound(f"namespace {namespace!r} has no quota (no limits, weight 1); set one with "
                       f"PUT /admin/namespaces/{namespace}/quota")
    return quota


@router.get("/admin/namespaces/{namespace}/quota", response_model=QuotaInfo, responses=ERROR_RESPONSES)
async def get_quota(namespace: NamespacePath, svc: Svc) -> QuotaInfo:
    """(admin) The namespace's quota and usage; 404 when it has no quota (no limits, weight 1)."""
    svc.engine.require_ready()
    namespace = check_namespace(namespace)
    _may_read(namespace)

    def get() -> QuotaInfo:
        return _info(svc, namespace, _stored(svc, namespace))
    return await anyio.to_thread.run_sync(get)


@router.put("/admin/namespaces/{namespace}/quota", response_model=QuotaInfo, responses=ERROR_RESPONSES)
async def set_quota(namespace: NamespacePath, body: Quota, svc: Svc) -> QuotaInfo:
    """(admin) Replace the namespace's quota (fields left out: no limit). Existing tasks and
    versions stay when a new limit is below the usage; new registrations are refused."""
    svc.engine.require_ready()
    namespace = check_namespace(namespace)
    who = _may_change()

    def put() -> QuotaInfo:
        quota = svc.engine.quotas.set(namespace, body)
        audit.record(svc.engine.store, who, "quota-set", namespace=namespace,
                     detail=quota.model_dump(exclude_none=True))
        with svc.engine.registry.table.lock:  # a smaller resident share applies at once
            svc.engine.registry.residency.fit(keep=None)
        return _info(svc, namespace, quota)
    return await anyio.to_thread.run_sync(put)


@router.delete("/admin/namespaces/{namespace}/quota", response_model=QuotaInfo, responses=ERROR_RESPONSES)
async def clear_quota(namespace: NamespacePath, svc: Svc) -> QuotaInfo:
    """(admin) Remove the namespace's quota: no limits, weight 1 (404 when it has none)."""
    svc.engine.require_ready()
    namespace = check_namespace(namespace)
    who = _may_change()

    def clear() -> QuotaInfo:
        _stored(svc, namespace)
        svc.engine.quotas.clear(namespace)
        audit.record(svc.engine.store, who, "quota-clear", namespace=namespace)
        return _info(svc, namespace, None)
    return await anyio.to_thread.run_sync(clear)
