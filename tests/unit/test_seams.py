"""The two seams and one owner of state: task types and adapter kinds are looked up in
one table each; the regression task type end to end through the core (manifest, PEFT,
mixed batches); eviction frees every derived cache; registration returns the version
the store's compare-and-swap replaced, with optimistic concurrency (``expected``)."""

from __future__ import annotations

import gc
import json
import threading

import pytest
import torch

from adapters import heads_batched
from adapters.errors import Conflict, InvalidAdapter
from adapters.format import BackboneRef, HeadSpec, Manifest, write_head_adapter
from adapters.heads import Head
from adapters.kinds import KINDS
from adapters.lora import batch as lora_batch
from adapters.plugin_checks import manifest_from_json
from adapters.registry import Registry
from adapters.runtime import Runtime
from adapters.store import open_store
from adapters.tasks import TASK_TYPES, output_names
from support.factories import head_adapter, peft_lora_dir, peft_seq_cls_model, regression_head

TEXTS = ["good movie", "the plot was awful and boring", "fun fun fun", "a very sad film", "happy"]
TOL = 1e-4


def values(result, outputs) -> torch.Tensor:
    return torch.tensor([[r.values[o] for o in outputs] for r in result.rows], dtype=torch.float64)


# ---- the tables ---------------------------------------------------------------------------
def test_tables_name_every_kind_and_task_type():
    assert set(KINDS) == {"head", "lora", "top_layers", "prompt", "shared_lora", "multitask"}
    # rows of a shared adaptation and of the tasks riding on it join the one LoRA bucket
    assert KINDS["shared_lora"].lora is KINDS["lora"] and KINDS["multitask"].lora is KINDS["lora"]
    assert {"single_label", "multi_label", "regression"} <= set(TASK_TYPES)
    assert KINDS["lora"].evictable and not KINDS["head"].evictable
    assert KINDS["head"].trunk_pass is KINDS["lora"].trunk_pass  # heads and LoRA share a forward
    assert KINDS["top_layers"].trunk_pass is KINDS["head"].trunk_pass  # ...and top layers below the split


def test_manifest_outputs_are_described_by_the_task_type():
    base = {"name": "t", "kind": "head", "backbone": {"name": "text"},
            "head": {"pooling": "mean", "input_dim": 4}}
    assert output_names(manifest_from_json({**base, "task_type": "regression", "outputs": ["a", "b"]})) == ["a", "b"]
    with pytest.raises(InvalidAdapter, match="needs 'outputs'"):
        manifest_from_json({**base, "task_type": "regression"})
    with pytest.raises(InvalidAdapter, match="at least 2 labels"):
        manifest_from_json({**base, "labels": ["only"]})
    with pytest.raises(InvalidAdapter, match="task_type 'ranking' is unknown"):
        manifest_from_json({**base, "task_type": "ranking", "labels": ["a", "b"]})
    with pytest.raises(InvalidAdapter, match="kind 'adapterx' is unknown"):
        manifest_from_json({**base, "kind": "adapterx", "labels": ["a", "b"]})
    with pytest.raises(InvalidAdapter, match="target_scaling"):
        manifest_from_json({**base, "task_type": "regression", "outputs": ["a"],
                          "target_scaling": {"a": {"mean": 0, "std": -1}}})


# ---- regression through the runtime --------------------------------------------------------
def test_regression_values_are_the_scaled_head_outputs(tmp_path, registry, text_backbone):
    scaling = {"valence": {"mean": 5.0, "std": 2.0}, "arousal": {"mean": -1.0, "std": 0.5}}
    folder, head = regression_head(tmp_path / "r", text_backbone, "affect", ("valence", "arousal"), scaling)
    loaded = registry.register(folder)
    assert loaded.manifest.task_type == "regression" and registry.show("affect")["outputs"] == ["valence", "arousal"]
    rt = Runtime(registry)
    res = rt.run([rt.prepare(["affect"], TEXTS, "text")])[0][0]
    assert res.task_type == "regression" and res.rows[0].label is None
    with torch.no_grad():
        raw = head(text_backbone.embed(TEXTS, "mean")).double()
    want = raw * torch.tensor([2.0, 0.5], dtype=torch.float64) + torch.tensor([5.0, -1.0], dtype=torch.float64)
    assert torch.allclose(values(res, ["valence", "arousal"]), want, atol=TOL)


