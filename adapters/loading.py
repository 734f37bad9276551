"""From a checked adapter directory to a servable :class:`LoadedAdapter`.

``prepare_adapter`` is the registration-time dry run: it picks the backbone, checks
fingerprint and preprocessing, asks the adapter's kind to plan and check its files from
headers alone, and completes the manifest (plain third-party directories get one
synthesised by their kind). It writes nothing. Only then does ``load_adapter``
materialise tensors.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field, replace
from pathlib import Path

from adapters.backbones.base import Backbone
from adapters.errors import IncompatibleAdapter, InvalidInput
from adapters.format.adapter_dir import AdapterDir, write_manifest
from adapters.format.interning import compact_manifest
from adapters.format.manifest import Manifest
from adapters.heads import Head
from adapters.kinds import AdapterKind, adapter_kind
from adapters.plugin_checks import read_adapter_dir, validate_manifest
from adapters.tasks import TaskType, output_names, task_type
from adapters.lora.patterns import with_lora_modules
from adapters.lora.weights import LoraPlan


@dataclass(eq=False, slots=True, frozen=True)
class LoadedAdapter:
    """One adapter version in memory, ready to serve. Immutable (frozen): a registration
    names its stored version with :meth:`with_version`, a new object on the same tensors.

    ``weights`` are the kind's own trunk weights (LoRA factors; None for a head).
    """

    name: str
    version: str
    manifest: Manifest
    backbone: Backbone
    head: Head | None  # None: a generation task (the language model scores its tokens)
    weights: object | None
    load_seconds: float = 0.0
    loaded_at: float = field(default_factory=time.time)

    def with_version(self, version: str) -> "LoadedAdapter":
        """The same adapter (same tensors, so caches keyed by them stay valid) as ``version``."""
        return replace(self, version=version)

    @property
    def kind(self) -> str:
        return self.manifest.kind

    @property
    def impl(self) -> AdapterKind:
        """The adapter's kind (residency, trunk rows, pass)."""
        return adapter_kind(self.manifest.kind)

    @property
    def task(self) -> TaskType:
        """The adapter's task type (what its outputs mean)."""
        return task_type(self.manifest.task_type)

    @property
    def labels(self) -> list[str]:
        return self.manifest.labels

    @property
    def lora(self):
        """The LoRA weights of a ``lora`` adapter (its kind's trunk weights), else None."""
        return self.weights

    @property
    def nbytes(self) -> int:
        head = sum(p.numel() * p.element_size() for p in self.head.parameters()) if self.head is not None else 0
        return head + (self.impl.nbytes(self.weights) if self.weights is not None else 0)


@dataclass
class PreparedAdapter:
    """An adapter version read and checked from its headers (``prepare_adapter``): everything
    needed to load it, nothing loaded."""

    adir: AdapterDir
    manifest: Manifest
    backbone: Backbone
    plan: object | None


def pick_backbone(adir: AdapterDir, backbones: dict[str, Backbone], requested: str | None) -> Backbone:
    if requested is not None:
        if requested not in backbones:
            raise InvalidInput(f"backbone {requested!r} is not served here (have {sorted(backbones)})")
        return backbones[requested]
    m = adir.manifest
    if m is not None:
        by_fp = [b for b in backbones.values() if m.backbone.fingerprint == b.fingerprint]
        if by_fp:
            return by_fp[0]
        if m.backbone.name in backbones:
            return backbones[m.backbone.name]
        raise IncompatibleAdapter(f"adapter was trained on backbone {m.backbone.name!r} "
                                  f"({(m.backbone.fingerprint or '?')[:19]}), which this server does not "
                                  f"serve (have {sorted(backbones)})")
    fits, why = [], []
    impl = adapter_kind(adir.kind)
    for b in backbones.values():
        try:
            impl.fits(adir, b)
            fits.append(b)
        except IncompatibleAdapter as exc:  # InvalidAdapter (the files are wrong) fits nowhere: raise it
            why.append(f"{b.name}: {exc.message}")
    if not fits:
        raise IncompatibleAdapter(f"this {adir.kind} adapter fits no served backbone (" + "; ".join(why) + ")")
    if len(fits) > 1:
        raise InvalidInput(f"this {adir.kind} adapter fits several backbones "
                           f"{[b.name for b in fits]}; pass backbone=<name>")
    return fits[0]


