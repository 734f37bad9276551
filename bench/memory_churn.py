"""Memory under adapter churn: register -> predict -> delete, many times, over HTTP.

    python -m bench memory-churn                     # 300 cycles on embedded MiniLM (about 4-5 min)
    python -m bench memory-churn --cycles 100 --tiny

A real ``bentoml serve`` on 127.0.0.1 with the text backbone and two tasks that stay
registered (a head and a LoRA, used in every prediction). Each cycle registers a task
(a head, or a LoRA every third cycle), predicts with it and the two resident tasks,
and deletes it. The resident memory of the whole server process tree is sampled every
``--every`` cycles; a leak of one adapter per cycle would show as a steady slope
(a MiniLM LoRA r=8 on query/value holds ~0.3 MiB of factors, so leaking every LoRA
would add ~10 MiB per 100 cycles; a head is ~3 KiB, too small to see in RSS —
``tests/resilience/test_overload_memory.py`` counts Python objects and heap for that). Reported: RSS after the
warm-up, at the end, the least-squares slope per 100 cycles over the cycles after the
warm-up, and the store's size on disk (deleted tasks must leave nothing behind).

Results: ``bench/results/reliability_memory.{json,md}`` (+ the samples). Bounded by
``--cycles`` and ``--max-minutes``.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

from bench.common import TEXT_SPEC, load, machine, review_snippets, save_results, write_heads

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))  # the real-server helper the tests use

from support.proc_mem import rss_bytes, tree_pids, tree_rss_bytes  # noqa: E402
from support.server import ServerFactory  # noqa: E402

MiB = 1 << 20


def slope_per_100(xs: list[float], ys: list[float]) -> float:
    """Least-squares slope of ys over xs, times 100."""
    n = len(xs)
    if n < 2:
        return float("nan")
    mx, my = sum(xs) / n, sum(ys) / n
    den = sum((x - mx) ** 2 for x in xs)
    return 100 * sum((x - mx) * (y - my) for x, y in zip(xs, ys)) / den if den else float("nan")


def per_process(pid: int) -> dict[str, float]:
    """RSS in MiB of each process of the server tree, keyed by pid and command name."""
    out = {}
    for p in tree_pids(pid):
        try:
            name = Path(f"/proc/{p}/comm").read_text().strip()
        except OSError:
            continue
        out[f"{p} {name}"] = round(rss_bytes(p) / MiB, 1)
    return out


def du(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--cycles", type=int, default=300)
    ap.add_argument("--warmup", type=int, default=30)
    ap.add_argument("--every", type=int, default=10, help="sample RSS every N cycles")
    ap.add_argument("--max-minutes", type=float, default=15)
    ap.add_argument("--tiny", action="store_true", help="tiny random text backbone instead of MiniLM")
    ap.add_argument("--no-save", action="store_true")
    args = ap.parse_args(argv)

    from adapters.format.archive import make_archive
    from bench.load_faults import _lora

    t0 = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="memory-churn-") as tmp, ServerFactory(Path(tmp)) as servers:
        root = Path(tmp)
        if args.tiny:
            from adapters.backbones.tiny import tiny_backbone_spec
            spec = tiny_backbone_spec("text", root / "tiny-text")
        else:
            spec = TEXT_SPEC
        bb = load(spec)
        texts = review_snippets(8, bb.preprocessor.tokenizer, 8, 64) if not args.tiny else ["good movie"] * 8
        heads = [make_archive(p) for p in write_heads(root / "heads", bb, 4, hidden=(64,), prefix="h")]
        loras = [make_archive(_lora(root / f"lora{i}", bb, i)) for i in range(2)]
        del bb
        srv = servers.start(store=root / "store", backbones=[{"name": spec.name, "source": spec.source,
                                                             "max_length": spec.max_length}])
        for name, data, labels in (("keep-head", heads[0], None), ("keep-lora", loras[0], '["neg","pos"]')):
            r = srv.register_archive(data, name=name, labels=labels)
            assert r.status_code == 201, r.text
        samples, errors, done, per_process_warm = [], [], 0, {}
        for i in range(args.cycles):
            if time.monotonic() - t0 > args.max_minutes * 60:
                break
            name = f"churn-{i % 5}"
            lora = i % 3 == 2
            data = loras[(i // 3) % 2] if lora else heads[i % 4]
            steps = [srv.register_archive(data, name=name, labels='["neg","pos"]' if lora else None),
                     srv.predict([name, "keep-head", "keep-lora"], texts=texts[:4]),
                     srv.delete(f"/adapters/{name}", admin=True)]
            errors += [f"cycle {i}: {r.status_code} {r.text[:150]}" for r in steps if r.status_code >= 300]
            done = i + 1
            if done % args.every == 0 or done == 1:
                samples.append((done, tree_rss_bytes(srv.proc.pid) / MiB))
            if done == args.warmup:
                per_process_warm = per_process(srv.proc.pid)
        per_process_end = per_process(srv.proc.pid)
        listed = sorted(a["name"] for a in srv.get("/adapters").json()["adapters"])
        store_bytes = du(Path(srv.store))
        internal = srv.internal_errors()
    wall = time.monotonic() - t0
    after = [(c, m) for c, m in samples if c >= args.warmup]
    warm = after[0][1] if after else float("nan")
    end = samples[-1][1] if samples else float("nan")
    slope = slope_per_100([c for c, _ in after], [m for _, m in after])
    verdict = "pass" if not errors and not internal and listed == ["keep-head", "keep-lora"] else "FAIL"
    out = {"verdict": verdict, "cycles": done, "seconds": round(wall, 1),
           "backbone": "tiny random BERT" if args.tiny else "embedded all-MiniLM-L6-v2",
           "rss_mib_after_warmup": round(warm, 1), "rss_mib_end": round(end, 1),
           "rss_growth_mib_after_warmup": round(end - warm, 1),
           "rss_slope_mib_per_100_cycles": round(slope, 2), "samples_cycle_rss_mib": samples,
           "rss_mib_per_process_after_warmup": per_process_warm, "rss_mib_per_process_end": per_process_end,
           "store_bytes_at_end": store_bytes, "tasks_at_end": listed, "errors": errors[:20],
           "server_internal_errors": internal[:20], "machine": machine()}
    md = f"""# Memory under adapter churn ({out['backbone']}, {done} register/predict/delete cycles)

Measured on a shared 2-core CPU machine. RSS = the whole `bentoml serve` process tree.

| | |
|---|---|
| verdict | **{verdict}** |
| cycles (register head or LoRA, predict with 3 tasks, delete) | {done} ({done // 3} LoRA) |
| RSS after {args.warmup}-cycle warm-up | {out['rss_mib_after_warmup']} MiB |
| RSS at the end | {out['rss_mib_end']} MiB (growth {out['rss_growth_mib_after_warmup']} MiB) |
| least-squares slope after the warm-up | {out['rss_slope_mib_per_100_cycles']} MiB per 100 cycles |
| store on disk at the end (2 tasks kept) | {store_bytes / MiB:.2f} MiB |
| failed calls / server tracebacks | {len(errors)} / {len(internal)} |
| wall time | {out['seconds']} s |

RSS per process after the warm-up: {per_process_warm}; at the end: {per_process_end}

RSS samples (cycle: MiB): {', '.join(f'{c}: {m:.0f}' for c, m in samples)}

Command: `python -m bench memory-churn --cycles {args.cycles}{' --tiny' if args.tiny else ''}`
"""
    print(md)
    if not args.no_save:
        save_results("reliability_memory", out, md)
    return 0 if verdict == "pass" else 1

