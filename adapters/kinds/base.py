"""The adapter-kind interface: where an adapter's weights sit and how its rows run.

A kind owns, for every adapter of that kind:

- **files and plan** — which files it needs (:attr:`AdapterKind.weight_files`), and a plan
  made from the safetensors *headers* alone at registration (:meth:`AdapterKind.plan`,
  :meth:`AdapterKind.check`), so every problem is found before a tensor is loaded;
- **loading** — :meth:`AdapterKind.load` materialises the head tensors and the kind's own
  trunk weights (``None`` for a head), :meth:`AdapterKind.nbytes` counts them;
- **residency** — :attr:`AdapterKind.evictable`: ``False`` keeps every version resident
  (heads: tiny), ``True`` puts it in the eviction cache (adapters.residency) within the memory budget;
- **batching** — what a request costs in trunk rows and how its rows run:
  :attr:`AdapterKind.shares_trunk_row` (rows on the plain frozen trunk: one row per input,
  shared by every such task of a request), :meth:`AdapterKind.trunk_state` (the per-row
  selector its rows carry into the pass, e.g. the LoRA weights of that row) and
  :attr:`AdapterKind.trunk_pass` (the :class:`TrunkPass` that runs its rows).

Rows whose kinds name the *same* ``TrunkPass`` object run in one forward; the runtime
groups the rows of a batch by pass, and each pass gets its rows' states. Every kind here
names the composed trunk (:mod:`adapters.kinds.trunk`), so plain, LoRA and top-layers rows
share one forward. A row's state is a :class:`RowState` (its kind and its weights); the
pass buckets a chunk's rows by kind and each kind builds its bucket's :class:`KindBatch`
(:meth:`AdapterKind.batch`, LoRAX's per-kind ``BatchAdapterWeights``): what it changes on
the shared model while its rows run (:meth:`KindBatch.applied`: LoRA's per-row deltas or
merged weights) and where its rows leave the frozen trunk (:meth:`KindBatch.exits`: a
top-layers task's own blocks). Nobody tests a row for another kind. An ``audio`` backbone
needs no kind at all: kinds see only preprocessed batches and module names.

Adding a kind is one new file with a subclass and one entry in :data:`adapters.kinds.KINDS`.
Implementations are stateless singletons: per-adapter data lives in the plan and the
loaded weights, never on the kind.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import TYPE_CHECKING, Callable, ClassVar, Protocol

import torch

from adapters.errors import InvalidAdapter

if TYPE_CHECKING:
    from adapters.backbones.base import Backbone, Features
    from adapters.format.adapter_dir import AdapterDir
    from adapters.format.manifest import Manifest


@dataclass(frozen=True, eq=False)
class RowState:
    """What one trunk row carries into its pass: the kind that owns it and that kind's
    per-adapter weights (the pass hands them back to ``kind.batch``)."""

    kind: "AdapterKind"
    weights: object

    @property
    def key(self) -> tuple[int, int]:
        """Rows of one input whose states have equal keys compute the same thing: the
        runtime runs them once (tasks riding on one shared adaptation)."""
        return id(self.kind), id(self.weights)


Exit = tuple[int, list[int], Callable, int]
"""``(block, rows, run, end)``: ``rows`` of a chunk leave the frozen trunk before ``block`` and
``run(layout, block_modules, model, h, mask, tap)`` takes their hidden state ``h [len(rows), ...]``
through their own blocks ``block .. end - 1`` (``mask`` = their attention mask or None;
``tap(b, t)``, when given, receives block ``b``'s hidden state). ``end`` below the number of
blocks: the rows stop there (a dense task reads nothing above its deepest map)."""


class KindBatch:
    """One kind's rows of a chunk, ready to run (LoRAX's ``BatchAdapterWeights``).

    Built by :meth:`AdapterKind.batch` from one entry per chunk row: the row's weights when
    the row is of that kind, else None. The default changes nothing."""

    def applied(self, rows: list[int] | None = None):
        """A context manager that applies this kind's changes to the shared model for a
        forward over chunk ``rows`` (in that order), or over the whole chunk in one forward
        (``None``). Entered under the backbone's lock; restores everything on exit."""
        return contextlib.nullcontext()

    def trunk_key(self, row: int):
        """What the row changes on the frozen trunk below its exit (a hashable; None:
        nothing): rows with the same input and equal keys run below their exits once."""
        return None

    def exits(self) -> list[Exit]:
        """Where this kind's rows leave the frozen trunk (none: they run it to the end)."""
        return []


class Pause(Protocol):
    """A point between two trunk blocks where a running chunk may let other work run first
    (preemption, :mod:`adapters.kinds.pausing`): ``due()`` says, cheaply, whether work that is
    owed the worker now is waiting; ``run()`` runs it to the end and returns. The pass calls
    ``run()`` only with none of its changes applied to the shared model, and resumes exactly
    where it stopped (its hidden states stay as they were)."""

    def due(self) -> bool: ...

    def run(self) -> None: ...


