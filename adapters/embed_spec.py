"""Plain values the runtime is asked with and configured by, without its tensor code.

Their own module so that the service's route definitions and settings (read by the
``bentoml serve`` process too, which never runs a forward pass) import no torch model
code; :mod:`adapters.runtime` uses and re-exports them.

    >>> EmbedSpec(normalize=True).pooling is None
    True
"""

from __future__ import annotations

from dataclasses import dataclass

# Padded tokens per trunk forward: 512 cuts a batch of 64 typical review snippets (16-64
# tokens) into ~6 passes; on MiniLM with 1 CPU thread it ran 1.05-1.15x budget 1024 and
# ~1.6x one padded pass in CPU time (`python -m bench knobs`, docs/performance.md). A GPU
# wants larger passes: raise it there (TASKSWAP_TOKEN_BUDGET).
DEFAULT_TOKEN_BUDGET = 512


@dataclass(frozen=True)
class EmbedSpec:
    """Return the plain trunk's pooled features of every input (as the heads see them,
    before a head's own optional L2 normalisation; ``normalize`` applies it here)."""

    pooling: str | None = None  # None: the backbone's default pooling
    normalize: bool = False
