"""``taskswap``: train, evaluate and register adapters from the command line.

    taskswap train --name sentiment --demo rotten-tomatoes --backbone text --method head
    taskswap train --name reviews --data reviews.csv --text-column body --label-column stars \\
                   --backbone text --method lora --epochs 3 --out out/reviews
    taskswap train --name parts --data photos/ --backbone vision --register http://127.0.0.1:3000
    taskswap evaluate out/reviews --data holdout.csv
    taskswap register out/reviews --url http://127.0.0.1:3000 --token "$TASKSWAP_ADMIN_TOKEN"
    taskswap evaluate --url http://127.0.0.1:3000 --task reviews --data holdout.csv
    taskswap predict reviews "a great movie" "a boring plot" --url http://127.0.0.1:3000
    taskswap predict fashion --image shoe.png
    taskswap data silver --task ner --out data/silver     # silver NER/POS files (spaCy-tagged)
    taskswap data digits-coco --out data/digits           # a COCO detection data set (train/, test/)
    taskswap adapt --task reviews --target-data drugs.txt --out out/reviews-drugs   # training.cli_adapt
    taskswap quota set team-a --max-tasks 50 --weight 2   # a namespace's quota (admin): training.cli_quota
    taskswap sets rollback reviews-base                   # a shared adaptation's set: training.cli_sets

``register``, ``predict`` and ``evaluate --url`` talk to the server through
:class:`taskswap_client.Client` (``predict`` imports no torch: it starts in a blink).
So each subcommand imports what it runs inside its function ("lazy"): after :func:`main`
has set ``HF_HUB_OFFLINE`` (read once, when transformers is imported), and without the
client package where only training is installed (the server image).

Exit codes: 0 success; 2 bad input (data, options, adapter) reported before any training;
1 the server could not be reached or refused the adapter.
"""

from __future__ import annotations

import argparse
import importlib.metadata
import json
import logging
import os
import sys
from dataclasses import replace
from pathlib import Path

import httpx
from pydantic import ValidationError

from adapters.errors import InvalidInput, TaskswapError
from training import cli_adapt, cli_quota, cli_sets, cli_tokens
from training.progress import is_tty, kept_line
from training.cli_generation import add_generation_args, cmd_evaluate_generation, cmd_train_generation, \
    is_generation_folder

EXIT_BAD_INPUT = 2
EXIT_FAILED = 1


def _csv_list(value: str) -> list[str]:
    return [x.strip() for x in value.split(",") if x.strip()]


def _int_list(value: str) -> list[int]:
    try:
        return [int(x) for x in _csv_list(value)]
    except ValueError:
        raise argparse.ArgumentTypeError(f"{value!r} is not a comma-separated list of integers")


def _float_pair(value: str) -> tuple[float, float]:
    try:
        low, high = (float(v) for v in value.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"{value!r} is not two comma-separated numbers LOW,HIGH")
    return low, high


def _add_data_args(p: argparse.ArgumentParser, required: bool = True) -> None:
    g = p.add_argument_group("data")
    src = g.add_mutually_exclusive_group(required=required)
    src.add_argument("--data", type=Path, help="CSV/JSONL (text,label), image or audio folder (one "
                     "sub-folder per class) or CSV of image or audio paths (path,label); taggers: "
                     "CoNLL (word<TAB>tag) or JSONL ({tokens, tags})")
    src.add_argument("--demo", help="bundled data set: fashion-mnist, textile, digits, rotten-tomatoes, "
                     "spoken-digits; whissell (regression: pleasantness, activation, imagery); punctuation "
                     "(token_classification); translate-en-fr, translate-en-de, translate-en-es, summarise-man (generation)")
    g.add_argument("--format", default="auto", choices=["auto", "text", "image-folder", "image-csv",
                                                              "audio-folder", "audio-csv"],
                   help="force the loader (default: from the path)")
    g.add_argument("--text-column", default="text")
    g.add_argument("--label-column", default="label")
    g.add_argument("--path-column", default="path", help="image path column of an image CSV")
    g.add_argument("--labels", type=_csv_list, help="comma-separated label list (fixes the order; "
                   "other values are an error)")
    g.add_argument("--target-columns", type=_csv_list, help="regression: comma-separated numeric "
                   "columns of a CSV/JSONL to predict (instead of --label-column)")
    g.add_argument("--limit", type=int, help="use a stratified, seeded sample of at most N examples")


def _add_backbone_args(p: argparse.ArgumentParser, required: bool) -> None:
    g = p.add_argument_group("backbone")
    g.add_argument("--backbone", required=required,
                   help="'text', 'vision' or 'audio' (the embedded backbones), or an HF model folder / id")
    g.add_argument("--backbone-name", help="name of a custom backbone on the server (default 'custom')")
    g.add_argument("--max-length", type=int, help="text backbones: tokens per input")
    g.add_argument("--image-size", type=int, help="vision backbones: square input size in pixels")
    g.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:1 ...")


