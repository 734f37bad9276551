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
groups the rows of a batch by pass, and each pass gets its rows' states. Plain rows
(``trunk_state`` None) run in the pass of the head kind, which is the hooked trunk
(:mod:`adapters.kinds.trunk`), so heads and LoRA share one forward.

A ``top_layers`` kind (the task's own copy of the last k blocks) is one file: ``evictable``
True, ``shares_trunk_row`` False, ``trunk_state`` = its blocks, and a ``TrunkPass`` whose
``forward`` runs the frozen blocks below the split once for all its rows, then each
adapter's blocks on its own rows, and hands the result to ``collect``. An ``audio``
backbone needs no kind at all: kinds see only preprocessed batches and module names.

Adding a kind is one new file with a subclass and one entry in :data:`adapters.kinds.KINDS`.
Implementations are stateless singletons: per-adapter data lives in the plan and the
loaded weights, never on the kind.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Callable, ClassVar

import torch

from adapters.errors import InvalidAdapter

if TYPE_CHECKING:
    from adapters.backbones.base import Backbone, Features
    from adapters.format.adapter_dir import AdapterDir
    from adapters.format.manifest import Manifest


class TrunkPass:
    """Runs one chunk of trunk rows (``[rows, ...]`` preprocessed tensors) in one forward."""

    def forward(self, backbone: "Backbone", batch: dict[str, torch.Tensor], states: list,
                collect: Callable[["Features"], None]) -> None:
        """Run ``batch`` with ``states[i]`` (a kind's :meth:`AdapterKind.trunk_state`, or None
        for a plain row) applied to row ``i``; call ``collect(features)`` once, while whatever
        the pass changed on the shared model is still in place. Hold ``backbone.lock`` while
        the shared model is changed or run, and leave it exactly as found, even on error."""
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
    ``lora_budget_bytes``."""
    shares_trunk_row: ClassVar[bool] = True
    """True: the adapter reads the plain frozen trunk (one row per input per request)."""
    trunk_pass: ClassVar[TrunkPass]
    """The pass its rows run in; kinds naming the same object share a forward."""

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

    def trunk_state(self, weights):
        """What a row of this adapter carries into its pass; None = the plain trunk."""
        return None

    def forget(self, weights) -> None:
        """Drop every cache derived from these weights (called once they are evicted or deleted)."""
