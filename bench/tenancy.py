"""Tenancy: namespace A floods the server at ten times its share while namespace B sends a steady load.

    python -m bench tenancy --threads 1                 # MiniLM, 3 rounds of 3 phases x 20 s
    python -m bench tenancy --tiny --seconds 3 --rounds 1   # quick, a tiny random backbone

A real ``bentoml serve`` on 127.0.0.1 (``tests/support/server.py``) with one head task in
each of two namespaces, ``team-a/x`` and ``team-b/y`` (qualified names: this needs a server
whose store accepts them; on one that refuses them the bench stops at registration and says
so). Both namespaces have the default weight 1, so each is entitled to half the batch worker
when both have work waiting.

- **B** (steady): ``--b-clients`` clients (one loopback address each) each send 4 texts, then
  pause ``--b-pause`` seconds: well under half the server's capacity.
- **A** (flood): ``--a-clients`` clients send 32 texts each, back to back: about ten times
  B's rows in flight, far more than its half.

Three phases per round, interleaved over ``--rounds`` rounds in one run so the machine's
drift hits them alike: B alone, A alone, both. Reported (``bench/results/tenancy.{json,md}``):
B's p99 with A flooding over B's p99 alone (goal <= 1.5), A's rows/s with B beside it over A
alone (A gets the capacity B leaves: near 1 minus B's share), failures (goal 0), and the load
average at the start and end: on a shared machine the figures are only comparable within one
run, and a loaded machine's figures are marked as taken under load.
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import sys
import tempfile
import threading
import time
from pathlib import Path

import httpx

from bench.common import TEXT_SPEC, load, machine, percentile, run_for, save_results

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))  # the real-server helper the tests use

from support.server import ServerFactory  # noqa: E402
from service import server_timing  # noqa: E402

TASK_A, TASK_B = "team-a/x", "team-b/y"
B_TEXTS = ["a great movie", "the plot was awful and boring", "fine", "I would watch it again"]
A_TEXTS = [f"review {i}: the actors were good but the story was slow and long" for i in range(32)]


def client_loop(url: str, address: str, body: dict, pause_s: float, stop: threading.Event, log: list) -> None:
    transport = httpx.HTTPTransport(local_address=address)
    with httpx.Client(base_url=url, timeout=300, transport=transport) as c:
        while not stop.is_set():
            t = time.perf_counter()
            stages = {}
            try:
                r = c.post("/predict", json=body)
                status = r.status_code
                stages = server_timing.parse(r.headers.get(server_timing.HEADER, ""))
            except httpx.HTTPError as exc:
                status = type(exc).__name__
            wall = time.perf_counter() - t
            # the rest: HTTP parsing, request validation, the event loop, sending the answer
            stages["outside"] = round(wall * 1000 - sum(stages.values()), 3)
            log.append((status, wall, len(body["texts"]), stages))
            if pause_s:
                stop.wait(pause_s)


def phase(url: str, seconds: float, a_clients: int, b_clients: int, b_pause: float) -> dict:
    """One phase: the named clients for ``seconds``; each side's log and the wall time."""
    stop = threading.Event()
    logs: dict[str, list] = {"a": [], "b": []}
    threads = [threading.Thread(target=client_loop, args=(
        url, f"127.0.0.{21 + i}", {"task": TASK_A, "texts": A_TEXTS}, 0.0, stop, logs["a"])) for i in range(a_clients)]
    threads += [threading.Thread(target=client_loop, args=(
        url, f"127.0.0.{41 + i}", {"task": TASK_B, "texts": B_TEXTS}, b_pause, stop, logs["b"])) for i in range(b_clients)]
    wall = run_for(threads, stop, seconds, join_timeout=900)
    return {"wall": wall, **logs}


def batches_parked(metrics_text: str) -> float | None:
    """``taskswap_batches_parked_total`` summed over the server's workers (None: not exported)."""
    lines = [ln for ln in metrics_text.splitlines() if ln.startswith("taskswap_batches_parked_total")]
    return sum(float(ln.split()[-1]) for ln in lines) if lines else None