def default_url() -> str:
    """The server a sub-command talks to unless told: ``$TASKSWAP_URL``, else the local default."""
    return os.environ.get("TASKSWAP_URL", "http://127.0.0.1:3000")


def _version() -> str:
    try:
        return importlib.metadata.version("taskswap")
    except importlib.metadata.PackageNotFoundError:  # run from a checkout that is not installed
        return "unknown (not installed)"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="taskswap", description="Train, evaluate and register "
                                     "Taskswap adapters.", formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--version", action="version", version=f"taskswap {_version()}")
    sub = parser.add_subparsers(dest="command", required=True)

    t = sub.add_parser("train", help="train an adapter (head, lora, top_layers) or a from-scratch baseline")
    t.add_argument("--name", required=True, help="task name (lowercase, digits, _ - .)")
    t.add_argument("--method", default="head",
                   help="head (default), lora, top_layers, or scratch (a baseline): a key of training.methods.METHODS "
                        "(detection and segmentation: head, lora or scratch)")
    t.add_argument("--task-type", default=None,
                   choices=["single_label", "regression", "token_classification", "detection",
                            "segmentation", "generation"],
                   help="single_label (default): one class per input (labels); regression: real values "
                        "(--target-columns, or --demo whissell); token_classification: one tag "
                        "per word (--data CoNLL 'word<TAB>tag' or JSONL {tokens, tags}, or "
                        "--demo punctuation); detection: boxes (--data a COCO JSON file, or --demo "
                        "shapes-detect); segmentation: a class per pixel (--data an image folder "
                        "with --masks, or --demo brain-regions); generation: text written by a language "
                        "model (--data JSONL {prompt, completion} or {messages}, or --demo "
                        "translate-en-fr|de|es; --method lora or prompt)")
    t.add_argument("--out", type=Path, help="output folder (default out/NAME)")
    _add_data_args(t, required=False)
    mt = t.add_argument_group("multitask (one shared LoRA trained jointly with a head per task)")
    mt.add_argument("--multitask", type=_csv_list, metavar="A.csv,B.csv,...",
                    help="train one LoRA (named --name) jointly with one head per data file (task "
                         "names from the file names); writes OUT/NAME (the shared adaptation) and "
                         "OUT/<task> per task, ready to register in that order")
    mt.add_argument("--task-weights", type=_csv_list, metavar="W1,W2,...",
                    help="multitask: per-task loss weights in --multitask's order (default 1 each)")
    t.add_argument("--val-data", type=Path, help="validation file/folder (default: carve off --val-fraction)")
    t.add_argument("--test-data", type=Path, help="held-out test file/folder, scored after training")
    d = t.add_argument_group("dense tasks (detection, segmentation)")
    d.add_argument("--masks", type=Path, help="segmentation: folder of PNG masks (<image stem>.png, "
                   "value = index into --labels) for --data's images")
    d.add_argument("--test-masks", type=Path, help="segmentation: the masks of --test-data")
    d.add_argument("--image-root", type=Path, help="detection: folder the COCO file's image "
                   "file_names are read under (default: the JSON file's folder)")
    d.add_argument("--input-size", type=int, help="the task's square input size in pixels, a "
                   "multiple of 32 (default: 160 for detection, 224 for segmentation)")
    d.add_argument("--strides", type=_int_list, help="maps the head reads (default 8,16 for "
                   "detection, 8,16,32 for segmentation)")
    d.add_argument("--scale-jitter", type=_float_pair, metavar="LOW,HIGH",
                   help="add one copy of every training image (and flip) zoomed by a factor drawn from "
                        "LOW..HIGH, e.g. 0.75,1.33, boxes and masks moved with it (default: none)")
    d.add_argument("--max-seconds", type=float, help="a cap on the training time in seconds (maps "
                   "included): the epochs stop at the first step past it (default: none)")
    t.add_argument("--test-limit", type=int, default=1000,
                   help="with --demo: examples of the demo's test split to score (default 1000)")
    _add_backbone_args(t, required=False)
    add_generation_args(t)
    h = t.add_argument_group("training")
    h.add_argument("--hidden", type=_int_list, default=[], help="MLP hidden widths, e.g. 256 or 512,128")
    h.add_argument("--activation", default="relu", choices=["relu", "gelu", "tanh"])
    h.add_argument("--pooling", choices=["mean", "cls", "pooler"])
    h.add_argument("--normalize", action="store_true", help="L2-normalise features before the head")
    for flag, typ in (("--epochs", int), ("--lr", float), ("--batch-size", int), ("--patience", int),
                      ("--weight-decay", float)):
        h.add_argument(flag, type=typ, help="default depends on --method")
    h.add_argument("--select", choices=["loss", "headline", "last"],
                   help="lora/top_layers/scratch: keep the epoch with the lowest validation loss, the "
                        "highest validation accuracy/R², or the last one (default: headline for "
                        "lora/top_layers, loss for scratch)")
    h.add_argument("--val-fraction", type=float, default=0.2)
    h.add_argument("--seed", type=int, default=0)
    h.add_argument("--lora-r", type=int, help="LoRA rank (default 8)")
    h.add_argument("--lora-alpha", type=float, help="LoRA alpha (default 16: scaling alpha/r = 2)")
    h.add_argument("--lora-dropout", type=float, help="dropout on LoRA's input (default 0)")
    h.add_argument("--lora-targets", type=_csv_list,
                   help="module names (default: every Linear inside the encoder blocks; every 1x1 "
                        "convolution on a conv net)")
    h.add_argument("--layers", type=int, help="top_layers: fine-tune the last K blocks (default 2)")
    h.add_argument("--layer-decay", type=float,
                   help="top_layers: lr of each block below the top = this x the one above (default 0.8)")
    h.add_argument("--head-lr", type=float, help="lora/top_layers: the head's lr (default per --method)")
    h.add_argument("--warmup-fraction", type=float,
                   help="lora/top_layers: linear lr warm-up share of the steps, then linear decay (default 0.1)")
    h.add_argument("--schedule", choices=["linear", "constant"],
                   help="lora/top_layers: warm-up then linear decay to 0 (default), or a constant lr")
    h.add_argument("--head-dropout", type=float,
                   help="lora/top_layers: dropout on the fresh head's input while training "
                        "(default 0.1 for single-label lora, else 0)")
    h.add_argument("--head-init", choices=["standardised", "normal"],
                   help="lora/top_layers: the fresh head on raw features at std 0.02 ('normal', the "
                        "default of single-label lora) or on standardised features (the default otherwise)")
    h.add_argument("--clip-norm", type=float,
                   help="lora/top_layers/scratch: clip the gradients' global norm (default 1.0; 0: no clipping)")
    h.add_argument("--warm-start", action="store_true",
                   help="lora/top_layers: start from a head fitted on frozen features (default: a random head)")
    h.add_argument("--max-minutes", type=float, help="lora/top_layers/scratch: wall-clock budget for training")
    h.add_argument("--cache-dir", type=Path, help="feature cache (default $TASKSWAP_HOME/features)")
    h.add_argument("--init-from", metavar="TASK[@VERSION]",
                   help="head: warm-start from another task's head adapter (a stored task in --store, or "
                        "a folder); same task type and head shape, labels may differ (shared labels keep "
                        "their rows)")
    h.add_argument("--store", default=os.environ.get("TASKSWAP_STORE", "var/store"),
                   help="the adapter store --init-from reads a task from (default $TASKSWAP_STORE or var/store)")
    h.add_argument("--no-cache", action="store_true", help="do not read or write cached features")
    h.add_argument("--quiet", action="store_true", help="no progress bars")
    h.add_argument("--threads", type=int, help="torch CPU threads for training (default: torch's, one "
                   "per core; 1 is often faster on a busy 2-core machine)")
    r = t.add_argument_group("registration")
    r.add_argument("--register", metavar="URL", help="upload the adapter to a running server")
    r.add_argument("--token", help="admin token (default $TASKSWAP_ADMIN_TOKEN)")

    e = sub.add_parser("evaluate", help="score an adapter folder (server code path, in-process) or a "
                       "task served at --url on labelled data; a tagger folder on CoNLL/JSONL "
                       "(entity P/R/F1 per type, token accuracy, confusion over tags)")
    e.add_argument("adapter", type=Path, nargs="?", help="adapter folder (without --url)")
    e.add_argument("--url", help="evaluate the task --task as a running server answers it")
    e.add_argument("--task", help="with --url: the task to evaluate")
    e.add_argument("--token", help="with --url: inference token (default $TASKSWAP_TOKEN)")
    _add_data_args(e)
    _add_backbone_args(e, required=False)
    e.add_argument("--masks", type=Path, help="segmentation: folder of PNG masks for --data's images")
    e.add_argument("--image-root", type=Path, help="detection: folder the COCO file's image file_names "
                   "are read under (default: the JSON file's folder)")
    e.add_argument("--batch-size", type=int, default=64)
    e.add_argument("--max-new-tokens", type=int, help="generation tasks: tokens per answer at most (default 64)")
    e.add_argument("--json", type=Path, help="also write the metrics here as JSON")
    e.add_argument("--quiet", action="store_true")

    g = sub.add_parser("register", help="upload an adapter folder to a running server")
    g.add_argument("adapter", type=Path)
    g.add_argument("--url", default=default_url(),
                   help="server base URL (default $TASKSWAP_URL or http://127.0.0.1:3000)")
    g.add_argument("--token", help="admin token (default $TASKSWAP_ADMIN_TOKEN)")
    g.add_argument("--name", help="register under another task name")

    d = sub.add_parser("data", help="prepare training data files")
    dsub = d.add_subparsers(dest="data_command", required=True)
    s = dsub.add_parser("silver", help="NER or POS tags on the Rotten Tomatoes snippets, made by spaCy's "
                        "small English model (silver labels; needs the 'silver' extra)")
    s.add_argument("--task", required=True, choices=["ner", "pos"],
                   help="ner: IOB2 entity tags; pos: Universal POS tags")
    s.add_argument("--out", type=Path, required=True, help="folder for TASK-train.jsonl and TASK-test.jsonl")
    s.add_argument("--train", type=int, default=2000, help="training snippets (default 2000)")
    s.add_argument("--test", type=int, default=500, help="held-out test snippets (default 500)")
    s.add_argument("--seed", type=int, default=0)
    s.add_argument("--conll", action="store_true", help="also write TASK-{train,test}.conll")

    c = dsub.add_parser("digits-coco", help="a COCO-format detection data set (train and test folders): "
                        "scikit-learn's handwritten digits inked onto crops of its sample photos, exact boxes")
    c.add_argument("--out", type=Path, required=True, help="folder for train/ and test/ (images/ + annotations.json)")
    c.add_argument("--train", type=int, default=300, help="train canvases (default 300)")
    c.add_argument("--test", type=int, default=100, help="held-out test canvases (default 100)")
    c.add_argument("--canvas", type=int, default=128, help="canvas size in pixels (default 128)")
    c.add_argument("--digits", type=_int_list, default=list(range(10)),
                   help="the digits to place, in label order (default 0,1,...,9)")
    c.add_argument("--seed", type=int, default=0)

    cli_adapt.add_parser(sub)
    cli_tokens.add_parser(sub)
    cli_quota.add_parser(sub, default_url())
    cli_sets.add_parser(sub, default_url())
    q = sub.add_parser("predict", help="ask a running server for one task's answers (quick check)")
    q.add_argument("task")
    q.add_argument("texts", nargs="*", help="texts to classify")
    q.add_argument("--image", action="append", type=Path, default=[], help="an image file (repeatable)")
    q.add_argument("--url", default=default_url(),
                   help="server base URL (default $TASKSWAP_URL or http://127.0.0.1:3000)")
    q.add_argument("--token", help="inference token (default $TASKSWAP_TOKEN)")
    q.add_argument("--json", action="store_true", help="print the server's JSON answer")
    return parser


