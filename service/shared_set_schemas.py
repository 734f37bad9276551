"""Request and response bodies of the ``/shared-sets/...`` routes: a shared adaptation and the
tasks riding on it, switched as one set (docs/multitask.md)."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field


class SetState(BaseModel):
    """One set: a version of the shared adaptation and the version of each task riding on it."""

    adaptation: str = Field(description="The shared adaptation's version (sha256).")
    tasks: dict[str, str] = Field(description="Task name -> its version riding on that adaptation version.")


class SetVersion(BaseModel):
    version: str = Field(description="A stored version of the shared adaptation (sha256).")
    created_at: str
    active: bool = Field(description="Whether it is the adaptation's active version.")
    tasks: dict[str, str] = Field(description=(
        "Tasks with a stored version riding on this adaptation version -> their newest such version."))


class SharedSetInfo(BaseModel):
    name: str = Field(description="The shared adaptation's name.")
    active: SetState = Field(description="The active set, as the tasks' aliases say now.")
    previous: SetState | None = Field(None, description="The set active before the last switch (rollback goes there).")
    pending: SetState | None = Field(None, description=(
        "A switch begun and not settled: one running now, or one a dead process left (undone at the "
        "next start-up or set operation)."))
    versions: list[SetVersion] = Field(description="Every version of the adaptation, oldest first.")


class SharedSetSummary(BaseModel):
    name: str
    active: SetState


class SharedSetList(BaseModel):
    sets: list[SharedSetSummary]


class SetActivateRequest(BaseModel):
    """``{"version": "3f2a9c1e"}`` switches to that adaptation version's set; ``{}`` to the previous set."""

    model_config = ConfigDict(extra="forbid", strict=True)
    version: str | None = Field(None, min_length=8, max_length=64, pattern=r"^[0-9a-f]{8,64}$", description=(
        "A stored version of the shared adaptation (sha256 or a unique prefix of at least 8 hex "
        "characters); omitted: the previous set (rollback)."))
