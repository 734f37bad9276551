"""``taskswap train --multitask a.csv,b.csv,...``: the command-line half of :mod:`training.multitask`.

Each file is one task (its name: the file's stem, lowercased, other characters as ``-``),
loaded like ``--data`` (a text table; ``--target-columns`` makes every file a regression
table); a validation split is carved off each (``--val-fraction``, stratified, seeded).
``--name`` names the shared adaptation; ``--register URL`` uploads it, then every task.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

import torch

from adapters.backbones.base import load_backbone
from adapters.errors import InvalidInput
from training.data.dataset import stratified_split
from training.multitask import MultitaskConfig, MultitaskData, train_multitask

# flag -> MultitaskConfig field (None on the command line: the config's default)
_SETTINGS = {"epochs": "epochs", "lr": "lr", "head_lr": "head_lr", "batch_size": "batch_size",
             "weight_decay": "weight_decay", "lora_r": "lora_r", "lora_alpha": "lora_alpha",
             "lora_dropout": "lora_dropout", "lora_targets": "lora_targets", "max_minutes": "max_train_minutes"}


def task_name(path: Path) -> str:
    """A task name from a data file's name.

    >>> task_name(Path("data/Rotten Tomatoes.csv"))
    'rotten-tomatoes'
    """
    return re.sub(r"[^a-z0-9_.-]+", "-", path.stem.lower()).strip("-.") or "task"


def multitask_config(args) -> MultitaskConfig:
    try:
        weights = [float(w) for w in args.task_weights] if args.task_weights else None
    except ValueError as exc:
        raise InvalidInput(f"--task-weights {args.task_weights} must be numbers: {exc}") from exc
    given = {field: getattr(args, flag) for flag, field in _SETTINGS.items() if getattr(args, flag) is not None}
    if args.clip_norm is not None:
        given["clip_norm"] = args.clip_norm or None
    return MultitaskConfig(name=args.name, weights=weights, seed=args.seed, **given)


def load_tasks(args, data_source) -> list[MultitaskData]:
    tasks = []
    for file in args.multitask:
        path = Path(file)
        data = data_source(args, path=path, limit=args.limit).load("train")
        fit, val = stratified_split(data, 1.0 - args.val_fraction, seed=args.seed)
        if len(val) == 0:
            raise InvalidInput(f"{path}: the validation split came out empty; give more rows or a "
                               "larger --val-fraction")
        tasks.append(MultitaskData(task_name(path), fit, val))
    return tasks


def cmd_train_multitask(args, backbone_spec, data_source, register) -> int:
    """Train, print each task's validation headline, optionally register; the exit status."""
    if args.data is not None or args.demo is not None:
        raise InvalidInput("--multitask takes its tasks' data files itself; drop --data / --demo")
    cfg = multitask_config(args)  # option errors first: nothing loaded yet
    if args.threads is not None:
        torch.set_num_threads(max(1, args.threads))
    spec = backbone_spec(args)
    tasks = load_tasks(args, data_source)
    result = train_multitask(load_backbone(spec), tasks, args.out or Path("out"), cfg)
    print(f"shared adaptation {cfg.name}: {result.shared_dir} (best epoch {result.best_epoch}, "
          f"{result.seconds:.0f} s)")
    for name, folder in result.task_dirs.items():
        m = result.metrics[name]
        shown = ", ".join(f"{k} {v:.4f}" for k, v in m.items() if isinstance(v, float))[:120]
        print(f"  {name}: {folder} ({shown})")
    if args.register:
        for folder in [result.shared_dir, *result.task_dirs.values()]:
            code = register(folder, args.register, args.token)
            if code:
                print(f"error: stopped registering at {folder}", file=sys.stderr)
                return code
    return 0
