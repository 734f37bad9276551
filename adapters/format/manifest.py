"""``adapter.json``: the manifest every Taskswap adapter carries, as a schema.

The schema says what the file holds: its fields, their types and sizes. It does not know
the adapter kinds and task types its ``kind`` and ``task_type`` name; what those require
(a known kind and task type, the output names, the head's features) is checked one layer
up, where their tables are, by :func:`adapters.plugin_checks.validate_manifest`.

Unknown keys are kept and ignored, so an adapter written by a newer version still
loads here (forward compatible); ``format_version`` says which rules applied.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from adapters.format.labels import nfc_labels

FORMAT_VERSION = 1
# A task name, optionally qualified by its namespace (``team/task``, adapters.namespaces);
# the store's check_name adds the finer rules (no 'default/', no URL word as a task).
NAME_PATTERN = r"^([a-z0-9][a-z0-9_.-]{0,31}/)?[a-z0-9][a-z0-9_.-]{0,63}$"


class BackboneRef(BaseModel):
    """Which backbone an adapter was trained on."""

    model_config = ConfigDict(extra="allow")
    name: str = Field(description="Backbone name on the server, e.g. 'text' or 'vision'.")
    fingerprint: str | None = Field(None, description="sha256 of the backbone config + weights.")
    source: str | None = Field(None, description="Where the backbone came from (HF id, folder).")


class HeadSpec(BaseModel):
    """The head on pooled backbone features, or on per-token features (``pooling: "tokens"``)."""

    model_config = ConfigDict(extra="allow")
    pooling: Literal["mean", "cls", "pooler", "tokens"] = Field(description=(
        "How token/pixel features are pooled; 'tokens': none, the head reads each token "
        "(task types with per-token outputs)."))
    input_dim: int = Field(ge=1, description="Width of the pooled features.")
    hidden: list[int] = Field(default_factory=list, description="Hidden layer widths; [] = linear head.")
    activation: Literal["relu", "gelu", "tanh"] = "relu"
    normalize: bool = Field(False, description="L2-normalise pooled features before the head.")

    @model_validator(mode="after")
    def _hidden_positive(self):
        if any(h < 1 for h in self.hidden):
            raise ValueError(f"head.hidden widths must be >= 1, got {self.hidden}")
        return self


class SSDSpec(BaseModel):
    """An SSD head's anchors, box coder and class channels (TensorFlow's object detection
    API: ``ssd_anchor_generator`` and ``faster_rcnn_box_coder``); the defaults are those of
    the model zoo's ssd_mobilenet_v2_coco."""

    model_config = ConfigDict(extra="allow")
    num_classes: int = Field(91, ge=2, le=1000, description=(
        "Class channels per anchor, the background (channel 0) included."))
    label_channels: list[int] = Field(min_length=1, description=(
        "The class channel each of the manifest's labels reads, same order (unused ids are skipped)."))
    anchors_per_cell: list[int] = Field(min_length=1, max_length=8, description=(
        "Anchors per cell of each map read (3 on the lowest when its boxes are reduced)."))
    min_scale: float = Field(0.2, ge=0.0, le=1.0)
    max_scale: float = Field(0.95, ge=0.0, le=1.0)
    aspect_ratios: list[float] = Field(default_factory=lambda: [1.0, 2.0, 0.5, 3.0, 0.3333], min_length=1)
    interpolated_scale_aspect_ratio: float = Field(1.0, ge=0.0)
    reduce_boxes_in_lowest_layer: bool = True
    box_scales: list[float] = Field(default_factory=lambda: [10.0, 10.0, 5.0, 5.0], min_length=4, max_length=4,
                                    description="The box coder's (y, x, h, w) scale factors.")

    @model_validator(mode="after")
    def _channels(self):
        bad = [c for c in self.label_channels if not 1 <= c < self.num_classes]
        if bad:
            raise ValueError(f"dense.ssd.label_channels {bad[:5]} are outside 1..{self.num_classes - 1} "
                             "(channel 0 is the background)")
        if len(set(self.label_channels)) != len(self.label_channels):
            raise ValueError("dense.ssd.label_channels must be distinct")
        return self


