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

from adapters.backbones.audio_io import AUDIO_EXTENSIONS, AudioLimits, sniff_format
from adapters.errors import InvalidInput
from training.data.dataset import TRAINING_LIMITS, LabelledData, open_audio  # noqa: F401  (re-exported)
from training.data.files import _FileKind, _csv_rows, _load_media_csv, _load_media_folder


def _check_audio(path: Path, limits: AudioLimits = TRAINING_LIMITS) -> str | None:
    """None if ``path``'s header is a readable WAV/FLAC/OGG within the limits, else a reason."""
    import soundfile as sf  # optional: the audio backbone's packages may be absent
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


_AUDIO = _FileKind("audio", AUDIO_EXTENSIONS, _check_audio, "unreadable audio files:", "clips")


def has_audio_files(folder: Path) -> bool:
    """True if ``folder``'s class sub-folders hold audio files (how ``auto`` tells audio from images)."""
    return any(p.suffix.lower() in AUDIO_EXTENSIONS for p in Path(folder).rglob("*") if p.is_file())


def load_audio_folder(path: Path | str, labels: Sequence[str] | None = None) -> LabelledData:
    """Clips from ``path/<class name>/**/*.{wav,flac,ogg,oga}`` (kept as ``Path``)."""
    return _load_media_folder(path, labels, _AUDIO)


def load_audio_csv(path: Path | str, path_column: str = "path", label_column: str = "label",
                   labels: Sequence[str] | None = None) -> LabelledData:
    """Clips listed in a CSV (``path,label``); relative paths are resolved against the CSV's folder."""
    return _load_media_csv(path, path_column, label_column, labels, _AUDIO)


def csv_lists_audio(path: Path, path_column: str = "path") -> bool:
    """True if the first listed path of a CSV has an audio extension (``auto`` format)."""
    try:
        header, rows = _csv_rows(path)
    except InvalidInput:
        return False
    for _, row in rows[:1]:
        return Path((row.get(path_column) or "").strip()).suffix.lower() in AUDIO_EXTENSIONS
    return False
