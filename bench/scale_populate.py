"""Fill a store with many head tasks quickly, through the store's own API (bench-side only).

    python -m bench scale-populate --store /tmp/store --tasks 100000

Each task ``task-{i:06d}`` (384 -> 2..10 labels, seeded random weights) is checked by
:func:`adapters.loading.prepare_adapter` (headers, fingerprint) and written with
``store.put_version`` + ``store.publish`` — the same calls :meth:`Registry.register`
makes — but without loading it and without the dry-run forward, and with ``os.fsync``
turned into a no-op for this process (durability of a throw-away bench store does not
matter; 8 fsyncs per task would dominate). Tasks already in the store are skipped, so a
run can be resumed or grown. Registration as a user pays it is measured separately
(``bench/scale.py``: over HTTP on a sample).
"""

from __future__ import annotations

import argparse
import os
import shutil
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

import torch

from adapters.format import BackboneRef, HeadSpec, Manifest, write_head_adapter
from adapters.format.adapter_dir import manifest_bytes
from adapters.heads import Head
from adapters.loading import prepare_adapter
from adapters.store import open_store
from adapters.store.base import VersionInfo
from bench.common import TEXT_SPEC, load, smoke_specs


def task_name(i: int) -> str:
    return f"task-{i:06d}"


def write_head(root: Path, bb, i: int) -> Path:
    """Head task ``task-{i:06d}`` with 2..10 labels (seeded), written as an adapter folder."""
    n_labels = 2 + i % 9
    gen = torch.Generator().manual_seed(i)
    spec = HeadSpec(pooling="mean", input_dim=bb.hidden_size, hidden=[])
    head = Head(spec, n_labels)
    with torch.no_grad():
        lin = head.linear_layers()[0]
        bound = 1 / bb.hidden_size ** 0.5
        lin.weight.copy_(torch.rand(lin.weight.shape, generator=gen) * 2 * bound - bound)
        lin.bias.copy_(torch.rand(lin.bias.shape, generator=gen) * 2 * bound - bound)
    m = Manifest(name=task_name(i), kind="head", labels=[f"l{k}" for k in range(n_labels)],
                 backbone=BackboneRef(name=bb.name, fingerprint=bb.fingerprint), head=spec,
                 preprocessing=bb.preprocessing_settings())
    return write_head_adapter(root / m.name, m, head.state_for_file())


def populate(store_url: str, bb, start: int, stop: int, report_every: int = 5000) -> dict:
    """Write tasks ``start..stop`` not yet in the store; returns ``{"written", "seconds"}``."""
    store = open_store(store_url)
    have = set(store.list_aliases()) if start < stop else set()
    scratch = Path(tempfile.mkdtemp(prefix="taskswap-populate-"))
    real_fsync, os.fsync = os.fsync, (lambda fd: None)
    written, t0 = 0, time.perf_counter()
    try:
        for i in range(start, stop):
            if task_name(i) in have:
                continue
            folder = write_head(scratch, bb, i)
            prep = prepare_adapter(folder, {bb.name: bb}, fresh=True)
            version = store.put_version(prep.manifest.name, folder,
                                        {"adapter.json": manifest_bytes(prep.manifest)})
            store.publish(prep.manifest.name, version,
                          VersionInfo(version=version, kind="head", labels=prep.manifest.labels,
                                      created_at=datetime.now(timezone.utc).isoformat()))
            shutil.rmtree(folder)
            written += 1
            if written % report_every == 0:
                print(f"  {written} written, {written / (time.perf_counter() - t0):.0f} tasks/s", flush=True)
    finally:
        os.fsync = real_fsync
        shutil.rmtree(scratch, ignore_errors=True)
    return {"written": written, "seconds": time.perf_counter() - t0}


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--store", required=True)
    ap.add_argument("--tasks", type=int, required=True)
    ap.add_argument("--start", type=int, default=0)
    ap.add_argument("--smoke", action="store_true", help="a tiny random backbone instead of MiniLM (checks the writer runs)")
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory() as tmp:
        bb = load(smoke_specs(Path(tmp))[0] if args.smoke else TEXT_SPEC)
        print(populate(args.store, bb, args.start, args.tasks))

