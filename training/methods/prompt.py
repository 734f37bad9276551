"""``prompt``: a generation task from its prompt settings alone (no weights, no training).

The folder holds ``adapter.json`` (kind ``prompt``) and the card; the task rides on the base
language model with its own template, system prompt and stops. The run still scores the
validation (and test) examples, so the card and a rollout can compare it with a LoRA.
"""

from __future__ import annotations

from adapters.errors import InvalidInput
from training.generation.fit import GenerationFit, GenerationHistory
from training.method_settings import PROMPT
from training.methods.base import TrainingMethod


class PromptMethod(TrainingMethod):
    settings = PROMPT
    kind = "prompt"
    fits_generation = True
    needs_data = False
    kind_words = "prompt-only generation task"
    generation_recipe = ("No training: the frozen language model answers through this task's prompt "
                         "settings (template, system prompt, stop sequences).")

    def fit_generation(self, backbone, train, val, spec, cfg, eval_limit):
        return GenerationFit(None, GenerationHistory(), [])

    def fit(self, backbone, train, val, cfg, cache_dir):
        raise InvalidInput("method 'prompt' makes generation tasks only; pass --task-type generation "
                           "or choose head, lora, top_layers or scratch")

    def fit_tokens(self, backbone, train, val, cfg):
        self.fit(backbone, train, val, cfg, None)
