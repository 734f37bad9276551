"""Bounds on an uploaded regular expression *before* it is compiled.

The ``regex`` package expands counted repetition when it compiles: ``(?:a{1000}){4000}``
took 1.5 s and ``(a{65535}){65535}`` raised ``MemoryError`` after 4.3 s and 3 GiB here.
A timeout on matching does not help with that. So a ``rank_pattern`` / ``alpha_pattern``
key is first measured by this small scanner (no regex engine involved): its length, its
largest repetition count, and the size it would expand to (each counted repetition
multiplies what it repeats; alternatives add up, so the estimate only errs upwards).
Keys within these bounds are then compiled in a child process with a time and memory limit
(:mod:`adapters.lora.pattern_compile`).
"""

from __future__ import annotations

MAX_KEY_CHARS = 256
MAX_COUNT = 1000  # the largest n in {n} / {m,n}
MAX_EXPANDED = 10_000  # atoms once every counted repetition is unrolled


class PatternTooCostly(ValueError):
    """The key would cost too much to compile; the message says why."""


def _count_at(pattern: str, i: int) -> tuple[int, int] | None:
    """``(largest count, index after '}')`` if a counted repetition starts at ``i``."""
    if i >= len(pattern) or pattern[i] != "{":
        return None
    end = pattern.find("}", i)
    if end < 0:
        return None
    body = pattern[i + 1:end]
    parts = body.split(",")
    if len(parts) > 2 or not all(p.strip().isdigit() or p.strip() == "" for p in parts) \
            or not parts[0].strip() + (parts[1].strip() if len(parts) > 1 else ""):
        return None  # not a quantifier: a literal '{' (as re and regex read it)
    return max(int(p) for p in parts if p.strip()), end + 1


def _scan(pattern: str, i: int, depth: int) -> tuple[int, int, int]:
    """Scan a sequence from ``i`` to its closing ``)`` (or the end):
    ``(expanded size, largest count, index after it)``."""
    total, branch, largest, last = 0, 0, 0, 0
    while i < len(pattern):
        c = pattern[i]
        if c == ")":
            if depth == 0:
                raise PatternTooCostly("has an unbalanced ')'")
            return total + branch, largest, i + 1
        if c == "|":
            total, branch, last = total + branch, 0, 0
            i += 1
            continue
        if c == "\\":
            last, i = 1, i + 2
        elif c == "[":
            j = i + 1
            if j < len(pattern) and pattern[j] == "^":
                j += 1
            if j < len(pattern) and pattern[j] == "]":
                j += 1
            while j < len(pattern) and pattern[j] != "]":
                j += 2 if pattern[j] == "\\" else 1
            last, i = 1, j + 1
        elif c == "(":
            size, inner, i = _scan(pattern, i + 1, depth + 1)
            largest, last = max(largest, inner), max(size, 1)
        elif c in "*+?":
            i += 1
            continue  # a loop, not an unrolled copy: costs nothing more to compile
        else:
            count = _count_at(pattern, i)
            if count is None:
                last, i = 1, i + 1
            else:
                n, i = count
                largest = max(largest, n)
                branch += last * (max(n, 1) - 1)  # the copy counted once already
                if total + branch > MAX_EXPANDED:
                    raise PatternTooCostly(
                        f"expands to more than {MAX_EXPANDED} pieces once its counted "
                        f"repetitions are unrolled (nested or large {{n}})")
                last = last * max(n, 1)
                continue
        branch += last
    if depth:
        raise PatternTooCostly("has an unbalanced '('")
    return total + branch, largest, i


def check_key(key) -> None:
    """Raise :class:`PatternTooCostly` if ``key`` is not a string within the bounds.

    >>> check_key("encoder.layer.0.attention.self.query")
    >>> try:
    ...     check_key("(?:a{1000}){4000}")
    ... except PatternTooCostly as exc:
    ...     print(exc)
    expands to more than 10000 pieces once its counted repetitions are unrolled (nested or large {n})
    """
    if not isinstance(key, str):
        raise PatternTooCostly("is not a string")
    if len(key) > MAX_KEY_CHARS:
        raise PatternTooCostly(f"is {len(key)} characters long (at most {MAX_KEY_CHARS})")
    _, largest, _ = _scan(key, 0, 0)
    if largest > MAX_COUNT:
        raise PatternTooCostly(f"has a repetition count of {largest} (at most {MAX_COUNT})")