def test_regression_rows_share_the_trunk_with_classification_rows(tmp_path, registry, text_backbone):
    src = str(text_backbone.source_path)
    registry.register(regression_head(tmp_path / "r1", text_backbone, "r1", ("y",), seed=1)[0])
    registry.register(regression_head(tmp_path / "r2", text_backbone, "r2", ("a", "b"), seed=2, hidden=(8,))[0])
    registry.register(head_adapter(tmp_path / "h", text_backbone, "h", seed=3))
    registry.register(peft_lora_dir(tmp_path / "l", src, seed=4), name="l")
    registry.register(peft_lora_dir(tmp_path / "lr", src, num_labels=1, seed=5), name="lr")
    rt = Runtime(registry)
    alone = {t: rt.run([rt.prepare([t], TEXTS, "text")])[0][0] for t in ("r1", "r2", "h", "l", "lr")}
    mixed = rt.run([rt.prepare(["r1", "h", "l"], TEXTS[:2], "text"),
                    rt.prepare(["lr", "r2", "h"], TEXTS, "text"),
                    rt.prepare(["r2", "r1"], TEXTS[2:], "text")])
    out = lambda res: (values(res, list(res.rows[0].values)) if res.rows[0].values is not None  # noqa: E731
                       else torch.tensor([list(r.scores.values()) for r in res.rows], dtype=torch.float64))
    for res, sl in ((mixed[0][0], slice(0, 2)), (mixed[0][1], slice(0, 2)), (mixed[0][2], slice(0, 2)),
                    (mixed[1][0], slice(None)), (mixed[1][1], slice(None)), (mixed[1][2], slice(None)),
                    (mixed[2][0], slice(2, None)), (mixed[2][1], slice(2, None))):
        assert torch.allclose(out(res), out(alone[res.task])[sl], atol=TOL), res.task


@pytest.mark.parametrize("problem_type", [None, "regression"])
def test_plain_peft_regression_adapter_matches_peft(tmp_path, registry, text_backbone, problem_type):
    """A PEFT SEQ_CLS adapter with num_labels=1 is a regression task and scores as PEFT does."""
    src = str(text_backbone.source_path)
    folder = peft_lora_dir(tmp_path / "p", src, num_labels=1, seed=7)
    if problem_type is not None:  # as transformers' config would say it
        cfg = json.loads((folder / "adapter_config.json").read_text())
        (folder / "adapter_config.json").write_text(json.dumps({**cfg, "problem_type": problem_type}))
    loaded = registry.register(folder, name="peft-reg")
    assert (loaded.kind, loaded.manifest.task_type, loaded.manifest.outputs) == ("lora", "regression", ["value"])
    rt = Runtime(registry)
    ours = values(rt.run([rt.prepare(["peft-reg"], TEXTS, "text")])[0][0], ["value"])
    model = peft_seq_cls_model(src, 1, seed=7)
    enc = text_backbone.preprocessor.tokenizer(TEXTS, padding=True, return_tensors="pt")
    with torch.no_grad():
        ref = model(**enc).logits.double()  # [n, 1]: PEFT's own regression output
    assert torch.allclose(ours, ref, atol=TOL)
    # output names given at registration rename the single output
    loaded = registry.register(folder, name="peft-reg2", labels=["score"])
    assert loaded.manifest.outputs == ["score"]


# ---- one owner of state: eviction frees every derived cache --------------------------------
def _live_tensor_bytes() -> int:
    gc.collect()
    seen, total = set(), 0
    for o in gc.get_objects():
        if isinstance(o, torch.Tensor) and not o.is_meta:
            try:
                st = o.untyped_storage()
            except RuntimeError:
                continue
            if st.data_ptr() not in seen:
                seen.add(st.data_ptr())
                total += st.nbytes()
    return total


