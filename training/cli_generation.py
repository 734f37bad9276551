"""``taskswap train --task-type generation`` and ``taskswap evaluate`` of generation tasks.

    taskswap train --task-type generation --method lora --name fr --data pairs.jsonl \\
                   --prompt-format chat --prompt-template 'Translate to French: {input}'
    taskswap train --task-type generation --method lora --name fr --demo translate-en-fr --limit 1000
    taskswap train --task-type generation --method prompt --name fr0 --prompt-template '...'  # no data
    taskswap evaluate out/fr --demo translate-en-fr
    taskswap train --task-type generation --method lora --name man --demo summarise-man --limit 500
    taskswap evaluate --url http://127.0.0.1:3000 --task fr --data test.jsonl

Kept apart from :mod:`training.cli` (its options and commands) so each stays small; like it, the
heavy imports happen inside the commands (after ``HF_HUB_OFFLINE`` is set).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from adapters.errors import InvalidInput

LM_BACKBONE = ("lm", "embedded:SmolLM2-135M-Instruct")
"""``--backbone lm`` (the default for generation): :data:`adapters.backbones.defaults.LM`, the
embedded language model under the name ``TASKSWAP_LM_BACKBONES`` gives it in docs/generation.md."""


def add_generation_args(p: argparse.ArgumentParser) -> None:
    """The prompt settings of a generation task (its manifest's ``generation`` object)."""
    g = p.add_argument_group("generation (--task-type generation)")
    g.add_argument("--prompt-format", choices=["raw", "chat"],
                   help="raw: the templated prompt as is; chat: the user turn of the chat template (default: "
                        "chat, or the demo's)")
    g.add_argument("--prompt-template", help="a template with '{input}', e.g. 'Translate to French: {input}'")
    g.add_argument("--system-prompt", help="chat: a system message put first")
    g.add_argument("--stop", action="append", help="a stop sequence (repeatable)")
    g.add_argument("--max-new-tokens", type=int, help="the most tokens a request may generate (default 128)")
    g.add_argument("--eval-limit", type=int, default=64,
                   help="validation examples decoded per epoch and scored at the end (default 64)")


def lm_spec(args):
    from adapters.backbones.base import BackboneSpec  # lazy: see the module docstring
    name, source = LM_BACKBONE
    if args.backbone and args.backbone != name:
        name, source = args.backbone_name or "lm", args.backbone
    return BackboneSpec(name=args.backbone_name or name, source=source, device=getattr(args, "device", "auto"))


def generation_spec(args, base=None):
    """The task's ``GenerationSpec``: the demo's (or the default chat one), options on top."""
    from adapters.format.manifest import GenerationSpec  # lazy: see the module docstring
    fields = (base or GenerationSpec(prompt_format="chat")).model_dump()
    for key in ("prompt_format", "prompt_template", "system_prompt", "max_new_tokens"):
        if getattr(args, key, None) is not None:
            fields[key] = getattr(args, key)
    if getattr(args, "stop", None):
        fields["stop"] = args.stop
    try:
        return GenerationSpec(**fields)
    except ValueError as exc:
        raise InvalidInput(f"generation settings: {exc}") from exc


def generation_data(args, split: str, path: Path | None, limit: int | None = None):
    """``(data, demo spec)`` of one split: a JSONL file, or a generation demo's split (translation,
    man-page summaries), at most ``limit`` examples (a seeded sample)."""
    from training.generation.demos import DEMOS  # lazy (docstring)
    from training.generation.data import load_generation_file
    seed = getattr(args, "seed", 0)
    if path is not None:
        return load_generation_file(path, limit=limit, seed=seed), None
    if args.demo in DEMOS:
        demo = DEMOS[args.demo]
        data = demo.load()[split]
        return (data.sample(limit, seed) if limit else data), demo.spec()
    raise InvalidInput(f"--demo {args.demo!r} is not a generation data set; use one of {sorted(DEMOS)} or "
                       "--data FILE.jsonl")


def cmd_train_generation(args, config, register) -> int:
    from training.generation_run import train_generation, write_prompt_task  # lazy (docstring)
    from training.methods import training_method
    out = args.out or Path("out") / args.name
    spec_backbone = lm_spec(args)
    if args.data is None and args.demo is None:
        if training_method(config.method).needs_data:
            raise InvalidInput("give --data FILE.jsonl or --demo translate-en-fr (only --method prompt "
                               "needs no data)")
        path = write_prompt_task(config.name, spec_backbone, generation_spec(args), out)
        print(f"wrote prompt-only task {path}")
        return register(path, args.register, args.token) if args.register else 0
    data, demo_spec = generation_data(args, "train", args.data, args.limit)
    val = generation_data(args, "validation", args.val_data)[0] if (args.val_data or args.demo) else None
    test = (generation_data(args, "test", args.test_data, args.test_limit)[0]
            if (args.test_data or args.demo) else None)
    result = train_generation(data, spec_backbone, config, generation_spec(args, demo_spec), out, val=val,
                              test=test, eval_limit=args.eval_limit)
    print(f"wrote {result.manifest.kind} generation task {result.path} in {result.seconds:.1f} s")
    for split, m in result.metrics.items():
        print(f"{split}: n {m['n']}  chrF {m['chrf']:.2f}  BLEU {m['bleu']:.2f}  exact match "
              f"{m['exact_match']:.2f}  token F1 {m['token_f1']:.2f}")
    return register(result.path, args.register, args.token) if args.register else 0


def _print(ev, args) -> int:
    s = ev.scores
    print(f"{ev.task} ({ev.version}): n {s['n']}  chrF {s['chrf']:.2f}  BLEU {s['bleu']:.2f}  exact match "
          f"{s['exact_match']:.2f}  token F1 {s['token_f1']:.2f}")
    if args.json:
        args.json.write_text(json.dumps({"task": ev.task, "version": ev.version, **s,
                                         "outputs": ev.outputs}, indent=2, ensure_ascii=False))
    return 0


def cmd_evaluate_generation(args) -> int:
    """A generation folder in-process, or a served generation task through /v1/completions."""
    from training.generation.evaluate import evaluate_generation_folder, evaluate_served_generation  # lazy
    data, _ = generation_data(args, "test", args.data, args.limit)
    if args.url:
        ev = evaluate_served_generation(args.url, args.task, data, args.max_new_tokens or 64, token=args.token)
    else:
        ev = evaluate_generation_folder(args.adapter, data, lm_spec(args), args.max_new_tokens or 64,
                                        batch_size=args.batch_size)
    return _print(ev, args)


def is_generation_folder(folder: Path) -> bool:
    """Whether an adapter folder is a generation task (its manifest, or a plain PEFT CAUSAL_LM)."""
    for name, key, value in (("adapter.json", "task_type", "generation"),
                             ("adapter_config.json", "task_type", "CAUSAL_LM")):
        try:
            if json.loads((Path(folder) / name).read_text()).get(key) == value:
                return True
        except (OSError, ValueError, AttributeError):
            continue
    return False
