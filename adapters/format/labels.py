"""The one rule for label names, wherever they come from: ``adapter.json``, the ``labels``
field of a registration, a plain PEFT directory's synthesised manifest.

A label is a non-empty string of at most :data:`MAX_LABEL_CHARS` characters, without
leading/trailing whitespace, control characters (Unicode category Cc), format characters
(Cf: bidi embeddings, overrides and isolates, zero-width joiners, soft hyphens, which make
two labels look alike or reorder what a reader sees), lone surrogates or non-characters; a
task has 1 to :data:`MAX_LABELS` unique labels, unique also once NFC-normalised. Labels
are stored NFC-normalised (:func:`nfc_labels`): "é" typed composed or decomposed is one
label.
"""

from __future__ import annotations

import re
import unicodedata
from collections import Counter

MAX_LABELS = 32_768
MAX_LABEL_CHARS = 128
_REFUSED = {"Cc": "a control character", "Cf": "a format or bidi control character"}
_NONCHAR = re.compile(r"[\ud800-\udfff\ufdd0-\ufdef"
                      + "".join(rf"\U{p:04x}fffe\U{p:04x}ffff" for p in range(17)) + "]")


def label_problems(labels) -> list[str]:
    """Every way ``labels`` breaks the rule ([] when it is fine).

    >>> label_problems(["neg", "pos"]), label_problems(["", "a\\x00", "a"])
    ([], ['labels[0] is empty', 'labels[1] holds U+0000 (a control character)'])
    """
    if not isinstance(labels, list) or not labels:
        return ["labels must be a non-empty list of strings"]
    if len(labels) > MAX_LABELS:
        return [f"{len(labels)} labels; at most {MAX_LABELS}"]
    problems = []
    for i, x in enumerate(labels):
        if not isinstance(x, str):
            problems.append(f"labels[{i}] is not a string")
        elif not x.strip():
            problems.append(f"labels[{i}] is empty")
        elif len(x) > MAX_LABEL_CHARS:
            problems.append(f"labels[{i}] has {len(x)} characters; at most {MAX_LABEL_CHARS}")
        elif x != x.strip():
            problems.append(f"labels[{i}] {x!r} has leading or trailing whitespace")
        elif bad := [c for c in x if unicodedata.category(c) in _REFUSED or _NONCHAR.match(c)]:
            what = _REFUSED.get(unicodedata.category(bad[0]), "not a character")
            problems.append(f"labels[{i}] holds U+{ord(bad[0]):04X} ({what})")
    if not problems and len(set(labels)) != len(labels):
        dupes = sorted(x for x, n in Counter(labels).items() if n > 1)[:5]
        problems.append(f"labels must be unique; repeated: {dupes}")
    elif not problems and len(set(nfc_labels(labels))) != len(labels):
        seen: dict[str, int] = {}
        for i, x in enumerate(nfc_labels(labels)):
            if x in seen:
                problems.append(f"labels[{seen[x]}] {labels[seen[x]]!r} and labels[{i}] "
                                f"{labels[i]!r} are the same label once NFC-normalised")
            seen.setdefault(x, i)
    return problems[:10]


def nfc_labels(labels: list[str]) -> list[str]:
    """``labels`` NFC-normalised (how they are stored and answered).

    >>> nfc_labels(["cafe\u0301"]) == ["caf\u00e9"]
    True
    """
    return [unicodedata.normalize("NFC", x) for x in labels]
