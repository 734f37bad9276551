"""Request and response models of the HTTP API (exact types: ``/docs.json`` is fuzzed).

Requests forbid unknown fields, so a typo (``"text"`` for ``"texts"``) is a 422 naming
the field instead of a silently ignored key, and are strict: ``{"pinned": 0}`` is a 422,
not a silent ``False`` (the schema says boolean; found by schemathesis).
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from service.request_limits import MAX_TASK_NAME_CHARS, MAX_TASKS

TaskName = Annotated[str, Field(min_length=1, max_length=MAX_TASK_NAME_CHARS)]

Pooling = Literal["mean", "cls", "pooler"]


class ErrorResponse(BaseModel):
    """Every 4xx/5xx body."""

    error: str = Field(description="Kind of error, e.g. 'not_found', 'invalid_input'.")
    message: str = Field(description="What is wrong and how to fix it.")
    problems: list[str] = Field(description="Each problem found (several when collected).")


EXPECTED = ("Optimistic concurrency: the version you believe is active (sha256 or a prefix of at "
            "least 8 characters); 409 if another version is active (or the task does not exist).")


# ---- prediction ------------------------------------------------------------------------
class PredictRequest(BaseModel):
    """One or several tasks on a list of texts, of base64-encoded images or of base64 audio."""

    model_config = ConfigDict(extra="forbid", strict=True, json_schema_extra={"examples": [
        {"task": "sentiment", "texts": ["a great movie", "a boring plot"]},
        {"tasks": ["fashion", "textile"], "images": ["iVBORw0KGgo..."]},
        {"task": "spoken-digits", "audio": ["UklGRiQ..."]},
    ]})
    task: str | None = Field(None, min_length=1, max_length=MAX_TASK_NAME_CHARS, description="One task name.")
    tasks: list[TaskName] | None = Field(None, min_length=1, max_length=MAX_TASKS,
                                    description="Several task names on the same backbone.")
    texts: list[str] | None = Field(None, description="Texts for a text backbone.")
    images: list[str] | None = Field(None, description=(
        "Images for a vision backbone, base64 (a 'data:image/...;base64,' prefix is allowed)."))
    audio: list[str] | None = Field(None, description=(
        "Audio clips (WAV, FLAC or OGG files) for an audio backbone, base64 (a "
        "'data:audio/...;base64,' prefix is allowed)."))
    embed: bool = Field(False, description=(
        "Also return each input's pooled backbone features in 'embeddings' (read off the same "
        "trunk pass the head tasks use: no extra cost)."))
    pooling: Pooling | None = Field(None, description=(
        "With embed: pooling of the embeddings (default: the backbone's default_pooling)."))
    normalize: bool = Field(False, description="With embed: L2-normalise the embeddings.")
    subtokens: bool = Field(False, description=(
        "token_classification tasks: also return every sub-token with its label and scores."))
    threshold: float | None = Field(None, ge=0.0, le=1.0, description=(
        "detection tasks: keep boxes scoring at least this (default: the task's "
        "dense.score_threshold; not below its dense.min_score_threshold)."))
    max_detections: int | None = Field(None, ge=1, description=(
        "detection tasks: at most this many boxes per image (not above the task's dense.max_detections)."))

    @model_validator(mode="after")
    def _one_of_each(self):
        problems = []
        if not self.embed and (self.pooling is not None or self.normalize):
            problems.append("'pooling' and 'normalize' shape embeddings: set \"embed\": true too")
        if (self.task is None) == (self.tasks is None):
            problems.append("give exactly one of 'task' (a name) or 'tasks' (a list of names)")
        if sum(x is not None for x in (self.texts, self.images, self.audio)) != 1:
            problems.append("give exactly one of 'texts', 'images' or 'audio'")
        if problems:
            raise ValueError("; ".join(problems))
        return self

    def task_names(self) -> list[str]:
        return [self.task] if self.task is not None else list(self.tasks or [])

    def options(self) -> dict:
        """The task types' request options that were sent (detection's limits)."""
        return {k: v for k, v in (("threshold", self.threshold), ("max_detections", self.max_detections))
                if v is not None}


class TaggedWord(BaseModel):
    """token_classification: one word (labelled by its first sub-token)."""

    word: str = Field(description="The word as it appears in the input.")
    start: int = Field(description="Character offset of its first character in the input.")
    end: int = Field(description="Character offset just past its last character.")
    label: str
    score: float = Field(description="Probability of the label on the word's first sub-token.")


class EntitySpan(BaseModel):
    """token_classification with BIO/IOB2/BIOES/BILOU labels: one merged entity."""

    entity: str = Field(description="Entity type (the label without its B-/I-/... prefix).")
    start: int
    end: int
    text: str = Field(description="input[start:end].")
    score: float = Field(description="Mean of its words' scores.")


class SubToken(BaseModel):
    """token_classification with ``subtokens: true``: one sub-token of the tokenizer."""

    token: str = Field(description="input[start:end] (the sub-token's characters).")
    start: int
    end: int
    label: str
    score: float
    scores: dict[str, float]


class Box(BaseModel):
    """detection: one object."""

    box: list[float] = Field(min_length=4, max_length=4, description=(
        "[x0, y0, x1, y1] in the input image's pixels (origin top left)."))
    label: str
    score: float = Field(description="The peak of the label's heat map (sigmoid).")


class Rle(BaseModel):
    """A binary mask as COCO run-length encoding (uncompressed: pycocotools' frPyObjects reads it)."""

    size: list[int] = Field(min_length=2, max_length=2, description="[height, width].")
    counts: list[int] = Field(description="Alternating runs of 0 and 1 in column-major order, starting with 0.")


class Segment(BaseModel):
    """segmentation: the pixels of one label."""

    label: str
    rle: Rle
    share: float = Field(description="Fraction of the image's pixels.")


class Prediction(BaseModel):
    """The answer for one input; which fields are set depends on the task type."""

    label: str | None = Field(None, description="Classification: the best label.")
    score: float | None = Field(None, description="Classification: its probability (softmax; sigmoid for multi_label).")
    scores: dict[str, float] | None = Field(None, description="Classification: every label's probability.")
    labels: list[str] | None = Field(None, description="multi_label tasks: every label with score >= 0.5.")
    values: dict[str, float] | None = Field(None, description="regression tasks: each named output's value.")
    words: list[TaggedWord] | None = Field(None, description="token_classification: every word, labelled.")
    entities: list[EntitySpan] | None = Field(None, description=(
        "token_classification with an entity label scheme (B-/I-/...): the merged entity spans."))
    tokens: list[SubToken] | None = Field(None, description=(
        "token_classification with subtokens=true: every sub-token."))
    text: str | None = Field(None, description="generation tasks: the generated text (the input is the prompt).")
    finish_reason: Literal["stop", "length"] | None = Field(None, description=(
        "generation: 'stop' (end of sequence or a stop sequence) or 'length' (max_new_tokens)."))
    generated_tokens: int | None = Field(None, description="generation: tokens generated.")
    boxes: list[Box] | None = Field(None, description="detection tasks: the objects found, best first.")
    shares: dict[str, float] | None = Field(None, description="segmentation: each label's fraction of the pixels.")
    segments: list[Segment] | None = Field(None, description="segmentation: each label present, as a mask.")
    mask_png: str | None = Field(None, description=(
        "segmentation: the label of every pixel as a base64 8-bit PNG (value = index into the task's labels)."))


class TaskPrediction(BaseModel):
    """One task's answers, in input order, with the adapter version that gave them."""

    task: str
    version: str = Field(description="sha256 of the adapter version that answered.")
    kind: str = Field(description="Adapter kind: 'head' or 'lora'.")
    task_type: str = Field(description="'single_label', 'multi_label', 'regression', 'token_classification', 'generation', 'detection' or 'segmentation'.")
    role: Literal["active", "canary"] = Field("active", description=(
        "'canary' when the task's canary candidate answered this request."))
    predictions: list[Prediction]


class PredictResponse(BaseModel):
    backbone: str = Field(description="The backbone that ran (once for all tasks).")
    results: list[TaskPrediction] = Field(description="One entry per task, in request order.")
    embeddings: list[list[float]] | None = Field(None, description=(
        "With \"embed\": true: one pooled feature vector per input, in input order."))


# ---- embeddings ------------------------------------------------------------------------
class EmbedRequest(BaseModel):
    """Pooled backbone features of texts or base64 images, batched with all other traffic."""

    model_config = ConfigDict(extra="forbid", strict=True, json_schema_extra={"examples": [
        {"texts": ["a great movie", "a boring plot"]},
        {"backbone": "vision", "images": ["iVBORw0KGgo..."], "pooling": "mean", "normalize": False},
    ]})
    backbone: str | None = Field(None, min_length=1, max_length=64, description=(
        "Backbone name (GET /backbones); default: the only backbone taking this kind of input."))
    texts: list[str] | None = Field(None, description="Texts for a text backbone.")
    images: list[str] | None = Field(None, description=(
        "Images for a vision backbone, base64 (a 'data:image/...;base64,' prefix is allowed)."))
    audio: list[str] | None = Field(None, description=(
        "Audio clips (WAV, FLAC or OGG files) for an audio backbone, base64."))
    pooling: Pooling | None = Field(None, description=(
        "How token/pixel features become one vector (default: the backbone's default_pooling, "
        "the one heads use unless trained otherwise)."))
    normalize: bool = Field(True, description=(
        "L2-normalise each vector (cosine similarity = dot product). false returns the raw "
        "pooled features exactly as a head without normalisation reads them."))

    @model_validator(mode="after")
    def _one_input_kind(self):
        if sum(x is not None for x in (self.texts, self.images, self.audio)) != 1:
            raise ValueError("give exactly one of 'texts', 'images' or 'audio'")
        return self

    def modality_and_items(self) -> tuple[str, list[str]]:
        for modality, items in (("text", self.texts), ("image", self.images), ("audio", self.audio)):
            if items is not None:
                return modality, items
        raise ValueError("no inputs")  # unreachable: the validator requires one kind


class EmbedResponse(BaseModel):
    backbone: str = Field(description="The backbone whose features these are.")
    pooling: str
    normalized: bool
    dimensions: int = Field(description="Length of each vector (the backbone's hidden size).")
    embeddings: list[list[float]] = Field(description="One vector per input, in input order.")


# ---- adapters --------------------------------------------------------------------------
class VersionOut(BaseModel):
    version: str
    kind: str
    created_at: str
    labels: list[str]
    shared: str | None = Field(None, description=(
        "Kind 'multitask': the shared adaptation this version rides on, 'name@version'."))


class AdapterInfo(BaseModel):
    """A task: its active version and history (from the store) and its state on this replica."""

    name: str
    active_version: str
    state: Literal["loading", "ready", "failed", "evicted", "unloaded"] = Field(description=(
        "On this replica: 'unloaded' = not loaded here yet (LoRA adapters load on first use)."))
    error: str | None = Field(description="Why loading failed, when state is 'failed'.")
    kind: str = Field(description="Adapter kind: 'head' or 'lora'.")
    labels: list[str] = Field(description="Classification: the label names ([] for regression).")
    outputs: list[str] | None = Field(None, description="Regression: the names of the values.")
    target_scaling: dict[str, dict[str, float]] | None = Field(None, description=(
        "Regression: {output: {mean, std}} the head's outputs are scaled by."))
    generation: dict[str, Any] | None = Field(None, description=(
        "Generation tasks: prompt format and template, system prompt, stop sequences, "
        "max_new_tokens, sampling defaults (docs/generation.md)."))
    dense: dict[str, Any] | None = Field(None, description=(
        "Detection and segmentation tasks: strides, input_size and the answer limits "
        "(score_threshold, min_score_threshold, max_detections, nms_iou; docs/dense-vision.md)."))
    backbone: str | None = Field(description="Backbone name, once loaded on this replica.")
    task_type: str | None = Field(description="'single_label', 'multi_label', 'regression', 'token_classification', 'generation', 'detection' or 'segmentation' (once loaded here).")
    metrics: dict[str, Any] = Field(description="Training metrics from the adapter's manifest.")
    pinned: bool
    versions: list[VersionOut] = Field(description="Every stored version, oldest first.")
    updated_at: str


class AdapterList(BaseModel):
    replica_id: str = Field(description="Which replica answered.")
    generation: int = Field(description="Store generation this replica has caught up with.")
    adapters: list[AdapterInfo]
    total: int = Field(description="Tasks matching the name filter, on every page together.")
    next_offset: int | None = Field(description="The offset of the next page; null on the last.")


class RegisterFromStore(BaseModel):
    """Register a folder already in the adapter store (e.g. ``imports/my-adapter``)."""

    model_config = ConfigDict(extra="forbid", strict=True)
    store_path: str = Field(min_length=1, max_length=1024, description=(
        "Folder relative to the store root, e.g. 'imports/sentiment-v2'."))
    name: str | None = Field(None, min_length=1, max_length=64, description=(
        "Task name; overrides the manifest's (required for a plain PEFT folder)."))
    labels: list[str] | None = Field(None, min_length=1, max_length=10_000,
                                     description="Label names; override the manifest's.")
    backbone: str | None = Field(None, min_length=1, max_length=64,
                                 description="Backbone to attach to, when it cannot be inferred.")
    expected_version: str | None = Field(None, min_length=8, max_length=64, description=EXPECTED)


class RegisterResponse(BaseModel):
    name: str
    version: str = Field(description="sha256 content hash of the new version (immutable).")
    kind: str = Field(description="Adapter kind: 'head' or 'lora'.")
    task_type: str = Field(description="'single_label', 'multi_label', 'regression' or 'token_classification'.")
    labels: list[str] = Field(description="Classification: the label names ([] for regression).")
    outputs: list[str] | None = Field(None, description="Regression: the names of the values.")
    backbone: str
    load_seconds: float
    previous_version: str | None = Field(description=(
        "The version this registration replaced, read in the store's compare-and-swap "
        "(activate it to roll back); null for a new task."))


class ActivateRequest(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)
    version: str = Field(min_length=8, max_length=64, description=(
        "A stored version: the sha256 or a unique prefix of at least 8 characters."))
    expected_version: str | None = Field(None, min_length=8, max_length=64, description=EXPECTED)


class PinRequest(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)
    pinned: bool = Field(True, description="True keeps the LoRA resident; false releases it.")


class DeleteResponse(BaseModel):
    name: str
    deleted: bool


# ---- backbones -------------------------------------------------------------------------
class BackboneInfo(BaseModel):
    name: str
    source: str
    modality: Literal["text", "image", "audio"]
    model_type: str
    hidden_size: int
    fingerprint: str
    device: str
    dtype: str
    preprocessing: dict[str, int] = Field(description=(
        "max_length (text), image_size (image), or sample_rate, min_samples and trim_db (audio)."))
    poolings: list[str]
    default_pooling: str


class BackboneList(BaseModel):
    backbones: list[BackboneInfo]


ERROR_RESPONSES: dict[int | str, dict[str, Any]] = {
    code: {"model": ErrorResponse, "description": what} for code, what in {
        400: "Invalid input", 401: "Missing or wrong token", 403: "Not allowed",
        404: "Not found", 409: "Incompatible or conflicting", 413: "Body too large",
        422: "Validation failed / invalid adapter", 429: "Over capacity (Retry-After)",
        503: "Not ready (Retry-After)", 504: "Timed out"}.items()}