def _check_backbone(m: Manifest, backbone: Backbone) -> None:
    problems = []
    if m.backbone.fingerprint and m.backbone.fingerprint != backbone.fingerprint:
        problems.append(f"backbone fingerprint {m.backbone.fingerprint[:19]}... does not match "
                        f"backbone {backbone.name!r} ({backbone.fingerprint[:19]}...): it was trained "
                        "on other weights; retrain it on this backbone")
    size = m.preprocessing.get("image_size")
    own = backbone.preprocessing_settings().get("image_size")
    if size is not None and own is not None and not (
            isinstance(size, int) and not isinstance(size, bool)):
        problems.append(f"preprocessing.image_size must be an integer, got {size!r}")
    elif size is not None and own is not None and int(size) != int(own):
        problems.append(f"adapter was trained at image_size {size} but backbone {backbone.name!r} "
                        f"serves {own}")
    generates = task_type(m.task_type).generates
    on_lm = not backbone.features  # a language model gives no encoder features
    if generates and not on_lm:
        problems.append(f"task_type {m.task_type!r} generates text and needs a language-model "
                        f"backbone; {backbone.name!r} is a {backbone.modality} encoder")
    elif on_lm and not generates:
        problems.append(f"backbone {backbone.name!r} is a language model: it serves generation "
                        f"tasks, not {m.task_type!r}")
    IncompatibleAdapter.collect(problems, "adapter")


def prepare_adapter(folder: Path | AdapterDir, backbones: dict[str, Backbone], name: str | None = None,
                    labels: list[str] | None = None, backbone: str | None = None,
                    write: bool = False, fresh: bool = False, shared=None) -> PreparedAdapter:
    """Check an adapter folder against the served backbones and complete its manifest.

    ``name`` and ``labels`` (the output names: labels, or a regression's outputs) override
    the manifest (and are required for plain PEFT folders when the manifest cannot supply
    them). Nothing is written unless ``write=True`` (then the completed ``adapter.json``).
    ``fresh`` (a registration): values derived at registration (``lora_modules``) are
    recomputed from the adapter's own files, never taken from an uploaded manifest.
    ``shared(name, version)``: the loaded shared adaptation a ``multitask`` task rides on
    (the registry's lookup; None: such a task is refused with a message).
    """
    adir = folder if isinstance(folder, AdapterDir) else read_adapter_dir(Path(folder))
    bb = pick_backbone(adir, backbones, backbone)
    impl = adapter_kind(adir.kind)
    plan = impl.plan(adir, bb)
    # A manifest read from the folder was checked against its kind and task type; one built
    # here (a plain PEFT folder's, or with overridden fields) is checked now.
    manifest = adir.manifest or validate_manifest(impl.synthesise_manifest(adir, bb, plan, name, labels))
    updates = {}
    if name is not None and name != manifest.name:
        updates["name"] = name
    if labels is not None and labels != output_names(manifest):
        updates.update(task_type(manifest.task_type).rename(labels))
    if updates:
        manifest = validate_manifest(Manifest.model_validate({**manifest.model_dump(), **updates}))
    _check_backbone(manifest, bb)
    plan, manifest = impl.bind(manifest, bb, plan, shared)
    impl.check(adir, manifest, bb, plan)
    if isinstance(plan, LoraPlan):  # per-module r/alpha: patterns matched (bounded) once, stored
        manifest = with_lora_modules(manifest, adir.peft_config,
                                     adir.headers["adapter_model.safetensors"], plan, fresh=fresh)
    if write:
        write_manifest(adir.path, manifest)
    prepared = AdapterDir(adir.path, manifest, adir.kind, adir.peft_config, adir.headers)
    return PreparedAdapter(prepared, manifest, bb, plan)


def load_adapter(prep: PreparedAdapter, version: str) -> LoadedAdapter:
    """Materialise the tensors of a prepared adapter on its backbone's device."""
    start = time.perf_counter()
    m, bb, adir = compact_manifest(prep.manifest), prep.backbone, prep.adir  # shared parts: 100k tasks
    impl = adapter_kind(adir.kind)
    head_tensors, weights = impl.load(adir, m, bb, prep.plan)
    head = task_type(m.task_type).build_head(m, head_tensors)
    head = head.to(bb.device) if head is not None else None
    if weights is not None:
        weights = impl.to_device(weights, bb)
    return LoadedAdapter(m.name, version, m, bb, head, weights, time.perf_counter() - start)
