"""Greedy decoding with a (PEFT) causal LM, for evaluation: the texts a task would answer.

Prompts are built by :func:`training.generation.encode.prompt_ids` (the server's rendering),
decoded greedily in left-padded batches of similar length with transformers' ``generate``,
cut at the task's stop sequences and the end-of-sequence tokens, as the server cuts them.
"""

from __future__ import annotations

import torch

from adapters.format.manifest import GenerationSpec
from training.generation.data import GenerationExample
from training.generation.encode import prompt_ids


def cut_at_stops(text: str, stop: list[str]) -> str:
    """``text`` up to the first stop sequence (which is dropped).

    >>> cut_at_stops("oui\\nnon", ["\\n"])
    'oui'
    """
    cut = min((i for i in (text.find(s) for s in stop) if i >= 0), default=len(text))
    return text[:cut]


@torch.inference_mode()
def greedy_texts(model, tokenizer, examples: list[GenerationExample], spec: GenerationSpec,
                 eos_ids: tuple[int, ...], max_new_tokens: int, batch_size: int = 16) -> list[str]:
    """The greedy completion of each example (in order), at most ``max_new_tokens`` tokens."""
    prompts = [prompt_ids(e, spec, tokenizer) for e in examples]
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else eos_ids[0]
    order = sorted(range(len(prompts)), key=lambda i: len(prompts[i]))
    out: list[str] = [""] * len(prompts)
    was_training = model.training
    model.eval()
    try:
        for start in range(0, len(order), batch_size):
            rows = order[start:start + batch_size]
            width = max(len(prompts[i]) for i in rows)
            ids = torch.full((len(rows), width), pad, dtype=torch.long)   # [batch, width], left-padded
            mask = torch.zeros((len(rows), width), dtype=torch.long)
            for r, i in enumerate(rows):
                ids[r, width - len(prompts[i]):] = torch.tensor(prompts[i])
                mask[r, width - len(prompts[i]):] = 1
            # stop_strings ends a row at its first stop sequence (cut below, as the server cuts it)
            stops = {"stop_strings": list(spec.stop), "tokenizer": tokenizer} if spec.stop else {}
            gen = model.generate(input_ids=ids, attention_mask=mask, do_sample=False,
                                 max_new_tokens=max_new_tokens, eos_token_id=list(eos_ids),
                                 pad_token_id=pad, **stops)[:, width:]     # [batch, new]
            for r, i in enumerate(rows):
                toks = gen[r].tolist()
                end = next((k for k, t in enumerate(toks) if t in eos_ids), len(toks))
                out[i] = cut_at_stops(tokenizer.decode(toks[:end], skip_special_tokens=True), spec.stop)
    finally:
        model.train(was_training)
    return out
