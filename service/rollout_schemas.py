"""Request and response models of the fit-job and rollout endpoints."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, WithJsonSchema, model_validator

from adapters.format.manifest import GenerationSpec

Promote = Literal["active", "shadow", "canary", "if_better"]


class FitOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")
    hidden: list[int] = Field(default_factory=list, max_length=4, description=(
        "MLP hidden widths, e.g. [256]; [] = a linear head (as `taskswap train --hidden`)."))
    val_fraction: float = Field(0.2, ge=0.05, le=0.9, description="Share of each class held out for validation (0.05-0.9).")
    epochs: int | None = Field(None, ge=1, le=2000, description="Epoch cap (default 200, early stopping).")
    seed: int = Field(0, ge=0, le=2**31 - 1)
    # ge, not gt: an exclusive bound is draft-2020 syntax in this OpenAPI 3.0 schema (schemathesis refuses it)
    lr: float | None = Field(None, ge=1e-8, le=1, description="Generation (LoRA): learning rate, 1e-8 to 1 (default 1e-3).")
    lora_r: int | None = Field(None, ge=1, le=256, description="Generation: LoRA rank (default 8).")
    max_minutes: float | None = Field(None, ge=0.01, le=600, description=(
        "Generation: wall-clock budget of the LoRA training (the job's own timeout still applies)."))

    @model_validator(mode="after")
    def _widths(self):
        if any(not 1 <= h <= 4096 for h in self.hidden):
            raise ValueError(f"hidden widths must be between 1 and 4096, got {self.hidden}")
        return self


class ChatMessage(BaseModel):
    model_config = ConfigDict(extra="forbid")
    role: Literal["system", "user", "assistant"]
    content: str = Field(max_length=100_000)


class FitExample(BaseModel):
    """One generation example: ``prompt`` + ``completion``, or a chat whose last message is the
    assistant's answer (the completion)."""

    model_config = ConfigDict(extra="forbid")
    prompt: str | None = Field(None, max_length=100_000)
    completion: str | None = Field(None, min_length=1, max_length=100_000)
    messages: list[ChatMessage] | None = Field(None, min_length=2, max_length=64)

    @model_validator(mode="after")
    def _one_shape(self):
        if self.messages is not None:
            if self.prompt is not None or self.completion is not None:
                raise ValueError("send 'messages' or 'prompt' and 'completion', not both")
            if self.messages[-1].role != "assistant" or not self.messages[-1].content:
                raise ValueError("the last message must be the assistant's (non-empty): it is the completion")
            if not any(m.role == "user" for m in self.messages[:-1]):
                raise ValueError("the chat has no user message before the assistant's answer")
        elif self.prompt is None or self.completion is None:
            raise ValueError("send 'prompt' and a non-empty 'completion', or 'messages'")
        return self


class FitRequest(BaseModel):
    """Labelled examples: ``texts`` or base64 ``images``, and one label per example; or, for a
    generation task, ``examples`` (prompt/completion or chat) and its ``generation`` settings."""

    model_config = ConfigDict(extra="forbid")
    texts: list[str] | None = Field(None, min_length=1)
    images: list[str] | None = Field(None, min_length=1, description="Base64-encoded images.")
    examples: list[FitExample] | None = Field(None, min_length=2, description=(
        "Generation: examples to train a LoRA on the language model (``backbone``, default the "
        "first one served)."))
    # validated as a GenerationSpec, shown as an object: GenerationSpec's top_p > 0 is an
    # exclusive bound, draft-2020 syntax that this OpenAPI 3.0 schema must not carry
    generation: Annotated[GenerationSpec | None, WithJsonSchema(
        {"anyOf": [{"type": "object"}, {"type": "null"}]})] = Field(None, description=(
            "Generation: the task's prompt settings (template, chat format, stops, limits: the "
            "fields of a generation task's `generation` manifest entry, docs/generation.md)."))
    labels: list[str] | None = Field(None, min_length=1, description="One label name per example (texts, images).")
    label_names: list[str] | None = Field(None, min_length=2, description=(
        "Label order of the head (default: sorted label names)."))
    backbone: str | None = Field(None, description=(
        "Backbone to fit on (default: the task's current backbone, else the first of the data's modality)."))
    options: FitOptions = Field(default_factory=FitOptions)
    promote: Promote = Field("active", description=(
        "'active': serve it at once; 'shadow' / 'canary': a candidate beside the active version; "
        "'if_better': active only if its validation accuracy beats the active version's on the "
        "same validation examples."))
    canary_fraction: float = Field(0.1, ge=0.001, le=1, description="With promote='canary': share of requests (0.001-1).")

    @model_validator(mode="after")
    def _one_input_kind(self):
        if sum(x is not None for x in (self.texts, self.images, self.examples)) != 1:
            raise ValueError("send exactly one of 'texts', 'images' or 'examples'")
        if self.examples is not None:
            if self.labels is not None or self.label_names is not None:
                raise ValueError("generation examples carry their completions; omit 'labels' and 'label_names'")
            return self
        if self.generation is not None:
            raise ValueError("'generation' settings go with 'examples' (a generation task), not labels")
        if self.labels is None:
            raise ValueError("give 'labels': one label name per example")
        n = len(self.texts if self.texts is not None else self.images)
        if n != len(self.labels):
            raise ValueError(f"{n} examples but {len(self.labels)} labels; give one label per example")
        if any(not lab for lab in self.labels):
            raise ValueError("labels must be non-empty strings")
        return self