class DenseSpec(BaseModel):
    """A dense head (detection, segmentation) on a vision backbone's spatial maps: which
    strides it reads, their channel counts, its width, the square input size its rows run
    at, and (detection) the answer limits a request may tighten within."""

    model_config = ConfigDict(extra="allow")
    head: str = Field("fpn", description=(
        "The head's architecture, a key of adapters.dense_heads.DENSE_HEADS: 'fpn' (the maps "
        "summed at the finest stride, a conv and a 1x1 out; trained here) or 'ssd' (an SSD's "
        "3x3 box and class predictors per map over anchors, e.g. a converted pretrained detector)."))
    strides: list[int] = Field(min_length=1, max_length=8, description=(
        "Strides of the maps the head reads, e.g. [8, 16]; the output is at the finest."))
    in_channels: list[int] = Field(min_length=1, max_length=8, description="Channels of each map, same order.")
    ssd: SSDSpec | None = Field(None, description="Head 'ssd': its anchors, box coder and class channels.")
    width: int = Field(64, ge=1, le=1024, description="Channels inside the head.")
    input_size: int | None = Field(None, ge=32, le=1024, description=(
        "Square input size in pixels the task's rows run the trunk at; None = the backbone's."))
    score_threshold: float = Field(0.3, ge=0.0, le=1.0, description="Detection: default score threshold.")
    min_score_threshold: float = Field(0.05, ge=0.0, le=1.0, description=(
        "Detection: the lowest threshold a request may ask for."))
    max_detections: int = Field(100, ge=1, le=1000, description=(
        "Detection: the most boxes per image (a request may ask for fewer)."))
    nms_iou: float = Field(0.5, gt=0.0, le=1.0, description="Detection: IoU above which NMS drops a box.")

    @model_validator(mode="after")
    def _consistent(self):
        problems = []
        if len(self.strides) != len(self.in_channels):
            problems.append(f"dense.strides {self.strides} and dense.in_channels {self.in_channels} "
                            "must have the same length")
        if len(set(self.strides)) != len(self.strides) or any(s < 1 for s in self.strides):
            problems.append(f"dense.strides must be distinct positive strides, got {self.strides}")
        if any(c < 1 for c in self.in_channels):
            problems.append(f"dense.in_channels must be >= 1, got {self.in_channels}")
        if self.min_score_threshold > self.score_threshold:
            problems.append(f"dense.min_score_threshold {self.min_score_threshold} is above "
                            f"score_threshold {self.score_threshold}")
        if self.input_size is not None and self.input_size % max(self.strides, default=1):
            problems.append(f"dense.input_size {self.input_size} must be a multiple of the "
                            f"largest stride {max(self.strides)}")
        if problems:
            raise ValueError("; ".join(problems))
        return self


