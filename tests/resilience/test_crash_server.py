"""Crash safety of the real server (issue 4): kill -9 ``bentoml serve`` (arbiter and workers)
at random points while an admin client registers, rolls back and deletes over HTTP;
restart on the same store; every acknowledged change is there and servable, the change
in flight landed whole or not at all, and no leftovers accumulate (see ``crash_http``).

A few cycles here; ``python -m bench crash-loop`` runs many more.
"""

from __future__ import annotations

import random

import pytest

from adapters.backbones.tiny import tiny_backbone_spec
from adapters.format.archive import make_archive
from support.crash_http import CRASH_ENV, crash_cycle, server_tmpdir
from support.crash_worker import Expected
from support.factories import peft_lora_dir
from support.server import server_factory  # noqa: F401  (pytest fixture)

pytestmark = pytest.mark.server
CYCLES = 4


def test_kill_9_server_during_registrations_loses_nothing_acknowledged(server_factory, tmp_path, tiny_dir,
                                                                       text_backbone):
    spec = tiny_backbone_spec("text", tiny_dir / "text")
    tmpdir = server_tmpdir(tmp_path)
    srv = server_factory.start(store=tmp_path / "store",
                               backbones=[{"name": spec.name, "source": spec.source, "max_length": spec.max_length}],
                               env={**CRASH_ENV, "TMPDIR": str(tmpdir)})
    lora_zip = make_archive(peft_lora_dir(tmp_path / "lora", str(tiny_dir / "text"), seed=3))
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    rng, expected, reports = random.Random(4), Expected(), []
    for cycle in range(CYCLES):
        reports.append(crash_cycle(srv, expected, text_backbone, lora_zip, scratch, seed=cycle,
                                   kill_after_s=rng.uniform(0.5, 3.0), tmpdir=tmpdir))
    landed = [r.in_flight_landed for r in reports]
    print(f"\nserver crash cycles={CYCLES} acked={expected.acked} processes killed/cycle="
          f"{[r.processes_killed for r in reports]} in-flight={[r.in_flight for r in reports]} landed={landed} "
          f"tasks={reports[-1].tasks} versions={reports[-1].versions} scratch left={[r.scratch_left for r in reports]} "
          f"bentoml tmp folders left={reports[-1].bentoml_tmp_left}")
    assert expected.acked >= CYCLES, f"only {expected.acked} acknowledged changes: kills came too early"
    assert sum(x is not None for x in landed) >= CYCLES // 2, "most kills did not land mid-change"
    assert all(r.scratch_left == [] for r in reports), "upload scratch accumulates in TMPDIR across crashes"
    assert srv.internal_errors() == []


def test_collect_stale_uploads_removes_only_old_upload_folders(tmp_path):
    """Startup collection: old ``taskswap-upload-*`` / ``taskswap-reg-*`` folders go; young
    ones (a registration running now in another worker), other names and links stay."""
    import os
    import time

    from adapters.upload_cleanup import collect_stale_uploads
    for name in ("taskswap-upload-old", "taskswap-reg-old", "taskswap-upload-young", "other-old"):
        (tmp_path / name / "x").mkdir(parents=True)
        (tmp_path / name / "x" / "head.safetensors").write_bytes(b"\0" * 100)
    (tmp_path / "taskswap-reg-link").symlink_to(tmp_path / "other-old")
    old = time.time() - 7200
    for name in ("taskswap-upload-old", "taskswap-reg-old", "other-old"):
        os.utime(tmp_path / name, (old, old))
    assert sorted(collect_stale_uploads(3600, tmp_path)) == ["taskswap-reg-old", "taskswap-upload-old"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["other-old", "taskswap-reg-link", "taskswap-upload-young"]
    assert (tmp_path / "other-old" / "x" / "head.safetensors").exists()