# ---- argument -> object ---------------------------------------------------------------
def backbone_spec(args):
    """``--backbone text|vision|audio|SOURCE`` (+ overrides) -> BackboneSpec."""
    from adapters.backbones.base import BackboneSpec  # lazy: see the module docstring
    from adapters.backbones.defaults import DEFAULT_BACKBONES, OPTIONAL_BACKBONES
    if args.backbone is None:
        raise InvalidInput("give --backbone: text, vision, audio or a model folder")
    defaults = {s.name: s for s in DEFAULT_BACKBONES + OPTIONAL_BACKBONES}
    if args.backbone in defaults:
        spec = replace(defaults[args.backbone], name=args.backbone_name or args.backbone)
    else:
        spec = BackboneSpec(name=args.backbone_name or "custom", source=args.backbone)
    if args.max_length:
        spec = replace(spec, max_length=args.max_length)
    if args.image_size:
        spec = replace(spec, image_size=args.image_size)
    return replace(spec, device=args.device)


def data_source(args, path: Path | None = None, demo: str | None = None, limit: int | None = None,
                labels: list[str] | None = None):
    from training.sources import DataSource  # lazy: see the module docstring
    return DataSource(path=path, demo=demo, format=args.format if path is not None else "auto",
                      text_column=args.text_column, label_column=args.label_column,
                      target_columns=getattr(args, "target_columns", None) if path is not None else None,
                      path_column=args.path_column, labels=labels, limit=limit,
                      seed=getattr(args, "seed", 0))


