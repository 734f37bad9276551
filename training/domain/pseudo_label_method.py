"""``pseudo_label``: a LoRA on the trunk self-trained on the target inputs under the frozen
source head (:mod:`training.domain.pseudo_label`); the adapted version is a ``lora`` adapter
(it costs its own adapted trunk rows when served, like any LoRA task)."""

from __future__ import annotations

from training.domain.base import AdaptationMethod
from training.domain.pseudo_label import self_train
from training.export import write_lora_dir


class PseudoLabelMethod(AdaptationMethod):
    name = "pseudo_label"
    kind = "lora"
    trunk_changed = True
    needs_source_stats = False  # the source head alone labels the target inputs
    task_types = ("single_label",)
    recipe = ("Self-training on the target domain: a LoRA (rank {lora_r}, alpha {lora_alpha}) on the "
              "trunk's block layers learned from {target_rows} unlabelled target inputs over {epochs} "
              "epochs, under the source version's head, kept frozen. Each epoch the current model "
              "labels every target input; the most confident {keep_fraction} of the rows within each "
              "predicted class are kept as pseudo-labels (cross-entropy), and the mean prediction "
              "entropy over all rows is minimised with weight {entropy_weight}. Served as a LoRA "
              "adapter: its rows need their own adapted trunk pass.")

    def run(self, ctx, cfg):
        return self_train(ctx, cfg)

    def write(self, out, manifest, card, adapted):
        write_lora_dir(out, manifest, adapted.head, adapted.peft_model, card)
