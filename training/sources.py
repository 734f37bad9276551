"""Where a training or evaluation run's labelled data comes from: a file, a folder or a demo set.

``DataSource(path="reviews.csv").load()`` picks the loader from the path: a folder is an
audio folder if it holds WAV/FLAC/OGG files, else an image folder (one sub-folder per
class), ``.jsonl``/``.json`` a text table, and a ``.csv`` a text table if it has the text
column, else a CSV of audio or image paths (by the first path's extension) if it has the
path column. ``format`` forces one. All loaders check the whole file first and raise one
``InvalidInput`` listing every problem.

Example::

    >>> DataSource(demo="digits", limit=20).load().modality
    'image'
"""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from adapters.errors import InvalidInput
from training.data import (DEMO_DATASETS, LabelledData, load_demo, load_image_csv, load_image_folder,
                           load_text_table, stratified_sample)
from training.data.audio import csv_lists_audio, has_audio_files, load_audio_csv, load_audio_folder
from training.data.demo import ALL_DEMO_DATASETS
from training.data.files import load_regression_table

Format = Literal["auto", "text", "image-folder", "image-csv", "audio-folder", "audio-csv"]


class DataSource(BaseModel):
    """One labelled data set: ``path`` (file or folder) or ``demo`` (a bundled data set name)."""

    model_config = ConfigDict(extra="forbid", use_attribute_docstrings=True)
    path: Path | None = None
    demo: str | None = None
    format: Format = "auto"
    text_column: str = "text"
    label_column: str = "label"
    path_column: str = "path"
    labels: list[str] | None = None
    """Fixes the label order; a value outside it is an error (else: sorted values found)."""
    target_columns: list[str] | None = None
    """Regression: the numeric columns to predict (a text table), instead of a label column."""
    limit: int | None = Field(None, ge=1)
    """Keep a seeded, stratified sample of at most this many examples."""
    seed: int = 0

    @model_validator(mode="after")
    def _one_source(self):
        if (self.path is None) == (self.demo is None):
            raise ValueError("give exactly one of a data path or a demo data set name")
        if self.demo is not None and self.demo not in ALL_DEMO_DATASETS:
            raise ValueError(f"unknown demo data set {self.demo!r}; choose one of {', '.join(ALL_DEMO_DATASETS)}")
        return self

    def resolved_format(self) -> str:
        """The loader ``auto`` stands for, decided from the path (and a CSV's header)."""
        if self.format != "auto" or self.path is None:
            return self.format
        p = Path(self.path)
        if p.is_dir():
            return "audio-folder" if has_audio_files(p) else "image-folder"
        if p.suffix.lower() in (".jsonl", ".json", ".ndjson"):
            return "text"
        if p.suffix.lower() == ".csv" and p.is_file():
            header = _csv_header(p)
            if self.text_column not in header and self.path_column in header:
                return "audio-csv" if csv_lists_audio(p, self.path_column) else "image-csv"
        return "text"

    def load(self, split: str = "train") -> LabelledData:
        """Load and check the data (``split`` applies to demo data sets only)."""
        if self.demo is not None:
            data = load_demo(self.demo, split, limit=self.limit, seed=self.seed)
            if self.labels is not None and self.labels != data.label_names:
                raise InvalidInput(f"demo {self.demo!r} has labels {data.label_names}, not {self.labels}")
            return data
        fmt = self.resolved_format()
        if self.target_columns:
            if fmt != "text":
                raise InvalidInput("target columns (regression) are read from a text table (CSV/JSONL)")
            data = load_regression_table(self.path, self.text_column, self.target_columns)
        elif fmt == "image-folder":
            data = load_image_folder(self.path, labels=self.labels)
        elif fmt == "image-csv":
            data = load_image_csv(self.path, self.path_column, self.label_column, labels=self.labels)
        elif fmt == "audio-folder":
            data = load_audio_folder(self.path, labels=self.labels)
        elif fmt == "audio-csv":
            data = load_audio_csv(self.path, self.path_column, self.label_column, labels=self.labels)
        else:
            data = load_text_table(self.path, self.text_column, self.label_column, labels=self.labels)
        if self.limit is not None and self.limit < len(data):
            data = stratified_sample(data, self.limit, self.seed)
        return data


def _csv_header(path: Path) -> list[str]:
    try:
        with path.open("r", encoding="utf-8-sig", newline="") as f:
            return next(csv.reader(f), [])
    except (UnicodeDecodeError, csv.Error):
        return []  # the text loader reports the real problem with a proper message
