"""Input preprocessing: a tokenizer for text, our own resize/normalise for images.

Images are resized to a square ``image_size`` with PIL and normalised with the
image processor's own mean/std: the same transform for every HF vision model, no
torchvision, and the size is an explicit backbone setting that adapters record.
"""

from __future__ import annotations

import numpy as np
import torch
from PIL import Image

from adapters.errors import InvalidInput


class TextPreprocessor:
    """Tokenise a list of strings, padding to the longest and truncating to ``max_length``."""

    modality = "text"

    def __init__(self, tokenizer, max_length: int):
        self.tokenizer = tokenizer
        self.max_length = max_length

    def __call__(self, texts: list) -> dict[str, torch.Tensor]:
        bad = [i for i, t in enumerate(texts) if not isinstance(t, str)]
        if bad:
            raise InvalidInput(f"inputs {bad[:5]} are not text; this backbone takes strings")
        enc = self.tokenizer(list(texts), padding=True, truncation=True,
                             max_length=self.max_length, return_tensors="pt")
        return dict(enc)  # input_ids/attention_mask(/token_type_ids): [batch, seq]

    def settings(self) -> dict:
        return {"max_length": self.max_length}


class ImagePreprocessor:
    """Resize to ``image_size`` x ``image_size`` (bilinear), scale to [0, 1], normalise."""

    modality = "image"

    def __init__(self, mean, std, image_size: int):
        self.mean = np.asarray(mean, dtype=np.float32).reshape(3, 1, 1)
        self.std = np.asarray(std, dtype=np.float32).reshape(3, 1, 1)
        self.image_size = image_size

    def __call__(self, images: list) -> dict[str, torch.Tensor]:
        bad = [i for i, im in enumerate(images) if not isinstance(im, Image.Image)]
        if bad:
            raise InvalidInput(f"inputs {bad[:5]} are not images; this backbone takes images")
        s = self.image_size
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
