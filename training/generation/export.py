"""Write a generation task's folder through the same ``adapters.format`` code the server reads:
PEFT's own ``save_pretrained`` files (kind ``lora``) or nothing but the manifest (kind
``prompt``), plus ``adapter.json``, the card, ``metrics.json`` and the curves."""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

from adapters.file_modes import make_readable
from adapters.format import Manifest
from adapters.format.adapter_dir import write_manifest


def write_generation_dir(out: Path, manifest: Manifest, card: str, peft_model=None) -> Path:
    """``adapter.json`` + ``README.md`` (+ ``adapter_config.json`` and ``adapter_model.safetensors``
    as PEFT writes them, when ``peft_model`` is given)."""
    out = Path(out)
    if peft_model is not None:
        with tempfile.TemporaryDirectory(prefix="taskswap-peft-") as tmp:
            peft_model.save_pretrained(tmp, safe_serialization=True)
            for name in ("adapter_config.json", "adapter_model.safetensors"):
                shutil.copyfile(Path(tmp) / name, out / name)  # PEFT's README is replaced by ours
    write_manifest(out, manifest)
    (out / "README.md").write_text(card)
    make_readable(out)  # save_file writes 0600; a server running as another user loads it
    return out
