"""Request and response bodies of the ``/admin/...`` routes (credentials, the audit log)."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field

NamespaceName = Annotated[str, Field(min_length=1, max_length=32, pattern=r"^(\*|[a-z0-9][a-z0-9_.-]{0,31})$")]


class TokenCreate(BaseModel):
    """``{"name": "vision-ci", "role": "register", "namespaces": ["vision"]}``"""

    model_config = ConfigDict(extra="forbid")
    name: str = Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9][A-Za-z0-9 _.-]{0,63}$",
                      description="A label for people (who holds it, what for).")
    role: Literal["infer", "register", "admin"] = Field(description=(
        "infer: predict and read; register: also change tasks; admin: also manage tokens and "
        "read the audit log of its namespaces."))
    namespaces: list[NamespaceName] = Field(min_length=1, max_length=32, description=(
        "Namespaces the role holds in ('default' is the namespace of bare task names); '*' = all."))


class TokenInfo(BaseModel):
    id: str = Field(description="The token's id (the part after 'tsw_'); not a secret.")
    name: str
    role: str
    namespaces: list[str]
    created_at: str
    created_by: str
    rotated_at: str | None = None
    revoked_at: str | None = None


class TokenSecret(TokenInfo):
    token: str = Field(description="The bearer token. Shown once: it is stored only as a salted hash.")


class TokenList(BaseModel):
    tokens: list[TokenInfo]


class AuditRecord(BaseModel):
    id: str = Field(description="Sortable id (time + random): pass it as 'after' to page on.")
    at: str
    who: str = Field(description="A token id, or 'bootstrap-admin'.")
    what: str
    namespace: str | None = None
    task: str | None = None
    before: str | None = Field(None, description="The active version before the action, if any.")
    after: str | None = Field(None, description="The active (or candidate) version after it, if any.")
    detail: dict[str, Any] = Field(default_factory=dict)


class AuditPage(BaseModel):
    records: list[AuditRecord]
    next_after: str | None = Field(None, description="Pass as 'after' for the next page; null at the end.")