def train_config(args):
    from training.config import TrainConfig  # lazy: see the module docstring
    from training.init_from import resolve_task_folder
    optional = {k: getattr(args, k) for k in ("lora_r", "lora_alpha", "lora_dropout", "layer_decay",
                                              "warmup_fraction", "schedule", "head_dropout",
                                              "head_init")
                if getattr(args, k) is not None}
    if args.clip_norm is not None:
        optional["clip_norm"] = args.clip_norm or None
    return TrainConfig(name=args.name, method=args.method, task_type=args.task_type, hidden=args.hidden, activation=args.activation,
                       pooling=args.pooling, normalize=args.normalize, epochs=args.epochs, lr=args.lr,
                       batch_size=args.batch_size, patience=args.patience, weight_decay=args.weight_decay,
                       select=args.select, val_fraction=args.val_fraction, seed=args.seed,
                       lora_targets=args.lora_targets, max_train_minutes=args.max_minutes,
                       layers=args.layers, head_lr=args.head_lr, warm_start=args.warm_start,
                       init_from=str(resolve_task_folder(args.init_from, args.store)) if args.init_from else None,
                       progress=not args.quiet, **optional)


# ---- commands -------------------------------------------------------------------------
def cmd_train(args) -> int:
    from adapters.tasks import task_type  # lazy: see the module docstring
    from training.trainer import train

    if args.multitask:
        from training.cli_multitask import cmd_train_multitask  # lazy: see the module docstring
        return cmd_train_multitask(args, backbone_spec, data_source, _register)
    # no --task-type: a dense demo's own type, else single_label
    args.task_type = args.task_type or DENSE_DEMOS.get(args.demo, "single_label")
    if task_type(args.task_type).features == "maps":  # its own trainer: training/dense/
        return _train_dense(args, backbone_spec(args))
    config = train_config(args)  # option errors first: nothing loaded yet
    if args.threads is not None:
        if args.threads < 1:
            raise InvalidInput(f"--threads must be at least 1, got {args.threads}")
        import torch  # lazy: see the module docstring
        torch.set_num_threads(args.threads)
    if task_type(config.task_type).generates:
        return cmd_train_generation(args, config, _register)
    if args.backbone is None or (args.data is None and args.demo is None):
        raise InvalidInput("give --backbone (text, vision, audio or a model folder) and --data or --demo")
    spec = backbone_spec(args)
    if task_type(config.task_type).features == "tokens":
        return _train_tokens(args, config, spec)
    train_src = data_source(args, path=args.data, demo=args.demo, limit=args.limit, labels=args.labels)
    data = train_src.load("train")
    labels = data.label_names  # validation/test files must use the training label set
    val = data_source(args, path=args.val_data, labels=labels).load() if args.val_data else None
    test = None
    if args.test_data:
        test = data_source(args, path=args.test_data, labels=labels).load()
    elif args.demo and args.test_limit:
        test = data_source(args, demo=args.demo, limit=args.test_limit).load("test")
    cache = None if args.no_cache else (args.cache_dir or _default_cache())
    out = args.out or Path("out") / args.name
    result = train(data, spec, config, out, val=val, test=test, cache_dir=cache)
    _print_result(result)
    if args.register:
        if not result.servable:
            print("error: a from-scratch baseline is a report, not an adapter; nothing to register",
                  file=sys.stderr)
            return EXIT_BAD_INPUT
        return _register(result.path, args.register, args.token)
    return 0


