"""Embeddings in the runtime: the rows the heads read, at no extra trunk pass; pinned versions.

- ``embeddings`` equal the pooled trunk features: a head applied to them gives exactly the
  scores the same request returned, and they match the backbone's own ``embed``.
- Asking for embeddings beside tasks, or sending an embeddings-only request in the same
  batch as predictions, adds no trunk forward (counted on the backbone).
- ``resolve_version`` answers with the exact stored version, active or not.
"""

from __future__ import annotations

import pytest
import torch

from adapters.errors import InvalidInput, NotFound
from adapters.runtime import EmbedSpec, Runtime
from support.factories import head_adapter, peft_lora_dir
from support.http_helpers import TEXTS

pytestmark = pytest.mark.usefixtures("one_torch_thread")


class ForwardCounter:
    """Counts trunk forwards of one backbone (restored on exit)."""

    def __init__(self, bb):
        self.bb, self.calls = bb, 0

    def __enter__(self):
        original = self.original = self.bb.forward

        def counted(batch):
            self.calls += 1
            return original(batch)

        self.bb.forward = counted
        return self

    def __exit__(self, *exc):
        del self.bb.forward  # back to the class's method


def test_embeddings_are_the_features_the_heads_read(registry, text_backbone, tmp_path):
    registry.register(head_adapter(tmp_path / "h", text_backbone, "h", labels=("a", "b", "c"), seed=3))
    rt = Runtime(registry)
    res = rt.run([rt.prepare(["h"], TEXTS, "text", embed=EmbedSpec(None, False))])[0]
    emb = res.embeddings  # [inputs, hidden]
    assert emb.shape == (len(TEXTS), text_backbone.hidden_size)
    head = registry.resolve("h").head
    with torch.no_grad():
        again = torch.softmax(head(emb), -1)
    got = torch.tensor([[p.scores[lab] for lab in ("a", "b", "c")] for p in res[0].rows])
    torch.testing.assert_close(again, got, atol=1e-6, rtol=0)
    torch.testing.assert_close(emb, text_backbone.embed(TEXTS, head.spec.pooling), atol=1e-5, rtol=1e-5)


def test_normalize_and_pooling_options(registry, text_backbone, vision_backbone):
    rt = Runtime(registry)
    for pooling in text_backbone.available_poolings:
        e = rt.run([rt.prepare_embed("text", TEXTS, "text", EmbedSpec(pooling, True))])[0].embeddings
        torch.testing.assert_close(e.norm(dim=-1), torch.ones(len(TEXTS)))
        raw = text_backbone.embed(TEXTS, pooling)
        torch.testing.assert_close(e, torch.nn.functional.normalize(raw, dim=-1), atol=1e-5, rtol=1e-5)
    from PIL import Image
    images = [Image.new("RGB", (20, 20), (i * 60, 30, 200 - i * 50)) for i in range(3)]
    e = rt.run([rt.prepare_embed("vision", images, "image", EmbedSpec(None, False))])[0].embeddings
    torch.testing.assert_close(e, vision_backbone.embed(images), atol=1e-5, rtol=1e-5)
    with pytest.raises(InvalidInput, match="pooling 'cls' is not available"):
        rt.prepare_embed("vision", images, "image", EmbedSpec("cls"))
    with pytest.raises(InvalidInput, match="takes texts"):
        rt.prepare_embed("text", images, "image", EmbedSpec())
    with pytest.raises(NotFound, match="backbone 'nope'"):
        rt.prepare_embed("nope", TEXTS, "text", EmbedSpec())


def test_embeddings_beside_tasks_add_no_trunk_pass(registry, text_backbone, tmp_path):
    registry.register(head_adapter(tmp_path / "h1", text_backbone, "h1", seed=1))
    registry.register(head_adapter(tmp_path / "h2", text_backbone, "h2", seed=2, hidden=(8,)))
    rt = Runtime(registry)
    with ForwardCounter(text_backbone) as plain:
        rt.run([rt.prepare(["h1", "h2"], TEXTS, "text")])
    with ForwardCounter(text_backbone) as with_embed:
        res = rt.run([rt.prepare(["h1", "h2"], TEXTS, "text", embed=EmbedSpec())])[0]
    assert plain.calls == with_embed.calls == 1
    assert res.embeddings is not None and len(res) == 2
    # An embeddings-only request batched with a prediction: still one pass for both.
    with ForwardCounter(text_backbone) as mixed:
        out = rt.run([rt.prepare(["h1"], TEXTS[:2], "text"),
                      rt.prepare_embed("text", TEXTS[2:], "text", EmbedSpec(None, False))])
    assert mixed.calls == 1
    assert out[0].embeddings is None and len(out[1]) == 0
    torch.testing.assert_close(out[1].embeddings, text_backbone.embed(TEXTS[2:]), atol=1e-5, rtol=1e-5)
    # Trunk rows the batcher counts: the embedding shares the head tasks' rows.
    assert rt.prepare(["h1", "h2"], TEXTS, "text", embed=EmbedSpec()).rows == len(TEXTS)
    assert rt.prepare_embed("text", TEXTS, "text", EmbedSpec()).rows == len(TEXTS)


def test_embeddings_beside_lora_tasks_are_the_plain_trunk(registry, text_backbone, tmp_path):
    registry.register(peft_lora_dir(tmp_path / "l", str(text_backbone.source_path), seed=5), name="l")
    rt = Runtime(registry)
    p = rt.prepare(["l"], TEXTS, "text", embed=EmbedSpec(None, False))
    assert p.rows == 2 * len(TEXTS)  # the LoRA rows cannot give the frozen trunk's features
    res = rt.run([p])[0]
    torch.testing.assert_close(res.embeddings, text_backbone.embed(TEXTS), atol=1e-5, rtol=1e-5)


def test_resolve_version_pins_an_exact_stored_version(registry, text_backbone, tmp_path):
    v1 = registry.register(head_adapter(tmp_path / "a", text_backbone, "t", seed=1)).version
    v2 = registry.register(head_adapter(tmp_path / "b", text_backbone, "t", seed=2)).version
    rt = Runtime(registry)

    def scores(versions=None):
        return [p.scores for p in rt.run([rt.prepare(["t"], TEXTS, "text", versions=versions)])[0][0].rows]

    s1, s2 = scores({"t": v1}), scores({"t": v2[:10]})
    assert s1 != s2 and scores() == s2
    registry.activate("t", v1)  # rollback: the pinned answers do not move
    assert scores() == s1 and scores({"t": v2}) == s2 and scores({"t": v1}) == s1
    assert registry.resolve_version("t", v2).version == v2
    with pytest.raises(NotFound, match="does not exist"):
        registry.resolve_version("t", "0" * 12)
    with pytest.raises(NotFound, match="not registered"):
        registry.resolve_version("nope", v1)


def test_a_batch_asks_each_adapter_what_it_reads_once(registry, text_backbone, tmp_path, monkeypatch):
    """``_run_group`` asks ``task.needs`` once per (adapter, rows), not once per use."""
    registry.register(head_adapter(tmp_path / "h", text_backbone, "h", seed=3))
    registry.register(head_adapter(tmp_path / "g", text_backbone, "g", seed=4))
    rt = Runtime(registry)
    reqs = [rt.prepare(["h", "g"], TEXTS, "text"), rt.prepare(["g"], TEXTS[:1], "text")]
    task_cls = type(reqs[0].adapters[0].task)
    calls = []
    original = task_cls.needs
    monkeypatch.setattr(task_cls, "needs", lambda self, m: calls.append(m.name) or original(self, m))
    rt.run(reqs)
    assert sorted(calls) == ["g", "g", "h"]
