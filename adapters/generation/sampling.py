"""Choosing the next token of one sequence: greedy, temperature, top-k, top-p, seeded.

Each sequence draws from its own ``torch.Generator``, so a seeded request gets the same
tokens whatever else shares its batch. ``logprob`` is the chosen token's log-probability
under the model's own distribution (log-softmax of the raw logits, before temperature and
filtering), as vLLM reports it by default.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field

import torch


@dataclass(frozen=True)
class SamplingParams:
    """How one request decodes. ``temperature == 0`` is greedy (top-k/top-p then do nothing).

    >>> SamplingParams(max_new_tokens=4).greedy
    True
    """

    max_new_tokens: int
    temperature: float = 0.0
    top_p: float = 1.0
    top_k: int = 0
    seed: int | None = None
    stop: tuple[str, ...] = field(default_factory=tuple)
    logprobs: bool = False

    @property
    def greedy(self) -> bool:
        return self.temperature == 0.0


def generator_for(params: SamplingParams) -> torch.Generator | None:
    """The sequence's own random stream (None when greedy: nothing is drawn)."""
    if params.greedy:
        return None
    seed = params.seed if params.seed is not None else random.SystemRandom().randrange(2 ** 63)
    return torch.Generator().manual_seed(seed)


def choose(logits: torch.Tensor, params: SamplingParams, gen: torch.Generator | None) -> tuple[int, float]:
    """``(token id, its log-probability)`` from one row's ``logits [vocab]`` (float32, CPU).

    >>> choose(torch.tensor([0.0, 2.0, 1.0]), SamplingParams(1), None)[0]
    1
    """
    logp = torch.log_softmax(logits, dim=-1)  # [vocab]
    if params.greedy:
        token = int(torch.argmax(logits))
        return token, float(logp[token])
    scores = logits / params.temperature
    if params.top_k and params.top_k < scores.numel():
        kth = torch.topk(scores, params.top_k).values[-1]
        scores = scores.masked_fill(scores < kth, float("-inf"))
    if params.top_p < 1.0:
        sorted_scores, order = torch.sort(scores, descending=True)
        probs = torch.softmax(sorted_scores, dim=-1)
        # keep the smallest prefix whose mass reaches top_p (the first token always stays)
        drop = (torch.cumsum(probs, dim=-1) - probs) >= params.top_p
        scores = scores.scatter(0, order[drop], float("-inf"))
    probs = torch.softmax(scores, dim=-1)
    token = int(torch.multinomial(probs, 1, generator=gen))
    return token, float(logp[token])
