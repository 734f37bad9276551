"""The translation demo on the real embedded language model (SmolLM2-135M-Instruct): ``python -m
training.demo --tasks translate-fr`` trains a short LoRA on Debian's gettext pairs and registers it;
a real server with the demo's ``TASKSWAP_LM_BACKBONES`` answers it through ``/v1/chat/completions``
with the text the trainer reported for a held-out sentence."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from support.server import server_factory  # noqa: F401  (pytest fixture)

pytestmark = [pytest.mark.real, pytest.mark.server]
REPO = Path(__file__).resolve().parents[2]


def test_translate_demo_trains_registers_and_answers_over_chat(server_factory, tmp_path):  # noqa: F811
    store, keep = tmp_path / "store", tmp_path / "keep"
    r = subprocess.run([sys.executable, "-m", "training.demo", "--store", str(store), "--tasks", "translate-fr",
                        "--keep", str(keep), "--no-progress", "--threads", "1"], cwd=REPO,
                       capture_output=True, text=True, timeout=1800)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    assert "translate-fr: registered version" in r.stdout
    card = (keep / "translate-fr" / "README.md").read_text()
    assert "git" in card and "coreutils" in card and "debian_packages" in card
    reported = json.loads((keep / "translate-fr" / "metrics.json").read_text())
    lm = subprocess.run([sys.executable, "-m", "training.demo", "--lm-backbones-json"], cwd=REPO,
                        capture_output=True, text=True, check=True).stdout.strip()
    srv = server_factory.start(store=store, backbones=None, ready_timeout_s=900, env={"TASKSWAP_LM_BACKBONES": lm})
    from training.generation.translation import load_translation
    first = load_translation("translate-en-fr")["test"].sample(40, 0).examples[0]
    c = srv.post("/v1/chat/completions", json={"model": "translate-fr", "temperature": 0, "max_tokens": 96,
                                               "messages": [{"role": "user", "content": first.prompt}]})
    assert c.status_code == 200, c.text
    assert c.json()["choices"][0]["message"]["content"] == reported["outputs"]["test"][0]
    shutil.rmtree(keep)
