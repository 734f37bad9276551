"""Turning request payloads into model inputs, within the configured limits.

Texts are checked (count, emptiness, length); images are decoded here, in the
request's thread, into RGB PIL images, so a bad image is a 400 for its own request and
never fails a batch shared with others. Only common raster formats are opened:
PIL's EPS plugin, for one, would run Ghostscript on untrusted bytes.
"""

from __future__ import annotations

import base64
import binascii
import io
import re
from dataclasses import dataclass

from PIL import Image

from adapters.errors import CapacityError, InvalidInput
from adapters.format.labels import label_problems
from adapters.store.base import check_name
from service.decoding import decode_reduced

IMAGE_FORMATS = ("PNG", "JPEG", "GIF", "BMP", "WEBP", "TIFF")
# Code points no text input may hold: lone surrogates (JSON "\ud800" decodes to one; the
# tokenizer then raises inside the shared batch), NUL, and Unicode non-characters
# (U+FDD0..U+FDEF and the last two code points of every plane). Fuzzing MiniLM's and the
# tiny test tokenizer over every code point and 20,000 random strings found surrogates to
# be the only thing they reject; NUL and non-characters are refused as not being text.
_BAD_CHAR = re.compile(r"[\x00\ud800-\udfff\ufdd0-\ufdef"
                       + "".join(rf"\U{p:04x}fffe\U{p:04x}ffff" for p in range(17)) + "]")
from service.request_limits import MAX_TASK_NAME_CHARS, MAX_TASKS  # noqa: E402,F401  (re-exported)
_DATA_URL = re.compile(r"^data:image/[a-zA-Z0-9.+-]+;base64,")


@dataclass(frozen=True)
class InputLimits:
    """The per-request limits from :class:`service.settings.Settings`."""

    max_inputs: int = 64
    max_text_chars: int = 10_000
    max_image_bytes: int = 10 << 20
    max_image_pixels: int = 40_000_000
    max_request_pixels: int = 160_000_000
    image_decode_side: int = 448

    @classmethod
    def from_settings(cls, s) -> "InputLimits":
        return cls(s.max_inputs, s.max_text_chars, s.max_image_bytes, s.max_image_pixels,
                   s.max_request_pixels, s.image_decode_side)


def check_count(n: int, what: str, limits: InputLimits) -> None:
    if n == 0:
        raise InvalidInput(f"{what} is empty: send at least one")
    if n > limits.max_inputs:
        raise InvalidInput(f"{n} {what}; at most {limits.max_inputs} per request "
                           "(TASKSWAP_MAX_INPUTS): split the request")


def check_texts(texts: list[str], limits: InputLimits, field: str = "texts") -> list[str]:
    """Refuse empty lists, blank texts, texts over ``max_text_chars`` and texts holding a
    lone surrogate, NUL or a non-character (all problems at once), before the batcher;
    ``field`` names the list in the messages.

    >>> check_texts(["fine"], InputLimits())
    ['fine']
    """
    check_count(len(texts), field, limits)
    problems = []
    for i, t in enumerate(texts):
        if not t.strip():
            problems.append(f"{field}[{i}] is empty")
        elif len(t) > limits.max_text_chars:
            problems.append(f"{field}[{i}] has {len(t)} characters; at most {limits.max_text_chars} "
                            "(TASKSWAP_MAX_TEXT_CHARS)")
        elif (bad := _BAD_CHAR.search(t)) is not None:
            problems.append(f"{field}[{i}] holds U+{ord(bad.group()):04X} at character {bad.start()} "
                            f"({_char_kind(bad.group())}); send valid Unicode text")
    InvalidInput.collect(problems[:10], field)
    return list(texts)


def _char_kind(c: str) -> str:
    if c == "\x00":
        return "NUL"
    return "a lone surrogate" if 0xD800 <= ord(c) <= 0xDFFF else "a Unicode non-character"


def decode_base64_image(data: str, where: str, limits: InputLimits) -> Image.Image:
    """A base64 string (optionally a ``data:image/...;base64,`` URL) to an RGB image."""
    return decode_image(base64_image_bytes(data, where, limits), where, limits)


