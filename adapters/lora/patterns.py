"""PEFT ``rank_pattern`` / ``alpha_pattern``: resolved once, at registration, with a bound.

The pattern keys are regular expressions chosen by whoever uploaded the adapter; Python's
``re`` backtracks, so a key such as ``(?:.*){9}Z`` froze a worker for 28 s. Here every
key is matched against the adapter's (few, known) module names with the ``regex``
package and a time limit per match and in total; past it the adapter is refused (422).
The per-module rank and alpha that result are written into ``adapter.json``
(``lora_modules``), so loading a stored version never matches a pattern again.

PEFT's rule (``peft.utils.other.get_pattern_key``): a module takes the value of the first
key for which ``(.*\\.)?({key})$`` matches its name; else ``r`` / ``lora_alpha``.
The tensors' rank must equal that rank (PEFT would refuse to load them otherwise).
"""

from __future__ import annotations

import math
import time

import regex

from adapters.errors import InvalidAdapter
from adapters.lora.peft_targets import check_targets

MATCH_TIMEOUT_S = 0.05  # one key against one module name (a normal key takes microseconds)
TOTAL_BUDGET_S = 2.0  # every key against every module name
MANIFEST_KEY = "lora_modules"  # {module name in the file: {"r": int, "alpha": float}}


def _positive_int(v) -> bool:
    return isinstance(v, int) and not isinstance(v, bool) and v >= 1


def _finite(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def _matcher(field_name: str, patterns: dict, deadline: float):
    compiled = []
    for key in patterns:
        try:
            compiled.append((key, regex.compile(rf"(.*\.)?({key})$")))  # PEFT's own form
        except (regex.error, TypeError, ValueError, OverflowError, RecursionError, MemoryError) as exc:
            raise InvalidAdapter(f"adapter_config.json: {field_name} key {key[:64]!r} is not a "
                                 f"valid regular expression ({exc})") from exc

    def value_for(name: str, default):
        for key, rx in compiled:
            left = deadline - time.monotonic()
            try:
                if left <= 0:
                    raise TimeoutError
                if rx.match(name, timeout=min(MATCH_TIMEOUT_S, left), concurrent=True):
                    return patterns[key]
            except TimeoutError:
                raise InvalidAdapter(
                    f"adapter_config.json: {field_name} key {key[:64]!r} took longer than "
                    f"{MATCH_TIMEOUT_S}s to match module {name!r} (or all keys over "
                    f"{TOTAL_BUDGET_S}s): write plain module names or simple patterns") from None
        return default
    return value_for


def resolve_modules(config: dict, orig_names: list[str], ranks: dict[str, int]) -> dict[str, dict]:
    """``{module: {"r", "alpha"}}`` for every adapted module, patterns matched with a bound;
    raise :class:`InvalidAdapter` listing every module whose tensors' rank is not its ``r``.

    >>> resolve_modules({"r": 4, "lora_alpha": 8, "alpha_pattern": {"value": 16}},
    ...                 ["l0.query", "l0.value"], {"l0.query": 4, "l0.value": 4})
    {'l0.query': {'r': 4, 'alpha': 8}, 'l0.value': {'r': 4, 'alpha': 16}}
    """
    check_targets(config, orig_names)  # modules PEFT would not adapt: refused, naming the field
    deadline = time.monotonic() + TOTAL_BUDGET_S
    rank_of = _matcher("rank_pattern", config.get("rank_pattern") or {}, deadline)
    alpha_of = _matcher("alpha_pattern", config.get("alpha_pattern") or {}, deadline)
    r, alpha = config.get("r", 8), config.get("lora_alpha", 8)
    out, problems = {}, []
    for name in orig_names:
        mr, ma = rank_of(name, r), alpha_of(name, alpha)
        if not _positive_int(mr):
            problems.append(f"{name}: r must be a positive integer, got {mr!r}")
        elif mr != ranks[name]:
            problems.append(f"{name}: the tensors have rank {ranks[name]} but r "
                            f"{'(rank_pattern) ' if mr != r else ''}is {mr}")
        if not _finite(ma):
            problems.append(f"{name}: lora_alpha must be a finite number, got {ma!r}")
        out[name] = {"r": mr, "alpha": ma}
    InvalidAdapter.collect(problems[:10], "adapter_config.json")
    return out


def stored_modules(value, orig_names: list[str], ranks: dict[str, int]) -> dict[str, dict] | None:
    """The ``lora_modules`` a registration wrote, if present and consistent; else None."""
    if not isinstance(value, dict) or set(value) != set(orig_names):
        return None
    for name, v in value.items():
        if not (isinstance(v, dict) and _positive_int(v.get("r")) and v["r"] == ranks[name]
                and _finite(v.get("alpha"))):
            return None
    return value


def resolve_plan(config: dict, header: dict, plan, stored=None) -> dict[str, dict]:
    """Give every module of a :class:`~adapters.lora.weights.LoraPlan` its ``r`` and
    ``alpha``: from ``stored`` (the ``lora_modules`` written at registration) when it is
    consistent, else by matching the patterns with a bound. Returns the per-module values
    to store.
    """
    orig = [p["orig"] for p in plan.modules.values()]
    ranks = {p["orig"]: int(header[p["A"]][1][0]) for p in plan.modules.values()}
    mods = stored_modules(stored, orig, ranks) if stored is not None else None
    if mods is None:
        mods = resolve_modules(config, orig, ranks)
    for p in plan.modules.values():
        p["r"], p["alpha"] = mods[p["orig"]]["r"], mods[p["orig"]]["alpha"]
    return mods


def with_lora_modules(manifest, config: dict, header: dict, plan, fresh: bool):
    """``manifest`` with its ``lora_modules`` (see :func:`resolve_plan`). ``fresh`` (a
    registration) always resolves from ``adapter_config.json``, ignoring any uploaded value."""
    stored = None if fresh else (manifest.model_extra or {}).get(MANIFEST_KEY)
    mods = resolve_plan(config, header, plan, stored)
    if stored is mods:
        return manifest
    return type(manifest).model_validate({**manifest.model_dump(), MANIFEST_KEY: mods})
