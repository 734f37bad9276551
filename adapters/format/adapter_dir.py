"""The pieces of an adapter directory: its files, its JSON, its manifest's schema, hashing
and writing.

An adapter directory holds ``adapter.json`` plus its kind's weight files (``head.safetensors``
for ``head``; PEFT's ``adapter_config.json`` + ``adapter_model.safetensors`` for ``lora``...),
a model card ``README.md`` and optional plots. A plain PEFT directory (no ``adapter.json``)
is read too; the manifest is then built by the registry. What a kind or task type requires
of a directory is not known here: :func:`adapters.plugin_checks.read_adapter_dir` reads one
with these pieces and checks it against the plug-in tables.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

import torch
from pydantic import ValidationError
from safetensors.torch import save_file

from adapters.errors import InvalidAdapter
from adapters.file_modes import make_readable
from adapters.format.manifest import Manifest
from adapters.format.safetensors_io import read_header

PICKLE_SUFFIXES = {".bin", ".pt", ".pth", ".pkl", ".pickle", ".ckpt", ".joblib", ".npy", ".npz"}
ALLOWED_SUFFIXES = {".json", ".safetensors", ".md", ".png", ".txt", ".csv", ".svg"}
MAX_FILES = 32


@dataclass
class AdapterDir:
    """A checked adapter directory. ``manifest`` is None for a plain PEFT directory."""

    path: Path
    manifest: Manifest | None
    kind: str
    peft_config: dict | None
    headers: dict[str, dict]  # file name -> {tensor: (dtype, shape)}



def check_files(path: Path) -> list[Path]:
    """List the adapter's files, refusing links, sub-folders, pickles and unknown types."""
    if not path.is_dir():
        raise InvalidAdapter(f"{path} is not an adapter directory")
    problems, files = [], []
    for p in sorted(path.iterdir()):
        if p.is_symlink():
            problems.append(f"{p.name} is a symbolic link; links are refused")
        elif p.is_dir():
            problems.append(f"{p.name}/ is a folder; an adapter is one flat folder")
        elif not p.is_file():  # a FIFO or device would block the reader forever
            problems.append(f"{p.name} is not a regular file (a pipe, socket or device)")
        elif p.suffix.lower() in PICKLE_SUFFIXES:
            problems.append(f"{p.name} is a pickle-capable format; only safetensors weights are "
                            "loaded (save with safe_serialization=True)")
        elif p.suffix.lower() not in ALLOWED_SUFFIXES:
            problems.append(f"{p.name}: file type not allowed (allowed: "
                            f"{', '.join(sorted(ALLOWED_SUFFIXES))})")
        else:
            files.append(p)
    if len(files) > MAX_FILES:
        problems.append(f"{len(files)} files; at most {MAX_FILES}")
    InvalidAdapter.collect(problems, "adapter")
    return files


def _no_constants(name: str):
    raise ValueError(f"the literal {name} is not standard JSON; write a number or null")


def read_json(path: Path) -> dict:
    try:  # NaN/Infinity would later break JSON responses; deep nesting overflows the parser
        data = json.loads(path.read_text(), parse_constant=_no_constants)
    except (UnicodeDecodeError, ValueError, RecursionError) as exc:
        raise InvalidAdapter(f"{path.name} is not valid JSON ({exc})") from exc
    if not isinstance(data, dict):
        raise InvalidAdapter(f"{path.name} must hold a JSON object")
    return data


def manifest_error(exc: ValidationError) -> InvalidAdapter:
    """An ``adapter.json`` that does not validate, as the ``InvalidAdapter`` a client gets:
    one problem per pydantic error, each naming its field."""
    problems = [f"{'.'.join(map(str, e['loc'])) or 'manifest'}: {e['msg']}" for e in exc.errors()]
    return InvalidAdapter("adapter.json: " + "; ".join(problems), problems)


def parse_manifest(data: dict) -> Manifest:
    """``adapter.json``'s object against the schema alone (fields, types, sizes).

    >>> parse_manifest({"name": "Bad Name", "kind": "head", "backbone": {"name": "text"}})
    Traceback (most recent call last):
    ...
    adapters.errors.InvalidAdapter: adapter.json: name: String should match pattern '^([a-z0-9][a-z0-9_.-]{0,31}/)?[a-z0-9][a-z0-9_.-]{0,63}$'
    """
    try:
        return Manifest.model_validate(data)
    except ValidationError as exc:
        raise manifest_error(exc) from exc


def read_headers(path: Path, names: set[str]) -> dict[str, dict]:
    """The header of every safetensors file among ``names`` (no tensor loaded)."""
    return {n: read_header(path / n) for n in names if n.endswith(".safetensors")}


def content_hash(path: Path) -> str:
    """sha256 over the sorted (file name, file sha256) pairs: the version id of an adapter."""
    return content_hash_of({p.name: p.read_bytes() for p in Path(path).iterdir() if p.is_file()})


def content_hash_of(files: dict[str, bytes]) -> str:
    """:func:`content_hash` of files given as ``{name: bytes}``."""
    h = hashlib.sha256()
    for name in sorted(files):
        h.update(name.encode() + b"\0" + hashlib.sha256(files[name]).hexdigest().encode() + b"\n")
    return h.hexdigest()


def manifest_bytes(manifest: Manifest) -> bytes:
    """The canonical ``adapter.json`` bytes of a manifest (what :func:`write_manifest` writes)."""
    data = manifest.model_dump(mode="json", exclude_none=True)
    return (json.dumps(data, indent=2, sort_keys=True) + "\n").encode()


def write_manifest(path: Path, manifest: Manifest) -> None:
    (Path(path) / "adapter.json").write_bytes(manifest_bytes(manifest))


def write_head_adapter(path: Path, manifest: Manifest, head_state: dict[str, torch.Tensor],
                       card: str | None = None) -> Path:
    """Write a head adapter directory (manifest, ``head.safetensors``, model card)."""
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    if manifest.created_at is None:
        manifest = manifest.model_copy(update={"created_at": datetime.now(timezone.utc).isoformat()})
    save_file({k: v.detach().float().contiguous().cpu() for k, v in head_state.items()},
              str(path / "head.safetensors"))
    write_manifest(path, manifest)
    if card is not None:
        (path / "README.md").write_text(card)
    make_readable(path)  # save_file writes 0600; a server running as another user loads it
    return path
