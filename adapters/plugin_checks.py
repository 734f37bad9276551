"""An adapter checked against the plug-in tables: what its kind and task type require.

The on-disk format (:mod:`adapters.format`) is a schema: fields, types, sizes. It names no
adapter kind or task type. What those require is checked here, one layer up, where both
tables are in reach (:data:`adapters.kinds.KINDS`, :data:`adapters.tasks.TASK_TYPES`):

- :func:`validate_manifest`: the manifest's kind and task type are known, its output names
  (labels, a regression's outputs) follow the registration field's rule, its task type's
  own checks pass, and its head reads the features its task type gives. It raises
  pydantic's ``ValidationError``, as the manifest's schema does, so a manifest built in
  code (a synthesised PEFT manifest, one with overridden labels, training's) fails the
  same way whichever rule it breaks.
- :func:`manifest_from_json`: an ``adapter.json`` object, schema then rules, as an
  ``InvalidAdapter`` naming every problem.
- :func:`read_adapter_dir`: an adapter directory: its files (no pickles, links,
  sub-folders), its manifest (checked), its kind (from the manifest, or from a third-party
  marker file such as PEFT's ``adapter_config.json``), that kind's weight files, and every
  safetensors header (no tensor loaded).

The registration pipeline (:mod:`adapters.loading`, :mod:`adapters.lifecycle`) reads and
completes adapters through these, and training checks the manifests it writes with them.
"""

from __future__ import annotations

from pathlib import Path

from pydantic import ValidationError
from pydantic_core import InitErrorDetails

from adapters.errors import InvalidAdapter
from adapters.format.adapter_dir import AdapterDir, check_files, manifest_error, parse_manifest, read_headers, read_json
from adapters.format.labels import label_problems
from adapters.format.manifest import Manifest
from adapters.kinds import KINDS, kind_of_files
from adapters.tasks import TASK_TYPES, output_names


def manifest_problem(m: Manifest) -> str | None:
    """What ``m``'s kind and task type find wrong with it (problems joined by "; "), or None."""
    if m.kind not in KINDS:
        return f"kind {m.kind!r} is unknown; use one of {sorted(KINDS)}"
    task = TASK_TYPES.get(m.task_type)
    if task is None:
        return f"task_type {m.task_type!r} is unknown; use one of {sorted(TASK_TYPES)}"
    # Output names (labels, regression outputs) follow the registration field's rule.
    names = output_names(m)
    problems = list(dict.fromkeys((label_problems(names) if names else []) + task.check_manifest(m)))
    if m.head is not None and (m.head.pooling == "tokens") != (task.features == "tokens"):
        problems.append(f"head.pooling {m.head.pooling!r} does not fit task_type "
                        f"{m.task_type!r}, whose head reads {task.features} features")
    return "; ".join(problems) or None


def validate_manifest(m: Manifest) -> Manifest:
    """``m`` if its kind and task type accept it; otherwise pydantic's ``ValidationError``
    (a ``ValueError``) with one model-level error, as a validator of the manifest raises.

    >>> from adapters.format import BackboneRef, HeadSpec
    >>> m = Manifest(name="t", kind="head", labels=["only"], backbone=BackboneRef(name="text"),
    ...              head=HeadSpec(pooling="mean", input_dim=4))
    >>> try:
    ...     validate_manifest(m)
    ... except ValueError as exc:
    ...     print(exc.errors()[0]["msg"])
    Value error, a single_label task needs at least 2 labels
    """
    problem = manifest_problem(m)
    if problem is None:
        return m
    raise ValidationError.from_exception_data(type(m).__name__, [InitErrorDetails(
        type="value_error", loc=(), input=m.model_dump(), ctx={"error": ValueError(problem)})])


def manifest_from_json(data: dict) -> Manifest:
    """An ``adapter.json`` object checked against the schema, then its kind and task type;
    an ``InvalidAdapter`` ("adapter.json: ...") naming the problems otherwise."""
    m = parse_manifest(data)
    try:
        return validate_manifest(m)
    except ValidationError as exc:
        raise manifest_error(exc) from exc


def read_adapter_dir(path: Path) -> AdapterDir:
    """Check an adapter directory's files, manifest, kind and tensor headers (no tensor loaded).

    >>> read_adapter_dir(Path("/nonexistent"))
    Traceback (most recent call last):
    ...
    adapters.errors.InvalidAdapter: /nonexistent is not an adapter directory
    """
    names = {p.name for p in check_files(path)}
    manifest = manifest_from_json(read_json(path / "adapter.json")) if "adapter.json" in names else None
    peft_config = read_json(path / "adapter_config.json") if "adapter_config.json" in names else None
    # A checked manifest's kind is a key of the kinds table.
    impl = KINDS[manifest.kind] if manifest is not None else kind_of_files(names)
    if impl is None:
        raise InvalidAdapter("no adapter.json and no adapter_config.json: not an adapter directory")
    missing = [n for n in impl.weight_files if n not in names]
    InvalidAdapter.collect([f"{n} is missing for a {impl.name} adapter" for n in missing], "adapter")
    return AdapterDir(path, manifest, impl.name, peft_config, read_headers(path, names))
