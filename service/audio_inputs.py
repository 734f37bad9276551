"""Audio request payloads (base64 in JSON, multipart uploads) to decoded clips, within limits.

Decoding runs in the request's thread (like images), so a bad file is a 400 for its own
request and never fails a batch shared with other clients. The limits are the service
settings ``TASKSWAP_MAX_AUDIO_*``; the decoding itself is :mod:`adapters.backbones.audio_io`.
Clips are resampled here to 16 kHz, the rate of the embedded speech encoder; a backbone at
another rate resamples again in its preprocessor.
"""

from __future__ import annotations

import base64
import binascii
import re

from adapters.backbones.audio_io import Audio, AudioLimits, decode_audio, sniff_format
from adapters.errors import InvalidInput

DEFAULT_RATE = 16_000
_DATA_URL = re.compile(r"^data:audio/[a-zA-Z0-9.+-]+;base64,")


def audio_limits_from(settings) -> AudioLimits:
    """The :class:`AudioLimits` of the service settings."""
    return AudioLimits(max_bytes=settings.max_audio_bytes, max_seconds=settings.max_audio_seconds,
                       max_sample_rate=settings.max_audio_sample_rate,
                       max_channels=settings.max_audio_channels,
                       max_decoded_bytes=settings.max_audio_decoded_bytes)


def decode_base64_audio(data: str, where: str, limits: AudioLimits) -> Audio:
    """A base64 string (optionally a ``data:audio/...;base64,`` URL) to a mono 16 kHz clip.

    >>> decode_base64_audio("bm90IGF1ZGlv", "audio[0]", AudioLimits())
    Traceback (most recent call last):
    ...
    adapters.errors.InvalidInput: audio[0] is not a decodable audio file (WAV, FLAC or OGG): unrecognised header (expected RIFF/WAVE, fLaC or OggS)
    """
    data = _DATA_URL.sub("", data.strip(), count=1)
    if len(data) > (limits.max_bytes * 4) // 3 + 8:  # check before decoding anything
        raise InvalidInput(f"{where} is larger than {limits.max_bytes} bytes (TASKSWAP_MAX_AUDIO_BYTES)")
    try:
        raw = base64.b64decode(data, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise InvalidInput(f"{where} is not valid base64 ({exc}); send the file's bytes "
                           "base64-encoded") from exc
    return decode_audio(raw, where, limits, DEFAULT_RATE)


def decode_audio_upload(raw: bytes, where: str, limits: AudioLimits) -> Audio:
    """An uploaded file's bytes to a mono 16 kHz clip."""
    return decode_audio(raw, where, limits, DEFAULT_RATE)


def looks_like_audio(raw: bytes) -> bool:
    """True for WAV/FLAC/OGG magic bytes: how ``/predict/upload`` tells audio from images."""
    return sniff_format(raw) is not None
