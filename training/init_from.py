"""Warm-start a head from another task's head adapter (``taskswap train --init-from``).

Same task type, backbone (fingerprint) and head shape (pooling, hidden widths, activation,
normalisation); the labels may differ. The source's hidden layers are copied whole; in the
output layer each label the two tasks share keeps the source's row, and a new label keeps
the row a fresh head draws (the usual initialisation). The saved source head reads raw
features (its standardisation was folded in, :func:`training.head_fit.fold_standardisation`);
:func:`unfold_into` turns it back into the standardised space the new fit trains in.

Example::

    >>> import torch
    >>> from adapters.format import HeadSpec
    >>> from adapters.heads import Head
    >>> spec = HeadSpec(pooling="mean", input_dim=3)
    >>> src, fresh = Head(spec, 2), Head(spec, 3)
    >>> w = WarmStart(src, ["neg", "pos"], ["pos", "neutral", "neg"], "t", "v" * 64)
    >>> w.shared, w.new
    (['pos', 'neg'], ['neutral'])
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors.torch import load_file

from adapters.kinds import adapter_kind
from adapters.errors import InvalidInput
from adapters.format import HeadSpec, content_hash
from adapters.heads import Head
from adapters.plugin_checks import read_adapter_dir
from adapters.store import open_store


@dataclass
class WarmStart:
    """A source head (raw-feature weights) and how its labels map onto the new task's."""

    head: Head
    source_labels: list[str]
    labels: list[str]
    source_task: str
    source_version: str

    @property
    def shared(self) -> list[str]:
        return [lab for lab in self.labels if lab in self.source_labels]

    @property
    def new(self) -> list[str]:
        return [lab for lab in self.labels if lab not in self.source_labels]

    def record(self) -> dict:
        """What the manifest's ``training.init_from`` says."""
        return {"task": self.source_task, "version": self.source_version, "shared_labels": self.shared,
                "new_labels": self.new}


def resolve_task_folder(ref: str, store_url: str) -> Path:
    """``NAME`` or ``NAME@VERSION`` (a unique version prefix) in the store -> its version folder;
    an existing folder path is returned as it is."""
    if Path(ref).is_dir():
        return Path(ref)
    name, _, version = ref.partition("@")
    store = open_store(store_url)
    alias = store.get_alias(name)
    if alias is None:
        raise InvalidInput(f"task {name!r} is not registered in the store {store_url} (and no folder "
                           f"{ref!r} exists); check --store, or give an adapter folder")
    if not version:
        return store.version_path(name, alias.active)
    matches = [v.version for v in alias.versions if v.version.startswith(version)]
    if len(matches) != 1:
        raise InvalidInput(f"version {version!r} of {name!r} matches {len(matches)} stored versions; "
                           "give a longer unique prefix")
    return store.version_path(name, matches[0])


def load_warm_start(folder: Path, spec: HeadSpec, task_type: str, fingerprint: str,
                    labels: list[str]) -> WarmStart:
    """The head at ``folder``, checked against the new run (one ``InvalidInput`` listing every mismatch)."""
    adir = read_adapter_dir(Path(folder))
    m = adir.manifest
    if m is None or not adapter_kind(adir.kind).shares_trunk_row or m.head is None:  # a head on frozen features
        raise InvalidInput(f"--init-from {folder}: a {adir.kind!r} adapter; warm starts take a 'head' adapter")
    problems = []
    if m.task_type != task_type:
        problems.append(f"its task type is {m.task_type!r}, this run's is {task_type!r}")
    if m.backbone.fingerprint != fingerprint:
        problems.append(f"it was trained on another backbone ({m.backbone.name}, fingerprint differs)")
    for key in ("pooling", "input_dim", "hidden", "activation", "normalize"):
        if getattr(m.head, key) != getattr(spec, key):
            problems.append(f"its head {key} is {getattr(m.head, key)!r}, this run's is {getattr(spec, key)!r}")
    InvalidInput.collect(problems, f"--init-from {folder}")
    tensors = load_file(str(Path(folder) / "head.safetensors"))
    source_labels = list(m.labels or m.outputs)
    head = Head(m.head, len(source_labels))
    for i, lin in enumerate(head.linear_layers()):
        lin.weight.data.copy_(tensors[f"layers.{i}.weight"])
        lin.bias.data.copy_(tensors[f"layers.{i}.bias"])
    return WarmStart(head, source_labels, list(labels), m.name, content_hash(Path(folder)))


def unfold_into(fresh: Head, warm: WarmStart, mean: torch.Tensor, std: torch.Tensor) -> None:
    """Load ``warm`` into ``fresh`` (a head on standardised features ``(x - mean) / std``), in
    place: ``W_std = W_raw * std``, ``b_std = b_raw + W_raw @ mean`` on the first layer, shared
    label rows only on the output layer."""
    src, dst = warm.head.linear_layers(), fresh.linear_layers()
    rows = [(warm.labels.index(lab), warm.source_labels.index(lab)) for lab in warm.shared]
    with torch.no_grad():
        for i, (s, d) in enumerate(zip(src, dst)):
            w, b = s.weight.clone(), s.bias.clone()
            if i == 0:  # undo the folded standardisation
                b = b + w @ mean
                w = w * std
            if i == len(src) - 1:
                for new_row, old_row in rows:
                    d.weight[new_row] = w[old_row]
                    d.bias[new_row] = b[old_row]
            else:
                d.weight.copy_(w)
                d.bias.copy_(b)
