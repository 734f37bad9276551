"""Frozen-backbone features, computed once per (backbone, data, preprocessing) and cached.

The cache key is a sha256 over the backbone fingerprint, its preprocessing settings
(``max_length`` / ``image_size``), the pooling and the content of every input (text
bytes, image pixels or image-file bytes), so a changed file, model or setting can never
return stale features. Entries are safetensors files under ``<cache_dir>/<key>.safetensors``
written atomically (temp file + rename).

Features are computed by the backbone's own ``preprocess`` + ``forward`` + pooling, the
same calls the server's runtime makes, so a head fitted on them scores served rows alike.

Example::

    >>> from adapters.backbones.base import load_backbone
    >>> from adapters.backbones.tiny import tiny_backbone_spec
    >>> bb = load_backbone(tiny_backbone_spec("text", "/tmp/tiny-doc"))
    >>> extract_features(bb, ["good film", "bad film"], "mean", progress=False).shape
    torch.Size([2, 32])
"""

from __future__ import annotations

import hashlib
import json
import os
import uuid
from pathlib import Path

import torch
from PIL import Image
from safetensors.torch import load_file, save_file

from adapters.backbones.audio_io import Audio
from adapters.backbones.base import Backbone
from adapters.home import taskswap_home
from training.data import open_input
from training.progress import work


def default_cache_dir() -> Path:
    """``$TASKSWAP_HOME/features`` (``~/.cache/taskswap/features`` by default)."""
    return taskswap_home() / "features"


def inputs_digest(inputs: list) -> str:
    """sha256 over the inputs' content, in order (text, pixels, audio samples, or file bytes)."""
    h = hashlib.sha256()
    for x in inputs:
        if isinstance(x, Audio):
            h.update(f"A{x.sample_rate}:{len(x.samples)}".encode() + x.samples.tobytes())
        elif isinstance(x, str):
            h.update(b"T" + len(x.encode()).to_bytes(8, "little") + x.encode())
        elif isinstance(x, Image.Image):
            h.update(f"I{x.mode}{x.size}".encode() + x.tobytes())
        else:  # a path: its bytes, not its name, so an edited file is a new input
            data = Path(x).read_bytes()
            h.update(b"F" + len(data).to_bytes(8, "little") + data)
    return h.hexdigest()


def cache_key(backbone: Backbone, inputs: list, pooling: str) -> str:
    meta = {"fingerprint": backbone.fingerprint, "pooling": pooling,
            "preprocessing": backbone.preprocessing_settings(), "dtype": str(backbone.dtype),
            "inputs": inputs_digest(inputs), "n": len(inputs)}
    return hashlib.sha256(json.dumps(meta, sort_keys=True).encode()).hexdigest()


def _as_model_input(x, modality: str):
    return open_input(x, modality)


def compute_features(backbone: Backbone, inputs: list, pooling: str, batch_size: int = 64,
                     progress: bool = True, desc: str = "features") -> torch.Tensor:
    """``[len(inputs), hidden]`` float32 CPU features, ``batch_size`` rows per forward."""
    parts = []
    with work(len(inputs), desc, progress) as bar:
        for start in range(0, len(inputs), batch_size):
            chunk = [_as_model_input(x, backbone.modality) for x in inputs[start:start + batch_size]]
            parts.append(backbone.forward(backbone.preprocess(chunk)).get(pooling).cpu())
            bar.update(len(chunk))
    if not parts:
        return torch.zeros(0, backbone.hidden_size)
    return torch.cat(parts)  # [n, hidden]


def extract_features(backbone: Backbone, inputs: list, pooling: str, cache_dir: Path | None = None,
                     batch_size: int = 64, progress: bool = True, desc: str = "features") -> torch.Tensor:
    """Features from the cache when present, else computed and stored (``cache_dir=None``: no cache)."""
    if cache_dir is None:
        return compute_features(backbone, inputs, pooling, batch_size, progress, desc)
    cache_dir = Path(cache_dir)
    path = cache_dir / f"{cache_key(backbone, inputs, pooling)}.safetensors"
    if path.is_file():
        try:
            return load_file(str(path))["features"]
        except Exception:  # a truncated or foreign file: recompute and overwrite it
            pass
    feats = compute_features(backbone, inputs, pooling, batch_size, progress, desc)
    cache_dir.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex}.tmp")
    save_file({"features": feats.contiguous()}, str(tmp))
    os.replace(tmp, path)
    return feats
