"""Load a user's labelled files: text tables (CSV/JSONL), image folders, CSVs of image paths.

Every problem is found before any training starts, and as many as practical are reported
together in one :class:`~adapters.errors.InvalidInput` (``err.problems`` lists them), so a
user fixes their file once rather than once per error.

Label names are strings. With ``labels=None`` the label set is the sorted set of values
found; with ``labels=[...]`` that list fixes the order (label *i* of the adapter) and any
value outside it is an error.

Example::

    >>> import tempfile, pathlib
    >>> p = pathlib.Path(tempfile.mkdtemp()) / "reviews.csv"
    >>> _ = p.write_text("text,label\\ngreat film,pos\\ndull,neg\\n")
    >>> d = load_text_table(p)
    >>> d.label_names, d.labels
    (['neg', 'pos'], [1, 0])
"""

from __future__ import annotations

import csv
import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator, Sequence

from PIL import Image

from adapters.errors import InvalidInput
from training.data.dataset import LabelledData

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp")
_MAX_LISTED = 10  # rows/files named per problem; the rest are counted, to keep messages readable


def _listing(items: Sequence, what: str) -> str:
    shown = ", ".join(str(x) for x in items[:_MAX_LISTED])
    more = f" (and {len(items) - _MAX_LISTED} more)" if len(items) > _MAX_LISTED else ""
    return f"{what} {shown}{more}"


def _existing_file(path: Path | str, kind: str) -> Path:
    path = Path(path)
    if not path.exists():
        raise InvalidInput(f"{kind} not found: {path}")
    if not path.is_file():
        raise InvalidInput(f"{kind} {path} is not a file")
    if path.stat().st_size == 0:
        raise InvalidInput(f"{kind} {path} is empty")
    return path


def _csv_rows(path: Path) -> tuple[list[str], list[tuple[int, dict]]]:
    """Header and (row number, row) pairs; row 1 is the first row after the header."""
    # Read it all inside ``with`` so an early error (a missing column) leaks no open file.
    try:
        with path.open("r", encoding="utf-8-sig", newline="") as f:  # -sig: Excel writes a BOM
            reader = csv.DictReader(f)
            header = [h for h in (reader.fieldnames or []) if h is not None]
            return header, list(enumerate(reader, start=1))
    except UnicodeDecodeError as exc:
        raise InvalidInput(f"{path} is not UTF-8 text ({exc.reason} at byte {exc.start}); save it as UTF-8") from exc
    except csv.Error as exc:
        raise InvalidInput(f"{path} is not a readable CSV: {exc}") from exc


def _require_columns(path: Path, header: Sequence[str], wanted: Sequence[str]) -> None:
    missing = [c for c in wanted if c not in header]
    if missing:
        have = ", ".join(repr(h) for h in header) or "none"
        raise InvalidInput(
            f"{path}: missing column(s) {', '.join(repr(c) for c in missing)}; the columns are {have} "
            "(name the ones to read with --text-column, --label-column, --target-columns or "
            "--path-column; text_column, label_column ... in the Python API)"
        )


def _label_text(value) -> str | None:
    """A label as a string; JSONL may hold ints. None for empty/null values."""
    if value is None or isinstance(value, bool):
        return None if value is None else str(value).lower()
    if isinstance(value, float) and value.is_integer():
        value = int(value)  # 1.0 -> "1", the same class as 1
    text = str(value).strip()  # stray spaces around a label are never meant as a new class
    return text or None


def _index_labels(
    raw: list[str], labels: Sequence | None, where: list[str], problems: list[str]
) -> tuple[list[int], list[str]]:
    """Map label strings to indices, checking them against ``labels`` when given.

    ``where[i]`` names example ``i`` (e.g. "row 3") for error messages.
    """
    unknown: list[str] = []
    if labels is not None:
        names = [str(x) for x in labels]
        if len(set(names)) != len(names):
            problems.append(f"the given labels have duplicates: {names}")
        unknown = sorted(set(raw) - set(names))
        if unknown:
            first = [where[i] for i, y in enumerate(raw) if y in set(unknown)]
            problems.append(
                f"labels {unknown} are not in the given labels {names} ({_listing(first, 'first at')})"
            )
    else:
        names = sorted(set(raw))
    present = sorted(set(raw) & set(names))
    # Skip when the unknown-labels error (or an all-rows-bad file) already explains it.
    if len(present) < 2 and not unknown and (raw or not problems):
        problems.append(
            f"found {len(present)} class(es) {present}; a classifier needs examples of at least 2 classes"
        )
    position = {n: i for i, n in enumerate(names)}
    return [position.get(y, -1) for y in raw], names


