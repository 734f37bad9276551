"""Adapters whose scores overflow are refused at registration (a dry-run forward), and a
response never carries a NaN/infinite score (issue "Hardening, round 2", item 5)."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file, save_file

from adapters.dryrun import check_rows_finite
from adapters.errors import NonFiniteOutput
from adapters.runtime import TaskResult
from adapters.tasks import RowResult
from factories import head_adapter, peft_lora_dir


def huge_head(folder):
    t = load_file(folder / "head.safetensors")
    save_file({k: torch.full_like(v, 3e38) for k, v in t.items()}, folder / "head.safetensors")
    return folder


def test_a_head_with_huge_finite_weights_is_refused(tmp_path, registry, text_backbone, one_torch_thread):
    folder = huge_head(head_adapter(tmp_path / "h", text_backbone, "h"))
    with pytest.raises(NonFiniteOutput, match="non-finite"):
        registry.register(folder)
    assert registry.store.list_aliases() == {}


def test_a_lora_with_a_huge_alpha_is_refused(tmp_path, registry, tiny_dir, one_torch_thread):
    folder = peft_lora_dir(tmp_path / "p", str(tiny_dir / "text"))
    cfg = json.loads((folder / "adapter_config.json").read_text())
    (folder / "adapter_config.json").write_text(json.dumps({**cfg, "lora_alpha": 1e38}))
    with pytest.raises(NonFiniteOutput):
        registry.register(folder, name="p")
    assert registry.store.list_aliases() == {}


def test_an_ordinary_adapter_passes_the_dry_run(tmp_path, registry, vision_backbone, one_torch_thread):
    assert registry.register(head_adapter(tmp_path / "v", vision_backbone, "v")).version


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), -float("inf")])
def test_a_non_finite_score_never_reaches_a_response(bad):
    r = TaskResult("t", "abc", "head", "single_label",
                   [RowResult(label="a", score=0.5, scores={"a": 0.5, "b": 0.5}),
                    RowResult(label="a", score=bad, scores={"a": bad, "b": 0.0})])
    with pytest.raises(NonFiniteOutput, match="input 1"):
        check_rows_finite(r, "test")
    values = TaskResult("r", "abc", "head", "regression", [RowResult(values={"pleasant": bad})])
    with pytest.raises(NonFiniteOutput, match="pleasant"):
        check_rows_finite(values, "test")