DENSE_DEMOS = {"shapes-detect": "detection", "brain-regions": "segmentation"}


def _train_dense(args, spec) -> int:
    """Detection and segmentation heads on the frozen trunk's maps (training/dense/)."""
    from adapters.backbones.base import load_backbone  # lazy: see the module docstring
    from training.dense import demos
    from training.dense.data import load_mask_folders
    from training.dense.fit import DenseFitConfig
    from training.dense_run import dense_method, train_dense
    from training.tasks import training_task

    task = training_task(args.task_type)
    method = dense_method(args.method)  # before any data is read
    if args.register and not method.servable:
        raise InvalidInput(f"--method {args.method} is a baseline report, not an adapter; drop --register")
    if args.demo and DENSE_DEMOS.get(args.demo) != args.task_type:
        raise InvalidInput(f"--demo {args.demo!r} is not a {args.task_type} data set; use one of "
                           f"{[d for d, t in DENSE_DEMOS.items() if t == args.task_type]}")
    if args.demo == "shapes-detect":
        n_test = 100 if args.test_limit == 1000 else args.test_limit  # the flag's default is the classifiers'
        train = demos.shapes_detect("train", args.limit or 300, args.seed)
        tests = {"test": demos.shapes_detect("test", n_test, args.seed)}
    elif args.demo == "brain-regions":
        train = demos.brain_regions("train")
        tests = {"test": demos.brain_regions("test"), "test_ch2bet": demos.brain_regions("test", "ch2bet")}
    elif args.data is not None and args.data.suffix == ".json":  # a COCO file: boxes, or polygons / RLE
        train, tests = task.load_files(args.data, None, image_root=args.image_root), {}
        if args.test_data:
            tests["test"] = task.load_files(args.test_data, train.label_names, image_root=args.image_root)
    else:
        if not args.masks or not args.labels:
            raise InvalidInput("segmentation from folders needs --masks (PNG masks) and --labels "
                               "(the class names, index 0 first)")
        train, tests = load_mask_folders(args.data, args.masks, args.labels), {}
        if args.test_data:
            tests["test"] = load_mask_folders(args.test_data, args.test_masks or args.masks, args.labels)
    cfg = DenseFitConfig(args.task_type, args.strides or list(task.default_strides),
                         input_size=args.input_size or task.default_input_size,
                         epochs=args.epochs or 40, lr=args.lr or 3e-3, batch_size=args.batch_size or 16,
                         scale_jitter=args.scale_jitter, seed=args.seed, progress=not args.quiet,
                         method=args.method, **_dense_method_options(args))
    result = train_dense(args.name, load_backbone(spec), train, tests, cfg, args.out or Path("out") / args.name)
    print(f"wrote adapter {result.path} in {result.seconds:.1f} s")
    for split, m in result.metrics.items():
        print(f"{split}: " + ", ".join(f"{k} {v:.3f}" if isinstance(v, float) else f"{k} {v}"
                                       for k, v in m.items() if not isinstance(v, dict)))
    if args.register:
        return _register(result.path, args.register, args.token)
    return 0


