"""The one model card of a multitask run (written beside the shared adaptation and each task)."""

from __future__ import annotations

from training.tasks import training_task


def render_multitask_card(name: str, backbone, tasks, weights: list[float], result, hyper: dict) -> str:
    """Markdown: what was trained, on which data, how well each task scored, how to register."""
    best = result.history[result.best_epoch]
    lines = [f"# {name}: a shared LoRA adaptation and {len(tasks)} tasks riding on it", "",
             f"One **shared LoRA adaptation** (kind `shared_lora`) of backbone `{backbone.name}` "
             f"(`{backbone.spec.source}`, fingerprint `{(backbone.fingerprint or '?')[:19]}`), trained jointly "
             f"with one head per task (kind `multitask`). The server runs the adapted trunk once per input "
             "for every task riding on the same version that a request asks.", "",
             "## Tasks", "", "| task | type | outputs | train rows | validation rows | loss weight | "
             "validation headline |", "|---|---|---|---|---|---|---|"]
    for t, w in zip(tasks, weights):
        tt = training_task(t.task_type)
        head = result.metrics[t.name].get(f"val_{tt.headline_metric}")
        lines.append(f"| `{t.name}` | {t.task_type} | {', '.join(t.train.label_names)} | {len(t.train)} | "
                     f"{len(t.val)} | {w:g} | {tt.headline_name} {head:.4f} |" if head is not None else
                     f"| `{t.name}` | {t.task_type} | {', '.join(t.train.label_names)} | {len(t.train)} | "
                     f"{len(t.val)} | {w:g} | n/a |")
    lines += ["", "## Method", "",
              f"LoRA (rank {hyper['lora_r']}, alpha {hyper['lora_alpha']}) on `{', '.join(hyper['lora_targets'])}`; "
              f"each step takes one minibatch of {hyper['batch_size']} rows per task through the shared adapted "
              "trunk and that task's head, and AdamW steps on the weighted mean of the tasks' losses "
              f"(LoRA lr {hyper['lr']}, heads lr {hyper['head_lr']}, {hyper['epochs']} epochs). The epoch with "
              f"the best weighted mean validation headline was kept: epoch {result.best_epoch} "
              f"(mean {best['mean']:.4f}); {result.seconds:.0f} s.", "",
              "## Validation per epoch", "", "| epoch | " + " | ".join(t.name for t in tasks) + " | mean |",
              "|---|" + "---|" * (len(tasks) + 1)]
    for h in result.history:
        lines.append(f"| {h['epoch']} | " + " | ".join(f"{h['val_headlines'][t.name]:.4f}" for t in tasks)
                     + f" | {h['mean']:.4f} |")
    lines += ["", "## Register", "", "The shared adaptation first, then each task (it rides on the "
              "adaptation's active version at registration, stored as the exact version):", "", "```",
              f"taskswap register {name}/"] + [f"taskswap register {t.name}/" for t in tasks] + ["```", ""]
    return "\n".join(lines)