def load_text_table(
    path: Path | str,
    text_column: str = "text",
    label_column: str = "label",
    labels: Sequence[str] | None = None,
) -> LabelledData:
    """Texts and labels from a ``.csv`` (with a header) or ``.jsonl`` (one object per line).

    >>> import tempfile, pathlib
    >>> p = pathlib.Path(tempfile.mkdtemp()) / "t.jsonl"
    >>> _ = p.write_text('{"text": "yes", "label": 1}\\n{"text": "no", "label": 0}\\n')
    >>> load_text_table(p, labels=["0", "1"]).labels
    [1, 0]
    """
    path = _existing_file(path, "text table")
    suffix = path.suffix.lower()
    if suffix not in (".csv", ".jsonl"):
        raise InvalidInput(f"{path}: unsupported file type {suffix!r}; use .csv or .jsonl")
    problems: list[str] = []
    texts: list[str] = []
    raw: list[str] = []
    where: list[str] = []
    empty_text: list[str] = []
    empty_label: list[str] = []

    if suffix == ".csv":
        header, rows = _csv_rows(path)
        _require_columns(path, header, [text_column, label_column])
        records = ((f"row {i}", row) for i, row in rows)
    else:
        records = _jsonl_records(path, [text_column, label_column], problems)

    for at, row in records:
        text, label = row.get(text_column), _label_text(row.get(label_column))
        if not isinstance(text, str) or not text.strip():
            empty_text.append(at)
            continue
        if label is None:
            empty_label.append(at)
            continue
        texts.append(text)
        raw.append(label)
        where.append(at)

    if empty_text:
        problems.append(_listing(empty_text, f"empty or non-string {text_column!r} in"))
    if empty_label:
        problems.append(_listing(empty_label, f"empty {label_column!r} in"))
    if not texts and not problems:
        raise InvalidInput(f"{path} has a header but no rows")
    indices, names = _index_labels(raw, labels, where, problems)
    InvalidInput.collect(problems, str(path))
    return LabelledData("text", texts, indices, names, f"{suffix[1:].upper()} file {path.name} ({len(texts)} rows)")


def load_regression_table(path: Path | str, text_column: str = "text",
                          target_columns: Sequence[str] = ("value",)) -> LabelledData:
    """Texts and real-valued targets (one or more numeric columns) from a ``.csv``/``.jsonl``.

    >>> import tempfile, pathlib
    >>> p = pathlib.Path(tempfile.mkdtemp()) / "t.csv"
    >>> _ = p.write_text("text,rating\\ngood,4.5\\nbad,1\\n")
    >>> load_regression_table(p, target_columns=["rating"]).values
    [[4.5], [1.0]]
    """
    path = _existing_file(path, "text table")
    suffix = path.suffix.lower()
    if suffix not in (".csv", ".jsonl"):
        raise InvalidInput(f"{path}: unsupported file type {suffix!r}; use .csv or .jsonl")
    columns = list(target_columns)
    if not columns or len(set(columns)) != len(columns):
        raise InvalidInput(f"target columns must be distinct names, got {columns}")
    problems: list[str] = []
    if suffix == ".csv":
        header, rows = _csv_rows(path)
        _require_columns(path, header, [text_column, *columns])
        records = ((f"row {i}", row) for i, row in rows)
    else:
        records = _jsonl_records(path, [text_column, *columns], problems)
    texts, values, empty_text, bad = [], [], [], []
    for at, row in records:
        text = row.get(text_column)
        if not isinstance(text, str) or not text.strip():
            empty_text.append(at)
            continue
        try:
            vals = [float(row.get(c)) if not isinstance(row.get(c), bool) else math.nan for c in columns]
        except (TypeError, ValueError):
            vals = [math.nan]
        if not all(math.isfinite(v) for v in vals):
            bad.append(at)
            continue
        texts.append(text)
        values.append(vals)
    if empty_text:
        problems.append(_listing(empty_text, f"empty or non-string {text_column!r} in"))
    if bad:
        problems.append(_listing(bad, f"non-numeric or non-finite {', '.join(map(repr, columns))} in"))
    if not texts and not problems:
        raise InvalidInput(f"{path} has a header but no rows")
    InvalidInput.collect(problems, str(path))
    return LabelledData("text", texts, [], columns,
                        f"{suffix[1:].upper()} file {path.name} ({len(texts)} rows)", values=values)


