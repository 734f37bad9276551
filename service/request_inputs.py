"""One request's inputs, checked and decoded with the same per-request limits on every route.

``/predict``, ``/predict/upload``, ``/embed``, ``/v1/embeddings`` and the KServe v2 routes
all go through :func:`decode_items` (base64 strings) or :func:`decode_raw` (uploaded
bytes): the input count (``TASKSWAP_MAX_INPUTS``), the text checks, each image's bytes and
pixels and the request's summed pixels (``TASKSWAP_MAX_REQUEST_PIXELS``), each clip's
audio limits. A limit added here holds on every inference route at once.
"""

from __future__ import annotations

from adapters.backbones.audio_io import AudioLimits
from service.audio_inputs import decode_audio_upload, decode_base64_audio
from service.inputs import InputLimits, base64_image_bytes, check_count, check_texts, decode_images


def check_items(items: list, where: str, limits: InputLimits) -> None:
    """The checks that cost nothing: run on the event loop before any decoding."""
    check_count(len(items), where, limits)


def decode_items(items: list[str], modality: str, where: str, limits: InputLimits,
                 audio_limits: AudioLimits) -> list:
    """Texts checked, or base64 images / clips decoded (CPU work: call it off the event loop
    for images and audio). ``where`` names the field in error messages (``inputs[0].data``)."""
    check_items(items, where, limits)
    if modality == "text":
        return check_texts(items, limits)
    if modality == "audio":
        return [decode_base64_audio(b64, f"{where}[{i}]", audio_limits) for i, b64 in enumerate(items)]
    names = [f"{where}[{i}]" for i in range(len(items))]
    return decode_images([base64_image_bytes(b64, n, limits) for b64, n in zip(items, names)],
                         names, limits)


def decode_raw(raws: list[bytes], names: list[str], modality: str, limits: InputLimits,
               audio_limits: AudioLimits) -> list:
    """Uploaded files' bytes (``names`` for error messages) decoded as images or clips."""
    check_items(raws, "files", limits)
    if modality == "audio":
        return [decode_audio_upload(data, name, audio_limits) for data, name in zip(raws, names)]
    return decode_images(raws, names, limits)
