"""``token_classification``: one label per token (tags, entities, punctuation after a word).

The head reads per-token features (``head.pooling: "tokens"``, no pooling) and runs on
every real token of its rows; heads of the same shape over the whole batch's tokens are
one batched matmul per layer, as pooled heads are (:mod:`adapters.heads_batched`). A plain
PEFT directory saved for ``AutoModelForTokenClassification`` (``task_type: TOKEN_CLS``,
the ``classifier`` in ``modules_to_save``) is this type.

Answers per input (character offsets are Python string indices into the input):

- ``words``: ``[{"word", "start", "end", "label", "score"}]``: a word is the tokenizer's
  pre-tokenised word (whitespace and punctuation split, as ``word_ids()``), labelled by its
  first sub-token (its argmax and probability), as Hugging Face's token-classification
  pipeline does with ``aggregation_strategy="first"``;
- ``entities`` (labels in a BIO / IOB2 / BIOES / BILOU scheme only):
  ``[{"entity", "start", "end", "text", "score"}]``, spans merged over words (a chunk
  starts at ``B-``/``U-``/``S-``, or at an ``I-``/``L-``/``E-`` whose type differs from the
  open chunk's, as conlleval and seqeval do); score = mean of its words' scores;
- ``tokens`` (raw sub-tokens, asked for per request): ``[{"token", "start", "end", "label",
  "score", "scores"}]`` for every non-special token.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from adapters.heads_batched import HeadCall, run_heads
from adapters.tasks.base import BatchFeatures, RowResult, TaskType
from adapters.tasks.entities import entity_scheme, merge_entities


@dataclass
class TokenOutputs:
    """One task's per-token probabilities, per row: ``probs[r] [tokens_r, labels]`` with
    ``offsets[r] [tokens_r, 2]``, ``word_ids[r] [tokens_r]`` (or None) and the row's text."""

    probs: list[torch.Tensor]
    offsets: list[torch.Tensor]
    word_ids: list[torch.Tensor | None]
    texts: list[str]

    def __len__(self) -> int:
        return len(self.probs)


def word_spans(offsets: torch.Tensor, word_ids: torch.Tensor | None) -> list[list[int]]:
    """Indices of the tokens of each word, in order, from ``offsets [tokens, 2]`` and
    ``word_ids [tokens]`` (-1: special); without word ids, adjacent tokens form a word."""
    off = offsets.tolist()
    wid = word_ids.tolist() if word_ids is not None else None
    words: list[list[int]] = []
    prev_key, prev_end = None, None
    for t, (s, e) in enumerate(off):
        if e <= s or (wid is not None and wid[t] < 0):
            prev_key = None
            continue  # a special token
        key = wid[t] if wid is not None else None
        same = (prev_key is not None and key == prev_key) if wid is not None else (prev_end == s)
        if same and words:
            words[-1].append(t)
        else:
            words.append([t])
        prev_key, prev_end = key, e
    return words


class TokenClassification(TaskType):
    name = "token_classification"
    features = "tokens"
    activation = "softmax"
    peft_task_types = ("TOKEN_CLS",)

    def output_names(self, m) -> list[str]:
        return list(m.labels)

    def check_manifest(self, m) -> list[str]:
        problems = []
        if len(m.labels) < 2:
            problems.append("a token_classification task needs at least 2 labels (tags), e.g. "
                            "[\"O\", \"B-ORG\", \"I-ORG\"]")
        if len(set(m.labels)) != len(m.labels):
            problems.append(f"labels must be unique, got {m.labels}")
        if m.head is None:
            problems.append("a token_classification task needs 'head' with pooling 'tokens'")
        return problems

    def from_peft(self, n_outputs: int, names: list[str] | None) -> dict:
        # transformers' default id2label names, so an adapter saved without labels still serves
        return {"labels": list(names) if names else [f"LABEL_{i}" for i in range(n_outputs)]}

    def describe(self, m) -> dict:
        return {"labels": list(m.labels), "entity_scheme": entity_scheme(m.labels)}

    # ---- serving ----------------------------------------------------------------------
    def needs(self, m) -> set[str]:
        return {"tokens"}

    def score(self, calls: list[tuple], features: BatchFeatures) -> list[TokenOutputs]:
        """Every head on every real token of its rows: the batch's tokens flattened to
        ``[tokens, hidden]``, so same-shaped heads share one matmul per layer."""
        tf = features.tokens
        mask = tf.mask.bool()  # [rows, seq]
        lengths = mask.sum(1).tolist()
        starts = [0]
        for n in lengths[:-1]:
            starts.append(starts[-1] + n)
        flat = tf.hidden[mask]  # [tokens of all rows, hidden], row-major: row r at starts[r]
        head_calls = [HeadCall(a.head, self.activation,
                               [t for r in rows for t in range(starts[r], starts[r] + lengths[r])])
                      for a, rows in calls]
        probs = run_heads(head_calls, {"tokens": flat})
        offsets = tf.offsets.cpu()
        word_ids = None if tf.word_ids is None else tf.word_ids.cpu()
        out = []
        for (_, rows), p in zip(calls, probs):
            per_row = list(torch.split(p, [lengths[r] for r in rows]))  # [tokens_r, labels] each
            out.append(TokenOutputs(
                per_row, [offsets[r, :lengths[r]] for r in rows],
                [None if word_ids is None else word_ids[r, :lengths[r]] for r in rows],
                [features.inputs[r] for r in rows]))
        return out

    def rows(self, adapter, out: TokenOutputs | torch.Tensor) -> list[RowResult]:
        """Answers from :meth:`score`'s per-token outputs. A plain ``[rows, labels]`` tensor
        (a caller probing which fields the type answers with, e.g. the v2 metadata) reads
        as rows without words: every field present, every list empty."""
        if isinstance(out, torch.Tensor):
            n = len(out)
            out = TokenOutputs([o[None] for o in out], [torch.zeros(1, 2, dtype=torch.long)] * n,
                               [None] * n, [""] * n)
        labels = list(adapter.manifest.labels)
        with_entities = entity_scheme(labels)
        results = []
        for probs, offsets, word_ids, text in zip(out.probs, out.offsets, out.word_ids, out.texts):
            best, arg = probs.max(-1)  # [tokens]
            best, arg, off = best.tolist(), arg.tolist(), offsets.tolist()
            words = []
            for toks in word_spans(offsets, word_ids):
                first, last = toks[0], toks[-1]
                s, e = off[first][0], off[last][1]
                words.append({"word": text[s:e], "start": s, "end": e,
                              "label": labels[arg[first]], "score": best[first]})
            tokens = [{"token": text[s:e], "start": s, "end": e, "label": labels[arg[t]],
                       "score": best[t], "scores": dict(zip(labels, probs[t].tolist()))}
                      for t, (s, e) in enumerate(off) if e > s]
            row = RowResult(words=words, tokens=tokens)
            if with_entities:
                row["entities"] = merge_entities([w["label"] for w in words],
                                                 [(w["start"], w["end"]) for w in words],
                                                 [w["score"] for w in words], text)
            results.append(row)
        return results
