"""Fuzz the HTTP API from its own OpenAPI schema (schemathesis) against a real server.

Bounded for CI (a few cases per operation); ``bench/fuzz.py`` runs the large version.
Property: no 5xx, no response that violates the declared schema (see ``fuzz_http.py``
for the exact checks), and no traceback in the server log.
"""

from __future__ import annotations

import pytest

from adapters.format.archive import make_archive
from support.factories import head_adapter
from support.fuzz_http import run_schemathesis
from support.server import server_factory, tiny_backbones_env  # noqa: F401  (pytest fixture)

pytestmark = pytest.mark.server


def test_schemathesis_finds_no_server_error_or_schema_violation(server_factory, tiny_dir, tmp_path,
                                                               text_backbone, vision_backbone):
    pytest.importorskip("schemathesis")
    srv = server_factory.start(store=tmp_path / "store", backbones=tiny_backbones_env(tiny_dir))
    for name, bb in (("ok", text_backbone), ("img", vision_backbone)):  # something to find
        assert srv.register_archive(make_archive(head_adapter(tmp_path / name, bb, name))).status_code == 201
    run = run_schemathesis(srv.url, srv.admin, srv.log_path, max_examples=10, seed=7, timeout_s=300)
    print(f"\nschemathesis: {run.generated} cases, server statuses {run.statuses}")
    assert run.returncode == 0, run.output[-6000:]
    assert run.generated > 200, run.output[-3000:]  # it really ran every phase
    assert run.server_errors == 0, run.statuses
    assert srv.internal_errors() == []
