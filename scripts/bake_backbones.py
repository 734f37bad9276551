"""Bake the embedded default backbones into ``$TASKSWAP_HOME`` and prove they run offline.

Run at image build time (Dockerfile, the Bento's setup script): MobileNetV2 is converted
from torchvision's weight file once, then every default backbone is loaded from local
files only and runs one forward pass, so a broken image fails to build instead of
failing at start-up. The build runs as root and the server as an unprivileged user, so
everything baked is made readable by all users, and checked to be.

    TASKSWAP_HOME=/opt/taskswap python scripts/bake_backbones.py
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a source checkout too


def main() -> None:
    from PIL import Image

    from adapters.backbones.base import load_backbone
    from adapters.backbones.defaults import DEFAULT_BACKBONES
    from adapters.backbones.embedded import minilm_path, mobilenet_v2_path, taskswap_home
    from adapters.file_modes import make_readable

    print(f"mobilenet_v2 -> {mobilenet_v2_path()}\nall-MiniLM-L6-v2 -> {minilm_path()}")
    for spec in DEFAULT_BACKBONES:
        backbone = load_backbone(spec)
        sample = ["a baked backbone"] if backbone.modality == "text" else [Image.new("RGB", (64, 64))]
        features = backbone.embed(sample)  # [1, hidden]
        print(f"{spec.name}: {spec.source} ok, features {tuple(features.shape)}, "
              f"fingerprint {backbone.fingerprint[:20]}")
    home = taskswap_home()
    make_readable(home)  # also what a restrictive umask at build time left
    private = [str(p) for p in [home, *home.rglob("*")] if not p.is_symlink()
               and p.stat().st_mode & (0o055 if p.is_dir() else 0o044) != (0o055 if p.is_dir() else 0o044)]
    if private:
        sys.exit(f"baked files other users cannot read: {private[:5]}")
    print(f"{home}: every file readable by all users")


if __name__ == "__main__":
    main()
