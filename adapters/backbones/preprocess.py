"""Input preprocessing: a tokenizer for text, our own resize/normalise for images.

Images are resized to a square ``image_size`` with PIL and normalised with the
image processor's own mean/std: the same transform for every HF vision model, no
torchvision, and the size is an explicit backbone setting that adapters record.
"""

from __future__ import annotations

import threading

import numpy as np
import torch
from PIL import Image

from adapters.errors import InvalidInput


class TextPart(str):
    """Token windows ``lo..hi-1`` of a text of ``total`` windows (:meth:`TextPreprocessor.windows`):
    the whole text (so character offsets stay the text's own), read over those windows only.
    Its token features are the run of the text's stitched sequence those windows own
    (:meth:`TokenWindows.layout`), so the parts' runs, joined in order, are the whole text's;
    its pooled features are window 0's, as the whole text's are (:meth:`combine`).

    >>> p = TextPart("a long text", 2, 4, 5)
    >>> (str(p), p.lo, p.hi, p.total, p.units)
    ('a long text', 2, 4, 5, 2)
    """

    lo: int
    hi: int
    total: int

    def __new__(cls, text: str, lo: int, hi: int, total: int):
        self = super().__new__(cls, text)
        self.lo, self.hi, self.total = lo, hi, total
        return self

    def __reduce__(self):
        return (TextPart, (str(self), self.lo, self.hi, self.total))

    @property
    def units(self) -> int:
        return self.hi - self.lo

    @staticmethod
    def combine(pooling: str, pooled: list[torch.Tensor], parts: list["TextPart"]) -> torch.Tensor:
        """Pooled features of a text read window 0 (its truncated encoding): the first part's."""
        return pooled[0]