class GenerationSpec(BaseModel):
    """How a generation task turns a request into a prompt and decodes (``task_type:
    "generation"``). Request fields override the sampling defaults within ``max_new_tokens``."""

    model_config = ConfigDict(extra="allow")
    prompt_format: Literal["raw", "chat"] = Field("raw", description=(
        "'raw': the (templated) prompt is tokenised as is; 'chat': it becomes the user message "
        "of the tokenizer's chat template (after system_prompt), with the assistant turn opened."))
    prompt_template: str | None = Field(None, max_length=8192, description=(
        "A template with one '{input}' placeholder the request's prompt fills, e.g. "
        "'Translate to French: {input}'; None = the prompt as sent."))
    system_prompt: str | None = Field(None, max_length=8192, description=(
        "Chat: a system message put first when the request sends none."))
    stop: list[str] = Field(default_factory=list, max_length=16, description=(
        "Stop sequences: decoding ends before the first one (not returned). The request's are added."))
    max_new_tokens: int = Field(128, ge=1, le=8192, description=(
        "The most tokens one request may generate (a request asking more gets 400)."))
    temperature: float = Field(0.0, ge=0.0, le=10.0, description="Default temperature; 0 = greedy.")
    top_p: float = Field(1.0, gt=0.0, le=1.0, description="Default nucleus mass.")
    top_k: int = Field(0, ge=0, description="Default top-k; 0 = off.")

    @model_validator(mode="after")
    def _template_has_input(self):
        if self.prompt_template is not None and "{input}" not in self.prompt_template:
            raise ValueError("generation.prompt_template must hold the placeholder '{input}'")
        if any(not s for s in self.stop):
            raise ValueError("generation.stop holds an empty string; every stop sequence needs text")
        return self


class SharedRef(BaseModel):
    """The shared trunk adaptation a task rides on (kind ``multitask``): one stored version
    of an adaptation registered under its own name (kind ``shared_lora``)."""

    name: str = Field(pattern=NAME_PATTERN, description="The shared adaptation's registered name.")
    version: str | None = Field(None, pattern=r"^[0-9a-f]{8,64}$", description=(
        "Its stored version (sha256, or a unique prefix of at least 8 hex characters); "
        "None at registration: its active version then. Stored as the full id."))


class Manifest(BaseModel):
    """The contents of ``adapter.json``."""

    model_config = ConfigDict(extra="allow")
    format_version: int = Field(FORMAT_VERSION, ge=1)
    name: str = Field(pattern=NAME_PATTERN, description="Task name: lowercase, digits, '_', '-', '.', optionally 'namespace/task'.")
    kind: str = Field(description="Adapter kind: a key of adapters.kinds.KINDS ('head', 'lora', 'top_layers').")
    task_type: str = Field("single_label", description=(
        "Task type: a key of adapters.tasks.TASK_TYPES ('single_label', 'multi_label', 'regression', 'token_classification', 'generation', 'detection', 'segmentation')."))
    labels: list[str] = Field(default_factory=list, description="Classification: the label names.")
    outputs: list[str] = Field(default_factory=list, description="Regression: the names of the values.")
    target_scaling: dict | None = Field(None, description=(
        "Regression: {output: {mean, std}}; served value = head output * std + mean."))
    backbone: BackboneRef
    head: HeadSpec | None = Field(None, description="The head on pooled features (pooled task types).")
    dense: DenseSpec | None = Field(None, description=(
        "Dense task types (detection, segmentation): the head on the spatial maps and its limits."))
    generation: GenerationSpec | None = Field(None, description=(
        "Generation tasks: prompt template or system prompt, stop sequences, limits, sampling defaults."))
    shared: SharedRef | None = Field(None, description=(
        "Kind 'multitask': the shared trunk adaptation (name and version) whose adapted trunk "
        "this task's head reads; every task naming the same version shares its trunk rows."))
    preprocessing: dict = Field(default_factory=dict,
                                description="Backbone preprocessing it was trained with (image_size, max_length).")
    metrics: dict = Field(default_factory=dict)
    training: dict = Field(default_factory=dict)
    created_at: str | None = None

    @field_validator("labels", "outputs")
    @classmethod
    def _nfc(cls, names: list[str]) -> list[str]:
        """Stored NFC-normalised; names that would collide once normalised are kept as sent,
        so the label rule (``adapters.format.labels``) names the collision."""
        normal = nfc_labels(names)
        return normal if len(set(normal)) == len(set(names)) else names

    @model_validator(mode="after")
    def _known_format_version(self):
        if self.format_version > FORMAT_VERSION:
            raise ValueError(f"format_version {self.format_version} is newer than this server "
                             f"understands ({FORMAT_VERSION}); upgrade the server")
        return self
