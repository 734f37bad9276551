"""An image's size as the caller sent it, when decoding reduced it (service/decoding.py
keeps at most ``image_decode_side`` pixels a side): boxes and masks answer in the caller's
pixels, not the reduced image's.

>>> from PIL import Image
>>> im = Image.new("RGB", (448, 336))
>>> source_size(im)
(448, 336)
>>> im.info[SOURCE_SIZE] = (4000, 3000)
>>> source_size(im)
(4000, 3000)
"""

from __future__ import annotations

SOURCE_SIZE = "taskswap_source_size"  # key in a PIL image's ``info``: ``(width, height)`` sent


def source_size(image) -> tuple[int, int]:
    """``(width, height)`` of ``image`` as the caller sent it (its own size if not reduced)."""
    return tuple(getattr(image, "info", {}).get(SOURCE_SIZE) or image.size)
