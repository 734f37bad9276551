"""Small labelled data sets that tiny random backbones can learn (test data, not product code).

Text: sentences built from the tiny tokenizer's sentiment words, so the label is in the
words. Images: noisy colour patches (red / green / blue), so the label is in the pixels.
Both are seeded and written to real files for the file loaders.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
from PIL import Image

POSITIVE = "good great love best happy nice fun excellent fine".split()
NEGATIVE = "bad awful poor hate worst sad boring terrible".split()
FILLER = "the movie film plot story was is it this very".split()
COLOURS = {"red": (200, 40, 40), "green": (40, 180, 60), "blue": (40, 60, 200)}


def word_tokenizer_text_spec(folder: Path):
    """``tiny_backbone_spec("text", folder)`` with a tokenizer that knows its words.

    Workaround: ``adapters.backbones.tiny`` builds its tokenizer with
    ``BertTokenizerFast(vocab_file=...)``, which transformers 5 ignores, so every word
    becomes ``[UNK]`` and all texts get the same features. Re-saving the tokenizer with
    ``vocab=`` fixes the folder; model weights (and so the fingerprint) are unchanged.
    """
    from transformers import BertTokenizerFast

    from adapters.backbones.tiny import tiny_backbone_spec
    spec = tiny_backbone_spec("text", folder)
    tok = BertTokenizerFast(vocab=str(Path(folder) / "vocab.txt"), do_lower_case=True)
    if tok("good")["input_ids"][1] == tok.unk_token_id:
        raise AssertionError("tokenizer still maps known words to [UNK]")
    tok.save_pretrained(folder)
    return spec


def live_tiny_vision_spec(folder: Path, seed: int = 0):
    """``tiny_backbone_spec("vision", folder)`` whose features are not all ~0.

    Workaround: the tiny MobileNetV2 written by ``adapters.backbones.tiny`` keeps
    transformers' small-normal initialisation (std 0.02) through 17 blocks, so its pooled
    features are ~1e-27 for every image and no head can tell images apart. Convolutions
    are re-initialised here (He/kaiming, seeded) and the folder re-saved.
    """
    import torch
    from transformers import AutoModel

    from adapters.backbones.tiny import tiny_backbone_spec
    spec = tiny_backbone_spec("vision", folder)
    model = AutoModel.from_pretrained(folder)
    torch.manual_seed(seed)
    for m in model.modules():
        if isinstance(m, torch.nn.Conv2d):
            torch.nn.init.kaiming_normal_(m.weight, mode="fan_in", nonlinearity="relu")
    model.save_pretrained(folder, safe_serialization=True)
    return spec


def sentiment_rows(n: int = 60, seed: int = 0) -> list[tuple[str, str]]:
    """``(text, label)`` pairs, half 'pos' half 'neg', in a seeded order."""
    rng = np.random.default_rng(seed)
    rows = []
    for i in range(n):
        label = "pos" if i % 2 == 0 else "neg"
        words = list(rng.choice(FILLER, 3)) + list(rng.choice(POSITIVE if label == "pos" else NEGATIVE, 2))
        rng.shuffle(words)
        rows.append((" ".join(words), label))
    return rows


def write_text_csv(path: Path, rows, text_column: str = "text", label_column: str = "label") -> Path:
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow([text_column, label_column])
        w.writerows(rows)
    return path


def write_text_jsonl(path: Path, rows, text_column: str = "text", label_column: str = "label") -> Path:
    path.write_text("".join(json.dumps({text_column: t, label_column: y}) + "\n" for t, y in rows))
    return path


def colour_image(colour: str, rng: np.random.Generator, size: int = 32) -> Image.Image:
    base = np.array(COLOURS[colour], dtype=np.float32)
    pixels = base + rng.normal(0, 8, (size, size, 3))
    return Image.fromarray(pixels.clip(0, 255).astype(np.uint8))


def write_image_folder(root: Path, per_class: int = 12, seed: int = 0) -> Path:
    """``root/<colour>/<i>.png`` for red, green and blue."""
    rng = np.random.default_rng(seed)
    for colour in COLOURS:
        (root / colour).mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            colour_image(colour, rng).save(root / colour / f"{i}.png")
    return root


def write_image_csv(root: Path, per_class: int = 12, seed: int = 0) -> Path:
    """Images under ``root/img`` and ``root/images.csv`` listing them (relative paths)."""
    rng = np.random.default_rng(seed)
    (root / "img").mkdir(parents=True, exist_ok=True)
    rows = []
    for colour in COLOURS:
        for i in range(per_class):
            name = f"img/{colour}-{i}.png"
            colour_image(colour, rng).save(root / name)
            rows.append((name, colour))
    with open(root / "images.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["path", "label"])
        w.writerows(rows)
    return root / "images.csv"
