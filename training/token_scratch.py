"""The ``scratch`` baseline for taggers: a small BiGRU tagger trained from random weights.

What a pretrained trunk buys a tagger is measured against a model that sees the same
sentences through the same tokenizer and the same alignment (each word's tag on its first
sub-token, :func:`training.token_encoding.encode_words`) but starts from nothing: a sub-token
embedding (the tokenizer's vocabulary) → one bidirectional GRU layer → dropout → a linear
layer over tags. It is the classic recurrent tagger rather than the backbone's own
architecture from random weights (what the pooled ``scratch`` baseline uses,
:mod:`training.scratch`): a randomly initialised 6-layer transformer learns next to
nothing from a thousand sentences on a CPU budget, while a BiGRU is the strongest cheap
baseline a user without a pretrained model would train. Like every scratch baseline it is
a report, not an adapter (its weights are not the frozen backbone the server holds).

    >>> from adapters.backbones.base import load_backbone
    >>> from adapters.backbones.tiny import tiny_backbone_spec
    >>>     >>> from training.data.tokens import TokenData
    >>> bb = load_backbone(tiny_backbone_spec("text", "/tmp/tiny-doc-scratch"))
    >>> d = TokenData([["good", "film"], ["bad", "plot"]] * 4, [[1, 0], [0, 1]] * 4, ["O", "X"], "toy")
    >>> cfg = TrainConfig(name="toy", method="scratch", task_type="token_classification",
    ...                   epochs=2, progress=False)
    >>> hist, predict, n_params = fit_token_scratch(bb, d, d, cfg)
    >>> probs, kept = predict(d)
    >>> tuple(probs.shape), len(hist.train_loss)
    ((16, 2), 2)
"""

from __future__ import annotations

import copy

import torch
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

from adapters.backbones.base import Backbone
from training.config import TrainConfig
from training.data.tokens import TokenData
from training.head_fit import train_epochs
from training.tasks import training_task
from training.token_encoding import encode_words

EMBED_DIM = 128
HIDDEN = 128  # per direction
DROPOUT = 0.3


class ScratchTagger(nn.Module):
    """Sub-token ids ``[batch, seq]`` → tag logits ``[batch, seq, tags]``."""

    def __init__(self, vocab_size: int, n_tags: int, pad_id: int):
        super().__init__()
        self.embed = nn.Embedding(vocab_size, EMBED_DIM, padding_idx=pad_id)
        self.gru = nn.GRU(EMBED_DIM, HIDDEN, batch_first=True, bidirectional=True)
        self.drop = nn.Dropout(DROPOUT)
        self.out = nn.Linear(2 * HIDDEN, n_tags)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        x = self.drop(self.embed(input_ids))  # [batch, seq, embed]
        lengths = attention_mask.sum(1).clamp_min(1).cpu()
        packed = pack_padded_sequence(x, lengths, batch_first=True, enforce_sorted=False)
        h, _ = self.gru(packed)
        h, _ = pad_packed_sequence(h, batch_first=True, total_length=x.shape[1])  # [batch, seq, 2*hidden]
        return self.out(self.drop(h))


def _encode(backbone: Backbone, data: TokenData) -> list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
    """Per sentence: ``(input_ids [seq], first [seq], targets [kept words])`` (unpadded)."""
    out = []
    for words, tags in zip(data.sentences, data.tags):
        enc, first, _ = encode_words(backbone, [words])
        f = first[0]
        y = torch.tensor([tags[w] for w in f[f >= 0].tolist()], dtype=torch.long)
        out.append((enc["input_ids"][0], f, y))
    return out


def _batch(rows: list, device) -> tuple[dict, torch.Tensor, torch.Tensor, list[list[int]]]:
    """Padded ``input_ids``/``attention_mask``, the first-sub-token mask ``[batch, seq]``,
    the targets of the kept words in order, and each sentence's kept word indices."""
    n, seq = len(rows), max(len(r[0]) for r in rows)
    ids = torch.zeros(n, seq, dtype=torch.long)
    mask = torch.zeros(n, seq, dtype=torch.long)
    first = torch.full((n, seq), -1, dtype=torch.long)
    for i, (x, f, _) in enumerate(rows):
        ids[i, :len(x)], mask[i, :len(x)], first[i, :len(f)] = x, 1, f
    y = torch.cat([r[2] for r in rows])
    kept = [f[f >= 0].tolist() for _, f, _ in rows]
    return ({"input_ids": ids.to(device), "attention_mask": mask.to(device)}, (first >= 0).to(device),
            y.to(device), kept)


def fit_token_scratch(backbone: Backbone, train: TokenData, val: TokenData, cfg: TrainConfig):
    """``(history, predict, n_parameters)``: a BiGRU tagger from random weights, early-stopped on
    ``val`` loss (the best state is kept), ``cfg.max_train_minutes`` a wall-clock cap."""
    task = training_task(cfg.task_type)
    tok = backbone.preprocessor.tokenizer
    torch.manual_seed(cfg.seed)
    model = ScratchTagger(len(tok), len(train.label_names), tok.pad_token_id or 0).to(backbone.device)
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    tr, va = _encode(backbone, train), _encode(backbone, val)

    def logits_of(rows) -> tuple[torch.Tensor, torch.Tensor, list[list[int]]]:
        batch, pos, y, kept = _batch(rows, backbone.device)
        return model(**batch)[pos], y, kept  # [kept words, tags]

    def evaluate(rows) -> tuple[torch.Tensor, list[list[int]]]:
        model.eval()
        parts, kept = [], []
        with torch.no_grad():
            for s in range(0, len(rows), cfg.feature_batch_size):
                logits, _, k = logits_of(rows[s:s + cfg.feature_batch_size])
                parts.append(logits.cpu())
                kept += k
        return torch.cat(parts), kept

    def batch_loss(idx: list[int]) -> tuple[torch.Tensor, int]:
        logits, y, _ = logits_of([tr[i] for i in idx])
        return task.loss(logits, y), len(y)

    def validate() -> tuple[float, float]:
        vlogits, _ = evaluate(va)
        vy = torch.cat([r[2] for r in va])
        return float(task.loss(vlogits, vy)), task.headline(vlogits, vy)

    hist, stop = train_epochs(cfg, len(tr), opt, batch_loss, validate,
                              lambda: copy.deepcopy(model.state_dict()), model.train, "token scratch")
    model.load_state_dict(stop.state)
    model.eval()

    def predict(data: TokenData) -> tuple[torch.Tensor, list[list[int]]]:
        logits, kept = evaluate(_encode(backbone, data))
        return task.outputs(logits), kept

    return hist, predict, sum(p.numel() for p in model.parameters())
