"""Entity chunks in tag sequences: which label sets are entity schemes, and the spans they tag.

One chunk rule (conlleval's and seqeval's) for the server's answers
(:mod:`adapters.tasks.token_classification`) and for a tagger's metrics
(:mod:`adapters.tasks.token_metrics`).
"""

from __future__ import annotations

import re

_TAG = re.compile(r"^([BIESLU])-(.+)$")


def entity_scheme(labels: list[str]) -> bool:
    """True when every label is ``O`` or ``<B|I|E|S|L|U>-<type>`` (a BIO-like entity scheme).

    >>> entity_scheme(["O", "B-ORG", "I-ORG"]), entity_scheme(["O", "COMMA", "PERIOD"])
    (True, False)
    """
    return any(_TAG.match(x) for x in labels) and all(x == "O" or _TAG.match(x) for x in labels)


def merge_entities(tags: list[str], spans: list[tuple[int, int]], scores: list[float],
                   text: str) -> list[dict]:
    """Entity spans from word tags (conlleval's chunk rule), with character spans.

    >>> merge_entities(["B-ORG", "I-ORG", "O", "I-PER"], [(0, 3), (4, 8), (9, 11), (12, 15)],
    ...                [0.9, 0.7, 1.0, 0.6], "New York is Bob")
    [{'entity': 'ORG', 'start': 0, 'end': 8, 'text': 'New York', 'score': 0.8}, {'entity': 'PER', 'start': 12, 'end': 15, 'text': 'Bob', 'score': 0.6}]
    """
    out: list[dict] = []
    cur: dict | None = None  # the open chunk: type, start, end, scores

    def close():
        nonlocal cur
        if cur is not None:
            s = cur["scores"]
            out.append({"entity": cur["type"], "start": cur["start"], "end": cur["end"],
                        "text": text[cur["start"]:cur["end"]], "score": sum(s) / len(s)})
        cur = None

    for tag, (start, end), score in zip(tags, spans, scores):
        m = _TAG.match(tag)
        if m is None:  # "O" (or anything outside the scheme) ends a chunk
            close()
            continue
        prefix, typ = m.groups()
        if prefix in "BSU" or cur is None or cur["type"] != typ:
            close()
            cur = {"type": typ, "start": start, "end": end, "scores": [score]}
        else:
            cur["end"] = end
            cur["scores"].append(score)
        if prefix in "SUEL":
            close()
    close()
    return out