def base64_image_bytes(data: str, where: str, limits: InputLimits) -> bytes:
    """A base64 string (optionally a ``data:image/...;base64,`` URL) to the image's bytes."""
    data = _DATA_URL.sub("", data.strip(), count=1)
    if len(data) > (limits.max_image_bytes * 4) // 3 + 8:  # check before decoding anything
        raise InvalidInput(f"{where} is larger than {limits.max_image_bytes} bytes "
                           "(TASKSWAP_MAX_IMAGE_BYTES)")
    try:
        raw = base64.b64decode(data, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise InvalidInput(f"{where} is not valid base64 ({exc}); send the file's bytes "
                           "base64-encoded") from exc
    return raw


def image_pixels(raw: bytes) -> int:
    """Width x height from an encoded image's header (0 when unreadable: decoding says why)."""
    try:
        with Image.open(io.BytesIO(raw), formats=IMAGE_FORMATS) as im:
            return im.size[0] * im.size[1]
    except Exception:  # noqa: BLE001  any junk: decode_image reports it properly
        return 0


def check_request_pixels(raws: list[bytes], limits: InputLimits) -> None:
    """Refuse a request whose images add up to more than ``max_request_pixels`` (headers only)."""
    total = sum(image_pixels(r) for r in raws)
    if total > limits.max_request_pixels:
        raise InvalidInput(f"the images add up to {total} pixels; at most {limits.max_request_pixels} "
                           "per request (TASKSWAP_MAX_REQUEST_PIXELS): send fewer or smaller images")


def decode_images(raws: list[bytes], names: list[str], limits: InputLimits) -> list[Image.Image]:
    """Decode a request's images one after the other (one full-size buffer at a time),
    within the request's pixel budget."""
    check_request_pixels(raws, limits)
    return [decode_image(r, n, limits) for r, n in zip(raws, names)]


def decode_image(raw: bytes, where: str, limits: InputLimits) -> Image.Image:
    """Encoded image bytes to a fully decoded RGB image, or :class:`InvalidInput`.

    >>> decode_image(b"not an image", "images[0]", InputLimits())
    Traceback (most recent call last):
    ...
    adapters.errors.InvalidInput: images[0] is not a decodable image (PNG, JPEG, GIF, BMP, WEBP or TIFF): cannot identify image file
    """
    if not raw:
        raise InvalidInput(f"{where} is empty")
    if len(raw) > limits.max_image_bytes:
        raise InvalidInput(f"{where} has {len(raw)} bytes; at most {limits.max_image_bytes} "
                           "(TASKSWAP_MAX_IMAGE_BYTES)")
    try:
        im = Image.open(io.BytesIO(raw), formats=IMAGE_FORMATS)
        w, h = im.size  # from the header only: nothing decoded yet
        if w * h > limits.max_image_pixels:
            raise InvalidInput(f"{where} is {w}x{h} = {w * h} pixels; at most "
                               f"{limits.max_image_pixels} (TASKSWAP_MAX_IMAGE_PIXELS)")
        return decode_reduced(im, limits.image_decode_side)  # bounded memory, see service/decoding.py
    except (InvalidInput, CapacityError):
        raise
    except Image.DecompressionBombError as exc:
        raise InvalidInput(f"{where} is too many pixels ({exc})") from exc
    except Exception as exc:  # PIL raises many types (OSError, SyntaxError, struct.error...)
        reason = str(exc).split(" <_io.BytesIO")[0] or type(exc).__name__
        raise InvalidInput(f"{where} is not a decodable image ({', '.join(IMAGE_FORMATS[:-1])} "
                           f"or {IMAGE_FORMATS[-1]}): {reason}") from exc


def check_registration_fields(name: str | None, labels: list[str] | None) -> None:
    """Check the name/labels a registration overrides before the core builds a manifest.

    >>> check_registration_fields("sentiment", ["neg", "pos"])
    """
    problems = []
    if name is not None:
        try:
            check_name(name)
        except InvalidInput as exc:
            problems.append(exc.message)
    if labels is not None:
        problems += label_problems(labels)  # the rule adapter.json's labels follow too
    InvalidInput.collect(problems)


def check_task_names(names: list[str]) -> list[str]:
    """One rule for the tasks a prediction names, JSON or multipart: at most
    :data:`MAX_TASKS` names of at most :data:`MAX_TASK_NAME_CHARS` characters.

    >>> check_task_names(["a", "b"])
    ['a', 'b']
    """
    if len(names) > MAX_TASKS:
        raise InvalidInput(f"{len(names)} tasks; at most {MAX_TASKS} per request")
    long = [i for i, n in enumerate(names) if len(n) > MAX_TASK_NAME_CHARS]
    if long:
        raise InvalidInput(f"task {long[0]} has {len(names[long[0]])} characters; task names have "
                           f"at most {MAX_TASK_NAME_CHARS}")
    return names
