"""Write a trained adapter directory through the same ``adapters.format`` code the server reads.

Head adapters: ``adapter.json`` + ``head.safetensors``. LoRA adapters: PEFT's own
``save_pretrained`` files (``adapter_config.json`` + ``adapter_model.safetensors``) +
``adapter.json`` (kind ``lora``) + ``head.safetensors``. Both get the model card
``README.md``, ``metrics.json`` and the PNG plots. A from-scratch baseline gets a report
folder with the card, metrics and plots but no adapter files (it is not servable).
"""

from __future__ import annotations

import json
import shutil
import tempfile
from pathlib import Path

from safetensors.torch import save_file

from adapters.errors import InvalidInput
from adapters.format import Manifest, write_head_adapter
from adapters.format.adapter_dir import write_manifest
from adapters.file_modes import make_readable
from adapters.heads import Head
from adapters.kinds.top_layers import write_top_layers_adapter
from training.calibration import CALIBRATION_FILE
from training.feature_stats import STATS_FILE

# Files a training run writes; anything else in an existing output folder is the user's.
OWN_FILES = {"adapter.json", "head.safetensors", "adapter_config.json", "adapter_model.safetensors",
             "README.md", "metrics.json", "loss_curves.png", "confusion_matrix.png",
             "predicted_vs_true.png", "top_layers.safetensors", STATS_FILE, CALIBRATION_FILE}


def prepare_output_dir(path: Path) -> Path:
    """Create ``path`` or clear our own files from it; refuse to mix with foreign files."""
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise InvalidInput(f"output {path} exists and is not a folder")
    if path.is_dir():
        foreign = sorted(p.name for p in path.iterdir() if p.name not in OWN_FILES)
        if foreign:
            raise InvalidInput(f"output folder {path} holds other files ({', '.join(foreign[:5])}); "
                               "choose an empty or new folder")
        for p in path.iterdir():
            p.unlink()
    path.mkdir(parents=True, exist_ok=True)
    return path


def write_metrics(path: Path, metrics: dict) -> None:
    (Path(path) / "metrics.json").write_text(json.dumps(metrics, indent=2, sort_keys=True) + "\n")


def write_head_dir(path: Path, manifest: Manifest, head: Head, card: str) -> Path:
    """A head adapter directory (manifest, ``head.safetensors``, card)."""
    return write_head_adapter(path, manifest, head.state_for_file(), card=card)


def write_lora_dir(path: Path, manifest: Manifest, head: Head, peft_model, card: str) -> Path:
    """A LoRA adapter directory: PEFT's ``save_pretrained`` files plus our manifest and head."""
    path = Path(path)
    with tempfile.TemporaryDirectory(prefix="taskswap-peft-") as tmp:
        peft_model.save_pretrained(tmp, safe_serialization=True)
        for name in ("adapter_config.json", "adapter_model.safetensors"):
            shutil.copyfile(Path(tmp) / name, path / name)  # PEFT's own README is replaced by ours
    save_file({k: v.detach().float().contiguous().cpu() for k, v in head.state_for_file().items()},
              str(path / "head.safetensors"))
    write_manifest(path, manifest)
    (path / "README.md").write_text(card)
    make_readable(path)  # save_file writes 0600; a server running as another user loads it
    return path


def write_report_dir(path: Path, card: str) -> Path:
    """A from-scratch baseline's report folder: the card (metrics and plots are written beside)."""
    (Path(path) / "README.md").write_text(card)
    return Path(path)


def write_top_layers_dir(path: Path, manifest: Manifest, head: Head, blocks_state: dict, card: str) -> Path:
    """A top-layers adapter directory: ``top_layers.safetensors`` + head + manifest + card."""
    return write_top_layers_adapter(path, manifest, blocks_state, head.state_for_file(), card=card)