def _jsonl_records(path: Path, columns: Sequence[str], problems: list[str]) -> Iterator[tuple[str, dict]]:
    """(``"line N"``, object) per non-blank line; bad lines are added to ``problems``."""
    bad_json, not_object = [], []
    missing_columns: dict[str, list[str]] = {}
    keys_seen: dict[str, list[str]] = {}  # column -> keys of the first record lacking it
    any_record = False
    try:
        # split("\n"), not splitlines(): JSON strings may hold a raw U+2028, which is not a break.
        lines = path.read_text(encoding="utf-8-sig").split("\n")
    except UnicodeDecodeError as exc:
        raise InvalidInput(f"{path} is not UTF-8 text ({exc.reason} at byte {exc.start}); save it as UTF-8") from exc
    for n, line in enumerate(lines, start=1):
        if not line.strip():
            continue  # a trailing blank line is common and harmless
        try:
            obj = json.loads(line)
        except json.JSONDecodeError:
            bad_json.append(f"line {n}")
            continue
        if not isinstance(obj, dict):
            not_object.append(f"line {n}")
            continue
        any_record = True
        absent = [c for c in columns if c not in obj]
        if absent:
            for c in absent:
                missing_columns.setdefault(c, []).append(f"line {n}")
                keys_seen.setdefault(c, list(obj))
            continue
        yield f"line {n}", obj
    if bad_json:
        problems.append(_listing(bad_json, "invalid JSON on"))
    if not_object:
        problems.append(_listing(not_object, "not a JSON object on"))
    for c, where in missing_columns.items():
        have = ", ".join(repr(k) for k in keys_seen[c]) or "none"
        problems.append(_listing(where, f"missing column {c!r} (the record on {where[0]} has {have}) on"))
    if not any_record and not bad_json and not not_object:
        problems.append("no records (the file has only blank lines)")


def _check_image(path: Path) -> str | None:
    """None if PIL can parse ``path``, else a reason. ``verify`` checks without decoding pixels."""
    try:
        with Image.open(path) as im:
            im.verify()
    except Exception as exc:  # PIL raises many types (OSError, SyntaxError, ValueError...)
        detail = type(exc).__name__ if str(path) in str(exc) else f"{type(exc).__name__}: {exc}"
        return f"{path} ({detail})"
    return None


@dataclass(frozen=True)
class _FileKind:
    """What differs between the loaders of labelled media files (images, audio clips)."""
    modality: str  # LabelledData's modality, and the word in messages: "image", "audio"
    extensions: tuple[str, ...]
    check: Callable[[Path], str | None]  # None if the file is readable, else a reason
    unreadable: str  # the problem's heading, e.g. "unreadable images:"
    unit: str  # the plural in descriptions and hints: "images", "clips"


def _media_files(d: Path, extensions: Sequence[str]) -> list[Path]:
    """Files below ``d`` with one of ``extensions``, hidden files and folders skipped."""
    return sorted(p for p in d.rglob("*")
                  if p.is_file() and p.suffix.lower() in extensions
                  and not any(part.startswith(".") for part in p.relative_to(d).parts))


