"""``top_layers``: the last k blocks fine-tuned (a copy per task) with a head."""

from __future__ import annotations

from training.dense.top_layers_fit import fit_dense_top_layers
from training.export import write_top_layers_dir
from training.method_settings import TOP_LAYERS
from training.methods.base import TrainingMethod
from training.top_layers import fit_top_layers


class TopLayersMethod(TrainingMethod):
    settings = TOP_LAYERS
    kind = "top_layers"
    kind_words = "top-layers adapter"
    fits_dense = True
    dense_recipe = ("The trunk's last blocks up to the one that makes the deepest map read (see `top_layers.blocks` "
                    "in adapter.json) were fine-tuned as this task's own copy (BatchNorm statistics frozen) jointly "
                    "with a head (a one-level FPN over strides {strides}, width {width}) warm-started on the frozen "
                    "maps, at {input_size} px. The server runs the shared trunk below the split once, then this "
                    "task's blocks; the maps below the split are the shared ones.")
    recipe = ("The backbone's last `{layers}` blocks were fine-tuned (a copy, with layer-wise learning "
              "rates, warm-up then linear decay, weight decay, the blocks' own dropout) jointly with a "
              "{head} on `{pooling}`-pooled features; the blocks below stay frozen and shared. "
              "The server runs the shared trunk up to the split once, then this adapter's blocks.")

    def fit(self, backbone, train, val, cfg, cache_dir):
        return fit_top_layers(backbone, train, val, cfg, cache_dir)

    def write(self, out, manifest, card, fit):
        write_top_layers_dir(out, manifest, fit.head, fit.top_layers["state"], card)

    def fit_dense(self, backbone, train, cfg, task):
        return fit_dense_top_layers(backbone, train, cfg, task)

    def write_dense(self, out, manifest, card, fit):
        write_top_layers_dir(out, manifest, fit.head, fit.trunk_state, card)
