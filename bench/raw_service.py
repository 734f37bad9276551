"""The reference for the HTTP bench: a minimal BentoML service around the raw backbone.

    RAW_BACKBONE='{"name": "text", "source": "embedded:all-MiniLM-L6-v2"}' \\
        python -m bentoml serve bench.raw_service:RawBackbone --port 3001

It is what a user would deploy for *one* task with no adapter machinery: one frozen
backbone, the same micro-batcher as Taskswap (:class:`adapters.batching.Batcher`, same
``TASKSWAP_MAX_BATCH_ROWS`` / ``TASKSWAP_MAX_WAIT_MS`` / ``TASKSWAP_TORCH_THREADS``), the
same BentoML process model (one worker, a FastAPI app mounted with ``@bentoml.asgi_app``)
and a response of the same size (two scores per input). What it leaves out is exactly
what Taskswap adds: task resolution, heads and LoRA deltas, validation, metrics, auth.

``POST /predict {"texts": [...]}`` -> ``{"predictions": [{"scores": {"a": x, "b": y}}]}``
where the scores are the first two pooled features (a stand-in for a head's output,
so the work is the backbone's and the JSON is as long as Taskswap's).
``GET /readyz`` is BentoML's, 200 once the backbone is loaded and warmed up.
"""

from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import asyncio  # noqa: E402
import json  # noqa: E402
import threading  # noqa: E402
from dataclasses import dataclass  # noqa: E402

import bentoml  # noqa: E402
import torch  # noqa: E402
from fastapi import FastAPI  # noqa: E402
from pydantic import BaseModel, Field  # noqa: E402

from adapters.backbones.base import Backbone, BackboneSpec, load_backbone  # noqa: E402
from adapters.batching import Batcher  # noqa: E402

app = FastAPI(title="raw backbone", docs_url=None, redoc_url=None, openapi_url=None)


class RawRequest(BaseModel):
    texts: list[str] = Field(min_length=1, max_length=64)


@dataclass
class RawItem:
    """One request in the batcher's queue (it only needs ``.rows``)."""

    texts: list[str]

    @property
    def rows(self) -> int:
        return len(self.texts)


class RawRuntime:
    """The batcher's ``runtime``: every queued request's texts through one backbone pass."""

    def __init__(self, backbone: Backbone):
        self.backbone = backbone

    def run(self, items: list[RawItem]) -> list[list[list[float]]]:
        texts = [t for it in items for t in it.texts]
        with self.backbone.lock:
            feats = self.backbone.embed(texts)[:, :2].tolist()  # [rows, 2]
        out, k = [], 0
        for it in items:
            out.append(feats[k: k + it.rows])
            k += it.rows
        return out


@bentoml.service(name="raw-backbone", workers=1, traffic={"timeout": 300})
@bentoml.asgi_app(app, path="/")
class RawBackbone:
    """One backbone, one batcher, one route."""

    def __init__(self) -> None:
        cfg = json.loads(os.environ.get("RAW_BACKBONE", '{"name": "text", "source": "embedded:all-MiniLM-L6-v2"}'))
        threads = os.environ.get("TASKSWAP_TORCH_THREADS")
        if threads:
            torch.set_num_threads(int(threads))
        self.ready = False
        self.batcher: Batcher | None = None
        threading.Thread(target=self._start, args=(cfg,), daemon=True).start()

    def _start(self, cfg: dict) -> None:
        bb = load_backbone(BackboneSpec(**cfg))
        bb.embed(["warm up"])
        self.batcher = Batcher(RawRuntime(bb), int(os.environ.get("TASKSWAP_MAX_BATCH_ROWS", "64")),
                               float(os.environ.get("TASKSWAP_MAX_WAIT_MS", "5")),
                               int(os.environ.get("TASKSWAP_MAX_QUEUE_ROWS", "4096")))
        self.ready = True

    def __is_ready__(self) -> bool:
        return self.ready

    @bentoml.on_shutdown
    def shutdown(self) -> None:
        if self.batcher is not None:
            self.batcher.close()

    @app.post("/predict")
    async def predict(self, body: RawRequest) -> dict:
        """Two pooled features per text, batched across concurrent requests."""
        item = RawItem(list(body.texts))
        fut = self.batcher.submit(item)
        rows = await asyncio.wrap_future(fut)
        return {"predictions": [{"scores": {"a": r[0], "b": r[1]}} for r in rows]}