class AdaptRequest(BaseModel):
    """Unlabelled target-domain inputs (``texts`` or base64 ``images``) to adapt the task's
    active version to; optionally a few labelled target examples, used only for scoring."""

    model_config = ConfigDict(extra="forbid")
    texts: list[str] | None = Field(None, min_length=20, description="Unlabelled target texts (at least 20).")
    images: list[str] | None = Field(None, min_length=20, description="Unlabelled base64 target images (at least 20).")
    method: Literal["coral", "pseudo_label", "label_shift", "coral+label_shift", "pseudo_label+label_shift"] = Field(
        "coral", description=(
            "'coral': align the target's pooled-feature statistics to the source's, folded into the head "
            "(a head adapter; serves at zero extra cost). 'pseudo_label': a LoRA on the trunk self-trained "
            "on the target inputs under the frozen source head (a LoRA adapter; single-label tasks; "
            "its rows cost their own adapted trunk pass). 'label_shift': the target class prior "
            "re-estimated by EM over the head's calibrated posteriors, folded into its bias (a head "
            "adapter; single-label tasks whose head recorded its calibration). 'coral+label_shift', "
            "'pseudo_label+label_shift': the first method, then the prior correction."))
    shrinkage: float = Field(0.1, ge=0, le=10, description="coral: covariance shrinkage (times the mean variance).")
    epochs: int = Field(2, ge=1, le=20, description="pseudo_label: passes over the target inputs.")
    lr: float = Field(5e-4, ge=1e-6, le=0.1, description="pseudo_label: the LoRA factors' learning rate.")
    keep_fraction: float = Field(0.5, ge=0.01, le=1, description=(
        "pseudo_label: per predicted class, the most confident share of the target inputs kept as pseudo-labels."))
    em_iterations: int = Field(100, ge=1, le=10000, description=(
        "label_shift: at most this many EM iterations for the target class prior."))
    source_texts: list[str] | None = Field(None, min_length=2, description=(
        "The source task's training texts: needed only when its adapter records no feature statistics."))
    source_images: list[str] | None = Field(None, min_length=2, description="As source_texts, for images.")
    val_texts: list[str] | None = Field(None, min_length=1, description="Labelled target texts, for scoring only.")
    val_images: list[str] | None = Field(None, min_length=1, description="Labelled target images, for scoring only.")
    val_labels: list[str] | None = Field(None, min_length=1, description="One label per val_texts/val_images.")
    promote: Promote = Field("shadow", description=(
        "'shadow' (default) / 'canary': a candidate beside the active version; 'active': serve it at once; "
        "'if_better': active only if it beats the active version on the labelled target examples "
        "(val_texts or val_images + val_labels, required)."))
    canary_fraction: float = Field(0.1, ge=0.001, le=1, description="With promote='canary': share of requests (0.001-1).")

    @model_validator(mode="after")
    def _consistent(self):
        if (self.texts is None) == (self.images is None):
            raise ValueError("send exactly one of 'texts' or 'images' (the unlabelled target inputs)")
        text = self.texts is not None
        if (self.source_images if text else self.source_texts) is not None or \
                (self.val_images if text else self.val_texts) is not None:
            raise ValueError("source_* and val_* inputs must be of the same kind as the target inputs "
                             f"({'texts' if text else 'images'})")
        val = self.val_texts if text else self.val_images
        if (val is None) != (self.val_labels is None):
            raise ValueError("send val_labels together with val_texts or val_images (one label per example)")
        if val is not None and len(val) != len(self.val_labels):
            raise ValueError(f"{len(val)} labelled target examples but {len(self.val_labels)} val_labels")
        if self.promote == "if_better" and val is None:
            raise ValueError("promote='if_better' needs labelled target examples to compare on: send "
                             "val_texts (or val_images) and val_labels, or use 'shadow' / 'canary'")
        return self