def _dense_method_options(args) -> dict:
    """The LoRA and top-layers flags a dense run takes (``--lora-r``, ``--lora-alpha``, ``--layers``;
    unset: defaults)."""
    names = {"lora_r": "lora_r", "lora_alpha": "lora_alpha", "max_seconds": "max_seconds", "layers": "layers"}
    return {k: getattr(args, a) for k, a in names.items() if getattr(args, a, None) is not None}


def _train_tokens(args, config, spec) -> int:
    """Taggers: sentences of tagged words from CoNLL/JSONL files or the punctuation demo."""
    from training.data.tokens import load_punctuation, load_token_file  # lazy: see the module docstring
    from training.methods import training_method
    from training.tokens import train_tokens

    if args.demo not in (None, "punctuation"):
        raise InvalidInput(f"--demo {args.demo!r} is not a tagging data set; use --demo "
                                "punctuation or --data FILE (CoNLL or JSONL)")
    if args.demo:
        data = load_punctuation("train", limit=args.limit, seed=args.seed)
        test = load_punctuation("test", limit=args.test_limit, seed=args.seed) if args.test_limit else None
    else:
        data = load_token_file(args.data, labels=args.labels)
        if args.limit:
            data = data.subset(list(range(min(args.limit, len(data)))))
        test = load_token_file(args.test_data, labels=data.label_names) if args.test_data else None
    val = load_token_file(args.val_data, labels=data.label_names) if args.val_data else None
    if args.register and not training_method(config.method).servable:
        raise InvalidInput("a from-scratch baseline is a report, not an adapter; drop --register")
    result = train_tokens(data, spec, config, args.out or Path("out") / args.name, val=val, test=test)
    for split, m in result.metrics.items():
        print(f"{split}: token accuracy {m.accuracy:.4f}, entity F1 {m.f1:.4f} ({m.sentences} sentences)")
    print(f"{'adapter' if result.servable else 'baseline report (not servable)'} written to {result.path}")
    if args.register:
        return _register(result.path, args.register, args.token)
    return 0


def _default_cache():
    from training.features import default_cache_dir  # lazy: see the module docstring
    return default_cache_dir()


def _print_result(result) -> None:
    kind = "adapter" if result.servable else "baseline report (not servable)"
    print(f"wrote {kind} {result.path} in {result.seconds:.1f} s "
          f"({kept_line(result.history.best_epoch, len(result.history.train_loss), result.history.kept_by)})")
    first = next(iter(result.metrics.values()))
    print(first.CARD_HEADER.splitlines()[0])
    for split, m in result.metrics.items():
        print(m.card_row(split))


def _register(folder: Path, url: str, token: str | None, name: str | None = None) -> int:
    from training.register import RegistrationFailed, register_with_server  # lazy: see the module docstring
    try:
        answer = register_with_server(folder, url, token, name=name)
    except RegistrationFailed as exc:
        print(f"error: {exc.message}", file=sys.stderr)
        return EXIT_FAILED
    print(f"registered {answer.get('name')} version {str(answer.get('version'))[:12]} "
          f"({answer.get('kind')}) on {url}")
    return 0


def cmd_evaluate(args) -> int:
    if args.url:
        return _evaluate_served(args)
    if args.adapter is None:
        raise InvalidInput("give an adapter folder, or --url URL --task NAME for a served task")
    if is_generation_folder(args.adapter):
        return cmd_evaluate_generation(args)
    from training.evaluate import adapter_labels, evaluate_adapter  # lazy: see the module docstring
    from training.evaluate_dense import is_dense
    if is_dense(args.adapter):  # boxes or masks: COCO mAP / IoU (training/evaluate_dense.py)
        return _evaluate_dense(args)
    from training.evaluate_tokens import is_tagger
    from training.evaluate_values import is_regressor
    if is_tagger(args.adapter):
        return _evaluate_tagger(args)
    if is_regressor(args.adapter):
        return _evaluate_regressor(args)
    labels = args.labels or adapter_labels(args.adapter)
    data = data_source(args, path=args.data, demo=args.demo, limit=args.limit, labels=labels)
    data = data.load("test")
    spec = backbone_spec(args) if args.backbone else None
    ev = evaluate_adapter(args.adapter, data, spec, batch_size=args.batch_size, progress=not args.quiet)
    return _print_evaluation(args, ev, data)


def _dense_held_out(args, task_type_name: str, labels: list[str]):
    from training.evaluate_dense import held_out  # lazy: see the module docstring
    return held_out(task_type_name, labels, path=args.data, demo=args.demo, masks=args.masks,
                    image_root=args.image_root, limit=args.limit)


def _dense_report(args, evs, tests) -> int:
    from training.evaluate_dense import dense_json, print_dense_evaluation  # lazy (docstring)
    print_dense_evaluation(evs, tests)
    if args.json:
        args.json.write_text(dense_json(evs))
    return 0


