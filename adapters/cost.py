"""What a request costs the trunk, in one unit, estimated before it is queued.

The unit is a **token-layer**: one token through one transformer block of a text backbone.
The other modalities are converted into it by a weight measured on the embedded backbones
(one CPU thread, ``python -m bench fairness`` prints the seconds per unit it saw):

- text: padded tokens x layers. A row that pooled tasks read costs its truncated encoding
  (window 0, at most ``max_length`` tokens); a row per-token tasks read costs every window
  of the text (``windows x max_length``: the stride windows of :meth:`TokenWindows`);
- images: pixels at the backbone's input size x :data:`PIXEL_WEIGHT`;
- audio: 80 ms model windows x :data:`AUDIO_WINDOW_WEIGHT`.

A request runs one plain trunk row per input (its heads, embeddings) plus one row per
input for each task whose kind has its own rows (LoRA, top layers); each of those rows is
weighted by its kind's :meth:`~adapters.kinds.base.AdapterKind.cost_factor`: a LoRA row
grows with its rank (its factors' parameters over the trunk's) plus the per-row gather; a
top-layers row runs the blocks below its split in its own row and its own k blocks above,
the trunk's full depth (factor 1).

The estimate is per input (:attr:`Cost.per_input`), so a request can be cut into slices of
bounded cost (:mod:`adapters.slices`) and scheduled fairly (:mod:`adapters.fair_queue`).
:attr:`Cost.units` says where one input may be cut too: into runs of its windows, when
every trunk row of the request reads every window (an audio clip's 80 ms windows; a long
text's token windows when only per-token tasks read it), its cost spread evenly over them.

>>> Cost((10.0, 30.0), windows=2, audio_seconds=0.0).total
40.0
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from adapters.trunk_rows import own_row_adapters

# Token-layers per unit of the other modalities: MiniLM-L6 read ~36,000 token-layers/s,
# MobileNetV2 at 96 px ~110 images/s, speech_embedding ~430 windows/s (1 thread, this
# machine): one pixel ~ 1/32 of a token-layer, one audio window ~ 80.
PIXEL_WEIGHT = 1 / 32
AUDIO_WINDOW_WEIGHT = 80.0


@dataclass(frozen=True)
class Cost:
    """A request's estimated trunk work: token-layers per input (over all its rows), the
    token windows its per-token rows run (text), and its audio seconds."""

    per_input: tuple[float, ...]
    windows: int
    audio_seconds: float
    units: tuple[int, ...] = ()
    """Per input, the windows it may be cut into (1 or absent: cut only between inputs)."""

    @property
    def total(self) -> float:
        return float(sum(self.per_input))


def layers(backbone) -> int:
    """Transformer blocks of a text backbone (1 when its config does not say)."""
    return int(getattr(getattr(backbone.model, "config", None), "num_hidden_layers", None) or 1)


def input_units(backbone, inputs: list, per_token: bool) -> tuple[list[float], list[int]]:
    """``(token-layers of one plain row per input, windows per input)``; ``per_token``:
    the row runs every window of a long text (a per-token task reads it)."""
    pre = backbone.preprocessor
    if backbone.modality == "text":
        max_len = int(getattr(pre, "max_length", 512))
        fast = hasattr(pre, "window_lengths") and getattr(getattr(pre, "tokenizer", None), "is_fast", False)
        # a slow tokenizer gives no windows (no token tasks there): every row at max_length
        lengths = pre.window_lengths(inputs) if fast else [(1, max_len)] * len(inputs)
        depth = layers(backbone)
        units = [(w * max_len if per_token and w > 1 else first) * depth for w, first in lengths]
        return [float(u) for u in units], [w for w, _ in lengths]
    if backbone.modality == "audio":
        return [_audio_windows(backbone, clip) * AUDIO_WINDOW_WEIGHT for clip in inputs], [1] * len(inputs)
    side = getattr(pre, "image_size", None)
    pixels = [side * side if side else _pixels(x) for x in inputs]
    return [p * PIXEL_WEIGHT for p in pixels], [1] * len(inputs)


def estimate(request) -> Cost:
    """The :class:`Cost` of a :class:`~adapters.runtime.PreparedRequest` (any object with
    ``backbone``, ``inputs``, ``plain_rows`` and ``scorers()``: its adapters and shadow
    candidates)."""
    bb = request.backbone
    scorers = request.scorers()
    tok = [a for a in scorers if "tokens" in a.task.needs(a.manifest)]
    # tasks riding on one shared adaptation cost its rows once
    factors = [a.impl.cost_factor(a.weights, bb) for a in own_row_adapters(scorers)]
    per_token = [a.impl.cost_factor(a.weights, bb) for a in own_row_adapters(tok)]
    plain_tok = any(a.impl.shares_trunk_row for a in tok)
    short, windows = input_units(bb, request.inputs, per_token=False)
    long_ = short if not tok else input_units(bb, request.inputs, per_token=True)[0]
    per_input = []
    for s, w in zip(short, long_):
        plain = (w if plain_tok else s) if request.plain_rows else 0.0
        own = sum(f * s for f in factors) + sum(f * (w - s) for f in per_token)
        per_input.append(plain + own)
    seconds = sum(getattr(x, "seconds", 0.0) for x in request.inputs)
    return Cost(tuple(per_input), sum(windows) if tok else 0, float(seconds),
                _cut_units(request, windows, tok, factors, plain_tok))


def _cut_units(request, windows: list[int], tok: list, factors: list, plain_tok: bool) -> tuple[int, ...]:
    """Windows per input at which the input may be cut (:attr:`Cost.units`): every row of the
    request must read every window, or a part would run rows that need only its first."""
    bb = request.backbone
    if bb.modality == "audio" and hasattr(bb.preprocessor, "parts"):
        return tuple(_audio_windows(bb, clip) for clip in request.inputs)
    every_row_reads_tokens = (len(factors) == len(own_row_adapters(tok))
                              and (plain_tok or not request.plain_rows))
    if bb.modality == "text" and tok and every_row_reads_tokens:
        return tuple(windows)
    return ()


def _audio_windows(backbone, clip) -> int:
    """Model windows of ``clip`` after resampling to the backbone's rate (at least one:
    a short clip is padded to one window)."""
    rate = int(getattr(backbone.preprocessor, "sample_rate", clip.sample_rate))
    samples = int(len(clip.samples) * rate / clip.sample_rate)
    count = getattr(backbone.model, "num_windows", None)
    if count is None:
        return max(1, samples // max(1, rate // 12))  # ~80 ms windows when the model cannot say
    return max(1, int(count(torch.tensor([samples]))[0]))


def _pixels(image) -> int:
    size = getattr(image, "size", None)
    return int(size[0] * size[1]) if isinstance(size, tuple) and len(size) == 2 else 1
