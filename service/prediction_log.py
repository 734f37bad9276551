"""An opt-in, sampled, size-capped log of predictions (JSON lines), for offline monitoring.

Off unless ``TASKSWAP_PREDICTION_LOG`` names a file. Each answered row is logged with
probability ``prediction_log_sample``: task, answering version, role (active/canary),
top label and score, time, and a sha256 of the input — the raw text only when
``prediction_log_inputs`` is set, images never. Past ``prediction_log_max_mb`` the file is
renamed to ``<path>.1`` (replacing the previous one), so the log never holds more than
twice the cap. Writes are appended under a lock; several workers may share one path
(each line is one ``write`` of less than a pipe buffer in append mode).

Example::

    >>> import tempfile, os
    >>> path = os.path.join(tempfile.mkdtemp(), "p.jsonl")
    >>> log = PredictionLog(path, sample=1.0, max_bytes=1 << 20, with_inputs=False)
    >>> log.enabled
    True
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import threading
import time


class PredictionLog:
    def __init__(self, path: str | None, sample: float, max_bytes: int, with_inputs: bool):
        self.path, self.sample, self.max_bytes, self.with_inputs = path, sample, max_bytes, with_inputs
        self._lock = threading.Lock()

    @property
    def enabled(self) -> bool:
        return bool(self.path) and self.sample > 0

    @classmethod
    def from_settings(cls, s) -> "PredictionLog":
        return cls(s.prediction_log, s.prediction_log_sample, s.prediction_log_max_mb << 20,
                   s.prediction_log_inputs)

    def write(self, results, inputs: list) -> int:
        """Log a sample of one request's rows; returns how many lines were written."""
        if not self.enabled:
            return 0
        lines = []
        for r in results:
            for i, row in enumerate(r.rows):
                if random.random() >= self.sample:
                    continue
                x = inputs[i] if i < len(inputs) else None
                entry = {"time": round(time.time(), 3), "task": r.task, "version": r.version,
                         "role": r.role, "input_sha256": _digest(x)}
                if row.label is not None:
                    entry.update(label=row.label, score=round(row.score, 6))
                else:  # task types without labels (regression): the answered values
                    entry["values"] = row.values
                if self.with_inputs and isinstance(x, str):
                    entry["input"] = x
                lines.append(json.dumps(entry, separators=(",", ":")) + "\n")
        if lines:
            self._append("".join(lines))
        return len(lines)

    def _append(self, text: str) -> None:
        data = text.encode()
        with self._lock:
            try:
                if os.path.getsize(self.path) + len(data) > self.max_bytes:
                    os.replace(self.path, self.path + ".1")
            except FileNotFoundError:
                pass
            with open(self.path, "ab") as f:
                f.write(data)


def _digest(x) -> str | None:
    if isinstance(x, str):
        return hashlib.sha256(x.encode()).hexdigest()
    if hasattr(x, "tobytes"):  # a PIL image: its pixels
        return hashlib.sha256(x.tobytes()).hexdigest()
    return None
