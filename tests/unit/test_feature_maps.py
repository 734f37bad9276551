"""The feature seam: a backbone declares the features it gives (pooled, per-token, spatial
maps per stride), a task type declares what it reads, and the runtime collects only that.

A task type defined here only (registered into ``TASK_TYPES`` for one test, then removed)
reads the stride-16 map (per-image mean through a small head) and is served beside a
pooled classifier in one batch, with one trunk pass.
"""

from __future__ import annotations

from dataclasses import replace

import pytest
import torch
from PIL import Image

from adapters.backbones.base import map_feature
from adapters.errors import InvalidInput
from adapters.runtime import Runtime
from adapters.tasks import TASK_TYPES, RowResult, TaskType
from support.factories import head_adapter

TOL = 1e-5


class MapMean(TaskType):
    """Test-only: the mean of the stride-16 map per image through a linear head, softmax."""

    name = "test_map_mean"
    activation = "softmax"

    def output_names(self, m):
        return list(m.labels)

    def needs(self, m):
        return {map_feature(16)}

    def score(self, calls, features):
        x = features.maps[16].mean(dim=(2, 3))  # [rows, channels]
        return [torch.softmax(a.head(x[rows]), -1).cpu() for a, rows in calls]

    def rows(self, adapter, out):
        labels = adapter.manifest.labels
        return [RowResult(scores=dict(zip(labels, p))) for p in out.tolist()]


class Lookup:
    """The registry's adapters, plus in-memory ones this test builds."""

    def __init__(self, registry, extra):
        self.registry, self.extra, self.backbones = registry, extra, registry.backbones

    def resolve(self, task):
        return self.extra[task] if task in self.extra else self.registry.resolve(task)


@pytest.fixture
def map_task_type():
    TASK_TYPES[MapMean.name] = MapMean()
    try:
        yield TASK_TYPES[MapMean.name]
    finally:
        del TASK_TYPES[MapMean.name]


def images(n):
    return [Image.new("RGB", (24 + 3 * i, 30), (30 * i, 200 - 20 * i, 90)) for i in range(n)]


def spy(backbone, monkeypatch):
    calls = []
    real = backbone.forward

    def forward(batch, maps=()):
        calls.append(tuple(maps))
        return real(batch, maps)
    monkeypatch.setattr(backbone, "forward", forward)
    return calls


def test_a_vision_backbone_declares_its_maps_per_stride(vision_backbone, text_backbone):
    assert sorted(vision_backbone.feature_maps) == [8, 16, 32]  # MobileNetV2's stages
    assert {"map:8", "map:16", "map:32"} <= set(vision_backbone.features)
    assert text_backbone.feature_maps == {} and "tokens" in text_backbone.features
    pix = vision_backbone.preprocess(images(1))["pixel_values"]
    f = vision_backbone.forward({"pixel_values": pix}, (8, 16, 32))
    for s in (8, 16, 32):
        assert f.map(s).shape[-1] == pix.shape[-1] // s


def test_a_map_task_is_served_beside_a_pooled_classifier_in_one_pass(
        tmp_path, registry, vision_backbone, map_task_type, monkeypatch):
    registry.register(head_adapter(tmp_path / "cls", vision_backbone, "cls"))
    cls = registry.resolve("cls")
    channels = vision_backbone.forward(vision_backbone.preprocess(images(1)), (16,)).map(16).shape[1]
    torch.manual_seed(3)
    head = torch.nn.Linear(channels, 3).eval().requires_grad_(False)
    spots = replace(cls, name="spots", head=head, manifest=cls.manifest.model_copy(
        update={"name": "spots", "task_type": MapMean.name, "labels": ["a", "b", "c"]}))
    rt = Runtime(Lookup(registry, {"spots": spots}))
    imgs = images(5)

    calls = spy(vision_backbone, monkeypatch)
    both = rt.run([rt.prepare(["cls", "spots"], imgs, "image")])[0]
    assert calls == [(16,)]  # one trunk pass, the stride-16 map kept

    calls.clear()
    alone = rt.run([rt.prepare(["cls"], imgs, "image")])[0]
    assert calls == [()]  # no task reads a map: the model is not asked for them
    for got, ref in zip(both[0].rows, alone[0].rows):
        assert got.label == ref.label and abs(got.score - ref.score) < TOL

    with torch.inference_mode():  # reference: the model's own hidden states, by hand
        pix = vision_backbone.preprocess(imgs)["pixel_values"]
        hs = vision_backbone.model(pixel_values=pix, output_hidden_states=True).hidden_states
        want = torch.softmax(head(hs[vision_backbone.feature_maps[16]].mean(dim=(2, 3))), -1)
    got = torch.tensor([[r.scores[k] for k in "abc"] for r in both[1].rows])
    assert torch.allclose(got, want, atol=TOL)


def test_a_map_task_on_a_backbone_without_maps_is_refused_before_the_batch(
        tmp_path, registry, text_backbone, map_task_type):
    registry.register(head_adapter(tmp_path / "t", text_backbone, "t"))
    t = registry.resolve("t")
    spots = replace(t, name="spots", manifest=t.manifest.model_copy(
        update={"name": "spots", "task_type": MapMean.name}))
    rt = Runtime(Lookup(registry, {"spots": spots}))
    with pytest.raises(InvalidInput, match="map:16"):
        rt.prepare(["t", "spots"], ["good movie"], "text")


def test_the_table_is_left_as_found():
    assert MapMean.name not in TASK_TYPES
