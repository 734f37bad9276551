"""``taskswap adapt``: a new version of a task for a new domain, from unlabelled target inputs.

    taskswap adapt --task sentiment --store var/store --target-data drug_reviews.txt \\
                   --out out/sentiment-drugs
    taskswap adapt --adapter out/sentiment --target-data drugs.csv --source-data films.csv \\
                   --target-labelled drugs-labelled.csv --out out/sentiment-drugs
    taskswap register out/sentiment-drugs --url http://127.0.0.1:3000 --token "$TASKSWAP_ADMIN_TOKEN"

The source is a registered task's version in a store (``--task NAME[@VERSION]`` with
``--store``, default ``$TASKSWAP_STORE`` or ``var/store``) or an adapter folder
(``--adapter``). The output folder is an ordinary adapter (``coral``, ``label_shift``: a head,
``pseudo_label``: a LoRA): register it, then roll it
out as a shadow or canary candidate (docs/rollout.md), or send the inputs to the server's
``POST /adapters/{task}/adapt`` job, which does both.

Its own file (and subcommand) beside :mod:`training.cli`; like it, it imports what it runs
inside its functions, after ``main`` has set ``HF_HUB_OFFLINE`` (see that module's docstring).
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path



def add_parser(sub) -> argparse.ArgumentParser:
    a = sub.add_parser("adapt", help="adapt a task to a new domain from unlabelled inputs (a new version)")
    src = a.add_mutually_exclusive_group(required=True)
    src.add_argument("--task", help="registered task, NAME or NAME@VERSION (a unique version prefix)")
    src.add_argument("--adapter", type=Path, help="a head adapter folder instead of a registered task")
    a.add_argument("--store", default=os.environ.get("TASKSWAP_STORE", "var/store"),
                   help="the server's adapter store (a folder or fsspec URL) where --task lives")
    a.add_argument("--target-data", type=Path, required=True,
                   help="unlabelled target inputs: .txt (a text a line), .csv/.jsonl ('text'), or a folder of "
                        "images / audio clips (labels, if any, are ignored)")
    a.add_argument("--text-column", default="text", help="column or key of the texts (CSV/JSONL)")
    a.add_argument("--source-data", type=Path,
                   help="the source task's training inputs (same formats); only needed when its adapter "
                        "records no feature statistics (trained before source_stats.safetensors)")
    a.add_argument("--target-labelled", type=Path,
                   help="a few labelled target examples (as for `taskswap train --data`), used only to "
                        "score both versions and record the adapted one's metrics")
    a.add_argument("--method", default="coral",
                   help="adaptation method (a key of training.domain.ADAPTATIONS): 'coral' (a head adapter, "
                        "no trunk change), 'pseudo_label' (a LoRA self-trained on the target inputs), "
                        "'label_shift' (the target class prior by EM, folded into the head's bias), or "
                        "'coral+label_shift' / 'pseudo_label+label_shift' (the first, then the prior)")
    a.add_argument("--shrinkage", type=float, default=0.1,
                   help="coral: shrink covariances towards this times the mean variance (default 0.1)")
    a.add_argument("--epochs", type=int, default=2, help="pseudo_label: passes over the target inputs (default 2)")
    a.add_argument("--lr", type=float, default=5e-4, help="pseudo_label: LoRA learning rate (default 5e-4)")
    a.add_argument("--batch-size", type=int, default=16, help="pseudo_label: inputs per step (default 16)")
    a.add_argument("--lora-r", type=int, default=8, help="pseudo_label: LoRA rank (alpha = 2 r; default 8)")
    a.add_argument("--keep-fraction", type=float, default=0.5,
                   help="pseudo_label: per predicted class, the most confident share kept as pseudo-labels (0.5)")
    a.add_argument("--entropy-weight", type=float, default=1.0,
                   help="pseudo_label: weight of the prediction-entropy term over all target inputs (1.0)")
    a.add_argument("--em-iterations", type=int, default=100,
                   help="label_shift: at most this many EM iterations for the target prior (default 100)")
    a.add_argument("--out", type=Path, required=True, help="output folder for the adapted version")
    a.add_argument("--no-cache", action="store_true", help="do not read or write cached features")
    a.add_argument("--quiet", action="store_true", help="no progress bars")
    return a


def source_folder(args) -> Path:
    """The adapter folder ``--adapter`` or ``--task NAME[@VERSION]`` (in ``--store``) names."""
    if args.adapter is not None:
        return args.adapter
    from training.init_from import resolve_task_folder  # lazy: see the module docstring
    return resolve_task_folder(args.task, args.store)


def cmd_adapt(args) -> int:
    from adapters.backbones.base import load_backbone  # lazy: see the module docstring
    from training.adapt import adapt
    from training.data.unlabelled import load_unlabelled
    from training.domain import AdaptConfig, adaptation_method
    from training.evaluate import adapter_labels, backbone_spec_for
    from training.features import default_cache_dir
    from training.sources import DataSource
    cfg = AdaptConfig(method=args.method, shrinkage=args.shrinkage, progress=not args.quiet, epochs=args.epochs,
                      lr=args.lr, batch_size=args.batch_size, lora_r=args.lora_r, lora_alpha=2 * args.lora_r,
                      keep_fraction=args.keep_fraction, entropy_weight=args.entropy_weight,
                      em_iterations=args.em_iterations)
    adaptation_method(args.method)  # an unknown name fails before anything loads
    folder = source_folder(args)
    backbone = load_backbone(backbone_spec_for(folder))
    target = load_unlabelled(args.target_data, backbone.modality, args.text_column)
    source = load_unlabelled(args.source_data, backbone.modality, args.text_column) if args.source_data else None
    labelled = None
    if args.target_labelled is not None:
        labelled = DataSource(path=args.target_labelled, text_column=args.text_column,
                              labels=adapter_labels(folder)).load("test")
    r = adapt(folder, target, args.out, cfg, backbone, source_inputs=source, target_labelled=labelled,
              target_description=str(args.target_data), cache_dir=None if args.no_cache else default_cache_dir())
    print(f"adapted {r.manifest.name} (source version {r.source_version[:12]}, {args.method}) to "
          f"{len(target)} target inputs in {r.seconds:.1f}s -> {r.path}")
    for key, m in r.metrics.items():
        nums = ", ".join(f"{k} {v:.4f}" for k, v in m.summary("target").items() if isinstance(v, float))
        print(f"  {key} version on the labelled target examples: {nums}")
    print(f"next: taskswap register {r.path} --url URL --token TOKEN, then a shadow or canary rollout "
          "(docs/rollout.md)")
    return 0