class TextPreprocessor:
    """Tokenise a list of strings, padding to the longest and truncating to ``max_length``.

    :meth:`windows` is the per-token variant (token classification): nothing is cut, a text
    longer than ``max_length`` becomes several windows overlapping by ``stride`` tokens.
    """

    modality = "text"

    def __init__(self, tokenizer, max_length: int, stride: int | None = None):
        self.tokenizer = tokenizer
        # A fast tokenizer keeps its padding/truncation settings in shared state that each call
        # sets: two threads tokenising at once (the batch worker, and a request's cost estimate
        # or window count before it is queued) can pad one batch to the other's settings
        # ("expected sequence of length 9 at dim 1 (got 15)"). One call at a time.
        self._lock = threading.Lock()
        self.max_length = max_length
        content = max(1, max_length - tokenizer.num_special_tokens_to_add())
        # A quarter of a window of overlap: every token keeps >= stride // 2 tokens of context
        # on each side (see TokenWindows), at the cost of ~1/3 more rows for long texts.
        self.stride = min(content - 1, content // 4) if stride is None else stride

    def __call__(self, texts: list) -> dict[str, torch.Tensor]:
        _check_texts(texts)
        with self._lock:
            enc = self.tokenizer(list(texts), padding=True, truncation=True,
                                 max_length=self.max_length, return_tensors="pt")
        return dict(enc)  # input_ids/attention_mask(/token_type_ids): [batch, seq]

    def windows(self, texts: list) -> "TokenWindows":
        """Every text tokenised whole, in windows of ``max_length`` overlapping by ``stride``
        tokens; window 0 of a text is exactly what :meth:`__call__` gives it."""
        _check_texts(texts)
        if not getattr(self.tokenizer, "is_fast", False):
            raise InvalidInput("token classification needs a fast tokenizer (character offsets); "
                               "this backbone's tokenizer is a slow one")
        with self._lock:
            enc = self.tokenizer(list(texts), padding=True, truncation=True, max_length=self.max_length,
                                 stride=self.stride, return_overflowing_tokens=True,
                                 return_offsets_mapping=True, return_special_tokens_mask=True,
                                 return_tensors="pt")
        owner = enc.pop("overflow_to_sample_mapping").tolist()  # [windows] -> text index
        special = enc.pop("special_tokens_mask")  # [windows, seq]: 1 = special or padding
        offsets = enc.pop("offset_mapping")  # [windows, seq, 2]
        word_ids = torch.tensor([[-1 if w is None else w for w in enc.word_ids(j)]
                                 for j in range(len(owner))], dtype=torch.long)  # [windows, seq]
        first: list[list[int]] = [[] for _ in texts]
        for j, i in enumerate(owner):
            first[i].append(j)
        content = self.max_length - self.tokenizer.num_special_tokens_to_add()
        # a TextPart reads its own windows; the layout still knows the text's every window
        parts = {i: (t.lo, t.hi) for i, t in enumerate(texts) if isinstance(t, TextPart)}
        mine = [ws[parts[i][0]:parts[i][1]] if i in parts else ws for i, ws in enumerate(first)]
        return TokenWindows(dict(enc), mine, offsets, word_ids, special, content - self.stride,
                            all_windows=first)

    def window_counts(self, texts: list) -> list[int]:
        """How many windows :meth:`windows` cuts each text into (1 unless it is longer than
        ``max_length`` tokens): the same tokenizer call without offsets, tensors or padding,
        so a request can be counted in trunk rows before it is queued.

        >>> from adapters.backbones.tiny import tiny_backbone_spec
        >>> from adapters.backbones.base import load_backbone
        >>> pre = load_backbone(tiny_backbone_spec("text", "/tmp/tiny-doc-win")).preprocessor
        >>> pre.window_counts(["a short one", "word " * 100]) == [1, len(pre.windows(["word " * 100]).windows[0])]
        True
        """
        return [w for w, _ in self.window_lengths(texts)]

    def window_lengths(self, texts: list) -> list[tuple[int, int]]:
        """``(windows, tokens of window 0)`` per text: what a request costs in padded
        tokens (:mod:`adapters.cost`), from the same tokenizer call as :meth:`window_counts`."""
        _check_texts(texts)
        if not getattr(self.tokenizer, "is_fast", False):
            raise InvalidInput("token classification needs a fast tokenizer (character offsets); "
                               "this backbone's tokenizer is a slow one")
        with self._lock:
            enc = self.tokenizer(list(texts), truncation=True, max_length=self.max_length, stride=self.stride,
                                 return_overflowing_tokens=True, return_attention_mask=False,
                                 return_token_type_ids=False)
        counts, first = [0] * len(texts), [0] * len(texts)
        for i, ids in zip(enc["overflow_to_sample_mapping"], enc["input_ids"]):
            lo = texts[i].lo if isinstance(texts[i], TextPart) else 0
            if counts[i] == lo:
                first[i] = len(ids)
            counts[i] += 1
        # a TextPart counts its own windows (its first one's tokens: where it starts)
        return [(t.units, f) if isinstance(t, TextPart) else (c, f)
                for t, c, f in zip(texts, counts, first)]

    def settings(self) -> dict:
        return {"max_length": self.max_length}


def _check_texts(texts: list) -> None:
    bad = [i for i, t in enumerate(texts) if not isinstance(t, str)]
    if bad:
        raise InvalidInput(f"inputs {bad[:5]} are not text; this backbone takes strings")


class TokenWindows:
    """A batch of texts in overlapping windows (:meth:`TextPreprocessor.windows`).

    ``batch`` tensors are ``[windows, seq]``; ``windows[i]`` lists text ``i``'s windows in
    order; ``offsets [windows, seq, 2]``, ``word_ids [windows, seq]`` (-1: special/pad) and
    ``special [windows, seq]`` (1: special/pad) per window position. Window ``w`` of a text
    starts at content token ``w * step``. :meth:`stitch` gives the layout that turns
    per-window token features back into one sequence per text: each content token is taken from the window where it
    has the most context (where its distance to the nearer window edge, not counting the
    text's own start and end, is largest), the leading special tokens from the first
    window, the trailing ones from the last.
    """

    def __init__(self, batch, windows, offsets, word_ids, special, step, all_windows=None):
        self.batch, self.windows, self.offsets = batch, windows, offsets
        self.word_ids, self.special, self.step = word_ids, special, step
        # every window of each text; ``windows[i]`` is a run of them for a TextPart
        self.all_windows = windows if all_windows is None else all_windows

    def is_part(self, i: int) -> bool:
        return len(self.windows[i]) != len(self.all_windows[i])

    def layout(self, i: int) -> list[tuple[int, int]]:
        """``(window, position)`` of each token of text ``i`` in its stitched sequence; for a
        :class:`TextPart`, the run of that sequence its windows own."""
        if self.is_part(i):
            own = set(self.windows[i])
            return [(w, p) for w, p in self._layout(self.all_windows[i]) if w in own]
        return self._layout(self.windows[i])

    def _layout(self, ws: list[int]) -> list[tuple[int, int]]:
        if len(ws) == 1:
            return [(ws[0], p) for p in range(int(self.batch["attention_mask"][ws[0]].sum()))]
        best: dict[int, tuple[int, int, int]] = {}  # content index -> (context, window, pos)
        lead = trail = None
        for k, w in enumerate(ws):
            pos = (self.special[w] == 0).nonzero().flatten().tolist()
            if not pos:
                continue
            if k == 0:
                lead = [(w, p) for p in range(pos[0])]
            if k == len(ws) - 1:
                n = int(self.batch["attention_mask"][w].sum())
                trail = [(w, p) for p in range(pos[-1] + 1, n)]
            for c, p in enumerate(pos):
                left = c if k > 0 else 1 << 30
                right = len(pos) - 1 - c if k < len(ws) - 1 else 1 << 30
                ctx = min(left, right)
                g = k * self.step + c
                if g not in best or ctx > best[g][0]:
                    best[g] = (ctx, w, p)
        return (lead or []) + [best[g][1:] for g in sorted(best)] + (trail or [])


class ImagePreprocessor:
    """Resize to ``image_size`` x ``image_size`` (bilinear), scale to [0, 1], normalise."""

    modality = "image"

    def __init__(self, mean, std, image_size: int):
        self.mean = np.asarray(mean, dtype=np.float32).reshape(3, 1, 1)
        self.std = np.asarray(std, dtype=np.float32).reshape(3, 1, 1)
        self.image_size = image_size

    def __call__(self, images: list, size: int | None = None) -> dict[str, torch.Tensor]:
        """``size``: this batch's square size instead of ``image_size`` (a dense task's own)."""
        bad = [i for i, im in enumerate(images) if not isinstance(im, Image.Image)]
        if bad:
            raise InvalidInput(f"inputs {bad[:5]} are not images; this backbone takes images")
        s = size or self.image_size
        arrays = []
        for im in images:
            im = im.convert("RGB").resize((s, s), Image.BILINEAR)
            a = np.asarray(im, dtype=np.float32).transpose(2, 0, 1) / 255.0  # [3, s, s]
            arrays.append((a - self.mean) / self.std)
        return {"pixel_values": torch.from_numpy(np.stack(arrays))}  # [batch, 3, s, s]

    def settings(self) -> dict:
        return {"image_size": self.image_size}


def image_preprocessor_from(processor, image_size: int | None) -> ImagePreprocessor:
    """Build ours from an HF image processor's mean/std and its native size."""
    mean = getattr(processor, "image_mean", None) or [0.5, 0.5, 0.5]
    std = getattr(processor, "image_std", None) or [0.5, 0.5, 0.5]
    if image_size is None:
        size = getattr(processor, "crop_size", None) or getattr(processor, "size", None) or {}
        image_size = size.get("height") or size.get("shortest_edge") or 224
    return ImagePreprocessor(mean, std, int(image_size))
