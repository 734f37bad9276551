"""scikit-image's sample photos (public domain / CC0) and what the ``coco-objects`` detector
finds on them: the golden cases of tests/unit/test_ssd_coco.py and tests/http/test_coco_objects_http.py."""

from __future__ import annotations

import numpy as np
import skimage.data
from PIL import Image

# (photo, top label, its score range): scores of the rebuilt detector on the full-size photo,
# resized to 300 x 300 with PIL (bilinear).
GOLDEN = [("astronaut", "person", 0.70, 0.82), ("coffee", "cup", 0.92, 0.98),
          ("chelsea", "cat", 0.88, 0.95), ("stereo_motorcycle", "motorcycle", 0.96, 1.0),
          ("camera", "person", 0.78, 0.90)]


def photo(name: str) -> Image.Image:
    """An RGB PIL image of ``skimage.data.<name>()`` (grey photos stacked to three channels)."""
    a = getattr(skimage.data, name)()
    a = a[0] if isinstance(a, tuple) else a  # stereo_motorcycle: (left, right, disparity)
    a = np.stack([a] * 3, -1) if a.ndim == 2 else a[..., :3]
    return Image.fromarray(a)
