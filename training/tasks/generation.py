"""``generation``: a language model writes the answer; trained by :mod:`training.generation`.

Its headline is the validation chrF (sacrebleu, 0–100); its loss the cross-entropy of the
completion's tokens. It has no head, so the pooled-feature hooks of :class:`TrainingTask`
(targets, head loss, outputs) do not apply: the generation trainer
(:func:`training.generation_run.train_generation`) scores texts instead.
"""

from __future__ import annotations

from training.tasks.base import TrainingTask


class GenerationTraining(TrainingTask):
    name = "generation"
    outputs_word = "texts"
    loss_words = "cross-entropy of the completion's tokens (the prompt's carry no loss)"
    loss_name = "cross-entropy per completion token"
    headline_name = "chrF"
    headline_metric = "chrf"

    def manifest_metrics(self, metrics: dict) -> dict:
        """``{"val_chrf": ..., "test_bleu": ...}`` from ``{split: {metric: value}}`` + the headline."""
        flat = {f"{'val' if s == 'validation' else s}_{k}": v for s, m in metrics.items() for k, v in m.items()}
        return {**flat, **self.headline_record("val")}
