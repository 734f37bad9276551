"""``adapter.json``: the manifest every Taskswap adapter carries.

Unknown keys are kept and ignored, so an adapter written by a newer version still
loads here (forward compatible); ``format_version`` says which rules applied.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

FORMAT_VERSION = 1
NAME_PATTERN = r"^[a-z0-9][a-z0-9_.-]{0,63}$"


class BackboneRef(BaseModel):
    """Which backbone an adapter was trained on."""

    model_config = ConfigDict(extra="allow")
    name: str = Field(description="Backbone name on the server, e.g. 'text' or 'vision'.")
    fingerprint: str | None = Field(None, description="sha256 of the backbone config + weights.")
    source: str | None = Field(None, description="Where the backbone came from (HF id, folder).")


class HeadSpec(BaseModel):
    """The classification head on pooled backbone features."""

    model_config = ConfigDict(extra="allow")
    pooling: Literal["mean", "cls", "pooler"] = Field(description="How token/pixel features are pooled.")
    input_dim: int = Field(ge=1, description="Width of the pooled features.")
    hidden: list[int] = Field(default_factory=list, description="Hidden layer widths; [] = linear head.")
    activation: Literal["relu", "gelu", "tanh"] = "relu"
    normalize: bool = Field(False, description="L2-normalise pooled features before the head.")

    @model_validator(mode="after")
    def _hidden_positive(self):
        if any(h < 1 for h in self.hidden):
            raise ValueError(f"head.hidden widths must be >= 1, got {self.hidden}")
        return self


class Manifest(BaseModel):
    """The contents of ``adapter.json``."""

    model_config = ConfigDict(extra="allow")
    format_version: int = Field(FORMAT_VERSION, ge=1)
    name: str = Field(pattern=NAME_PATTERN, description="Task name: lowercase, digits, '_', '-', '.'.")
    kind: Literal["head", "lora"]
    task_type: Literal["single_label", "multi_label"] = "single_label"
    labels: list[str] = Field(min_length=1)
    backbone: BackboneRef
    head: HeadSpec
    preprocessing: dict = Field(default_factory=dict,
                                description="Backbone preprocessing it was trained with (image_size, max_length).")
    metrics: dict = Field(default_factory=dict)
    training: dict = Field(default_factory=dict)
    created_at: str | None = None

    @model_validator(mode="after")
    def _labels_ok(self):
        if len(set(self.labels)) != len(self.labels):
            raise ValueError(f"labels must be unique, got {self.labels}")
        if self.task_type == "single_label" and len(self.labels) < 2:
            raise ValueError("a single_label task needs at least 2 labels")
        if self.format_version > FORMAT_VERSION:
            raise ValueError(f"format_version {self.format_version} is newer than this server "
                             f"understands ({FORMAT_VERSION}); upgrade the server")
        return self
