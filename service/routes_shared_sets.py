"""``/shared-sets/...``: a shared adaptation and the tasks riding on it, read and switched as
one set (docs/multitask.md).

- ``GET /shared-sets``: every shared adaptation the caller can read, with its active set;
- ``GET /shared-sets/{name}``: one, with the set record (active, previous, pending) and every
  version of the adaptation with the tasks riding on it;
- ``POST /shared-sets/{name}/activate`` (role ``register`` on the adaptation and on every
  task of the set): ``{"version": ...}`` switches to that adaptation version's set, ``{}``
  to the previous set (rollback); all or none; audited (``shared_set_activate``).

The 404 rule of the task routes holds (:mod:`service.access`): a caller that cannot read the
adaptation's namespace gets the body of one that is not registered; tasks of namespaces it
cannot read are left out of what it sees. Registering the adaptation and its tasks is
``POST /adapters`` (one archive each); a new version of a set is ``POST /shared-sets``.
"""

from __future__ import annotations

import asyncio
from typing import Annotated

import anyio
from fastapi import APIRouter, Path, Request

from service import audit, task_paths  # noqa: F401  (task_paths: the {name:task} convertor)
from adapters.errors import InvalidInput
from service.access import current
from service.request_limits import MAX_TASK_NAME_CHARS
from service.routes_common import Svc
from service.schemas import ERROR_RESPONSES
from service.shared_set_schemas import SetActivateRequest, SharedSetInfo, SharedSetList, SharedSetSummary
from service.upload_form import read_file

router = APIRouter(prefix="/shared-sets")
MAX_HEADS = 64  # task archives in one set registration
_REGISTER_BODY = {"requestBody": {"required": True, "content": {"multipart/form-data": {"schema": {
    "type": "object", "required": ["file"], "properties": {
        "file": {"type": "string", "format": "binary", "description": (
            "zip or tar.gz of the shared adaptation's new version (kind shared_lora; its adapter.json names it)")},
        "heads": {"type": "array", "maxItems": MAX_HEADS, "items": {"type": "string", "format": "binary"},
                  "description": ("zip or tar.gz of a task riding on it with a new head (kind multitask), "
                                  "one per task; tasks not given carry their head over")}}}}}}}
SetName = Annotated[str, Path(min_length=1, max_length=MAX_TASK_NAME_CHARS,
                              description="The shared adaptation's name (team/name in a namespace).")]


@router.get("", response_model=SharedSetList, responses=ERROR_RESPONSES)
async def list_sets(svc: Svc) -> SharedSetList:
    """Every shared adaptation this caller can read, with the tasks riding on its active version."""
    sets = await anyio.to_thread.run_sync(svc.engine.shared_sets)
    return SharedSetList(sets=[SharedSetSummary(**s) for s in sets])


@router.post("", status_code=201, response_model=SharedSetInfo, responses=ERROR_RESPONSES,
             openapi_extra=_REGISTER_BODY)
async def register_set(request: Request, svc: Svc) -> SharedSetInfo:
    """(register) A new version of a registered shared adaptation and a new version of every
    task riding on it, switched as one set (all or none): multipart ``file`` = the
    adaptation's archive, ``heads`` = task archives with new heads (optional). The caller
    needs ``register`` on the adaptation and on every task riding on it."""
    svc.engine.require_ready()
    principal = current()
    form = await request.form(max_files=1 + MAX_HEADS, max_fields=4)
    try:
        data = await read_file(form, "the shared adaptation's archive",
                               "curl -F file=@base.zip [-F heads=@task.zip ...]", "an uploaded archive is empty")
        heads = []
        for i, h in enumerate(form.getlist("heads")):
            if isinstance(h, str):
                raise InvalidInput(f"multipart field heads[{i}] must be a file (a task's archive), not text")
            heads.append(await h.read())
        unknown = sorted(set(form.keys()) - {"file", "heads"})
        if unknown:
            raise InvalidInput(f"multipart fields {unknown} are unknown; send 'file' and optional 'heads'")
    finally:
        await form.close()
    if not all(heads):
        raise InvalidInput("an uploaded archive is empty")

    def authorize(task: str) -> None:
        principal.check("register", task)
    job = svc.engine.submit_registration(svc.engine.register_shared_set, data, heads, authorize)
    before, doc = await asyncio.shield(asyncio.wrap_future(job))
    name, after = doc["name"], doc["active"]
    audit.record(svc.engine.store, principal.id, "shared_set_register", name, before=before["adaptation"],
                 after=after["adaptation"],
                 detail={"heads_uploaded": len(heads),
                         "tasks": {t: {"before": before["tasks"].get(t), "after": v} for t, v in after["tasks"].items()}})
    return SharedSetInfo(**await anyio.to_thread.run_sync(svc.engine.shared_set, name))


# Before the show route: ``{name:path}`` would match ``team/base/activate`` too.
@router.post("/{name:path}/activate", response_model=SharedSetInfo, responses=ERROR_RESPONSES)
async def activate_set(name: SetName, body: SetActivateRequest, svc: Svc) -> SharedSetInfo:
    """(register) Switch the adaptation and every task riding on it to the set of adaptation
    ``version`` (omitted: the previous set), all or none: a task with no version on it is a
    409 and nothing moves."""
    principal = current()
    before, doc = await anyio.to_thread.run_sync(svc.engine.activate_shared_set, name, body.version)
    after = doc["active"]
    audit.record(svc.engine.store, principal.id, "shared_set_activate", name, before=before["adaptation"],
                 after=after["adaptation"],
                 detail={"rollback": body.version is None,
                         "tasks": {t: {"before": before["tasks"].get(t), "after": v} for t, v in after["tasks"].items()}})
    return SharedSetInfo(**await anyio.to_thread.run_sync(svc.engine.shared_set, name))


@router.get("/{name:task}", response_model=SharedSetInfo, responses=ERROR_RESPONSES)
async def show_set(name: SetName, svc: Svc) -> SharedSetInfo:
    """One shared adaptation: its active, previous and pending sets and every version with its tasks."""
    return SharedSetInfo(**await anyio.to_thread.run_sync(svc.engine.shared_set, name))
