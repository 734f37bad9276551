"""``scratch``: a from-random-weights baseline; a report (metrics, card, plots), not an adapter."""

from __future__ import annotations

from training.dense.scratch_fit import fit_dense_scratch
from training.export import write_report_dir
from training.fitted import TokenFit
from training.method_settings import SCRATCH
from training.methods.base import TrainingMethod
from training.scratch import fit_scratch
from training.token_scratch import fit_token_scratch


class ScratchMethod(TrainingMethod):
    settings = SCRATCH
    kind = None
    fits_tokens = True
    fits_dense = True
    dense_recipe = ("Baseline: a small conv net from random weights (training/dense/scratch_fit.py) giving maps "
                    "at strides {strides}, with the same head (width {width}), trained end to end at "
                    "{input_size} px. Not an adapter of the frozen backbone.")
    recipe = ("Baseline: the backbone's architecture (same config) initialised at random and trained "
              "end to end with a {head} on `{pooling}`-pooled features. It shows what the "
              "pretrained weights buy; it is not an adapter of the frozen backbone.")
    token_recipe = ("No pretrained weights: a BiGRU tagger (sub-token embedding over the backbone's "
                    "tokenizer vocabulary, one bidirectional GRU layer, a linear layer over tags) trained "
                    "from random initialisation on each word's first sub-token ({loss}) with AdamW, "
                    "keeping the state with the lowest validation loss. A baseline to compare a `head` "
                    "or `lora` adapter with, not an adapter.")
    limitations = ("Random initialisation: no pretrained knowledge; expect it to need far more data.",)

    def summary_line(self, backbone_name: str) -> str:
        return "A **from-scratch baseline report** (no adapter: not servable on the frozen backbone)."

    def fit(self, backbone, train, val, cfg, cache_dir):
        return fit_scratch(backbone, train, val, cfg)

    def fit_tokens(self, backbone, train, val, cfg):
        history, predict, n_params = fit_token_scratch(backbone, train, val, cfg)
        return TokenFit(None, history, predict, trained_parameters=n_params)

    def write(self, out, manifest, card, fit):
        write_report_dir(out, card)  # metrics and plots are written beside it

    def fit_dense(self, backbone, train, cfg, task):
        return fit_dense_scratch(backbone, train, cfg, task)

    def write_dense(self, out, manifest, card, fit):
        write_report_dir(out, card)
