"""Shared helpers for the HTTP tests: inputs, reference scores computed in-process, calls.

Reference scores never come from the server: a head adapter's are its own head weights
on the backbone's features; a PEFT adapter's come from PEFT's own ``PeftModel``.
"""

from __future__ import annotations

import base64
import io
import time

import pytest
import torch
from PIL import Image

from adapters.plugin_checks import read_adapter_dir
from adapters.format.archive import make_archive
from adapters.format.safetensors_io import load_tensors
from adapters.heads import build_head

# The tiny test tokenizer maps most words to [UNK], so texts also differ in length
# (position embeddings) to get distinct features per text.
TEXTS = ["good", "a great movie", "the plot was awful and boring", "fine fine fine fine fine fine"]


def png_bytes(color=(200, 30, 30), size=(40, 30)) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", size, color).save(buf, "PNG")
    return buf.getvalue()


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def expected_head_scores(folder, backbone, inputs) -> torch.Tensor:
    """``[n, labels]`` softmax probabilities of a head adapter folder, computed in-process."""
    m = read_adapter_dir(folder).manifest
    head = build_head(m.head, len(m.labels), load_tensors(folder / "head.safetensors"))
    with torch.no_grad():
        return torch.softmax(head(backbone.embed(inputs, m.head.pooling)), -1)


def peft_scores(model, backbone, texts) -> torch.Tensor:
    """``[n, labels]`` softmax probabilities of PEFT's own model on ``texts``."""
    enc = backbone.preprocessor.tokenizer(texts, padding=True, return_tensors="pt")
    with torch.no_grad():
        return torch.softmax(model(**enc).logits, -1)


def scores_of(result: dict) -> torch.Tensor:
    """``[n, labels]`` from one task's entry of a /predict response."""
    return torch.tensor([list(p["scores"].values()) for p in result["predictions"]])


def register_ok(srv, folder, fmt: str = "zip", **fields) -> dict:
    """Upload ``folder`` as an archive; assert 201; return the response body."""
    r = srv.register_archive(make_archive(folder, fmt), filename=f"a.{fmt}", **fields)
    assert r.status_code == 201, r.text
    return r.json()


def predict_ok(srv, tasks, **inputs) -> dict:
    r = srv.predict(tasks, **inputs)
    assert r.status_code == 200, r.text
    return r.json()


def assert_error(r, status: int, *words: str) -> dict:
    """A JSON error body with ``status`` whose message names each of ``words``."""
    assert r.status_code == status, f"{r.status_code} != {status}: {r.text[:300]}"
    body = r.json()
    assert set(body) == {"error", "message", "problems"}, body
    for w in words:
        assert w.lower() in body["message"].lower(), f"{w!r} not in {body['message']!r}"
    return body


def wait_for_job(srv, job_id: str, timeout_s: float = 180, interval_s: float = 0.3) -> dict:
    """Poll ``GET /jobs/{job_id}`` (admin) until the job succeeds or fails; its final record."""
    deadline = time.monotonic() + timeout_s
    job: dict = {}
    while time.monotonic() < deadline:
        g = srv.get(f"/jobs/{job_id}", admin=True)
        assert g.status_code == 200, g.text
        job = g.json()
        if job["status"] in ("succeeded", "failed"):
            return job
        time.sleep(interval_s)
    pytest.fail(f"job {job_id} still {job.get('status')}/{job.get('phase')} after {timeout_s}s")
