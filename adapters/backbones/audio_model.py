"""Google's speech_embedding as a torch module: waveform -> log-mel frames -> 96-d per window.

The network ships as two ONNX graphs in the ``openwakeword`` package; this module is the
same computation in torch, so heads and PEFT LoRA attach to it like to any HF model:

1. **Mel front end** (``melspectrogram.onnx``): a 512-sample STFT with hop 160 (10 ms at
   16 kHz, no centre padding) computed as two 1-D convolutions with the graph's own
   real/imaginary kernels, power, a 32-band mel matrix, ``10 log10`` clamped at 1e-10 and
   at 80 dB below the clip's loudest frame, then ``x / 10 + 2`` (openWakeWord's transform).
   The input is int16-scaled (``samples * 32768``), as the graph expects.
2. **Windows**: 76 frames (775 ms), step 8 frames (80 ms).
3. **Embedder** (``embedding_model.onnx``): 20 Conv2d layers with LeakyReLU(0.2) floored at
   -0.4 and five max-pools, each window ``[1, 76, 32+2]`` -> ``[96]``.

Inputs and outputs follow Hugging Face audio models: ``input_values [rows, samples]``
(float, -1..1, 16 kHz) and a sample-level ``attention_mask [rows, samples]``; the output has
``last_hidden_state [rows, windows, 96]`` and a window-level ``attention_mask [rows, windows]``
(1 for windows inside the clip), which mean pooling reads. The 80 dB floor is taken per
clip over its own frames only, so a clip's rows do not depend on what else is in the batch.

Windows are folded into the batch dimension row-major (``[rows * windows, 1, 76, 34]``)
inside the embedder; :mod:`adapters.lora.batch` maps such a dimension back to rows.

Example::

    >>> m = SpeechEmbeddingModel(SpeechEmbeddingConfig())
    >>> out = m(torch.zeros(2, 16000), attention_mask=torch.ones(2, 16000, dtype=torch.long))
    >>> tuple(out.last_hidden_state.shape), tuple(out.attention_mask.shape)
    ((2, 3, 96), (2, 3))
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn
from transformers import AutoConfig, AutoModel, PretrainedConfig, PreTrainedModel
from transformers.audio_utils import mel_filter_bank
from transformers.utils import ModelOutput

# (out channels, kernel, max-pool after it or None). Padding: (0, 1) for 1x3 kernels (the
# graph pads the mel axis symmetrically), none otherwise; the first conv has no bias and a
# separate BatchNorm after its ReLU, the last no activation.
GOOGLE_LAYERS: tuple = (
    (24, (3, 3), None), (24, (1, 3), None), (24, (3, 1), (2, 2)),
    (48, (1, 3), None), (48, (3, 1), None), (48, (1, 3), None), (48, (3, 1), (1, 2)),
    (72, (1, 3), None), (72, (3, 1), None), (72, (1, 3), None), (72, (3, 1), (2, 2)),
    (96, (1, 3), None), (96, (3, 1), None), (96, (1, 3), None), (96, (3, 1), (1, 2)),
    (96, (1, 3), None), (96, (3, 1), None), (96, (1, 3), None), (96, (3, 1), (2, 2)),
    (96, (3, 1), None),
)


class SpeechEmbeddingConfig(PretrainedConfig):
    """Sizes of the mel front end and the embedder (defaults: Google's speech_embedding)."""

    model_type = "speech_embedding"

    def __init__(self, sample_rate: int = 16000, n_fft: int = 512, hop_length: int = 160,
                 n_mels: int = 32, top_db: float = 80.0, input_scale: float = 32768.0,
                 mel_scale: float = 0.1, mel_offset: float = 2.0, window_frames: int = 76,
                 window_step: int = 8, channels: list[int] | None = None,
                 negative_slope: float = 0.2, activation_floor: float = -0.4,
                 batch_norm_eps: float = 1e-3, **kwargs):
        super().__init__(**kwargs)
        self.sample_rate = sample_rate
        self.n_fft = n_fft
        self.hop_length = hop_length
        self.n_mels = n_mels
        self.top_db = top_db
        self.input_scale = input_scale
        self.mel_scale = mel_scale
        self.mel_offset = mel_offset
        self.window_frames = window_frames
        self.window_step = window_step
        self.channels = list(channels or [c for c, _, _ in GOOGLE_LAYERS])
        self.negative_slope = negative_slope
        self.activation_floor = activation_floor
        self.batch_norm_eps = batch_norm_eps
        self.hidden_size = self.channels[-1]

    @property
    def min_samples(self) -> int:
        """Samples of the shortest clip that fills one window (12,512 = 0.78 s at 16 kHz)."""
        return self.n_fft + (self.window_frames - 1) * self.hop_length


@dataclass
class SpeechEmbeddingOutput(ModelOutput):
    last_hidden_state: torch.Tensor | None = None  # [rows, windows, hidden]
    attention_mask: torch.Tensor | None = None  # [rows, windows], 1 = a window inside the clip


class MelFrontEnd(nn.Module):
    """``[rows, samples]`` waveform -> ``[rows, frames, n_mels]`` scaled log-mel."""

    def __init__(self, config: SpeechEmbeddingConfig):
        super().__init__()
        self.config = config
        bins = config.n_fft // 2 + 1
        self.register_buffer("stft_real", torch.zeros(bins, 1, config.n_fft))  # [bins, 1, n_fft]
        self.register_buffer("stft_imag", torch.zeros(bins, 1, config.n_fft))
        self.register_buffer("mel_weights", torch.zeros(bins, config.n_mels))  # [bins, n_mels]

    @torch.no_grad()
    def reset_dsp(self) -> None:
        """A standard front end (periodic Hann DFT, 60-3800 Hz HTK mel bank) for a model built
        from its config alone (``AutoModel.from_config``: the scratch baseline); a converted
        model overwrites these buffers with the ONNX graph's own."""
        if self.stft_real.is_meta:
            return
        c = self.config
        n = torch.arange(c.n_fft, dtype=torch.float64)
        k = torch.arange(c.n_fft // 2 + 1, dtype=torch.float64)[:, None]
        hann = 0.5 - 0.5 * torch.cos(2 * math.pi * n / c.n_fft)
        self.stft_real.copy_((torch.cos(2 * math.pi * k * n / c.n_fft) * hann)[:, None])
        self.stft_imag.copy_((-torch.sin(2 * math.pi * k * n / c.n_fft) * hann)[:, None])
        bank = mel_filter_bank(c.n_fft // 2 + 1, c.n_mels, 60.0, 3800.0, c.sample_rate)  # [bins, mels]
        self.mel_weights.copy_(torch.from_numpy(bank))

    def num_frames(self, samples: torch.Tensor) -> torch.Tensor:
        """Frames of clips of ``samples`` samples (0 when shorter than one FFT)."""
        c = self.config
        return torch.where(samples >= c.n_fft, (samples - c.n_fft) // c.hop_length + 1, 0)

    def forward(self, waveform: torch.Tensor, lengths: torch.Tensor,
                peak: torch.Tensor | None = None) -> torch.Tensor:
        """Always in float32: int16-scaled power reaches ~1e14, far past float16's range.
        ``peak [rows]``: the dB peak to clamp ``top_db`` below, per row, when the row is a
        part of a longer clip (:meth:`peak_db` of the whole clip); NaN or None: the row's own."""
        c = self.config
        x = (waveform.float() * c.input_scale).unsqueeze(1)  # [rows, 1, samples], int16 scale
        real = nn.functional.conv1d(x, self.stft_real.float(), stride=c.hop_length)  # [rows, bins, frames]
        imag = nn.functional.conv1d(x, self.stft_imag.float(), stride=c.hop_length)
        power = (real.square() + imag.square()).transpose(1, 2)  # [rows, frames, bins]
        db = 10.0 * torch.log10((power @ self.mel_weights.float()).clamp(min=1e-10))  # [rows, frames, mels]
        # The graph clamps at (max - top_db) over its whole input; per clip, over its own frames.
        frames = torch.arange(db.shape[1], device=db.device)
        valid = frames[None, :] < self.num_frames(lengths)[:, None]  # [rows, frames]
        own = db.masked_fill(~valid[:, :, None], float("-inf")).amax(dim=(1, 2))  # [rows]
        if peak is not None:
            peak = peak.to(own)
            own = torch.where(torch.isnan(peak), own, peak)
        db = torch.maximum(db, (own - c.top_db)[:, None, None])
        return db * c.mel_scale + c.mel_offset

    @torch.no_grad()
    def peak_db(self, waveform: torch.Tensor, chunk_frames: int = 4096) -> float:
        """The loudest mel value (dB, before the ``top_db`` clamp) of one clip ``[samples]``,
        the number :meth:`forward` clamps below; computed ``chunk_frames`` at a time, so a
        long clip never holds its whole spectrogram."""
        c = self.config
        frames = int(self.num_frames(torch.tensor(len(waveform))))
        best = float("-inf")
        for f0 in range(0, frames, chunk_frames):
            f1 = min(frames, f0 + chunk_frames)
            x = waveform[f0 * c.hop_length:(f1 - 1) * c.hop_length + c.n_fft].float()
            x = (x * c.input_scale)[None, None]  # [1, 1, samples]
            real = nn.functional.conv1d(x, self.stft_real.float(), stride=c.hop_length)
            imag = nn.functional.conv1d(x, self.stft_imag.float(), stride=c.hop_length)
            power = (real.square() + imag.square()).transpose(1, 2)  # [1, frames, bins]
            db = 10.0 * torch.log10((power @ self.mel_weights.float()).clamp(min=1e-10))
            best = max(best, float(db.max()))
        return best


class ConvBlock(nn.Module):
    """Conv2d (+ BatchNorm for the first), LeakyReLU floored at ``floor``, optional max-pool."""

    def __init__(self, cin: int, cout: int, kernel: tuple, pool, config: SpeechEmbeddingConfig,
                 first: bool, last: bool):
        super().__init__()
        padding = (0, 1) if tuple(kernel) == (1, 3) else (0, 0)
        self.conv = nn.Conv2d(cin, cout, kernel, padding=padding, bias=not (first or last))
        self.norm = nn.BatchNorm2d(cout, eps=config.batch_norm_eps) if first else None
        self.pool = nn.MaxPool2d(pool, pool) if pool else None
        self.last = last
        self.slope = config.negative_slope
        self.floor = config.activation_floor

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.conv(x)
        if self.last:
            return x
        if self.norm is not None:  # conv -> ReLU -> BatchNorm, as in the graph
            x = self.norm(torch.relu(x))
        x = nn.functional.leaky_relu(x, self.slope).clamp(min=self.floor)
        return self.pool(x) if self.pool is not None else x


class SpeechEmbedder(nn.Module):
    """``[n, 1, 76, n_mels + 2]`` windows -> ``[n, hidden]``."""

    def __init__(self, config: SpeechEmbeddingConfig):
        super().__init__()
        cin, blocks = 1, []
        for i, ((_, kernel, pool), cout) in enumerate(zip(GOOGLE_LAYERS, config.channels)):
            blocks.append(ConvBlock(cin, cout, kernel, pool, config, i == 0, i == len(GOOGLE_LAYERS) - 1))
            cin = cout
        self.layers = nn.ModuleList(blocks)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for layer in self.layers:
            x = layer(x)
        return x.flatten(1)  # [n, hidden, 1, 1] -> [n, hidden]


class SpeechEmbeddingModel(PreTrainedModel):
    """Waveform in, one embedding per 80 ms window out (see the module docstring)."""

    config_class = SpeechEmbeddingConfig
    base_model_prefix = "speech_embedding"
    main_input_name = "input_values"

    def __init__(self, config: SpeechEmbeddingConfig):
        super().__init__(config)
        if len(config.channels) != len(GOOGLE_LAYERS):
            raise ValueError(f"channels must list {len(GOOGLE_LAYERS)} layer widths, got {len(config.channels)}")
        self.mel = MelFrontEnd(config)
        self.embedder = SpeechEmbedder(config)
        self.post_init()

    def _init_weights(self, module):
        """Random init for a model built from its config (pretrained weights overwrite it)."""
        if isinstance(module, MelFrontEnd):
            module.reset_dsp()
        elif isinstance(module, nn.Conv2d) and not module.weight.is_meta:
            nn.init.kaiming_normal_(module.weight, a=self.config.negative_slope, nonlinearity="leaky_relu")
            if module.bias is not None:
                nn.init.zeros_(module.bias)

    def num_windows(self, samples: torch.Tensor) -> torch.Tensor:
        """Windows of clips of ``samples`` samples (0 when shorter than ``config.min_samples``)."""
        c = self.config
        frames = self.mel.num_frames(samples)
        return torch.where(frames >= c.window_frames, (frames - c.window_frames) // c.window_step + 1, 0)

    def window_samples(self, lo: int, hi: int) -> tuple[int, int]:
        """The samples ``[start, end)`` that windows ``lo..hi-1`` of a clip read: the part of
        the waveform a slice over those windows needs (each window reads ``min_samples``
        samples, and window ``j`` starts ``window_step`` hops after window ``j - 1``).

        >>> m = SpeechEmbeddingModel(SpeechEmbeddingConfig())
        >>> m.window_samples(0, 1), m.window_samples(2, 4)
        ((0, 12512), (2560, 16352))
        """
        c = self.config
        step = c.window_step * c.hop_length
        return lo * step, (hi - 1) * step + c.min_samples

    def peak_db(self, waveform: torch.Tensor) -> float:
        """The clip-wide dB peak its mel front end clamps below (see :meth:`MelFrontEnd.peak_db`)."""
        return self.mel.peak_db(waveform)

    def forward(self, input_values: torch.Tensor, attention_mask: torch.Tensor | None = None,
                mel_peak: torch.Tensor | None = None, **kwargs) -> SpeechEmbeddingOutput:
        """``mel_peak [rows]``: for rows that are parts of a longer clip, that clip's
        :meth:`peak_db` (NaN for whole clips), so a part's windows equal the whole clip's."""
        c = self.config
        rows, samples = input_values.shape
        if attention_mask is None:
            lengths = torch.full((rows,), samples, device=input_values.device)
        else:
            lengths = attention_mask.sum(dim=1)  # clips are left-aligned, padding at the end
        mel = self.mel(input_values, lengths, mel_peak)  # [rows, frames, mels]
        if mel.shape[1] < c.window_frames:
            raise ValueError(f"clips must have at least {c.min_samples} samples; pad them "
                             f"(the preprocessor does), got {samples}")
        windows = mel.unfold(1, c.window_frames, c.window_step)  # [rows, W, mels, 76]
        n_win = windows.shape[1]
        # The graph pads the mel axis by one on each side before the first 3x3 conv.
        x = nn.functional.pad(windows.transpose(2, 3), (1, 1))  # [rows, W, 76, mels + 2]
        x = x.reshape(rows * n_win, 1, c.window_frames, c.n_mels + 2)  # row-major fold
        x = x.to(self.embedder.layers[0].conv.weight.dtype)  # float16 on a GPU in half mode
        hidden = self.embedder(x).view(rows, n_win, -1)  # [rows, W, hidden]
        mask = (torch.arange(n_win, device=hidden.device)[None, :]
                < self.num_windows(lengths)[:, None]).long()  # [rows, W]
        hidden = hidden * mask[:, :, None].to(hidden.dtype)  # padded windows read as zeros
        return SpeechEmbeddingOutput(last_hidden_state=hidden, attention_mask=mask)


def register_auto_classes() -> None:
    """Let ``AutoConfig`` / ``AutoModel`` load a saved speech_embedding folder (idempotent)."""
    try:
        AutoConfig.register(SpeechEmbeddingConfig.model_type, SpeechEmbeddingConfig)
        AutoModel.register(SpeechEmbeddingConfig, SpeechEmbeddingModel)
    except ValueError:  # already registered in this process
        pass


register_auto_classes()
