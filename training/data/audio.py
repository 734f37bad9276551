"""Labelled audio from files: a folder with one sub-folder per class, or a CSV of paths.

Clips stay on disk as ``Path`` and are decoded (mono, 16 kHz) when used, by the same
decoder and limits the server applies to uploads (:mod:`adapters.backbones.audio_io`).
Every file is checked up front (its header read, nothing decoded) and every problem
reported together, as the other loaders do.

Example::

    >>> import tempfile, pathlib, numpy as np, soundfile as sf
    >>> root = pathlib.Path(tempfile.mkdtemp())
    >>> for c in ("yes", "no"):
    ...     (root / c).mkdir(); sf.write(root / c / "a.wav", np.zeros(8000, np.float32), 16000)
    >>> load_audio_folder(root).class_counts()
    {'no': 1, 'yes': 1}
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

from adapters.backbones.audio_io import AUDIO_EXTENSIONS, Audio, AudioLimits, load_audio_file
from adapters.errors import InvalidInput
from training.data.dataset import LabelledData
from training.data.files import (_csv_rows, _existing_file, _index_labels, _label_text, _listing,
                                 _require_columns)

# Training files may be longer than a request's clip; the decoded-memory bound still holds.
TRAINING_LIMITS = AudioLimits(max_bytes=64 << 20, max_seconds=120.0, max_decoded_bytes=256 << 20)


def open_audio(x: "Audio | Path | str", limits: AudioLimits = TRAINING_LIMITS) -> Audio:
    """A decoded mono 16 kHz clip from a path (or a clip, returned as is)."""
    if isinstance(x, Audio):
        return x
    if isinstance(x, (str, Path)):
        return load_audio_file(x, limits)
    raise InvalidInput(f"expected an audio clip or a path, got {type(x).__name__}")


def _check_audio(path: Path, limits: AudioLimits = TRAINING_LIMITS) -> str | None:
    """None if ``path``'s header is a readable WAV/FLAC/OGG within the limits, else a reason."""
    import soundfile as sf

    from adapters.backbones.audio_io import sniff_format
    try:
        with path.open("rb") as f:
            head = f.read(12)
        if sniff_format(head) is None:
            return f"{path} (not WAV, FLAC or OGG)"
        info = sf.info(str(path))
        if info.frames / max(info.samplerate, 1) > limits.max_seconds:
            return f"{path} ({info.frames / info.samplerate:.0f} s; at most {limits.max_seconds:g} s)"
    except Exception as exc:  # libsndfile's errors, OSError
        return f"{path} ({type(exc).__name__}: {exc})"
    return None


def _audio_files(d: Path) -> list[Path]:
    return sorted(p for p in d.rglob("*")
                  if p.is_file() and p.suffix.lower() in AUDIO_EXTENSIONS
                  and not any(part.startswith(".") for part in p.relative_to(d).parts))


def has_audio_files(folder: Path) -> bool:
    """True if ``folder``'s class sub-folders hold audio files (how ``auto`` tells audio from images)."""
    return any(p.suffix.lower() in AUDIO_EXTENSIONS for p in Path(folder).rglob("*") if p.is_file())


def load_audio_folder(path: Path | str, labels: Sequence[str] | None = None) -> LabelledData:
    """Clips from ``path/<class name>/**/*.{wav,flac,ogg,oga}`` (kept as ``Path``)."""
    root = Path(path)
    if not root.is_dir():
        raise InvalidInput(f"audio folder not found: {root}" if not root.exists()
                           else f"{root} is not a folder; expected one sub-folder per class")
    class_dirs = sorted(d for d in root.iterdir() if d.is_dir() and not d.name.startswith("."))
    if not class_dirs:
        raise InvalidInput(f"{root} has no sub-folders; put each class's clips in a folder named after it")
    problems: list[str] = []
    files: list[Path] = []
    raw: list[str] = []
    empty = []
    for d in class_dirs:
        found = _audio_files(d)
        if not found:
            empty.append(d.name)
        files += found
        raw += [d.name] * len(found)
    if empty:
        problems.append(f"class folders with no audio files ({', '.join(AUDIO_EXTENSIONS)}): {empty}")
    unreadable = [r for r in map(_check_audio, files) if r]
    if unreadable:
        problems.append(_listing(unreadable, "unreadable audio files:"))
    indices, names = _index_labels(raw, labels, [str(f) for f in files], problems)
    InvalidInput.collect(problems, str(root))
    return LabelledData("audio", files, indices, names, f"audio folder {root.name} ({len(files)} clips)")


def load_audio_csv(path: Path | str, path_column: str = "path", label_column: str = "label",
                   labels: Sequence[str] | None = None) -> LabelledData:
    """Clips listed in a CSV (``path,label``); relative paths are resolved against the CSV's folder."""
    path = _existing_file(path, "audio CSV")
    header, rows = _csv_rows(path)
    _require_columns(path, header, [path_column, label_column])
    files: list[Path] = []
    raw: list[str] = []
    where: list[str] = []
    empty_path, empty_label, missing, unreadable = [], [], [], []
    for i, row in rows:
        value, label = (row.get(path_column) or "").strip(), _label_text(row.get(label_column))
        if not value:
            empty_path.append(f"row {i}")
            continue
        if label is None:
            empty_label.append(f"row {i}")
            continue
        file = Path(value).expanduser()
        file = file if file.is_absolute() else path.parent / file
        if not file.is_file():
            missing.append(f"row {i}: {file}")
            continue
        reason = _check_audio(file)
        if reason:
            unreadable.append(f"row {i}: {reason}")
            continue
        files.append(file)
        raw.append(label)
        where.append(f"row {i}")
    problems = [_listing(items, what) for items, what in (
        (empty_path, f"empty {path_column!r} in"), (empty_label, f"empty {label_column!r} in"),
        (missing, "audio files not found:"), (unreadable, "unreadable audio files:")) if items]
    if not files and not problems:
        raise InvalidInput(f"{path} has a header but no rows")
    indices, names = _index_labels(raw, labels, where, problems)
    InvalidInput.collect(problems, str(path))
    return LabelledData("audio", files, indices, names, f"audio CSV {path.name} ({len(files)} clips)")


def csv_lists_audio(path: Path, path_column: str = "path") -> bool:
    """True if the first listed path of a CSV has an audio extension (``auto`` format)."""
    try:
        header, rows = _csv_rows(path)
    except InvalidInput:
        return False
    for _, row in rows[:1]:
        return Path((row.get(path_column) or "").strip()).suffix.lower() in AUDIO_EXTENSIONS
    return False
