"""Generation examples: a prompt (or a chat) and the completion the model should write.

Two JSONL shapes, one example per line::

    {"prompt": "Open the file", "completion": "Ouvrir le fichier"}
    {"messages": [{"role": "user", "content": "Open the file"},
                  {"role": "assistant", "content": "Ouvrir le fichier"}]}

A chat's last message must be the assistant's: it is the completion, every message before it is
the prompt. Every problem in a file is collected and raised once, with its line number.

    >>> d = GenerationData([GenerationExample("hi", "salut")] * 5, "toy")
    >>> fit, val = d.split(0.2, seed=0)
    >>> len(fit), len(val)
    (4, 1)
"""

from __future__ import annotations

import json
import random
from dataclasses import dataclass, field
from pathlib import Path

from adapters.errors import InvalidInput

ROLES = ("system", "user", "assistant")
MAX_PROBLEMS = 10


@dataclass(frozen=True)
class GenerationExample:
    """One example: ``prompt`` (a completion prompt) or ``messages`` (a chat, the assistant's
    answer removed), and the ``completion`` the model is trained to write."""

    prompt: str | None
    completion: str
    messages: tuple[dict, ...] | None = None
    group: str = ""
    """Where it came from (e.g. a catalog); splits by group never share one."""

    @property
    def input_text(self) -> str:
        """The text a request would send: the prompt, or the chat's last user message."""
        if self.messages is None:
            return self.prompt or ""
        return next((m["content"] for m in reversed(self.messages) if m["role"] == "user"), "")


@dataclass
class GenerationData:
    examples: list[GenerationExample]
    source: str
    notes: dict = field(default_factory=dict)
    """Facts about the data the model card records (catalogs, counts, filters)."""

    def __len__(self) -> int:
        return len(self.examples)

    def subset(self, indices) -> GenerationData:
        return GenerationData([self.examples[i] for i in indices], self.source, dict(self.notes))

    def sample(self, n: int, seed: int = 0) -> GenerationData:
        """At most ``n`` examples, drawn without replacement with ``seed``."""
        if n >= len(self):
            return self
        return self.subset(sorted(random.Random(seed).sample(range(len(self)), n)))

    def split(self, val_fraction: float, seed: int = 0) -> tuple[GenerationData, GenerationData]:
        """A seeded random split: ``(train, validation)``, validation at least one example."""
        order = list(range(len(self)))
        random.Random(seed).shuffle(order)
        n_val = max(1, round(len(order) * val_fraction))
        return self.subset(sorted(order[n_val:])), self.subset(sorted(order[:n_val]))


def example_from_json(obj, where: str, problems: list[str]) -> GenerationExample | None:
    """One example from its JSON object, or None with the problem appended to ``problems``."""
    if not isinstance(obj, dict):
        problems.append(f"{where}: expected a JSON object with 'prompt' and 'completion' or 'messages'")
        return None
    if "messages" in obj:
        msgs = obj["messages"]
        if (not isinstance(msgs, list) or len(msgs) < 2 or not all(
                isinstance(m, dict) and m.get("role") in ROLES and isinstance(m.get("content"), str)
                for m in msgs)):
            problems.append(f"{where}: 'messages' must be a list of at least 2 "
                            "{\"role\": system|user|assistant, \"content\": string} objects")
            return None
        if msgs[-1]["role"] != "assistant" or not msgs[-1]["content"]:
            problems.append(f"{where}: the last message must be the assistant's (non-empty): it is the completion")
            return None
        if not any(m["role"] == "user" for m in msgs[:-1]):
            problems.append(f"{where}: the chat has no user message before the assistant's answer")
            return None
        return GenerationExample(None, msgs[-1]["content"],
                                 tuple({"role": m["role"], "content": m["content"]} for m in msgs[:-1]))
    prompt, completion = obj.get("prompt"), obj.get("completion")
    if not isinstance(prompt, str) or not isinstance(completion, str) or not completion:
        problems.append(f"{where}: needs a string 'prompt' and a non-empty string 'completion' "
                        "(or 'messages')")
        return None
    return GenerationExample(prompt, completion)


def load_generation_file(path: str | Path, limit: int | None = None, seed: int = 0) -> GenerationData:
    """Read a JSONL file of examples (see the module docstring); ``limit``: a seeded sample."""
    path = Path(path)
    if not path.is_file():
        raise InvalidInput(f"generation data {path} is not a file; give a JSONL file of "
                           "{\"prompt\", \"completion\"} or {\"messages\"} lines")
    problems: list[str] = []
    examples = []
    with path.open(encoding="utf-8") as f:
        for i, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                obj = json.loads(line)
            except json.JSONDecodeError as exc:
                problems.append(f"{path.name} line {i}: not JSON ({exc.msg})")
                continue
            ex = example_from_json(obj, f"{path.name} line {i}", problems)
            if ex is not None:
                examples.append(ex)
    if not examples and not problems:
        problems.append(f"{path.name} holds no examples")
    if problems:
        more = len(problems) - MAX_PROBLEMS
        InvalidInput.collect(problems[:MAX_PROBLEMS] + ([f"... and {more} more"] if more > 0 else []), "data")
    data = GenerationData(examples, str(path))
    return data.sample(limit, seed) if limit else data
