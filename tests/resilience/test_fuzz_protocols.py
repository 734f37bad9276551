"""Fuzz the protocol routes (``/embed``, ``/v1/...``, ``/v2/...``) from the server's own
OpenAPI schema with schemathesis, against a real server holding a text and an image task.

The same checks as ``test_fuzz_http.py`` (see ``fuzz_http.py``), more cases per operation
on these routes only: no 5xx, every response as declared (status, content type, body,
headers), invalid data rejected, auth not ignored, and no traceback in the server log.
"""

from __future__ import annotations

import pytest

from adapters.format.archive import make_archive
from support.factories import head_adapter
from support.fuzz_http import run_schemathesis
from support.server import server_factory, tiny_backbones_env  # noqa: F401  (pytest fixture)

pytestmark = pytest.mark.server


def test_schemathesis_on_protocol_routes_finds_nothing(server_factory, tiny_dir, tmp_path,
                                                      text_backbone, vision_backbone):
    pytest.importorskip("schemathesis")
    srv = server_factory.start(store=tmp_path / "store", backbones=tiny_backbones_env(tiny_dir))
    for name, bb in (("ok", text_backbone), ("img", vision_backbone)):  # models to find
        assert srv.register_archive(make_archive(head_adapter(tmp_path / name, bb, name))).status_code == 201
    run = run_schemathesis(srv.url, srv.admin, srv.log_path, max_examples=25, seed=11, timeout_s=420,
                           include_path_regex=r"^/(embed|v1/|v2)")
    print(f"\nschemathesis: {run.generated} cases, server statuses {run.statuses}")
    assert run.returncode == 0, run.output[-6000:]
    assert run.generated > 200, run.output[-3000:]
    assert run.server_errors == 0, run.statuses
    assert srv.internal_errors() == []
