"""Mutation fuzzing of the adapter format: byte flips, truncations and hostile JSON values
in every file of real head / MLP / PEFT LoRA adapters, plain and as zip / tar.gz archives.

Property: registration either succeeds or raises a :class:`TaskswapError` (a 4xx over
HTTP) — never another exception (a 500) — and a refused adapter leaves no alias behind.
Seeded and bounded here: two seeds, 120 mutations each.
"""

from __future__ import annotations

import collections
import json
import random
import shutil
import traceback
from pathlib import Path

import pytest

from adapters.errors import TaskswapError
from adapters.format.archive import extract_archive, make_archive
from adapters.registry import Registry
from adapters.store import open_store
from support.factories import head_adapter, peft_lora_dir

JUNK_VALUES = [None, -1, 0, 10 ** 9, 1.5, "", "x" * 1000, [], {}, True, "../../etc", [1, 2],
               {"a": 1}, "text", "vision", "lora", "head", "multi_label", "pooler", "cls"]
JUNK_BYTES = [b'{"a":', b"null", b"-1", b"1e999", b'"', b"[]", b"99999999999999999999", b"NaN"]


def _mutate_bytes(rng: random.Random, b: bytes) -> bytes:
    b = bytearray(b)
    op = rng.choice(["flip", "truncate", "insert", "splice"])
    if op == "flip" and b:
        for _ in range(rng.randint(1, 8)):
            b[rng.randrange(len(b))] = rng.randrange(256)
    elif op == "truncate":
        b = b[:rng.randrange(len(b) + 1)]
    elif op == "insert":
        i = rng.randrange(len(b) + 1)
        b[i:i] = bytes(rng.randrange(256) for _ in range(rng.randint(1, 16)))
    else:
        i = rng.randrange(len(b) + 1)
        b[i:i] = rng.choice(JUNK_BYTES)
    return bytes(b)


def _mutate_json(rng: random.Random, obj, depth: int = 0):
    if isinstance(obj, dict) and obj:
        key = rng.choice(list(obj))
        if depth < 3 and isinstance(obj[key], (dict, list)) and obj[key] and rng.random() < 0.6:
            _mutate_json(rng, obj[key], depth + 1)
        elif rng.random() < 0.15:
            del obj[key]
        else:
            obj[key] = rng.choice(JUNK_VALUES)
    elif isinstance(obj, list) and obj:
        obj[rng.randrange(len(obj))] = rng.choice(JUNK_VALUES + [obj[0]])


def fuzz_case(rng: random.Random, seed_dir: Path, work: Path, registry: Registry) -> str:
    """Mutate a copy of ``seed_dir`` one way and register it; return the outcome's name."""
    d = work / "case"
    shutil.rmtree(work, ignore_errors=True)
    shutil.copytree(seed_dir, d)
    files = sorted(d.iterdir())
    how = rng.choice(["bytes", "json", "archive"])
    if how == "bytes":
        f = rng.choice(files)
        f.write_bytes(_mutate_bytes(rng, f.read_bytes()))
    elif how == "json":
        f = rng.choice([p for p in files if p.suffix == ".json"])
        obj = json.loads(f.read_text())
        _mutate_json(rng, obj)
        f.write_text(json.dumps(obj))
    else:
        data = _mutate_bytes(rng, make_archive(d, rng.choice(["zip", "tar.gz"])))
    try:
        if how == "archive":
            d = extract_archive(data, work / "x", max_bytes=1 << 20, max_entries=64)
        registry.register(d, name="fuzz")
        return "accepted"
    except TaskswapError as exc:
        return type(exc).__name__


def run_format_fuzz(seed: int, cases: int, seeds: list[Path], work: Path, registry: Registry):
    """``(outcome counts, [(case, traceback) for unexpected exceptions])``."""
    rng = random.Random(seed)
    counts: collections.Counter = collections.Counter()
    crashes = []
    for i in range(cases):
        try:
            counts[fuzz_case(rng, rng.choice(seeds), work, registry)] += 1
        except Exception:
            counts["UNEXPECTED"] += 1
            crashes.append((i, traceback.format_exc(limit=-4)))
    return counts, crashes


@pytest.mark.parametrize("seed", [11, 12])
def test_mutated_adapters_never_escape_the_error_hierarchy(tmp_path, backbones, text_backbone,
                                                           tiny_dir, seed):
    seeds = [head_adapter(tmp_path / "head", text_backbone, "h"),
             head_adapter(tmp_path / "mlp", text_backbone, "m", hidden=(8,)),
             peft_lora_dir(tmp_path / "lora", str(tiny_dir / "text"))]
    registry = Registry(open_store(str(tmp_path / "store")), backbones)
    counts, crashes = run_format_fuzz(seed, 120, seeds, tmp_path / "work", registry)
    assert not crashes, f"{len(crashes)} unexpected exceptions; first:\n{crashes[0][1]}"
    assert counts["accepted"] > 0 and sum(counts.values()) - counts["accepted"] > 0, counts
    # refused cases left nothing half-registered: every alias points at a loadable version
    for name, alias in registry.store.list_aliases().items():
        registry.store.version_path(name, alias.active)
        registry.resolve(name)
