"""Which modules PEFT itself would adapt, from ``adapter_config.json``: ``target_modules``,
``exclude_modules``, ``layers_to_transform`` and ``layers_pattern``.

PEFT attaches LoRA only to the modules its config selects and ignores any other
``lora_A``/``lora_B`` tensors in the file; serving those tensors would answer with other
scores than PEFT's. So every module with tensors must be one PEFT selects, else the adapter
is refused (422) naming the field that leaves it out. The rule is PEFT's
(``peft.tuners.tuners_utils.check_target_module_exists``, PEFT 0.21), rewritten here
because its patterns are the uploader's regular expressions: they are bounded
(:mod:`adapters.lora.pattern_compile`) and matched with the ``regex`` package's timeout.
``all-linear`` selects every Linear (the file's modules are checked to be Linear or Conv2d
elsewhere); PEFT then also skips the output layer, which an encoder backbone has none of.
"""

from __future__ import annotations

import regex

from adapters.errors import InvalidAdapter
from adapters.lora.pattern_compile import check_pattern_keys

MATCH_TIMEOUT_S = 0.05


def _fullmatch(pattern: str, key: str, field: str) -> bool:
    try:
        return regex.fullmatch(pattern, key, timeout=MATCH_TIMEOUT_S) is not None
    except TimeoutError:
        raise InvalidAdapter(f"adapter_config.json: {field} {pattern[:64]!r} took longer than "
                             f"{MATCH_TIMEOUT_S}s to match module {key!r}") from None


def _listed(names, key: str) -> bool:
    return key in names or any(key.endswith(f".{n}") for n in names)


def _layer_index(config: dict, key: str) -> int | None:
    patterns = config.get("layers_pattern")
    if not patterns:
        found = regex.match(r".*?\.[^.]*\.(?P<idx>\d+)\.", key)
    else:
        found = None
        for p in [patterns] if isinstance(patterns, str) else patterns:
            found = regex.match(rf"(?:^|.*?\.){p}\.(?P<idx>\d+)\.", key,  # PEFT's own form
                                timeout=MATCH_TIMEOUT_S)
            if found is not None:
                break
    return int(found.group("idx")) if found else None


def why_not_targeted(config: dict, key: str) -> str | None:
    """The field for which PEFT would not adapt module ``key`` (None: PEFT adapts it)."""
    exclude = config.get("exclude_modules")
    if exclude and (_fullmatch(exclude, key, "exclude_modules") if isinstance(exclude, str)
                    else _listed(exclude, key)):
        return "exclude_modules"
    targets = config.get("target_modules")
    if targets is None or targets == "all-linear":
        return None  # None: PEFT's per-model defaults, which are what it saved tensors for
    if isinstance(targets, str):
        return None if _fullmatch(targets, key, "target_modules") else "target_modules"
    if key in targets:
        return None  # named exactly: PEFT then skips the layer check too
    if not _listed(targets, key):
        return "target_modules"
    layers = config.get("layers_to_transform")
    if layers is None or layers == []:
        return None
    try:
        index = _layer_index(config, key)
    except TimeoutError:
        raise InvalidAdapter(f"adapter_config.json: layers_pattern took longer than "
                             f"{MATCH_TIMEOUT_S}s to match module {key!r}") from None
    wanted = [layers] if isinstance(layers, int) else layers
    if index is None:
        return "layers_pattern" if config.get("layers_pattern") else "layers_to_transform"
    return None if index in wanted else "layers_to_transform"


def config_problems(config: dict) -> list[str]:
    """Type and cost checks of the four fields, before any module is matched."""
    problems = []
    for field in ("target_modules", "exclude_modules"):
        v = config.get(field)
        if isinstance(v, str) and v != "all-linear":
            problems += check_pattern_keys(field, [v])
        elif v is not None and not (isinstance(v, list) and all(isinstance(x, str) for x in v)):
            problems.append(f"{field} must be a string (a regular expression) or a list of module names")
    layers = config.get("layers_to_transform")
    if layers is not None and not (isinstance(layers, int) and not isinstance(layers, bool) or (
            isinstance(layers, list) and all(isinstance(x, int) and not isinstance(x, bool) for x in layers))):
        problems.append("layers_to_transform must be an integer or a list of integers")
    pattern = config.get("layers_pattern")
    if pattern is not None and not (isinstance(pattern, str) or (
            isinstance(pattern, list) and all(isinstance(x, str) for x in pattern))):
        problems.append("layers_pattern must be a string or a list of strings")
    elif pattern:
        problems += check_pattern_keys("layers_pattern", [pattern] if isinstance(pattern, str) else pattern)
    return problems


def check_targets(config: dict, module_names: list[str]) -> None:
    """Raise :class:`InvalidAdapter` naming the field when the file holds LoRA weights for a
    module PEFT's config would leave out (PEFT would ignore them: other scores)."""
    InvalidAdapter.collect(config_problems(config), "adapter_config.json")
    problems = []
    for name in module_names:
        field = why_not_targeted(config, name)
        if field is not None:
            problems.append(f"{field}: the file has LoRA weights for {name!r}, which PEFT would not "
                            f"adapt with this {field} (it would ignore them)")
    InvalidAdapter.collect(problems[:10], "adapter_config.json")
