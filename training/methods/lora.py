"""``lora``: PEFT LoRA on the trunk, trained jointly with a head (minutes)."""

from __future__ import annotations

from training.dense.lora_fit import fit_dense_lora
from training.export import write_lora_dir
from training.generation.fit import fit_generation_lora
from training.lora import fit_lora
from training.method_settings import LORA
from training.methods.base import TrainingMethod
from training.token_fit import fit_token_lora


class LoraMethod(TrainingMethod):
    settings = LORA
    kind = "lora"
    fits_tokens = True
    fits_generation = True
    fits_dense = True
    dense_recipe = ("LoRA on the trunk's pointwise (1x1, stride-1) convolutions up to the deepest map read, "
                    "trained jointly with a head (a one-level FPN over strides {strides}, width {width}) on "
                    "the adapted trunk's maps at {input_size} px; BatchNorm statistics frozen. The server "
                    "runs this task's rows through its own LoRA deltas.")
    generation_recipe = ("PEFT LoRA (rank {lora_r}, alpha {lora_alpha}) on `{targets}` of the frozen language "
                         "model, trained with AdamW (warm-up then linear decay, clipped gradients) on the "
                         "completion's tokens only, in length-bucketed batches; the prompt is rendered as the "
                         "server renders it.")  # the card's epoch table says which epoch was kept, and by which rule
    kind_words = "LoRA adapter"
    recipe = ("LoRA (rank {lora_r}, alpha {lora_alpha}) on `{targets}` of the backbone, trained jointly "
              "with a {head} on `{pooling}`-pooled features ({start}) with AdamW, warm-up then linear "
              "decay. The base weights are unchanged; the server applies this adapter's low-rank "
              "deltas per row.")
    token_recipe = ("LoRA (rank {lora_r}, alpha {lora_alpha}) on `{targets}` of the backbone, trained jointly "
                    "with a {head} on each word's first sub-token ({loss}). The head was first fitted on "
                    "frozen features, then LoRA and head were trained together with AdamW. The base "
                    "weights are unchanged; the server applies this adapter's low-rank deltas per row.")

    def fit(self, backbone, train, val, cfg, cache_dir):
        return fit_lora(backbone, train, val, cfg, cache_dir)

    def fit_tokens(self, backbone, train, val, cfg):
        return fit_token_lora(backbone, train, val, cfg)

    def fit_generation(self, backbone, train, val, spec, cfg, eval_limit):
        return fit_generation_lora(backbone, train, val, spec, cfg, eval_limit=eval_limit)

    def write(self, out, manifest, card, fit):
        write_lora_dir(out, manifest, fit.head, fit.peft_model, card)

    def fit_dense(self, backbone, train, cfg, task):
        return fit_dense_lora(backbone, train, cfg, task)

    def write_dense(self, out, manifest, card, fit):
        write_lora_dir(out, manifest, fit.head, fit.peft_model, card)
