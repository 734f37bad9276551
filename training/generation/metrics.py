"""Scores of generated texts against references, from the field's libraries.

chrF and BLEU are sacrebleu's corpus scores (the numbers papers and leaderboards report, with
sacrebleu's default tokenisation and settings, one reference per hypothesis); exact match and
token F1 are SQuAD's definitions (lower-cased, punctuation and extra whitespace removed) for
short answers.

    >>> s = generation_scores(["le chat noir"], ["le chat noir"])
    >>> s["chrf"], s["bleu"], s["exact_match"], s["token_f1"]
    (100.0, 100.0, 100.0, 100.0)
"""

from __future__ import annotations

import re
import string
from collections import Counter

from sacrebleu.metrics import BLEU, CHRF

METRICS = ("chrf", "bleu", "exact_match", "token_f1")
"""What :func:`generation_scores` returns, all on 0–100."""
_PUNCT = re.compile(f"[{re.escape(string.punctuation)}]")


def _normalise(text: str) -> list[str]:
    return _PUNCT.sub(" ", text.lower()).split()


def token_f1(hyp: str, ref: str) -> float:
    """SQuAD's token F1 of one answer (0–1)."""
    h, r = _normalise(hyp), _normalise(ref)
    if not h or not r:
        return float(h == r)
    common = sum((Counter(h) & Counter(r)).values())
    if common == 0:
        return 0.0
    p, rec = common / len(h), common / len(r)
    return 2 * p * rec / (p + rec)


def generation_scores(hyps: list[str], refs: list[str]) -> dict[str, float]:
    """Corpus chrF and BLEU (sacrebleu), mean exact match and token F1, on 0–100."""
    if len(hyps) != len(refs) or not refs:
        raise ValueError(f"{len(hyps)} outputs for {len(refs)} references; need as many, at least one")
    em = sum(_normalise(h) == _normalise(r) for h, r in zip(hyps, refs)) / len(refs)
    f1 = sum(token_f1(h, r) for h, r in zip(hyps, refs)) / len(refs)
    return {"chrf": round(CHRF().corpus_score(hyps, [refs]).score, 2),
            "bleu": round(BLEU().corpus_score(hyps, [refs]).score, 2),
            "exact_match": round(100 * em, 2), "token_f1": round(100 * f1, 2)}
