"""Hypothesis over the round-2 attack classes that are not archives (those are in
``test_fuzz_archive.py``): texts against the real tokenizer, label lists, pattern keys.

Properties: ``check_texts`` either refuses a text with :class:`InvalidInput` or the
backbone's tokenizer accepts it (so nothing it lets through can fail a shared batch);
labels accepted by the registration field are accepted in ``adapter.json`` and vice versa;
any pattern key is resolved or refused with :class:`InvalidAdapter` within the bound.
"""

from __future__ import annotations

import os
import time

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from adapters.errors import InvalidAdapter, InvalidInput
from adapters.format import BackboneRef, HeadSpec, Manifest
from adapters.lora.patterns import TOTAL_BUDGET_S, resolve_modules
from adapters.plugin_checks import validate_manifest
from service.inputs import InputLimits, check_registration_fields, check_texts

FUZZ = settings(max_examples=int(os.environ.get("TASKSWAP_FUZZ_EXAMPLES", "300")), deadline=None,
                suppress_health_check=list(HealthCheck))
ANY_CHAR = st.characters(min_codepoint=0, max_codepoint=0x10FFFF)  # surrogates included


@FUZZ
@given(st.lists(st.text(ANY_CHAR, min_size=1, max_size=200), min_size=1, max_size=4))
def test_texts_pass_validation_only_if_the_tokenizer_takes_them(text_backbone, texts):
    try:
        ok = check_texts(texts, InputLimits())
    except InvalidInput as exc:
        assert "texts[" in exc.message
        return
    text_backbone.preprocess(ok)  # must not raise


@FUZZ
@given(st.lists(st.text(ANY_CHAR, max_size=140), min_size=0, max_size=5))
def test_labels_follow_one_rule_in_the_field_and_in_the_manifest(labels):
    try:
        check_registration_fields(None, labels)
        field_ok = True
    except InvalidInput:
        field_ok = False
    try:
        validate_manifest(Manifest(name="t", kind="head", task_type="multi_label", labels=labels,
                                backbone=BackboneRef(name="text"), head=HeadSpec(pooling="mean", input_dim=4)))
        manifest_ok = True
    except ValueError:  # pydantic's ValidationError
        manifest_ok = False
    assert field_ok == manifest_ok, labels


MODULES = [f"bert.encoder.layer.{i}.attention.self.{m}" for i in range(6) for m in ("query", "value")]
REGEX_ATOMS = st.sampled_from([".", ".*", ".*?", "(?:.*)", "(.*)*", "\\d", "\\w+", "query", "value",
                               "layer", "\\.", "a|b", "[a-z]+", "{9}", "{1,32000}", "+", "(?:", ")",
                               "Z", "$", "^", "(?=.*)", "\\1", "(a)"])


@FUZZ
@given(st.lists(REGEX_ATOMS, min_size=1, max_size=8).map("".join), st.integers(1, 8))
def test_any_pattern_key_is_resolved_or_refused_within_the_bound(key, value):
    start = time.monotonic()
    try:
        resolve_modules({"r": 4, "lora_alpha": 8, "alpha_pattern": {key: value}}, MODULES,
                        {m: 4 for m in MODULES})
    except InvalidAdapter:
        pass
    # the bound (2 s) plus slack for a loaded 2-core machine: the matcher's timeout is CPU time
    assert time.monotonic() - start < 4 * TOTAL_BUDGET_S + 2


@pytest.mark.parametrize("key", [r"(?:.*?){20}\d\d", r"(.*){1,32000}[bc]"])
def test_known_catastrophic_keys_are_refused(key):
    with pytest.raises(InvalidAdapter, match="took longer"):
        resolve_modules({"alpha_pattern": {key: 4}}, MODULES, {m: 8 for m in MODULES})