def _evaluate_dense(args) -> int:
    """A detection or segmentation adapter folder on held-out data (COCO mAP / IoU)."""
    from adapters.plugin_checks import read_adapter_dir  # lazy: see the module docstring
    from training.evaluate_dense import evaluate_dense_adapter
    m = read_adapter_dir(args.adapter).manifest
    tests = _dense_held_out(args, m.task_type, args.labels or list(m.labels))
    spec = backbone_spec(args) if args.backbone else None
    evs = evaluate_dense_adapter(args.adapter, tests, spec, batch_size=min(args.batch_size, 16),
                                 progress=not args.quiet)
    return _dense_report(args, evs, tests)


def _evaluate_served_dense(args, client, info) -> int:
    from training.evaluate_dense import evaluate_served_dense  # lazy: see the module docstring
    tests = _dense_held_out(args, info.task_type, args.labels or list(info.labels))
    evs = evaluate_served_dense(client, args.task, tests, batch_size=min(args.batch_size, 16),
                                progress=not args.quiet)
    return _dense_report(args, evs, tests)


def _tagged_data(args, labels):
    """Tagged sentences for a tagger's evaluation: a CoNLL/JSONL file or the punctuation demo."""
    from training.data.tokens import load_punctuation, load_token_file  # lazy: see the module docstring
    if args.demo not in (None, "punctuation"):
        raise InvalidInput(f"--demo {args.demo!r} is not a tagging data set; use --demo punctuation or "
                           "--data FILE (CoNLL or JSONL)")
    if args.demo:
        data = load_punctuation("test", limit=args.limit)
    else:
        data = load_token_file(args.data, labels=labels)
        if args.limit:
            data = data.subset(list(range(min(args.limit, len(data)))))
    return data


def _tagger_json(args, ev, data) -> None:
    if args.json:
        args.json.write_text(json.dumps({"task": ev.task, "version": ev.version, "labels": data.label_names,
                                         "unmatched_words": ev.unmatched_words, **ev.metrics.to_dict()},
                                        indent=2))


def _evaluate_served_tagger(args, client, labels) -> int:
    from training.evaluate_tokens import evaluate_served_tagger, print_token_evaluation  # lazy (docstring)
    data = _tagged_data(args, labels)
    ev = evaluate_served_tagger(client, args.task, data, batch_size=args.batch_size, progress=not args.quiet)
    print_token_evaluation(ev, data)
    _tagger_json(args, ev, data)
    return 0


def _evaluate_tagger(args) -> int:
    """A token_classification adapter folder on a CoNLL/JSONL file (or the punctuation demo's test split)."""
    from training.evaluate import adapter_labels  # lazy: see the module docstring
    from training.evaluate_tokens import evaluate_tagger, print_token_evaluation
    labels = args.labels or adapter_labels(args.adapter)
    data = _tagged_data(args, labels)
    spec = backbone_spec(args) if args.backbone else None
    ev = evaluate_tagger(args.adapter, data, spec, labels=args.labels, batch_size=args.batch_size,
                         progress=not args.quiet)
    print_token_evaluation(ev, data)
    _tagger_json(args, ev, data)
    return 0


def _rated_data(args, outputs: list[str]):
    """Rated examples for a regression task: the file's ``--target-columns`` (default: the
    task's outputs), or a regression demo's test split."""
    if args.data is not None and not args.target_columns:
        args.target_columns = list(outputs)
    return data_source(args, path=args.data, demo=args.demo, limit=args.limit).load("test")


def _value_json(args, ev) -> None:
    if args.json:
        args.json.write_text(json.dumps({"task": ev.task, "version": ev.version, **ev.metrics.to_dict()},
                                        indent=2))


def _evaluate_regressor(args) -> int:
    """A regression adapter folder on rated data (MAE, RMSE, R², Spearman per output)."""
    from training.evaluate import adapter_outputs  # lazy: see the module docstring
    from training.evaluate_values import evaluate_regressor, print_value_evaluation
    data = _rated_data(args, adapter_outputs(args.adapter))
    spec = backbone_spec(args) if args.backbone else None
    ev = evaluate_regressor(args.adapter, data, spec, batch_size=args.batch_size, progress=not args.quiet)
    print_value_evaluation(ev, data)
    _value_json(args, ev)
    return 0


def _evaluate_served_regressor(args, client, outputs) -> int:
    from training.evaluate_values import evaluate_served_regressor, print_value_evaluation  # lazy (docstring)
    data = _rated_data(args, outputs)
    ev = evaluate_served_regressor(client, args.task, data, batch_size=args.batch_size, progress=not args.quiet)
    print_value_evaluation(ev, data)
    _value_json(args, ev)
    return 0