def stage_table(log: list) -> dict:
    """Per stage of the answered requests' Server-Timing: ``{stage: (p50 ms, p99 ms)}``."""
    ok = [st for s, _, _, st in log if s == 200]
    names = [n for n in ("admit", "pre", "queue", "run", "post", "outside") if any(n in st for st in ok)]
    return {n: (round(percentile([st.get(n, 0.0) for st in ok], 50), 1),
                round(percentile([st.get(n, 0.0) for st in ok], 99), 1)) for n in names}


def summary(log: list, wall: float) -> dict:
    ok = [(t, n) for s, t, n, _ in log if s == 200]
    lat = [t for t, _ in ok]
    return {"requests": len(log), "ok": len(ok), "failed": len(log) - len(ok),
            "statuses": dict(collections.Counter(str(s) for s, _, _, _ in log)),
            "stages_ms": stage_table(log),
            "p50_s": round(percentile(lat, 50), 4) if lat else None,
            "p99_s": round(percentile(lat, 99), 4) if lat else None,
            "rows_per_s": round(sum(n for _, n in ok) / wall, 2) if wall else 0.0, "latencies": lat}


def measures(runs: dict, internal: list, parked: float | None) -> dict:
    """One server's figures from its phases' logs."""
    def merged(name: str, side: str) -> dict:
        log = [x for run in runs[name] for x in run[side]]
        return summary(log, sum(run["wall"] for run in runs[name]))

    b_alone, b_both = merged("b_alone", "b"), merged("both", "b")
    a_alone, a_both = merged("a_alone", "a"), merged("both", "a")
    ratio_b = round(b_both["p99_s"] / b_alone["p99_s"], 2) if b_alone["p99_s"] and b_both["p99_s"] else None
    ratio_a = round(a_both["rows_per_s"] / a_alone["rows_per_s"], 2) if a_alone["rows_per_s"] else None
    failed = sum(s["failed"] for s in (b_alone, b_both, a_alone, a_both))
    goals = {"B p99 with A flooding <= 1.5x alone": ratio_b is not None and ratio_b <= 1.5,
             "A keeps progressing": a_both["ok"] > 0, "no failure": failed == 0}
    ok = failed == 0 and not internal and goals["A keeps progressing"]
    return {
        "b_alone": {k: v for k, v in b_alone.items() if k != "latencies"},
        "b_with_a": {k: v for k, v in b_both.items() if k != "latencies"},
        "a_alone": {k: v for k, v in a_alone.items() if k != "latencies"},
        "a_with_b": {k: v for k, v in a_both.items() if k != "latencies"},
        "b_p99_ratio": ratio_b, "a_rows_per_s_ratio": ratio_a,
        "a_offered_over_b": round(a_both["rows_per_s"] / b_both["rows_per_s"], 1) if b_both["rows_per_s"] else None,
        "failed": failed, "tracebacks": len(internal), "batches_parked": parked,
        "goals": goals, "verdict": "pass" if ok else "fail"}


