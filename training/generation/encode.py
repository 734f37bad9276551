"""An example as the token ids the model reads, rendered exactly as the server renders a request.

The prompt goes through :func:`adapters.tasks.generation.render_prompt` with the task's
``generation`` settings and is tokenised with the same ``add_special_tokens`` rule as
:func:`adapters.generation.requests.request_for`, so the adapter is trained on the very prompt
ids it will be served with. The completion follows, tokenised alone, then the end-of-sequence
token (so the adapter learns to stop). Loss is on the completion's tokens only.
"""

from __future__ import annotations

from dataclasses import dataclass

from adapters.format.manifest import GenerationSpec
from adapters.tasks.generation import render_prompt
from training.generation.data import GenerationExample

IGNORE = -100
"""The label of a token that carries no loss (prompt and padding), as transformers' losses read it."""


@dataclass(frozen=True)
class Encoded:
    ids: list[int]
    """``[prompt + completion + eos]`` token ids (the prompt's head cut if too long)."""
    n_prompt: int
    """How many of ``ids`` are the prompt (no loss on them)."""

    @property
    def labels(self) -> list[int]:
        return [IGNORE] * self.n_prompt + self.ids[self.n_prompt:]


def prompt_ids(example: GenerationExample, spec: GenerationSpec, tokenizer) -> list[int]:
    """The prompt's token ids as the server would build them for this example's request."""
    if example.messages is not None:
        text = render_prompt(spec, tokenizer, messages=[dict(m) for m in example.messages])
        return list(tokenizer(text, add_special_tokens=False)["input_ids"])
    text = render_prompt(spec, tokenizer, prompt=example.prompt)
    return list(tokenizer(text, add_special_tokens=spec.prompt_format == "raw")["input_ids"])


def encode(example: GenerationExample, spec: GenerationSpec, tokenizer, eos_id: int,
           max_length: int) -> Encoded:
    """Token ids and prompt length of one training example, at most ``max_length`` tokens
    (the completion is kept whole where it fits; the prompt loses its head first)."""
    p = prompt_ids(example, spec, tokenizer)
    c = list(tokenizer(example.completion, add_special_tokens=False)["input_ids"])[:max_length - 2] + [eos_id]
    p = p[-(max_length - len(c)):] if len(p) + len(c) > max_length else p
    return Encoded(p + c, len(p))