class JobInfo(BaseModel):
    """A fit or adapt job: where it is, and (once done) what it produced."""

    id: str
    kind: Literal["fit", "adapt"] = "fit"
    task: str
    status: Literal["queued", "running", "succeeded", "failed"]
    phase: str = Field(description="queued, starting, loading_backbone, fitting (adapt: adapting), comparing, registering, done.")
    promote: Promote
    examples: int
    created_at: str
    started_at: str | None = None
    finished_at: str | None = None
    replica_id: str = Field(description="The replica/worker that runs the job.")
    heartbeat_at: str | None = Field(None, description=(
        "When its worker last renewed the job's lease (queued/running jobs)."))
    lease_s: float | None = Field(None, description=(
        "A queued/running job with no renewal for this long is marked failed ('WorkerLost')."))
    result: dict[str, Any] | None = Field(None, description=(
        "On success: version, role (active/shadow/canary/none), promoted, metrics, comparison "
        "(adapt jobs: and adaptation, the record in the new version's manifest)."))
    error: dict[str, Any] | None = Field(None, description=(
        "On failure: error kind (e.g. 'WorkerLost' when its worker died), message, problems."))


class RolloutRequest(BaseModel):
    """Put a stored version of the task in shadow or canary."""

    model_config = ConfigDict(extra="forbid", strict=True)
    version: str = Field(min_length=8, max_length=64, description="Candidate version (sha256 or unique prefix).")
    mode: Literal["shadow", "canary"]
    fraction: float = Field(0.0, ge=0, le=1, description="canary: share of requests the candidate answers.")

    @model_validator(mode="after")
    def _fraction(self):
        if self.mode == "canary" and self.fraction <= 0:
            raise ValueError("a canary needs a fraction above 0, e.g. 0.1")
        if self.mode == "shadow" and self.fraction:
            raise ValueError("a shadow answers no request: leave fraction out")
        return self


class ShadowReport(BaseModel):
    active_version: str
    candidate_version: str
    rows: int = Field(description="Rows scored by both versions on this replica/worker.")
    agreement: float | None = Field(description="Share of rows where both chose the same top label "
                                                "(generation tasks: the same tokens).")
    mean_abs_delta_top_score: float | None
    added_seconds_per_row: float | None = Field(description="Candidate's compute per compared row.")
    added_seconds_total: float
    extra_trunk_rows: int = Field(description="Trunk rows run only for the candidate (LoRA candidates).")
    confusion: dict[str, dict[str, int]] = Field(description=(
        "active label -> candidate label -> rows (20 labels per side, the rest 'other')."))
    mean_token_agreement: float | None = Field(None, description=(
        "Generation tasks: mean share of token positions where both generated the same token "
        "(agreement is then the share of generations with the same tokens)."))
    candidate_tokens: int | None = Field(None, description="Generation tasks: tokens the candidate generated.")
    skipped: int | None = Field(None, description=(
        "Generation tasks: generations the candidate did not run beside the caller's (no spare room in "
        "the decode engine, preempted by a caller's sequence, or the caller went away)."))


class HeadlineComparison(BaseModel):
    headline: str = Field(description="The manifest metric compared, e.g. val_accuracy, val_r2, val_token_accuracy.")
    headline_name: str = Field(description="The metric in words (accuracy, R², token accuracy).")
    higher_is_better: bool
    active: float | None = Field(description="The active version's recorded value (its own validation data).")
    candidate: float | None = Field(description="The candidate's recorded value (its own validation data).")
    candidate_better: bool | None = Field(description="Whether the candidate's value beats the active one's "
                                                      "in the metric's direction; null when one is missing.")


class RolloutInfo(BaseModel):
    task: str
    active_version: str
    mode: Literal["none", "shadow", "canary"]
    candidate_version: str | None = None
    fraction: float | None = None
    updated_at: str | None = None
    replica_id: str
    routing_header: str = Field(description="Header whose value keeps a caller on one version.")
    shadow: list[ShadowReport] = Field(default_factory=list, description=(
        "Comparisons this replica/worker has seen for the task (one per active/candidate pair)."))
    headline: HeadlineComparison | None = Field(None, description=(
        "With a candidate: both versions' validation headline as their manifests record it (the task "
        "type's: accuracy, R², token accuracy...), compared in its direction."))


class PromoteResponse(BaseModel):
    task: str
    active_version: str
    previous_version: str
