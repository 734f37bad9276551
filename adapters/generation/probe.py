"""The registration dry run of a generation task: its prompt renders, its logits are finite.

A LoRA whose scaling overflows would decode garbage (NaN logits pick token 0 forever): it is
refused before it is published, like an encoder adapter whose scores are not finite. One
forward of the rendered probe prompt with the adapter's LoRA, in the registering thread,
under the backbone's lock (the decode engine waits at most that one forward).
"""

from __future__ import annotations

import torch

from adapters.errors import InvalidAdapter, InvalidInput, NonFiniteOutput
from adapters.kinds.lora_rows import lora_batch
from adapters.lora.batch import use_lora_batch
from adapters.tasks.generation import render_prompt, settings

PROBE_INPUT = "Hello, how are you?"


def check_generation_finite(adapter) -> None:
    """Raise :class:`NonFiniteOutput` when ``adapter`` (a generation task's
    :class:`~adapters.loading.LoadedAdapter`) gives non-finite logits on a probe prompt, or
    :class:`InvalidAdapter` when its prompt settings cannot render on its language model."""
    bb = adapter.backbone
    try:
        text = render_prompt(settings(adapter.manifest), bb.tokenizer, prompt=PROBE_INPUT)
    except InvalidInput as exc:
        raise InvalidAdapter(f"generation settings of {adapter.name!r}: {exc.message}") from exc
    ids = bb.tokenizer(text, add_special_tokens=False)["input_ids"][-64:]  # [tokens]
    with bb.lock, torch.inference_mode(), use_lora_batch(lora_batch([adapter.weights])):
        logits = bb.model(input_ids=torch.tensor([ids], device=bb.device)).logits  # [1, tokens, vocab]
    if not torch.isfinite(logits).all():
        raise NonFiniteOutput(f"task {adapter.name!r} gave non-finite logits on its registration probe: "
                              "its weights overflow — retrain or rescale them (e.g. a smaller lora_alpha)")
