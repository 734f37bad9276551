"""Length-aware batching in the runtime: the same rows as padded batches and as single
requests (heads and LoRA mixed, inputs of very different lengths), with less padding."""

from __future__ import annotations

import random

import pytest
import torch

from adapters.runtime import Runtime
from support.factories import head_adapter, peft_lora_dir

TOL = 1e-5
WORDS = "the plot was slow but the actors were wonderful and the music carried every scene".split()


def texts(n: int, seed: int = 0) -> list[str]:
    """``n`` texts from 1 to 60 words, in shuffled length order."""
    rng = random.Random(seed)
    return [" ".join(rng.choice(WORDS) for _ in range(rng.choice([1, 2, 5, 12, 30, 60]))) for _ in range(n)]


def rows(result) -> torch.Tensor:
    return torch.tensor([list(r.scores.values()) for r in result.rows])


@pytest.fixture
def mixed_rt(tmp_path, registry, text_backbone, one_torch_thread):
    src = str(text_backbone.source_path)
    for i, r in enumerate((2, 8)):
        registry.register(peft_lora_dir(tmp_path / f"l{r}", src, seed=20 + i, r=r), name=f"l{r}",
                          labels=["neg", "pos"])
    registry.register(head_adapter(tmp_path / "h", text_backbone, "h"))
    registry.register(head_adapter(tmp_path / "h3", text_backbone, "h3", labels=("a", "b", "c"),
                                   hidden=(8,), seed=2))
    return registry


def requests(rt: Runtime, inputs: list[str]):
    """Requests of 1-3 inputs over heads and LoRAs, several tasks per request."""
    combos = [["h"], ["l2"], ["h", "l8"], ["l8", "h3"], ["l2", "l8", "h"], ["h3"]]
    out, i = [], 0
    while i < len(inputs):
        k = 1 + i % 3
        out.append(rt.prepare(combos[len(out) % len(combos)], inputs[i:i + k], "text"))
        i += k
    return out


def spy_forward(backbone, monkeypatch) -> list[tuple[int, int]]:
    """Record ``(rows, padded length)`` of every trunk forward."""
    seen: list[tuple[int, int]] = []
    real = backbone.forward

    def forward(batch):
        seen.append(tuple(batch["input_ids"].shape))
        return real(batch)
    monkeypatch.setattr(backbone, "forward", forward)
    return seen


@pytest.mark.parametrize("budget, max_rows", [(64, 256), (200, 4), (10_000, 256)])
def test_sorted_sub_batches_equal_padded_batch_and_single_requests(mixed_rt, text_backbone, monkeypatch,
                                                                   budget, max_rows):
    inputs = texts(23)
    padded = Runtime(mixed_rt, token_budget=None)
    aware = Runtime(mixed_rt, max_forward_rows=max_rows, token_budget=budget)
    reqs = requests(padded, inputs)
    ref = padded.run(reqs)
    seen = spy_forward(text_backbone, monkeypatch)
    got = aware.run(reqs)
    batch_forwards = list(seen)  # before the single requests below add theirs
    for req, r_ref, r_got in zip(reqs, ref, got):
        for a, x, y in zip(req.adapters, r_ref, r_got):
            assert (x.task, x.version) == (y.task, y.version)
            assert torch.allclose(rows(x), rows(y), atol=TOL), a.name
            # each input of the request alone, as its own single-row request
            single = torch.cat([rows(aware.run([aware.prepare([a.name], [t], "text")])[0][0])
                                for t in req.inputs])
            assert torch.allclose(rows(y), single, atol=TOL), a.name
    n_rows = sum(r.rows for r in reqs)
    assert sum(b for b, _ in batch_forwards) == n_rows  # every trunk row ran exactly once
    assert all(b <= max_rows and (b == 1 or b * s <= budget) for b, s in batch_forwards)


def test_less_padding_and_lengths_sorted(mixed_rt, text_backbone, monkeypatch):
    inputs = texts(32, seed=3)
    mask = text_backbone.preprocess(inputs)["attention_mask"]
    lengths = mask.sum(1).tolist()
    rt = Runtime(mixed_rt, token_budget=256)
    seen = spy_forward(text_backbone, monkeypatch)
    rt.run([rt.prepare(["h"], [t], "text") for t in inputs])
    assert len(seen) > 1
    assert [s for _, s in seen] == sorted((s for _, s in seen), reverse=True)
    assert sum(b * s for b, s in seen) < len(inputs) * max(lengths)  # fewer padded tokens
    assert sum(b * s for b, s in seen) >= sum(lengths)


def test_budget_none_keeps_arrival_order_chunks(mixed_rt, text_backbone, monkeypatch):
    rt = Runtime(mixed_rt, max_forward_rows=5, token_budget=None)
    inputs = texts(12, seed=4)
    seen = spy_forward(text_backbone, monkeypatch)
    rt.run([rt.prepare(["h"], inputs, "text")])
    longest = text_backbone.preprocess(inputs)["input_ids"].shape[1]
    assert seen == [(5, longest), (5, longest), (2, longest)]


def test_images_have_no_length_and_chunk_in_order(tmp_path, registry, vision_backbone, monkeypatch,
                                                  one_torch_thread):
    from PIL import Image
    registry.register(head_adapter(tmp_path / "v", vision_backbone, "v"))
    imgs = [Image.new("RGB", (20 + i, 30), (i * 20, 40, 90)) for i in range(7)]
    rt = Runtime(registry, max_forward_rows=3, token_budget=64)
    assert rt.plan(None, 7) == [[0, 1, 2], [3, 4, 5], [6]]
    got = rows(rt.run([rt.prepare(["v"], imgs, "image")])[0][0])
    single = torch.cat([rows(rt.run([rt.prepare(["v"], [im], "image")])[0][0]) for im in imgs])
    assert torch.allclose(got, single, atol=TOL)


def test_token_features_match_the_padded_pass_on_real_tokens(mixed_rt, text_backbone):
    """Per-token features (for token task types) come back at the batch's full width, row
    order kept, equal to the padded pass wherever the mask says a token is real."""
    inputs = texts(11, seed=5)
    h, lora = mixed_rt.resolve("h"), mixed_rt.resolve("l8")
    row_input = list(range(11)) + list(range(11))  # every input as a head row and a LoRA row
    row_state = [h.impl.trunk_state(h.weights)] * 11 + [lora.impl.trunk_state(lora.weights)] * 11
    row_pass = [h.impl.trunk_pass] * 11 + [lora.impl.trunk_pass] * 11
    args = (text_backbone, inputs, row_input, row_state, row_pass, {"tokens", "mean"})
    ref = Runtime(mixed_rt, token_budget=None)._trunk(*args)
    got = Runtime(mixed_rt, max_forward_rows=4, token_budget=96)._trunk(*args)
    assert got.tokens.hidden.shape == ref.tokens.hidden.shape
    assert torch.equal(got.tokens.mask, ref.tokens.mask)
    real = ref.tokens.mask.bool()  # [rows, seq]
    assert torch.allclose(got.tokens.hidden[real], ref.tokens.hidden[real], atol=TOL)
    assert torch.allclose(got.pooled["mean"], ref.pooled["mean"], atol=TOL)
    assert not torch.allclose(got.pooled["mean"][:11], got.pooled["mean"][11:], atol=TOL)  # LoRA applied
