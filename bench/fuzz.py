"""The long schema fuzzing run: schemathesis against a real server's own ``/docs.json``.

    python -m bench fuzz --examples 100 --max-time 420   # the published run (~8 min, ~10,000 cases)
    python -m bench fuzz --examples 20                    # quick (~1-2 min)

Without ``--max-time`` hypothesis stops once an operation's strategies are exhausted,
so ``--examples`` alone stops growing the count (40 examples: ~800 cases).

Same checks as the CI test (``tests/support/fuzz_http.py``: no 5xx, status codes, bodies and
headers as declared, invalid data rejected, deleted resources gone, auth not ignored),
with many more generated cases; ``--max-time`` makes the fuzzing and stateful phases
repeat until the budget is spent. The server runs the tiny backbones with a text head,
an image head and a LoRA registered, so predictions reach every code path.

Results: ``bench/results/reliability_fuzz.{json,md}`` (cases generated, statuses the
server answered, failures). Exit status 1 on any failure.
"""

from __future__ import annotations

import argparse
import re
import sys
import tempfile
import time
from pathlib import Path

from bench.common import machine, save_results

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))  # the real-server helper and schemathesis runner the tests use

from support.fuzz_http import CHECKS, run_schemathesis  # noqa: E402
from support.server import ServerFactory, tiny_backbones_env  # noqa: E402


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--examples", type=int, default=200, help="max examples per operation and phase")
    ap.add_argument("--max-time", type=int, default=None, help="seconds: repeat fuzzing/stateful until spent")
    ap.add_argument("--seed", type=int, default=11)
    ap.add_argument("--timeout", type=int, default=1800, help="hard limit for the schemathesis process")
    ap.add_argument("--no-save", action="store_true")
    args = ap.parse_args(argv)

    from adapters.backbones.base import load_backbone
    from adapters.backbones.tiny import tiny_backbone_spec
    from adapters.format.archive import make_archive
    from support.factories import head_adapter, peft_lora_dir

    t0 = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="fuzz-") as tmp, ServerFactory(Path(tmp)) as servers:
        root = Path(tmp)
        text = load_backbone(tiny_backbone_spec("text", root / "text"))
        vision = load_backbone(tiny_backbone_spec("vision", root / "vision"))
        srv = servers.start(store=root / "store", backbones=tiny_backbones_env(root))
        for name, bb in (("ok", text), ("img", vision)):
            assert srv.register_archive(make_archive(head_adapter(root / name, bb, name))).status_code == 201
        lora = peft_lora_dir(root / "lora", str(root / "text"), seed=1)
        assert srv.register_archive(make_archive(lora), name="lora", labels=["neg", "pos"]).status_code == 201
        run = run_schemathesis(srv.url, srv.admin, srv.log_path, max_examples=args.examples, seed=args.seed,
                               max_time_s=args.max_time, timeout_s=args.timeout)
        internal = srv.internal_errors()
    wall = time.monotonic() - t0
    summary = _summary_lines(run.output)
    verdict = "pass" if run.returncode == 0 and run.server_errors == 0 and not internal else "FAIL"
    out = {"verdict": verdict, "cases_generated": run.generated, "cases_passed": run.passed,
           "server_statuses": dict(sorted(run.statuses.items())), "server_5xx": run.server_errors,
           "schemathesis_exit": run.returncode, "checks": CHECKS.split(","), "examples_per_operation": args.examples,
           "max_time_s": args.max_time, "seed": args.seed, "seconds": round(wall, 1),
           "server_internal_errors": internal[:20], "schemathesis_summary": summary, "machine": machine()}
    md = f"""# Schema fuzzing (schemathesis) against the real server

Measured on a shared 2-core CPU machine; tiny backbones, tasks `ok` (text head), `img` (image head),
`lora` (LoRA) registered; requests sent as the admin so admin routes are fuzzed past auth.

| | |
|---|---|
| verdict | **{verdict}** |
| cases generated | {run.generated} |
| responses by status (server access log) | {out['server_statuses']} |
| 5xx responses | {run.server_errors} |
| tracebacks / 500s in the server log | {len(internal)} |
| checks | {', '.join(out['checks'])} |
| examples per operation | {args.examples}{f', max time {args.max_time} s' if args.max_time else ''} (seed {args.seed}) |
| wall time | {out['seconds']} s |

```
{chr(10).join(summary)}
```

Command: `python -m bench fuzz --examples {args.examples}{f' --max-time {args.max_time}' if args.max_time else ''} --seed {args.seed}`
"""
    print(md)
    if verdict != "pass":
        print(run.output[-8000:])
    if not args.no_save:
        save_results("reliability_fuzz", out, md)
    return 0 if verdict == "pass" else 1


def _summary_lines(output: str) -> list[str]:
    """schemathesis's closing summary (phases, operations, test cases), colour codes removed."""
    text = re.sub(r"\x1b\[[0-9;]*m", "", output)
    start = max(text.rfind("SUMMARY"), 0)
    return [line.rstrip() for line in text[start:].splitlines() if line.strip()][:40]

