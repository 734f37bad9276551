"""Decoding untrusted images with bounded memory.

PIL decodes a PNG at full size whatever the byte count: sixteen black 40-megapixel PNGs
(a 2.4 MB body) took 1.77 GB. Three bounds keep decoded memory finite:

1. **Per image**: the header's width x height is checked first (``max_image_pixels``);
   JPEGs are decoded at a reduced scale (``Image.draft``, up to 1/8) and every image is
   reduced to at most ``image_decode_side`` a side (``thumbnail``, which uses ``reduce``)
   *before* conversion to RGB, so only one full-size buffer exists, briefly, and what is
   kept is at most ``side x side x 4`` bytes.
2. **Per request**: the images' header pixels summed (``max_request_pixels``), refused
   before anything is decoded.
3. **Per process**: a budget of bytes for full-size buffers being decoded at once
   (:class:`DecodeBudget`, ``decode_budget_mb``); a decode that does not fit waits, then
   gets 429 + Retry-After. It never allocates past the budget.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import threading
import time

from PIL import Image

from adapters.errors import CapacityError
from adapters.source_size import SOURCE_SIZE


_REDUCIBLE = ("L", "RGB", "RGBA")  # modes PIL resizes with a real filter (others: NEAREST)


def decoded_bytes(im: Image.Image) -> int:
    """Bytes of full-size buffers decoding ``im`` needs at its (drafted) size: its own pixels
    (1 byte each for 8-bit single-band modes, 2 for 16-bit, else 4: PIL stores multi-band
    pixels in 32 bits) plus an RGB copy (4) for modes converted before they are reduced."""
    native = 1 if im.mode in ("1", "L", "P") else 2 if im.mode.startswith("I;16") else 4
    extra = 0 if im.mode in _REDUCIBLE else 4
    w, h = im.size
    return w * h * (native + extra)


class DecodeBudget:
    """A counting budget of bytes: ``with budget.hold(n): ...`` waits for room (bounded).

    >>> b = DecodeBudget(100, wait_s=0)
    >>> with b.hold(60):
    ...     b.in_use
    60
    """

    def __init__(self, max_bytes: int, wait_s: float = 10.0):
        self.max_bytes = max_bytes
        self.wait_s = wait_s
        self.in_use = 0
        self.peak = 0
        self._cond = threading.Condition()

    def hold(self, n: int) -> "_Hold":
        return _Hold(self, min(n, self.max_bytes))  # one image alone always fits (per-image cap)

    def _acquire(self, n: int) -> None:
        deadline = time.monotonic() + self.wait_s
        with self._cond:
            while self.in_use + n > self.max_bytes:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise CapacityError(f"too many images are being decoded at once (decode budget "
                                        f"{self.max_bytes >> 20} MiB, TASKSWAP_DECODE_BUDGET_MB); "
                                        "retry shortly", retry_after_s=1)
                self._cond.wait(left)
            self.in_use += n
            self.peak = max(self.peak, self.in_use)

    def _release(self, n: int) -> None:
        with self._cond:
            self.in_use -= n
            self._cond.notify_all()


class _Hold:
    def __init__(self, budget: DecodeBudget, n: int):
        self.budget, self.n = budget, n

    def __enter__(self):
        self.budget._acquire(self.n)
        return self

    def __exit__(self, *exc):
        self.budget._release(self.n)


# One per process: every request's decodes share it (set from the settings at startup).
BUDGET = DecodeBudget(512 << 20)


def configure(max_bytes: int, wait_s: float) -> None:
    """Set the process budget, and make big buffers go back to the OS when freed."""
    BUDGET.max_bytes, BUDGET.wait_s = max_bytes, wait_s
    _fixed_mmap_threshold()


def _fixed_mmap_threshold(threshold: int = 1 << 20) -> None:
    """glibc raises its mmap threshold (up to 32 MiB) each time a large mmapped block is
    freed, after which full-size image buffers come from per-thread heaps that never
    shrink: RSS stays at its peak (4.7 GB after six requests of 40-megapixel PNGs). A
    fixed threshold keeps every buffer over 1 MiB mmapped, returned to the OS on free."""
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        libc.mallopt(-3, threshold)  # M_MMAP_THRESHOLD (setting it disables the dynamic rise)
    except (OSError, AttributeError):  # not glibc: the budget alone bounds the peak
        pass


def decode_reduced(im: Image.Image, side: int) -> Image.Image:
    """Decode an opened image to RGB, at most ``side`` pixels a side, holding the budget
    for its full-size buffer while it exists."""
    sent = im.size  # from the header: what the caller's pixel coordinates refer to
    im.draft("RGB", (side, side))  # JPEG: decode at 1/2, 1/4 or 1/8 scale; others: no-op
    with BUDGET.hold(decoded_bytes(im)):
        im.load()  # decode now: a truncated file fails here, not inside a shared batch
        if im.mode not in _REDUCIBLE:
            im = im.convert("RGB")  # palette / 1-bit / 16-bit / CMYK: filter in RGB
        if max(im.size) > side:
            im.thumbnail((side, side), Image.BILINEAR, reducing_gap=2.0)
        out = im.convert("RGB")
        if out.size != sent:  # boxes and masks answer in the sent image's pixels (adapters/source_size.py)
            out.info[SOURCE_SIZE] = sent
        return out
