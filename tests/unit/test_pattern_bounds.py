"""Uploaded PEFT pattern keys: measured before compiling, compiled in a bounded child."""

from __future__ import annotations

import pytest

from adapters.lora import pattern_compile
from adapters.lora.pattern_bounds import PatternTooCostly, check_key
from adapters.lora.pattern_compile import check_pattern_keys


@pytest.mark.parametrize("key", [r"(?:a{1000}){4000}", r"(a{65535}){65535}", "x{2000}",
                                 "(?:(?:a{30}){30}){30}", "a" * 257, "((a)", 7])
def test_costly_or_malformed_keys_are_refused_before_compiling(key):
    with pytest.raises(PatternTooCostly):
        check_key(key)


@pytest.mark.parametrize("key", ["query", r"(.*\.)?value", r"layer\.\d{1,2}\.query",
                                 "(a|b){3}", "[a{]{3}", r"encoder\.layer\.(0|1)\.attention"])
def test_ordinary_keys_pass_the_bounds(key):
    check_key(key)


def test_the_child_bounds_memory_when_the_measure_is_bypassed():
    """The compile child's own limit holds even for a key the scanner would have refused."""
    problems = pattern_compile._compile_in_child("rank_pattern", ["query", r"(a{65535}){65535}"])
    assert problems == ["rank_pattern key '(a{65535}){65535}' needs more memory than allowed "
                        "to compile"]


def test_the_child_bounds_time(monkeypatch):
    monkeypatch.setattr(pattern_compile, "COMPILE_TIMEOUT_S", 0.3)
    monkeypatch.setattr(pattern_compile, "COMPILE_MEMORY_BYTES", 8 << 30)
    problems = pattern_compile._compile_in_child("alpha_pattern", ["ok", r"(?:a{1000}){4000}"])
    assert problems == ["alpha_pattern key '(?:a{1000}){4000}' took longer than 0.3 s to compile"]


def test_invalid_and_valid_keys_are_told_apart():
    assert check_pattern_keys("rank_pattern", ["query", "value"]) == []
    [problem] = check_pattern_keys("rank_pattern", ["query", "a**"])
    assert problem.startswith("rank_pattern key 'a**' is not a valid regular expression")