def _load_media_folder(path: Path | str, labels: Sequence[str] | None, kind: _FileKind) -> LabelledData:
    """Files of ``kind`` from ``path/<class name>/**``, every file checked up front."""
    root = Path(path)
    if not root.exists():
        raise InvalidInput(f"{kind.modality} folder not found: {root}")
    if not root.is_dir():
        raise InvalidInput(f"{root} is not a folder; expected one sub-folder per class")
    class_dirs = sorted(d for d in root.iterdir() if d.is_dir() and not d.name.startswith("."))
    if not class_dirs:
        raise InvalidInput(f"{root} has no sub-folders; put each class's {kind.unit} in a folder named after it")
    problems: list[str] = []
    files: list[Path] = []
    raw: list[str] = []
    empty: list[str] = []
    for d in class_dirs:
        found = _media_files(d, kind.extensions)
        if not found:
            empty.append(d.name)
        files.extend(found)
        raw.extend([d.name] * len(found))
    if empty:
        problems.append(f"class folders with no {kind.modality} files ({', '.join(kind.extensions)}): {empty}")
    unreadable = [r for r in map(kind.check, files) if r]
    if unreadable:
        problems.append(_listing(unreadable, kind.unreadable))
    indices, names = _index_labels(raw, labels, [str(f) for f in files], problems)
    InvalidInput.collect(problems, str(root))
    return LabelledData(kind.modality, files, indices, names,
                        f"{kind.modality} folder {root.name} ({len(files)} {kind.unit})")


def _load_media_csv(path: Path | str, path_column: str, label_column: str,
                    labels: Sequence[str] | None, kind: _FileKind) -> LabelledData:
    """Files of ``kind`` listed in a CSV; relative paths are resolved against the CSV's folder."""
    path = _existing_file(path, f"{kind.modality} CSV")
    header, rows = _csv_rows(path)
    _require_columns(path, header, [path_column, label_column])
    problems: list[str] = []
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
        reason = kind.check(file)
        if reason:
            unreadable.append(f"row {i}: {reason}")
            continue
        files.append(file)
        raw.append(label)
        where.append(f"row {i}")
    for items, what in (
        (empty_path, f"empty {path_column!r} in"),
        (empty_label, f"empty {label_column!r} in"),
        (missing, f"{kind.modality} files not found:"),
        (unreadable, kind.unreadable),
    ):
        if items:
            problems.append(_listing(items, what))
    if not files and not problems:
        raise InvalidInput(f"{path} has a header but no rows")
    indices, names = _index_labels(raw, labels, where, problems)
    InvalidInput.collect(problems, str(path))
    return LabelledData(kind.modality, files, indices, names,
                        f"{kind.modality} CSV {path.name} ({len(files)} {kind.unit})")


_IMAGE = _FileKind("image", IMAGE_EXTENSIONS, _check_image, "unreadable images:", "images")


def load_image_folder(path: Path | str, labels: Sequence[str] | None = None) -> LabelledData:
    """Images from ``path/<class name>/**/*.{jpg,jpeg,png,bmp,gif,webp}`` (kept as ``Path``).

    Hidden files/folders and non-image files are ignored; an empty class folder is an error.

    >>> import tempfile, pathlib
    >>> from PIL import Image
    >>> root = pathlib.Path(tempfile.mkdtemp())
    >>> for c in ("cat", "dog"):
    ...     (root / c).mkdir(); Image.new("RGB", (8, 8)).save(root / c / "a.png")
    >>> load_image_folder(root).class_counts()
    {'cat': 1, 'dog': 1}
    """
    return _load_media_folder(path, labels, _IMAGE)


def load_image_csv(
    path: Path | str,
    path_column: str = "path",
    label_column: str = "label",
    labels: Sequence[str] | None = None,
) -> LabelledData:
    """Images listed in a CSV; relative paths are resolved against the CSV's folder.

    >>> import tempfile, pathlib
    >>> from PIL import Image
    >>> root = pathlib.Path(tempfile.mkdtemp())
    >>> Image.new("RGB", (8, 8)).save(root / "a.png"); Image.new("RGB", (8, 8)).save(root / "b.png")
    >>> _ = (root / "x.csv").write_text("path,label\\na.png,ok\\nb.png,bad\\n")
    >>> load_image_csv(root / "x.csv").label_names
    ['bad', 'ok']
    """
    return _load_media_csv(path, path_column, label_column, labels, _IMAGE)