def _evaluate_served(args) -> int:
    from taskswap_client import Client, TaskswapHTTPError  # lazy: see the module docstring
    from adapters.tasks import task_type  # lazy (docstring): the task types' table
    from training.evaluate import evaluate_served
    if not args.task or args.adapter is not None:
        raise InvalidInput("with --url, name the served task with --task (and no adapter folder)")
    try:
        with Client(args.url, token=args.token) as client:
            info = client.show(args.task)
            labels = args.labels or info.labels
            if task_type(info.task_type).generates:  # texts: scored through /v1/completions
                return cmd_evaluate_generation(args)
            if task_type(info.task_type).features == "tokens":  # a tagger: words and their tags
                return _evaluate_served_tagger(args, client, labels)
            if task_type(info.task_type).features == "maps":  # boxes or masks: COCO mAP / IoU
                return _evaluate_served_dense(args, client, info)
            if info.outputs:  # a regression: rated data, the task's outputs as its columns
                return _evaluate_served_regressor(args, client, info.outputs)
            data = data_source(args, path=args.data, demo=args.demo, limit=args.limit, labels=labels)
            data = data.load("test")
            ev = evaluate_served(client, args.task, data, batch_size=args.batch_size, progress=not args.quiet)
    except TaskswapHTTPError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_FAILED
    except httpx_errors() as exc:
        print(f"error: cannot reach {args.url} ({type(exc).__name__}: {exc})", file=sys.stderr)
        return EXIT_FAILED
    return _print_evaluation(args, ev, data)


def httpx_errors():
    return httpx.HTTPError


def _print_evaluation(args, ev, data) -> int:
    m = ev.metrics
    print(f"{ev.task} (version {ev.version[:12]}) on {len(data)} examples of {data.source}")
    print(f"accuracy {m.accuracy:.4f}  macro-F1 {m.macro_f1:.4f}  loss {m.loss:.4f}")
    print(f"{'label':<20}{'precision':>10}{'recall':>8}{'F1':>8}{'support':>9}")
    for c in m.per_class:
        print(f"{c.label:<20}{c.precision:>10.3f}{c.recall:>8.3f}{c.f1:>8.3f}{c.support:>9}")
    if args.json:
        args.json.write_text(json.dumps({"task": ev.task, "version": ev.version, **m.to_dict()}, indent=2))
    return 0


def cmd_register(args) -> int:
    from adapters.plugin_checks import read_adapter_dir  # lazy (docstring)
    read_adapter_dir(args.adapter)  # a local check (format, kind, task type) before any upload
    return _register(args.adapter, args.url, args.token, args.name)


def cmd_data(args) -> int:
    if args.data_command == "digits-coco":
        from training.dense.digits_coco import write_digits_coco  # lazy: see the module docstring
        for split, path in write_digits_coco(args.out, args.train, args.test, args.canvas,
                                             tuple(args.digits), args.seed).items():
            print(f"{split}: {path}")
        return 0
    from training.data.silver import run  # lazy: see the module docstring
    return run(args)


def cmd_predict(args) -> int:
    """Print each input's label and score for one task (no torch imported on this path)."""
    from taskswap_client import Client, TaskswapHTTPError  # lazy: see the module docstring
    if bool(args.texts) == bool(args.image):
        raise InvalidInput('give texts (taskswap predict TASK "text" ...) or --image PATH, not both')
    try:
        with Client(args.url, token=args.token) as client:
            answer = client.predict(args.task, texts=args.texts or None, images=args.image or None)
    except TaskswapHTTPError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT if 400 <= exc.status < 500 and exc.status not in (401, 403, 429) else EXIT_FAILED
    except httpx_errors() as exc:
        print(f"error: cannot reach {args.url} ({type(exc).__name__}: {exc})", file=sys.stderr)
        return EXIT_FAILED
    except OSError as exc:  # an --image that cannot be read
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT
    if args.json:
        print(answer.model_dump_json(indent=2, exclude_none=True))
        return 0
    result = answer.results[0]
    names = args.texts or [str(p) for p in args.image]
    print(f"{result.task} (version {result.version[:12]}, {result.kind}) on {answer.backbone}")
    for name, pred in zip(names, result.predictions):
        print(f"{pred.label}\t{pred.score:.4f}\t{name}")
    return 0


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``taskswap`` console script; returns the exit code."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(message)s")
    if (getattr(args, "quiet", False) or not is_tty(sys.stderr)) and args.command not in ("predict", "quota", "tokens", "sets"):
        from transformers.utils import logging as hf_logging  # lazy: see the module docstring
        hf_logging.disable_progress_bar()  # "Loading weights" bars: carriage-return frames in a log
    try:
        return {"train": cmd_train, "evaluate": cmd_evaluate, "register": cmd_register,
                "predict": cmd_predict, "data": cmd_data,
                "adapt": cli_adapt.cmd_adapt, "tokens": cli_tokens.cmd_tokens,
                "quota": cli_quota.cmd_quota, "sets": cli_sets.cmd_sets}[args.command](args)
    except TaskswapError as exc:
        print(f"error: {exc.message}", file=sys.stderr)
        if len(exc.problems) > 1:
            for p in exc.problems:
                print(f"  - {p}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except ValidationError as exc:  # option values out of range (pydantic settings)
        for e in exc.errors():
            where = ".".join(map(str, e["loc"])) or "options"
            print(f"error: --{where.replace('_', '-')}: {e['msg']} (got {e.get('input')!r})",
                  file=sys.stderr)
        return EXIT_BAD_INPUT


if __name__ == "__main__":
    sys.exit(main())