def test_evicting_every_lora_returns_tensor_bytes_to_baseline(tmp_path, text_backbone, one_torch_thread):
    src = str(text_backbone.source_path)
    dirs = [peft_lora_dir(tmp_path / f"l{i}", src, seed=i, r=8) for i in range(4)]
    heads = [head_adapter(tmp_path / f"h{i}", text_backbone, f"h{i}", seed=i) for i in range(3)]
    reg = Registry(open_store(str(tmp_path / "store")), {"text": text_backbone}, adapter_budget_bytes=1 << 30)
    rt = Runtime(reg)
    lora_batch.MERGED.clear(), lora_batch.LORA_STACKS.clear(), heads_batched.HEAD_STACKS.clear()
    baseline = _live_tensor_bytes()
    for i, d in enumerate(dirs):
        reg.register(d, name=f"l{i}")
    for h in heads:
        reg.register(h)
    # build every derived cache: factor stacks (mixed), merged weights (one LoRA), head stacks
    rt.run([rt.prepare([f"l{i}"], TEXTS[:2], "text") for i in range(4)])
    rt.run([rt.prepare(["l0"], TEXTS, "text")])
    rt.run([rt.prepare(["h0", "h1", "h2"], TEXTS, "text"), rt.prepare(["h1"], TEXTS[:1], "text")])
    assert len(lora_batch.LORA_STACKS) and len(lora_batch.MERGED) and len(heads_batched.HEAD_STACKS)
    loaded = _live_tensor_bytes()
    sizes = [reg.resolve(f"l{i}").nbytes for i in range(4)]
    assert loaded - baseline >= sum(sizes)
    reg.adapter_budget_bytes = 0  # every LoRA is evicted through the one path
    with reg._lock:
        reg._evict_over_budget(keep=None)
    assert reg.resident_loras() == 0
    assert len(lora_batch.LORA_STACKS) == 0 and len(lora_batch.MERGED) == 0
    for i in range(3):
        reg.delete(f"h{i}")
    assert len(heads_batched.HEAD_STACKS) == 0
    # every LoRA evicted, every head deleted: not one adapter's tensors are left alive
    assert _live_tensor_bytes() - baseline < min(sizes) // 2
    for i in range(4):
        reg.delete(f"l{i}")
    assert _live_tensor_bytes() - baseline < 4096  # back to baseline (allocator noise only)


# ---- registration: previous version from the CAS, optimistic concurrency ------------------
def test_previous_version_comes_from_the_compare_and_swap(tmp_path, text_backbone):
    """Two registries (two replicas) over one store register the same task at once: the
    versions each says it replaced form one chain, never the same one twice."""
    store_dir = str(tmp_path / "store")
    regs = [Registry(open_store(store_dir), {"text": text_backbone}) for _ in range(2)]
    v0 = regs[0].register(head_adapter(tmp_path / "v0", text_backbone, "mood", seed=0)).version
    folders = [head_adapter(tmp_path / f"v{i}", text_backbone, "mood", seed=i) for i in (1, 2)]
    results, barrier = [None, None], threading.Barrier(2)

    def go(i):
        barrier.wait()
        results[i] = regs[i].register_replacing(folders[i])
    threads = [threading.Thread(target=go, args=(i,)) for i in range(2)]
    [t.start() for t in threads]
    [t.join() for t in threads]
    (a, pa), (b, pb) = results
    assert {pa, pb} == {v0, a.version} or {pa, pb} == {v0, b.version}
    assert pa != pb
    final = open_store(store_dir).get_alias("mood").active
    assert final in (a.version, b.version) and (pa if final == b.version else pb) == v0


def test_expected_version_conflicts(tmp_path, registry, text_backbone):
    v1, prev = registry.register_replacing(head_adapter(tmp_path / "a", text_backbone, "t", seed=1))
    assert prev is None
    v2, prev = registry.register_replacing(head_adapter(tmp_path / "b", text_backbone, "t", seed=2),
                                           expected=v1.version[:10])
    assert prev == v1.version
    with pytest.raises(Conflict, match="not the expected"):
        registry.register(head_adapter(tmp_path / "c", text_backbone, "t", seed=3), expected=v1.version)
    with pytest.raises(Conflict):
        registry.activate("t", v1.version, expected=v1.version)
    with pytest.raises(Conflict):
        registry.delete("t", expected=v1.version)
    with pytest.raises(Conflict, match="not registered"):
        registry.register(head_adapter(tmp_path / "d", text_backbone, "new", seed=3), expected=v1.version)
    registry.activate("t", v1.version, expected=v2.version)
    assert registry.show("t")["active_version"] == v1.version
    registry.delete("t", expected=v1.version)
    assert registry.list() == []
