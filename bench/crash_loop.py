"""Crash loop: kill -9 the real server again and again during registrations, and check.

    python -m bench crash-loop                 # 20 cycles (about 10-15 minutes on 2 busy cores)
    python -m bench crash-loop --cycles 5      # quick

Each cycle (``tests/support/crash_http.py``): an admin client registers (head and LoRA archives,
each a new version), rolls back and deletes over HTTP without pause; after a random
0.3-4 s every process of ``bentoml serve`` gets SIGKILL; the server restarts on the same
store; then every acknowledged change must be there and servable with the acknowledged
version, the change in flight landed whole or not at all, and no leftover remains (store
staging, temp files, unreferenced versions, upload scratch in ``TMPDIR``). The tiny text
backbone keeps each restart short; what is tested is the store and the server, not the model.

Results: ``bench/results/reliability_crash.{json,md}``. Exit status 1 on any violation.
"""

from __future__ import annotations

import argparse
import collections
import random
import sys
import tempfile
import time
import traceback
from dataclasses import asdict
from pathlib import Path

from bench.common import machine, save_results

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))  # the crash harness and real-server helper the tests use

from support.crash_http import CRASH_ENV, crash_cycle, server_tmpdir  # noqa: E402
from support.crash_worker import Expected  # noqa: E402
from support.server import ServerFactory  # noqa: E402


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--cycles", type=int, default=20)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--max-minutes", type=float, default=30, help="stop starting new cycles after this")
    ap.add_argument("--no-save", action="store_true")
    args = ap.parse_args(argv)

    from adapters.backbones.base import load_backbone
    from adapters.backbones.tiny import tiny_backbone_spec
    from adapters.format.archive import make_archive
    from support.factories import peft_lora_dir

    rng, expected, reports, failure = random.Random(args.seed), Expected(), [], None
    t0 = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="crash-loop-") as tmp, ServerFactory(Path(tmp)) as servers:
        root = Path(tmp)
        spec = tiny_backbone_spec("text", root / "tiny-text")
        bb = load_backbone(spec)
        lora_zip = make_archive(peft_lora_dir(root / "lora", str(root / "tiny-text"), seed=3))
        (root / "scratch").mkdir()
        tmpdir = server_tmpdir(root)
        srv = servers.start(store=root / "store",
                            backbones=[{"name": spec.name, "source": spec.source, "max_length": spec.max_length}],
                            env={**CRASH_ENV, "TMPDIR": str(tmpdir)})
        for cycle in range(args.cycles):
            if time.monotonic() - t0 > args.max_minutes * 60:
                break
            try:
                r = crash_cycle(srv, expected, bb, lora_zip, root / "scratch", seed=args.seed * 1000 + cycle,
                                kill_after_s=rng.uniform(0.3, 4.0), tmpdir=tmpdir)
            except (AssertionError, Exception) as exc:  # noqa: BLE001  report any violation, then stop
                failure = f"cycle {cycle}: {type(exc).__name__}: {exc}\n{traceback.format_exc()[-2000:]}"
                break
            reports.append(r)
            print(f"cycle {cycle}: killed {r.processes_killed} processes after {r.killed_after_s:.1f}s, "
                  f"{r.acked} acked, in flight {r.in_flight!r} landed={r.in_flight_landed}, "
                  f"{r.tasks} tasks / {r.versions} versions intact", flush=True)
        internal = srv.internal_errors()
    out = summarise(reports, expected, failure, internal, time.monotonic() - t0, args)
    print(out["markdown"])
    if not args.no_save:
        md = out.pop("markdown")
        save_results("reliability_crash", out, md)
    return 0 if out["verdict"] == "pass" else 1


def summarise(reports, expected, failure, internal, wall, args) -> dict:
    landed = collections.Counter({True: "landed whole", False: "not at all", None: "none in flight"}[r.in_flight_landed]
                                 for r in reports)
    verdict = "pass" if failure is None and not internal and reports else "FAIL"
    out = {"verdict": verdict, "cycles": len(reports), "seconds": round(wall, 1),
           "kills": len(reports), "acknowledged_changes": expected.acked,
           "in_flight_outcomes": dict(landed), "acknowledged_lost": 0 if verdict == "pass" else None,
           "tasks_at_end": reports[-1].tasks if reports else 0, "versions_at_end": reports[-1].versions if reports else 0,
           "scratch_left_in_tmpdir": sum(len(r.scratch_left) for r in reports),
           "bentoml_tmp_folders_left": reports[-1].bentoml_tmp_left if reports else 0,
           "failure": failure, "server_internal_errors": internal[:20],
           "cycles_detail": [asdict(r) for r in reports], "machine": machine()}
    out["markdown"] = f"""# Crash loop: kill -9 the server during registrations ({len(reports)} cycles)

Measured on a shared 2-core CPU machine; tiny text backbone (the store and server are under test).

| | |
|---|---|
| verdict | **{verdict}** |
| kill -9 of the whole server (arbiter + workers) | {len(reports)} |
| acknowledged changes (register / activate / delete answered 2xx) | {expected.acked} |
| change in flight at the kill | {dict(landed)} |
| acknowledged changes lost / half-written versions visible | {'0 / 0' if verdict == 'pass' else 'see failure'} |
| every task servable with its acknowledged version after each restart | {verdict == 'pass'} |
| leftovers after the restart's gc (store staging, temp files, orphan versions, our TMPDIR scratch) | {'0' if verdict == 'pass' else 'see failure'} |
| tasks / intact versions in the store at the end | {out['tasks_at_end']} / {out['versions_at_end']} |
| BentoML's own empty temp folders left in TMPDIR by the kills | {out['bentoml_tmp_folders_left']} |
| wall time | {out['seconds']} s |

{('Failure: ' + failure) if failure else ''}
Command: `python -m bench crash-loop --cycles {args.cycles} --seed {args.seed}`
"""
    return out

