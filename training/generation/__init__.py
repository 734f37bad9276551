"""Training generation tasks: PEFT ``CAUSAL_LM`` LoRA (or a prompt alone) on a frozen language model.

The pieces, one job each:

- :mod:`training.generation.data` — examples (``{"prompt", "completion"}`` or chat
  ``{"messages": [...]}``) and their JSONL loader;
- :mod:`training.generation.encode` — an example as token ids, its prompt rendered exactly as the
  server renders it (:func:`adapters.tasks.generation.render_prompt`), loss on the completion only;
- :mod:`training.generation.batches` — length-bucketed batches;
- :mod:`training.generation.decode` — greedy decoding with a PEFT model (evaluation);
- :mod:`training.generation.metrics` — chrF and BLEU (sacrebleu), exact match, token F1;
- :mod:`training.generation.fit` — the LoRA loop (time budget, validation loss and chrF per
  epoch, best epoch kept);
- :mod:`training.generation_run` (beside this package: it asks :mod:`training.methods`, which
  imports this package) — the run: check → split → fit → evaluate → export.
"""
