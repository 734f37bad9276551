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
from support.factories import head_adapter, peft_lora_dir
from support.server import server_factory  # noqa: F401  (pytest fixture)


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


# ---- embeddings: a backbone whose features overflow on some inputs ----------------------------
POISON = "terrible"  # a word of the tiny vocabulary; its embedding row is set to 3e38


def poisoned_text_backbone(tiny_dir, folder):
    """A copy of the tiny text backbone whose features are NaN for any text holding POISON
    (and finite for every other text: BERT rows do not mix)."""
    import shutil
    from pathlib import Path

    from adapters.backbones.base import BackboneSpec, load_backbone
    from adapters.backbones.tiny import tiny_backbone_spec
    spec = tiny_backbone_spec("text", tiny_dir / "text")
    folder = Path(folder)
    shutil.copytree(spec.source, folder)
    bb = load_backbone(spec)
    token = int(bb.preprocess([POISON])["input_ids"][0, 1])  # [CLS] POISON [SEP]
    t = load_file(folder / "model.safetensors")
    t["embeddings.word_embeddings.weight"][token] = 3e38
    save_file(t, folder / "model.safetensors", metadata={"format": "pt"})
    return load_backbone(BackboneSpec(name="text", source=str(folder), max_length=spec.max_length))


def v2_body(texts: list[str]) -> dict:
    return {"inputs": [{"name": "text", "shape": [len(texts)], "datatype": "BYTES", "data": texts}]}


@pytest.mark.server
def test_non_finite_embeddings_or_scores_are_a_422_for_their_request_only(server_factory, tiny_dir, tmp_path):
    import base64
    from concurrent.futures import ThreadPoolExecutor

    import numpy as np

    from adapters.format.archive import make_archive
    from support.http_helpers import assert_error
    bb = poisoned_text_backbone(tiny_dir, tmp_path / "poisoned")
    srv = server_factory.start(store=tmp_path / "store", backbones=[
        {"name": "text", "source": bb.spec.source, "max_length": bb.spec.max_length}])
    assert srv.register_archive(make_archive(head_adapter(tmp_path / "h", bb, "h"))).status_code == 201
    bad, good = [f"a {POISON} movie", "good"], ["good movie", "the plot"]
    calls = {  # (method, path, body) -> does it hold the poisoned text
        "embed-bad": ("/embed", {"texts": bad}), "embed-good": ("/embed", {"texts": good}),
        "openai-bad": ("/v1/embeddings", {"model": "text", "input": bad}),
        "openai-b64-bad": ("/v1/embeddings", {"model": "text", "input": bad, "encoding_format": "base64"}),
        "openai-good": ("/v1/embeddings", {"model": "text", "input": good, "encoding_format": "base64"}),
        "predict-bad": ("/predict", {"task": "h", "texts": bad, "embed": True}),
        "predict-good": ("/predict", {"task": "h", "texts": good, "embed": True}),
        "v2-bad": ("/v2/models/h/infer", v2_body(bad)), "v2-good": ("/v2/models/h/infer", v2_body(good)),
    }
    for _ in range(2):  # concurrently, so they share batches with each other
        with ThreadPoolExecutor(len(calls)) as pool:
            got = dict(zip(calls, pool.map(lambda c: srv.new_client().post(c[0], json=c[1]), calls.values())))
        for key, r in got.items():
            json.loads(r.text, parse_constant=lambda c: pytest.fail(f"{key}: {c} in {r.text[:200]}"))
            if key.endswith("good"):
                assert r.status_code == 200, (key, r.text)
                continue
            assert r.status_code == 422, (key, r.text)
            if key.startswith("v2"):
                assert "non-finite" in r.json()["error"], r.text
            elif key.startswith("openai"):
                err = r.json()["error"]
                assert err["type"] == "non_finite_output" and "inputs [0]" in err["message"], err
            else:
                body = assert_error(r, 422, "non-finite")
                assert body["error"] == "non_finite_output"
        assert "inputs [0]" in got["embed-bad"].json()["message"]
        assert np.isfinite(np.array(got["embed-good"].json()["embeddings"], dtype=float)).all()  # no null
        assert np.isfinite(np.array(got["predict-good"].json()["embeddings"], dtype=float)).all()
        vec = np.frombuffer(base64.b64decode(got["openai-good"].json()["data"][0]["embedding"]), "<f4")
        assert vec.shape == (bb.hidden_size,) and np.isfinite(vec).all()
    assert srv.internal_errors() == []
