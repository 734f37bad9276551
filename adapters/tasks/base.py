"""The task-type interface: what a head's outputs mean.

A task type owns everything that differs between, say, classification and regression:

- **manifest** — which field names its outputs (``labels`` for classification, ``outputs``
  for regression) and what else the manifest must hold (:meth:`TaskType.check_manifest`,
  :meth:`TaskType.output_names`);
- **features** — what its head reads (:meth:`TaskType.needs`, checked against what the
  backbone gives, :attr:`adapters.backbones.base.Backbone.features`): pooled features
  ``[rows, hidden]`` (the default), per-token features (``"tokens"``: the runtime then hands
  it a :class:`TokenFeatures` with ``hidden [rows, seq, hidden]``, ``mask [rows, seq]`` and
  character ``offsets [rows, seq, 2]``), or a vision backbone's spatial map at a stride
  (``"map:16"``: ``BatchFeatures.maps[16]``, ``[rows, channels, h, w]``). The runtime
  collects only what a batch's task types name;
- **serving** — how a batch of head outputs becomes per-input answers (:meth:`TaskType.score`
  runs the heads on their rows, :meth:`TaskType.rows` shapes one task's answers: the JSON
  object of one prediction, e.g. ``{"label", "score", "scores"}`` or ``{"values": {...}}``);
- **PEFT** — which plain PEFT adapters are of this type (:attr:`TaskType.peft_problem_types`
  of ``SEQ_CLS`` ones, :attr:`TaskType.peft_task_types`, :meth:`TaskType.from_peft`);

Training (targets, loss, metrics, the headline, card words) is the other half of a task
type, in ``training/tasks/`` (:class:`training.tasks.TrainingTask`), keyed by the same name:
``adapters/`` never imports ``training/``.

Adding a task type is one new file with a subclass and one entry in
:data:`adapters.tasks.TASK_TYPES`; nothing else in ``adapters/``, ``service/`` or
``training/`` names task types. The implementations are stateless singletons: never
store per-adapter data on them (it lives in the manifest and the loaded adapter).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, ClassVar

import numpy as np
import torch

from adapters.heads import build_head, check_head_header
from adapters.heads_batched import HeadCall, run_heads

if TYPE_CHECKING:  # type hints only
    from adapters.format.manifest import Manifest

HEADLINE_KEY = "headline"
"""The entry of a manifest's ``metrics`` that names the task type's headline metric, written
by training (``{"metric": "val_r2", "name": "R²", "higher_is_better": true}``) and read by
rollouts (``if_better``, shadow reports) to compare two versions."""


@dataclass(frozen=True)
class TokenFeatures:
    """Per-token trunk outputs of a batch of rows, for task types with ``features = "tokens"``.

    ``hidden [rows, seq, hidden]`` (float32, on the backbone's device), ``mask [rows, seq]``
    (1 = a real token, 0 = padding), ``offsets [rows, seq, 2]`` character spans of each token
    in its input (``None`` when the preprocessor gives none: image/audio backbones; special
    tokens span ``(0, 0)``), ``word_ids [rows, seq]`` the word each token belongs to in the
    tokenizer's pre-tokenisation (-1: special or padding; ``None`` when unknown). A text
    longer than the backbone's ``max_length`` is one row of all its tokens, stitched from
    overlapping windows (:class:`adapters.backbones.preprocess.TokenWindows`).
    """

    hidden: torch.Tensor
    mask: torch.Tensor | None
    offsets: torch.Tensor | None = None
    word_ids: torch.Tensor | None = None

    def rows(self, idx: list[int]) -> "TokenFeatures":
        """The same features restricted to the rows ``idx`` (in that order)."""
        i = torch.tensor(idx, dtype=torch.long, device=self.hidden.device)
        pick = (lambda t: None if t is None else t[i.to(t.device)])
        return TokenFeatures(self.hidden[i], pick(self.mask), pick(self.offsets), pick(self.word_ids))


@dataclass
class BatchFeatures:
    """What one trunk pass produced for every row of a batch.

    ``pooled[pooling]`` is ``[rows, hidden]`` float32 for each pooling some head asked for;
    ``tokens`` is set only when some task type in the batch reads per-token features.
    ``inputs`` are the raw inputs per row (texts/images), for task types that map token
    offsets back to words. ``maps[stride]`` is ``[rows, channels, h, w]`` float32 for each
    spatial map some task type reads (``"map:<stride>"`` in its :meth:`TaskType.needs`);
    empty otherwise (the pass never asked the model for them). ``input_tokens[i]``: the real
    tokens (special tokens included, after truncation to ``max_length``) the trunk read for
    input ``i`` of a text batch; ``None`` for other modalities.
    """

    pooled: dict[str, torch.Tensor] = field(default_factory=dict)
    tokens: TokenFeatures | None = None
    inputs: list | None = None
    maps: dict[int, torch.Tensor] = field(default_factory=dict)
    input_tokens: list[int] | None = None


class RowResult:
    """One input's answer for one task: the JSON object of one prediction, as the task type
    shapes it (``RowResult(label=..., score=..., scores=...)``, ``RowResult(values=...)``).
    Fields read as attributes (``row.label``, ``row.values``; one the type does not produce
    reads as ``None``) and as a mapping (``row["label"]``, ``dict(**row)``)."""

    __slots__ = ("fields",)

    def __init__(self, **fields):
        self.fields = fields

    def __getattr__(self, key):
        if key.startswith("__"):
            raise AttributeError(key)
        return self.fields.get(key)

    def __getitem__(self, key):
        return self.fields[key]

    def __setitem__(self, key, value):
        self.fields[key] = value

    def keys(self):
        return self.fields.keys()

    def __repr__(self) -> str:
        return f"RowResult({self.fields!r})"


@dataclass
class OutputArray:
    """One typed output of a request's answers: ``array`` is float32, int32, uint8, or
    ``object`` holding strings; ``names`` names the last axis's entries (labels of a
    ``[n, labels]`` array) when it has names."""

    name: str
    array: np.ndarray
    names: list[str] | None = None


class TaskType:
    """One kind of task output. Subclass it, set :attr:`name`, register it in the table."""

    name: ClassVar[str]
    features: ClassVar[str] = "pooled"
    """``"pooled"``: the head reads ``BatchFeatures.pooled[manifest.head.pooling]``;
    ``"tokens"``: the head reads ``BatchFeatures.tokens`` (set :meth:`needs` accordingly)."""
    activation: ClassVar[str] = "identity"
    """How head logits become outputs, applied once per group of same-shaped heads:
    ``"softmax"``, ``"sigmoid"`` or ``"identity"`` (see :data:`adapters.heads_batched.ACTIVATIONS`)."""
    peft_problem_types: ClassVar[tuple[str, ...]] = ()
    """``problem_type`` values of a transformers config that make a plain PEFT adapter this type."""
    peft_task_types: ClassVar[tuple[str, ...]] = ()
    options: ClassVar[frozenset[str]] = frozenset()
    """Request options this type reads (detection: ``threshold``, ``max_detections``)."""
    generates: ClassVar[bool] = False
    """True: the task answers with generated text (no head): its requests go to the generation
    engine (:mod:`adapters.generation`), its dry run decodes, its kind plans no head."""
    """PEFT ``task_type`` values (other than ``SEQ_CLS``) that make a plain PEFT adapter this
    type, e.g. ``TOKEN_CLS``."""

    # ---- manifest ---------------------------------------------------------------------
    def output_names(self, m: "Manifest") -> list[str]:
        """Names of the head's outputs, in the order of its last layer (its width)."""
        raise NotImplementedError

    def check_manifest(self, m: "Manifest") -> list[str]:
        """Problems with a manifest of this type (empty list = fine). Runs on every parse."""
        return []

    def from_peft(self, n_outputs: int, names: list[str] | None) -> dict:
        """Manifest fields for a plain PEFT adapter whose classifier has ``n_outputs`` outputs
        (``names`` = names given at registration, or None): e.g. ``{"labels": [...]}``."""
        raise NotImplementedError

    def rename(self, names: list[str]) -> dict:
        """Manifest fields that override the output names given at registration (``labels``)."""
        return {"labels": names}

    def describe(self, m: "Manifest") -> dict:
        """What ``GET /adapters/{name}`` shows about the outputs (beside name, kind, versions)."""
        return {"labels": list(m.labels)}

    # ---- the head's weights -----------------------------------------------------------
    def check_head(self, m: "Manifest", header: dict, backbone) -> None:
        """Check ``head.safetensors``'s ``header`` against ``m`` and ``backbone`` before
        loading (raises ``InvalidAdapter`` / ``IncompatibleAdapter``). Default: the
        linear/MLP head on pooled or per-token features (``m.head``)."""
        check_head_header(m.head, len(self.output_names(m)), header, backbone.hidden_size,
                          backbone.head_inputs)

    def build_head(self, m: "Manifest", tensors: dict[str, torch.Tensor] | None):
        """The head module holding ``tensors`` (shape-checked), or None when the task has
        no head (``m.head`` unset: generation)."""
        if m.head is None or tensors is None:
            return None
        return build_head(m.head, len(self.output_names(m)), tensors)

    # ---- serving ----------------------------------------------------------------------
    def input_size(self, m: "Manifest") -> int | None:
        """The square input size the task's rows run the trunk at; None = the backbone's."""
        return None

    def needs(self, m: "Manifest") -> set[str]:
        """Which features the head reads: pooling names, ``{"tokens"}``, or spatial maps
        (``"map:<stride>"``, :func:`adapters.backbones.base.map_feature`)."""
        return {m.head.pooling}

    def score(self, calls: list[tuple], features: BatchFeatures) -> list[torch.Tensor]:
        """Run each ``(adapter, rows)`` head on its rows; one ``[len(rows), n_outputs]`` float32
        CPU tensor per call. ``rows`` index the batch's features. The default batches pooled
        heads of the same shape into one matmul per layer (:func:`adapters.heads_batched.run_heads`)."""
        return run_heads([HeadCall(a.head, self.activation, rows) for a, rows in calls], features.pooled)

    def rows(self, adapter, out: torch.Tensor) -> list[RowResult]:
        """Per-input answers of one task from its ``[rows, n_outputs]`` outputs (CPU)."""
        raise NotImplementedError

    def check_options(self, m: "Manifest", options: dict) -> list[str]:
        """Problems with a request's ``options`` (those named in :attr:`options`) against
        ``m``'s limits; empty = fine. Checked when the request is prepared."""
        return []

    def answers(self, adapter, out, options: dict) -> list[RowResult]:
        """:meth:`rows` under a request's ``options`` (a type without options ignores them)."""
        return self.rows(adapter, out)

    def arrays(self, rows: list[RowResult]) -> "list[OutputArray] | None":
        """A request's answers of one task as typed arrays for tensor protocols (the Open
        Inference Protocol), one tensor each. None (the default): the protocol encodes each
        field of the answers by its value (:func:`service.routes_v2.answer_tensors`)."""
        return None