class TrunkPass:
    """Runs one chunk of trunk rows (``[rows, ...]`` preprocessed tensors) in one forward."""

    def forward(self, backbone: "Backbone", batch: dict[str, torch.Tensor], states: list,
                collect: Callable[["Features"], None], maps: tuple[int, ...] = (),
                pause: Pause | None = None) -> None:
        """Run ``batch`` with ``states[i]`` (a kind's :meth:`AdapterKind.trunk_state`, or None
        for a plain row) applied to row ``i``; call ``collect(features)`` once, while whatever
        the pass changed on the shared model is still in place, with the spatial maps at
        ``maps`` strides kept (``Features.map``). Hold ``backbone.lock`` while
        the shared model is changed or run, and leave it exactly as found, even on error.
        ``pause``: offered between trunk blocks where the pass can stop and resume (None: run
        through)."""
        raise NotImplementedError


class AdapterKind:
    """One place adapted weights can sit. Subclass, set the class attributes, add to the table."""

    name: ClassVar[str]
    weight_files: ClassVar[tuple[str, ...]]
    """Files an adapter directory of this kind must hold (besides ``adapter.json``)."""
    marker_file: ClassVar[str | None] = None
    """A file that makes a directory *without* ``adapter.json`` this kind (a third-party
    format, e.g. PEFT's ``adapter_config.json``); None: this kind always has a manifest."""
    evictable: ClassVar[bool] = False
    """True: loaded versions live in the eviction cache (``adapters.residency``) within
    ``adapter_budget_bytes``."""
    shares_trunk_row: ClassVar[bool] = True
    """True: the adapter reads the plain frozen trunk (one row per input per request)."""
    trunk_pass: ClassVar[TrunkPass]
    """The pass its rows run in; kinds naming the same object share a forward."""
    provides_shared_trunk: ClassVar[bool] = False
    """True: an adapter of this kind is a shared trunk adaptation other tasks may ride on
    (``shared_lora``); a task naming anything else in its manifest's ``shared`` is refused."""

    # ---- registration: headers only -------------------------------------------------------
    def plan(self, adir: "AdapterDir", backbone: "Backbone"):
        """Check the kind's own files against ``backbone`` from headers; return a plan for
        :meth:`load` (or None). Raise ``InvalidAdapter`` / ``IncompatibleAdapter`` naming the problem."""
        return None

    def fits(self, adir: "AdapterDir", backbone: "Backbone") -> None:
        """For a directory without ``adapter.json``: raise unless it fits ``backbone``."""
        self.plan(adir, backbone)

    def synthesise_manifest(self, adir: "AdapterDir", backbone: "Backbone", plan,
                            name: str, names: list[str] | None) -> "Manifest":
        """The manifest of a third-party directory that has none (e.g. plain PEFT)."""
        raise InvalidAdapter(f"a {self.name} adapter needs an adapter.json")

    def bind(self, m: "Manifest", backbone: "Backbone", plan, shared) -> tuple[object, "Manifest"]:
        """``(plan, manifest)`` once the completed manifest is known: a kind that rides on a
        shared adaptation resolves ``m.shared`` through ``shared(name, version)`` (a loaded
        adapter; version None: the active one; ``shared`` None when no store is in reach) and checks it. Default: nothing to bind."""
        return plan, m

    def check(self, adir: "AdapterDir", m: "Manifest", backbone: "Backbone", plan) -> None:
        """Check the head (and anything else) against the completed manifest, headers only."""

    # ---- loading --------------------------------------------------------------------------
    def load(self, adir: "AdapterDir", m: "Manifest", backbone: "Backbone", plan
             ) -> tuple[dict[str, torch.Tensor], object | None]:
        """``(head tensors under layers.{i}.weight/bias, trunk weights or None)`` on the CPU."""
        raise NotImplementedError

    def to_device(self, weights, backbone: "Backbone"):
        """Move trunk weights to the backbone's device/dtype and hook them in (under its lock)."""
        return weights

    def nbytes(self, weights) -> int:
        """Bytes of the kind's trunk weights (the head is counted by the registry)."""
        return 0

    def trunk_state(self, weights) -> RowState | None:
        """What a row of this adapter carries into its pass; None = the plain trunk."""
        return None

    def cost_factor(self, weights, backbone: "Backbone") -> float:
        """One of this kind's own trunk rows, in plain trunk rows (:mod:`adapters.cost`);
        only asked of kinds that do not share the plain row."""
        return 1.0

    def batch(self, backbone: "Backbone", weights: list) -> KindBatch:
        """This kind's share of a chunk: ``weights[i]`` is row ``i``'s weights when the row
        is of this kind, else None (see :class:`KindBatch`)."""
        return KindBatch()

    def forget(self, weights) -> None:
        """Drop every cache derived from these weights (called once they are evicted or deleted)."""
