"""Hardening, round 3 (issue 30, items 2-7), over real HTTP (``bentoml serve``)."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from adapters.format.archive import make_archive
from support.factories import head_adapter, peft_lora_dir
from support.http_helpers import assert_error
from support.server import server_factory, tiny_backbones_env  # noqa: F401  (pytest fixture)

pytestmark = pytest.mark.server


@pytest.fixture(scope="module")
def srv(server_factory, tiny_dir, tmp_path_factory, text_backbone, vision_backbone):
    """One server, a text head task 'ok' and an image head task 'img'."""
    s = server_factory.start(store=tmp_path_factory.mktemp("store"),
                             backbones=tiny_backbones_env(tiny_dir))
    root = tmp_path_factory.mktemp("adapters")
    for name, bb in (("ok", text_backbone), ("img", vision_backbone)):
        r = s.register_archive(make_archive(head_adapter(root / name, bb, name)))
        assert r.status_code == 201, r.text
    return s


def _peft_with(folder: Path, backbone_path: str, **config) -> Path:
    peft_lora_dir(folder, backbone_path, r=4)
    cfg = json.loads((folder / "adapter_config.json").read_text())
    cfg.update(config)
    (folder / "adapter_config.json").write_text(json.dumps(cfg))
    return folder


# ---- item 2: a pattern key that would explode when compiled is a 422 naming it --------------
@pytest.mark.parametrize("field", ["rank_pattern", "alpha_pattern"])
@pytest.mark.parametrize("key", [r"(?:a{1000}){4000}", r"(a{65535}){65535}"])
def test_a_regex_compile_bomb_is_refused_naming_the_key(srv, tiny_dir, tmp_path, field, key):
    folder = _peft_with(tmp_path / "bomb", str(tiny_dir / "text"), **{field: {key: 4}})
    start = time.monotonic()
    r = srv.register_archive(make_archive(folder), name="bomb")
    body = assert_error(r, 422, field, key[:12], "unrolled")
    assert "Traceback" not in body["message"]
    assert time.monotonic() - start < 60  # refused before compiling: no 4 s / 3 GiB compile
    assert srv.get("/adapters/bomb").status_code == 404
    assert srv.predict("ok", texts=["still served"]).status_code == 200
    assert srv.internal_errors() == []