def table(r: dict, mark: str) -> list[str]:
    """The markdown lines of one server's figures."""
    b_alone, b_both, a_alone, a_both = r["b_alone"], r["b_with_a"], r["a_alone"], r["a_with_b"]
    met = r["goals"]["B p99 with A flooding <= 1.5x alone"]
    lines = ["| measure | alone | beside the other | ratio | goal |", "|---|---|---|---|---|",
             f"| B p99 | {b_alone['p99_s']} s | {b_both['p99_s']} s | x{r['b_p99_ratio']} | <= x1.5: "
             f"{'met' if met else 'missed'}{mark} |",
             f"| B p50 | {b_alone['p50_s']} s | {b_both['p50_s']} s | | |",
             f"| A rows/s | {a_alone['rows_per_s']} | {a_both['rows_per_s']} | x{r['a_rows_per_s_ratio']} | the capacity B leaves |",
             f"| B rows/s | {b_alone['rows_per_s']} | {b_both['rows_per_s']} | | |",
             f"| failures / tracebacks | | {r['failed']} / {r['tracebacks']} | | 0 |", "",
             f"Batches of one namespace parked between trunk blocks for the other's "
             f"(`taskswap_batches_parked_total`, whole run): {r['batches_parked']}", "",
             "Where B's time goes (its answers' `Server-Timing`, ms, p50 / p99; `outside`: the client's "
             "wall time minus the server's stages: HTTP parsing, validation, the event loop, sending):", "",
             "| stage | B alone | B beside A | A beside B |", "|---|---|---|---|"]
    for stage in b_both["stages_ms"]:
        cell = lambda s: "{} / {}".format(*s["stages_ms"][stage]) if stage in s["stages_ms"] else ""  # noqa: E731
        lines.append(f"| {stage} | {cell(b_alone)} | {cell(b_both)} | {cell(a_both)} |")
    return lines + [""]


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--seconds", type=float, default=20, help="each phase")
    ap.add_argument("--rounds", type=int, default=3, help="rounds of (B alone, A alone, both)")
    ap.add_argument("--a-clients", type=int, default=8)
    ap.add_argument("--b-clients", type=int, default=2)
    ap.add_argument("--b-pause", type=float, default=0.2, help="seconds each B client waits between requests")
    ap.add_argument("--threads", type=int, default=1, help="TASKSWAP_TORCH_THREADS of the server")
    ap.add_argument("--gate", type=int, default=None,
                    help="TASKSWAP_NAMESPACE_MAX_INFLIGHT of the server (0: no admission gate; default: the server's)")
    ap.add_argument("--switch-ms", type=float, default=None, help="TASKSWAP_GIL_SWITCH_MS of the server")
    ap.add_argument("--split", type=int, default=None, help="TASKSWAP_SLICE_SPLIT of the server (default: the server's)")
    ap.add_argument("--preempt", choices=["on", "off", "both"], default=None,
                    help="TASKSWAP_PREEMPT of the server: park a running batch between trunk blocks for "
                         "another namespace's owed work (default: the server's, on); both: two servers, "
                         "one with it on and one off, measured round by round in one run")
    ap.add_argument("--tiny", action="store_true", help="a tiny random text backbone")
    ap.add_argument("--no-save", action="store_true")
    args = ap.parse_args(argv)
    load_start = machine()["load_avg"]
    settings = ["on", "off"] if args.preempt == "both" else [args.preempt]

    with tempfile.TemporaryDirectory(prefix="tenancy-") as tmp, contextlib.ExitStack() as stack:
        root = Path(tmp)
        from adapters.format.archive import make_archive
        from support.factories import head_adapter
        if args.tiny:
            from adapters.backbones.tiny import tiny_backbone_spec
            spec = tiny_backbone_spec("text", root / "t")
        else:
            spec = TEXT_SPEC
        text = load(spec)
        env = [{"name": spec.name, "source": spec.source, "max_length": spec.max_length, "image_size": spec.image_size}]
        srvs = {}
        for n, preempt in enumerate(settings):
            # a folder (so a BENTOML_HOME and its metrics directory) per server: two servers
            # sharing one would count each other's metrics, or lose them
            (root / f"server{n}").mkdir()
            servers = stack.enter_context(ServerFactory(root / f"server{n}"))
            srv = srvs[preempt] = servers.start(
                store=root / f"store{n}", backbones=env, ready_timeout_s=900,
                env={"TASKSWAP_TORCH_THREADS": str(args.threads), "TASKSWAP_PREDICT_TIMEOUT_S": "600",
                     "TASKSWAP_MAX_QUEUE_ROWS": "65536", "TASKSWAP_SERVER_TIMING": "1",
                     **({} if args.gate is None else {"TASKSWAP_NAMESPACE_MAX_INFLIGHT": str(args.gate)}),
                     **({} if args.switch_ms is None else {"TASKSWAP_GIL_SWITCH_MS": str(args.switch_ms)}),
                     **({} if args.split is None else {"TASKSWAP_SLICE_SPLIT": str(args.split)}),
                     **({} if preempt is None else {"TASKSWAP_PREEMPT": "1" if preempt == "on" else "0"})})
            for i, task in enumerate((TASK_A, TASK_B)):
                r = srv.register_archive(make_archive(head_adapter(root / f"h{n}-{i}", text, f"h{i}", seed=i)), name=task)
                if r.status_code != 201:
                    print(f"registering {task!r} failed ({r.status_code}: {r.text[:300]}): this server does not "
                          "accept qualified 'namespace/task' names yet, so there are no two namespaces to compare",
                          file=sys.stderr)
                    return 2
            for task in (TASK_A, TASK_B):  # warm each path once
                assert srv.predict(task, texts=B_TEXTS).status_code == 200
        runs = {p: {"b_alone": [], "a_alone": [], "both": []} for p in settings}
        for rnd in range(args.rounds):  # interleaved: drift hits every phase (and server) alike
            for preempt in settings[rnd % len(settings):] + settings[:rnd % len(settings)]:
                url = srvs[preempt].url
                runs[preempt]["b_alone"].append(phase(url, args.seconds, 0, args.b_clients, args.b_pause))
                runs[preempt]["a_alone"].append(phase(url, args.seconds, args.a_clients, 0, args.b_pause))
                runs[preempt]["both"].append(phase(url, args.seconds, args.a_clients, args.b_clients, args.b_pause))
        internal = {p: srv.internal_errors() for p, srv in srvs.items()}
        parked = {p: batches_parked(srv.get("/metrics").text) for p, srv in srvs.items()}
    load_end = machine()["load_avg"]
    loaded = max(load_start[0], load_end[0]) > (machine()["cpus"] or 1)  # above the core count
    results = {p: measures(runs[p], internal[p], parked[p]) for p in settings}
    report = {
        "command": "python -m bench tenancy " + " ".join(sys.argv[1:]), "machine": machine(),
        "load_avg_start": load_start, "load_avg_end": load_end, "under_load": loaded,
        "server_threads": args.threads, "namespace_max_inflight": args.gate, "gil_switch_ms": args.switch_ms,
        "slice_split": args.split, "preempt": args.preempt, "seconds_per_phase": args.seconds, "rounds": args.rounds,
        "a_clients": args.a_clients, "b_clients": args.b_clients, "b_pause_s": args.b_pause,
    }
    if len(settings) == 1:
        report.update(results[settings[0]])
    else:
        report["by_preempt"] = results
    ok = all(r["verdict"] == "pass" for r in results.values())
    report["verdict"] = "pass" if ok else "fail"
    m = report["machine"]
    mark = " (under load: not a claim about the goal)" if loaded else ""
    lines = [f"# Tenancy: namespace A floods, namespace B steady ({report['verdict']})", "",
             f"`{report['command']}`; {m['cpus']} CPUs, server torch threads {args.threads}, load average "
             f"{load_start[0]:.1f} at the start, {load_end[0]:.1f} at the end{mark}; "
             f"{args.rounds} rounds x (B alone, A alone, both) x {args.seconds:g} s, interleaved"
             + (" (and, round by round, over one server with TASKSWAP_PREEMPT on and one with it off)"
                if len(settings) > 1 else ""), ""]
    for preempt in settings:
        if len(settings) > 1:
            lines += [f"## TASKSWAP_PREEMPT {preempt}", ""]
        lines += table(results[preempt], mark)
    md = "\n".join(lines) + "\n"
    print(md)
    if not args.no_save:
        save_results("tenancy", report, md)
    return 0 if ok else 1
