"""What a detector costs beside a classifier on the shared trunk: images/s of a detection
task alone, a classification task alone and the two in one request on the same inputs, at
224 px, next to the raw trunk, all interleaved in one run (``bench.common.interleave``).

    python -m bench dense --threads 1 --rounds 5
    python -m bench dense --smoke          # a tiny random backbone: checks it runs

MobileNetV2 (ImageNet weights) at 224 px on the textile photos (250x250, conformal-clip-data),
``--images`` per call. Tasks: a 4-label classification head on the pooled vector, and a
4-label CenterNet detection head reading strides 8 and 16 with ``dense.input_size`` 224, so
both run at the backbone's size and a request naming both runs the trunk once.
Variants:

- ``raw trunk``: preprocess + the trunk's forward with the stride 8/16 maps, nothing else;
- ``classifier``: one request, the classification task, on the images;
- ``detector``: one request, the detection task (head + peak decoding + NMS per image);
- ``both, one request``: one request naming both tasks (one trunk pass); the goal is at least
  0.9x the slower of the two alone;
- ``both, two requests``: the two single-task requests in one batch: each request's images
  are its own rows, so the trunk runs twice (the same inputs are not recognised as such).

Results: ``bench/results/dense_bench.{md,json}``.
"""

from __future__ import annotations

import argparse
import tempfile
from dataclasses import replace
from pathlib import Path

import torch

from adapters.dense_heads import DenseHead
from adapters.format import BackboneRef, DenseSpec, Manifest, write_head_adapter
from adapters.registry import Registry
from adapters.runtime import Runtime
from adapters.store import open_store
from adapters.tasks import TASK_TYPES
from bench.common import (SMOKE_HELP, VISION_SPEC, interleave, load, machine, save_results, smoke_specs,
                          textile_images, write_heads)

SIZE = 224
LABELS = ("a", "b", "c", "d")
GOAL = 0.9  # both in one request vs the slower alone


def write_detector(root: Path, bb, size: int) -> Path:
    """A seeded random 4-label detection head adapter (cost does not depend on the values)."""
    torch.manual_seed(0)
    strides = [8, 16]
    spec = DenseSpec(strides=strides, in_channels=[bb.map_channels[s] for s in strides], width=64,
                     input_size=size)
    m = Manifest(name="detector", kind="head", task_type="detection", labels=list(LABELS),
                 backbone=BackboneRef(name=bb.name, fingerprint=bb.fingerprint), dense=spec)
    head = DenseHead(spec, TASK_TYPES["detection"].n_out(m))
    return write_head_adapter(root / m.name, m, head.state_for_file(), card="# detector\n")


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--images", type=int, default=16, help="images per call (default 16)")
    ap.add_argument("--smoke", action="store_true", help=SMOKE_HELP + "; 4 images, 1 round, 64 px")
    args = ap.parse_args(argv)
    if args.smoke:
        args.images, args.rounds = 4, 1
    torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory(prefix="dense-bench-") as tmp:
        run(args, Path(tmp))


def run(args, root: Path) -> None:
    size = 64 if args.smoke else SIZE
    spec = smoke_specs(root / "backbones")[1] if args.smoke else VISION_SPEC
    bb = load(replace(spec, image_size=size))
    reg = Registry(open_store(str(root / "store")), {bb.name: bb})
    cls = reg.register(write_heads(root / "h", bb, 1, labels=LABELS, prefix="classifier")[0]).name
    det = reg.register(write_detector(root / "d", bb, size)).name
    rt = Runtime(reg)
    images = textile_images(args.images)

    def raw():
        with torch.inference_mode():
            f = bb.forward(bb.preprocess(images, size), (8, 16))
            f.map(8), f.map(16)

    def request(*tasks):
        return lambda: rt.run([rt.prepare(list(tasks), images, "image")])

    variants = {"raw trunk": raw, "classifier": request(cls), "detector": request(det),
                "both, one request": request(det, cls),
                "both, two requests": lambda: rt.run([rt.prepare([det], images, "image"),
                                                      rt.prepare([cls], images, "image")])}
    t = interleave(variants, args.images, rounds=args.rounds)
    slower = min(t.median("classifier"), t.median("detector"))
    rows = {n: {"images_per_s": round(t.median(n), 2), "ratio_to_raw": round(t.ratio(n, "raw trunk"), 3),
                "ratio_to_classifier": round(t.ratio(n, "classifier"), 3),
                "ratio_to_detector": round(t.ratio(n, "detector"), 3)} for n in variants}
    slower_name = "classifier" if t.median("classifier") <= t.median("detector") else "detector"
    mixed_vs_slower = t.ratio("both, one request", slower_name)
    m = machine()
    md = [f"# A detector beside a classifier on the shared trunk (MobileNetV2, {size} px, CPU)", "",
          f"`python -m bench dense --threads {args.threads} --rounds {args.rounds} --images {args.images}"
          f"{' --smoke' if args.smoke else ''}`; {m['cpus']} CPUs, torch {m['torch']}, {m['threads']} "
          f"thread(s), load average {m['load_avg'][0]:.1f} (1 min) when it ended. Ratios are medians over "
          "interleaved rounds of (variant images/s) / (reference images/s) in the same round.", "",
          "| variant | images/s | vs raw trunk | vs classifier | vs detector |", "|---|---|---|---|---|"]
    for n, r in rows.items():
        md.append(f"| {n} | {r['images_per_s']} | {r['ratio_to_raw']} | {r['ratio_to_classifier']} | "
                  f"{r['ratio_to_detector']} |")
    md += ["", f"Both tasks in one request vs the slower alone ({slower_name}, {slower:.2f} images/s): "
           f"{mixed_vs_slower:.3f} (goal {GOAL})."]
    print("\n".join(md))
    save_results("dense_bench" + ("-smoke" if args.smoke else ""),
                 {"machine": m, "args": vars(args), "size": size, "results": rows,
                  "mixed_vs_slower": round(mixed_vs_slower, 3), "slower": slower_name, "goal": GOAL,
                  "timing": t.as_dict()}, "\n".join(md) + "\n")
