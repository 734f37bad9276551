"""Audio preprocessing for waveform backbones: a batch of clips -> padded waveforms + mask.

Clips arrive decoded and mono (:class:`adapters.backbones.audio_io.Audio`); a clip at another
rate than the model's is resampled here. Leading and trailing silence is trimmed (10 ms
frames more than ``trim_db`` below the clip's loudest frame, keeping 100 ms on each side):
where a short word sits in its window changes the embedding more than who says it, and
recordings differ most in how much silence surrounds the word (the spoken-digits demo went
from 4/10 to 10/10 on the real recordings with it). A clip shorter than one window of the
model (``min_samples``, 0.78 s for speech_embedding) is then padded with digital silence on
both sides, so a short keyword sits in the middle of its only window; the batch is
right-padded to its longest clip, and ``attention_mask`` marks each clip's own samples, so
every row's output is the same whatever else is in the batch.

A long clip may be cut into parts of whole model windows (:meth:`AudioPreprocessor.parts`,
for a model that says which samples its windows read and what its front end clamps at:
``window_samples`` and ``peak_db``): each :class:`AudioPart` holds only the samples its
windows read (their left context included) and the whole clip's mel peak, so its windows
equal the whole clip's; the batch worker runs one part at a time between other requests.
"""

from __future__ import annotations

import numpy as np
import torch

from dataclasses import dataclass

from adapters.backbones.audio_io import Audio, resample
from adapters.errors import InvalidInput


@dataclass(frozen=True)
class AudioPart:
    """Windows ``lo..hi-1`` of a clip of ``total`` windows: ``samples`` are what those windows
    read, already at the model's rate and trimmed as the whole clip was; ``peak`` is the
    whole clip's mel peak (dB). Pooled features of the parts combine into the clip's:
    :meth:`combine`."""

    samples: np.ndarray
    sample_rate: int
    peak: float
    lo: int
    hi: int
    total: int
    seconds: float = 0.0  # counted once, on the clip the request sent

    @property
    def units(self) -> int:
        return self.hi - self.lo

    @staticmethod
    def combine(pooling: str, pooled: list[torch.Tensor], parts: list["AudioPart"]) -> torch.Tensor:
        """The clip's ``pooling`` from its parts' (each ``[hidden]``): a mean over all windows
        is the parts' means weighted by their windows; anything else reads the first window."""
        if pooling != "mean":
            return pooled[0]
        w = torch.tensor([p.units for p in parts], dtype=pooled[0].dtype, device=pooled[0].device)
        return (torch.stack(pooled) * w[:, None]).sum(0) / w.sum()


class AudioPreprocessor:
    """Clips -> ``input_values [rows, samples]`` float32 and ``attention_mask [rows, samples]``.

    >>> p = AudioPreprocessor(16000, 12512)
    >>> enc = p([Audio(np.ones(16000, np.float32), 16000), Audio(np.zeros(800, np.float32), 8000)])
    >>> tuple(enc["input_values"].shape), enc["attention_mask"].sum(1).tolist()
    ((2, 16000), [16000, 12512])
    """

    modality = "audio"

    def __init__(self, sample_rate: int, min_samples: int, trim_db: int = 35):
        self.sample_rate = sample_rate
        self.min_samples = min_samples
        self.trim_db = trim_db  # 0 = no trimming

    def __call__(self, clips: list) -> dict[str, torch.Tensor]:
        bad = [i for i, c in enumerate(clips) if not isinstance(c, (Audio, AudioPart))]
        if bad:
            raise InvalidInput(f"inputs {bad[:5]} are not audio clips; this backbone takes audio")
        waves = [c.samples if isinstance(c, AudioPart) else self.fit(c) for c in clips]
        n = max(len(w) for w in waves)
        values = np.zeros((len(waves), n), dtype=np.float32)  # [rows, samples]
        mask = np.zeros((len(waves), n), dtype=np.int32)  # [rows, samples]
        for i, w in enumerate(waves):
            values[i, :len(w)] = w
            mask[i, :len(w)] = 1
        out = {"input_values": torch.from_numpy(values), "attention_mask": torch.from_numpy(mask)}
        if any(isinstance(c, AudioPart) for c in clips):  # [rows]: NaN = a whole clip's own peak
            out["mel_peak"] = torch.tensor([c.peak if isinstance(c, AudioPart) else float("nan")
                                            for c in clips], dtype=torch.float32)
        return out

    def parts(self, model, clip: Audio, per_part: int) -> list[AudioPart] | None:
        """``clip`` as parts of at most ``per_part`` model windows, or None when it is one
        part (or ``model`` cannot say which samples a window reads)."""
        if not (hasattr(model, "window_samples") and hasattr(model, "peak_db")):
            return None
        w = self.fit(clip)
        total = int(model.num_windows(torch.tensor([len(w)]))[0])
        if total <= per_part:
            return None
        device = next(model.parameters()).device
        peak = model.peak_db(torch.from_numpy(w).to(device))
        out = []
        for lo in range(0, total, per_part):
            hi = min(total, lo + per_part)
            start, end = model.window_samples(lo, hi)
            out.append(AudioPart(w[start:end], self.sample_rate, peak, lo, hi, total))
        return out

    def fit(self, clip: Audio) -> np.ndarray:
        """``clip`` as the model reads it: resampled, trimmed, a short one padded."""
        w = resample(clip.samples, clip.sample_rate, self.sample_rate)
        if self.trim_db:
            w = trim_silence(w, self.sample_rate, self.trim_db)
        if len(w) < self.min_samples:  # centre a short clip in one window of silence
            left = (self.min_samples - len(w)) // 2
            w = np.pad(w, (left, self.min_samples - len(w) - left))
        return w

    def settings(self) -> dict:
        return {"sample_rate": self.sample_rate, "min_samples": self.min_samples, "trim_db": self.trim_db}

    def sample(self) -> list[Audio]:
        """One second of silence: what a warm-up or a shape probe runs."""
        return [Audio(np.zeros(self.sample_rate, np.float32), self.sample_rate)]


def trim_silence(w: np.ndarray, rate: int, below_db: float, margin_s: float = 0.1) -> np.ndarray:
    """``w`` without the leading/trailing 10 ms frames quieter than ``below_db`` under its
    loudest frame, keeping ``margin_s`` on each side. All-silent clips are kept whole.

    >>> w = np.zeros(16000, np.float32); w[8000:9600] = 0.5
    >>> len(trim_silence(w, 16000, 35))  # 0.1 s of sound + 0.1 s margin on each side
    4800
    """
    hop = max(1, rate // 100)
    n = len(w) // hop
    if n == 0:
        return w
    rms = np.sqrt(np.mean(w[:n * hop].reshape(n, hop).astype(np.float64) ** 2, axis=1))  # [frames]
    peak = rms.max()
    if peak <= 0:
        return w
    loud = np.flatnonzero(20 * np.log10(np.maximum(rms, 1e-12) / peak) > -below_db)
    margin = int(margin_s * rate)
    return w[max(0, loud[0] * hop - margin):min(len(w), (loud[-1] + 1) * hop + margin)]


def audio_preprocessor_for(model) -> AudioPreprocessor:
    """The preprocessor of a waveform model from its config (``sample_rate``, ``min_samples``)."""
    cfg = model.config
    rate = getattr(cfg, "sample_rate", None) or getattr(cfg, "sampling_rate", None) or 16_000
    return AudioPreprocessor(int(rate), int(getattr(cfg, "min_samples", 0) or 0))
