"""Unlabelled inputs of a target domain, for domain adaptation (labels, if any, are ignored).

- text: a ``.txt`` file (one text per non-empty line), a ``.csv`` with a ``text`` column,
  or a ``.jsonl`` file of ``{"text": ...}`` objects;
- image / audio: a folder; every image or audio file below it, in any sub-folder.

Example::

    >>> from pathlib import Path
    >>> _ = Path("/tmp/target.txt").write_text("first review\\n\\nsecond review\\n")
    >>> load_unlabelled("/tmp/target.txt", "text")
    ['first review', 'second review']
"""

from __future__ import annotations

import csv
import json
from pathlib import Path

from adapters.backbones.audio_io import AUDIO_EXTENSIONS
from adapters.errors import InvalidInput
from training.data.files import IMAGE_EXTENSIONS

_MEDIA = {"image": IMAGE_EXTENSIONS, "audio": AUDIO_EXTENSIONS}


def load_unlabelled(path: Path | str, modality: str, column: str = "text") -> list:
    """The inputs at ``path`` for a backbone of ``modality`` (texts, or file paths)."""
    p = Path(path)
    if not p.exists():
        raise InvalidInput(f"target data not found: {p}")
    if modality == "text":
        texts = _texts(p, column)
        if not texts:
            raise InvalidInput(f"{p} holds no non-empty text")
        return texts
    if modality not in _MEDIA:
        raise InvalidInput(f"unlabelled {modality} data is not supported; use text, image or audio")
    if not p.is_dir():
        raise InvalidInput(f"{p} is not a folder; give a folder of {modality} files")
    files = sorted(f for f in p.rglob("*") if f.is_file() and f.suffix.lower() in _MEDIA[modality]
                   and not any(part.startswith(".") for part in f.relative_to(p).parts))
    if not files:
        raise InvalidInput(f"{p} holds no {modality} files ({', '.join(_MEDIA[modality])})")
    return files


def _texts(p: Path, column: str) -> list[str]:
    if p.is_dir():
        raise InvalidInput(f"{p} is a folder; for text give a .txt, .csv (column {column!r}) or .jsonl file")
    suffix = p.suffix.lower()
    if suffix == ".csv":
        with p.open(newline="", encoding="utf-8") as f:
            reader = csv.DictReader(f)
            if column not in (reader.fieldnames or []):
                raise InvalidInput(f"{p} has no {column!r} column (columns: {reader.fieldnames})")
            return [r[column].strip() for r in reader if (r[column] or "").strip()]
    if suffix == ".jsonl":
        out = []
        for i, line in enumerate(p.read_text(encoding="utf-8").splitlines(), 1):
            if not line.strip():
                continue
            try:
                text = json.loads(line).get(column)
            except (json.JSONDecodeError, AttributeError) as exc:
                raise InvalidInput(f"{p} line {i} is not a JSON object: {exc}") from exc
            if isinstance(text, str) and text.strip():
                out.append(text.strip())
        return out
    return [line.strip() for line in p.read_text(encoding="utf-8").splitlines() if line.strip()]
