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
