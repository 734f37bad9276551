"""``top_layers``: the last k blocks fine-tuned (a copy per task) with a head."""

from __future__ import annotations

from training.export import write_top_layers_dir
from training.methods.base import TrainingMethod
from training.top_layers import fit_top_layers


class TopLayersMethod(TrainingMethod):
    name = "top_layers"
    kind = "top_layers"
    # The top block's lr; blocks below get layer_decay times the one above, the head head_lr.
    defaults = {"epochs": 6, "lr": 5e-4, "batch_size": 32, "patience": 6, "weight_decay": 0.01,
                "head_lr": 2e-3, "select": "headline", "head_init": "standardised", "head_dropout": 0.0}
    hyperparameters = ("layers", "layer_decay", "head_lr", "warmup_fraction", "schedule", "clip_norm",
                       "head_dropout", "head_init", "warm_start")
    kind_words = "top-layers adapter"
    recipe = ("The backbone's last `{layers}` blocks were fine-tuned (a copy, with layer-wise learning "
              "rates, warm-up then linear decay, weight decay, the blocks' own dropout) jointly with a "
              "{head} on `{pooling}`-pooled features; the blocks below stay frozen and shared. "
              "The server runs the shared trunk up to the split once, then this adapter's blocks.")

    def fit(self, backbone, train, val, cfg, cache_dir):
        return fit_top_layers(backbone, train, val, cfg, cache_dir)

    def write(self, out, manifest, card, fit):
        write_top_layers_dir(out, manifest, fit.head, fit.top_layers["state"], card)
