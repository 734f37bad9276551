"""Fairness: one client sends the most expensive valid requests while honest clients predict.

    python -m bench fairness --threads 1                 # MiniLM + speech_embedding, 60 s + 120 s
    python -m bench fairness --tiny --seconds 5           # quick, tiny random backbones (the smoke test)

A real ``bentoml serve`` on 127.0.0.1 (``tests/support/server.py``). Four honest clients (each
from its own loopback address, 127.0.0.11-14: four clients, as four hosts would be) predict
four short texts on three tasks (two heads and a rank-8 LoRA) in a loop, first alone
(``--alone`` seconds), then for ``--seconds`` while one heavy client (127.0.0.2) sends the
three payloads of issue 30, each back to back on its own connection (all three in flight at
once, one client):

- 64 texts of 10,000 characters to a token-tagging task (every token tagged, over windows;
  1,000 in tiny mode);
- 8 clips of 30 s (silence, OGG Vorbis, as the issue sent them) to an audio task (tiny mode:
  no audio backbone, skipped);
- 64 texts on three rank-256 LoRA tasks on every Linear of the encoder.

Reported (``bench/results/fairness.{json,md}``): honest p50/p99 alone and under the heavy
load and their ratio (goal <= 2), honest failures (goal 0), the server tree's RSS peak over
its idle RSS (sampled every 50 ms; goal <= +1 GiB), and the heavy client's own throughput
per payload (it must progress) with its statuses. The load average at the start and end is
stated: on a shared machine the figures are only comparable within one run.
"""

from __future__ import annotations

import argparse
import base64
import collections
import io
import sys
import tempfile
import threading
import time
from pathlib import Path

import httpx
import numpy as np
import soundfile as sf

from bench.common import TEXT_SPEC, load, machine, percentile, run_for, save_results, write_heads, write_loras

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))  # the real-server helper the tests use

from support.proc_mem import tree_rss_bytes  # noqa: E402
from support.server import ServerFactory  # noqa: E402

HONEST = ["a great movie", "the plot was awful and boring", "fine", "I would watch it again"]
HONEST_TASKS = ["h-0000", "h-0001", "lora-honest"]
HEAVY_LORAS = ["big-0", "big-1", "big-2"]
ALL_LINEAR = ["query", "key", "value", "intermediate.dense", "output.dense"]
WORDS = "the plot of this movie was long and slow but the actors were very good in every scene "


def silent_ogg(seconds: float, rate: int = 16_000) -> str:
    """A silent OGG Vorbis clip, base64: a few KiB that decode to ``seconds`` of samples."""
    buf = io.BytesIO()
    sf.write(buf, np.zeros(int(seconds * rate), np.float32), rate, format="OGG", subtype="VORBIS")
    return base64.b64encode(buf.getvalue()).decode()


def build(root: Path, tiny: bool, lora_rank: int):
    """(server backbones env, [(folder, name)] to register, heavy payloads by name)."""
    from adapters.backbones.defaults import AUDIO
    from support.factories import head_adapter, peft_lora_dir
    from support.token_factories import token_head_adapter
    if tiny:
        from adapters.backbones.tiny import tiny_backbone_spec
        specs = [tiny_backbone_spec("text", root / "t")]
    else:
        specs = [TEXT_SPEC, AUDIO]
    env = [{"name": s.name, "source": s.source, "max_length": s.max_length, "image_size": s.image_size}
           for s in specs]
    text = load(specs[0])
    adapters = [(p, None) for p in write_heads(root / "heads", text, 2, prefix="h")]
    adapters.append((peft_lora_dir(root / "lora", str(text.source_path), r=8), "lora-honest"))
    adapters.append((token_head_adapter(root / "tok", text, "tok", ["O", "A", "B", "C"]), None))
    big = write_loras(root / "big", text, 3, r=lora_rank, targets=ALL_LINEAR)
    adapters += list(zip(big, HEAVY_LORAS))
    chars = 1_000 if tiny else 10_000  # the tiny backbone's 32-token windows: 10,000 would pass the window cap
    heavy = {f"64 x {chars:,}-char texts, token tagging": {"tasks": ["tok"], "texts": [(WORDS * 200)[:chars]] * 64},
             f"3 rank-{lora_rank} all-Linear LoRA x 64 texts": {"tasks": HEAVY_LORAS,
                                                                 "texts": [(WORDS * 8)[:600]] * 64}}
    if not tiny:
        audio = load(AUDIO)
        adapters.append((head_adapter(root / "aud", audio, "aud"), None))
        heavy["8 x 30-s clips, audio"] = {"tasks": ["aud"], "audio": [silent_ogg(30)] * 8}
    return env, adapters, heavy


def honest_phase(url: str, clients: int, seconds: float, stop: threading.Event, extra=()) -> tuple[list, float]:
    """``clients`` honest loops (each from its own loopback address) for ``seconds``, beside
    the ``extra`` threads, which watch the same ``stop``; their (status, seconds) log and the
    wall time (until every thread, a heavy request in flight included, is done)."""
    log: list[tuple[object, float]] = []

    def loop(i: int) -> None:
        transport = httpx.HTTPTransport(local_address=f"127.0.0.{11 + i}")
        with httpx.Client(base_url=url, timeout=180, transport=transport) as c:
            while not stop.is_set():
                t = time.perf_counter()
                try:
                    status = c.post("/predict", json={"tasks": HONEST_TASKS, "texts": HONEST}).status_code
                except httpx.HTTPError as exc:
                    status = type(exc).__name__
                log.append((status, time.perf_counter() - t))

    threads = [threading.Thread(target=loop, args=(i,)) for i in range(clients)] + list(extra)
    wall = run_for(threads, stop, seconds, join_timeout=900)
    return log, wall


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--seconds", type=float, default=120, help="honest + heavy phase")
    ap.add_argument("--alone", type=float, default=None, help="honest-alone phase (default: half of --seconds)")
    ap.add_argument("--honest", type=int, default=4)
    ap.add_argument("--threads", type=int, default=1, help="TASKSWAP_TORCH_THREADS of the server")
    ap.add_argument("--lora-rank", type=int, default=256)
    ap.add_argument("--tiny", action="store_true", help="tiny random backbones (no audio payload)")
    ap.add_argument("--slice-cost", type=int, default=None, help="TASKSWAP_SLICE_COST (default: the server's)")
    ap.add_argument("--no-save", action="store_true")
    args = ap.parse_args(argv)
    alone_s = args.seconds / 2 if args.alone is None else args.alone
    load_start = machine()["load_avg"]

    with tempfile.TemporaryDirectory(prefix="fairness-") as tmp, ServerFactory(Path(tmp)) as servers:
        root = Path(tmp)
        env, adapters, heavy = build(root, args.tiny, args.lora_rank)
        server_env = {"TASKSWAP_TORCH_THREADS": str(args.threads), "TASKSWAP_PREDICT_TIMEOUT_S": "600"}
        if args.slice_cost is not None:
            server_env["TASKSWAP_SLICE_COST"] = str(args.slice_cost)
        srv = servers.start(store=root / "store", backbones=env, env=server_env, ready_timeout_s=900)
        from adapters.format.archive import make_archive
        for folder, name in adapters:
            r = srv.register_archive(make_archive(folder), **({"name": name} if name else {}))
            assert r.status_code == 201, r.text
        with srv.new_client() as c:  # warm every path once
            c.timeout = 600
            assert c.post("/predict", json={"tasks": HONEST_TASKS, "texts": HONEST}).status_code == 200
            for body in heavy.values():  # one input of each heavy payload: every path loaded
                one = {k: v[:1] if k in ("texts", "audio") else v for k, v in body.items()}
                r = c.post("/predict", json=one)
                assert r.status_code == 200, r.text[:500]
        idle_rss = tree_rss_bytes(srv.proc.pid)
        alone, _ = honest_phase(srv.url, args.honest, alone_s, threading.Event())

        heavy_log: list[tuple[str, object, float]] = []
        rss = [idle_rss]
        stop = threading.Event()

        def heavy_loop(name: str) -> None:
            """One of the heavy client's payloads, back to back, on its own connection from
            the heavy client's address: the three are in flight at once, one client."""
            transport = httpx.HTTPTransport(local_address="127.0.0.2")
            with httpx.Client(base_url=srv.url, timeout=900, transport=transport) as c:
                while not stop.is_set():
                    t = time.perf_counter()
                    try:
                        status = c.post("/predict", json=heavy[name]).status_code
                    except httpx.HTTPError as exc:
                        status = type(exc).__name__
                    heavy_log.append((name, status, time.perf_counter() - t))

        heavy_threads = [threading.Thread(target=heavy_loop, args=(name,)) for name in heavy]

        def sampler() -> None:
            """Until the phase ends and every heavy request in flight then is answered."""
            while not stop.is_set() or any(t.is_alive() for t in heavy_threads):
                rss.append(tree_rss_bytes(srv.proc.pid))
                time.sleep(0.05)

        extra = heavy_threads + [threading.Thread(target=sampler)]
        loaded, wall = honest_phase(srv.url, args.honest, args.seconds, stop, extra)
        internal = srv.internal_errors()
        speed = srv.get("/metrics").status_code  # the server still answers
    load_end = machine()["load_avg"]

    def lat(log):
        return [t for s, t in log if s == 200]

    p99_alone, p99_loaded = percentile(lat(alone), 99), percentile(lat(loaded), 99)
    failed = [s for s, _ in alone + loaded if s != 200]
    per_payload = {}
    for name in heavy:
        mine = [(s, t) for n, s, t in heavy_log if n == name]
        done = [t for s, t in mine if s == 200]
        inputs = len(heavy[name].get("texts") or heavy[name].get("audio"))
        per_payload[name] = {"sent": len(mine), "ok": len(done), "statuses": dict(collections.Counter(map(str, (s for s, _ in mine)))),
                             "mean_s": round(sum(done) / len(done), 2) if done else None,
                             "inputs_per_s": round(len(done) * inputs / wall, 2)}
    report = {
        "command": "python -m bench fairness " + " ".join(sys.argv[1:]), "machine": machine(),
        "load_avg_start": load_start, "load_avg_end": load_end, "server_threads": args.threads,
        "seconds_alone": alone_s, "seconds_loaded": round(wall, 1),
        "honest_requests_alone": len(alone), "honest_requests_loaded": len(loaded),
        "honest_p50_alone_s": round(percentile(lat(alone), 50), 3), "honest_p99_alone_s": round(p99_alone, 3),
        "honest_p50_loaded_s": round(percentile(lat(loaded), 50), 3), "honest_p99_loaded_s": round(p99_loaded, 3),
        "p99_ratio": round(p99_loaded / p99_alone, 2) if p99_alone else None,
        "honest_failed": len(failed), "honest_failures": dict(collections.Counter(map(str, failed))),
        "rss_idle_mib": round(idle_rss / 2**20), "rss_peak_mib": round(max(rss) / 2**20),
        "rss_peak_over_idle_mib": round((max(rss) - idle_rss) / 2**20),
        "heavy": per_payload, "tracebacks": len(internal), "metrics_status": speed,
    }
    goals = {"honest p99 <= 2x alone": bool(report["p99_ratio"] is not None and report["p99_ratio"] <= 2),
             "no honest failure": not failed,
             "RSS peak <= +1 GiB over idle": report["rss_peak_over_idle_mib"] <= 1024,
             "heavy client progresses": all(p["ok"] > 0 for p in per_payload.values())}
    report["goals"] = goals
    # "pass" = nothing broke (no honest failure, no traceback, the heavy client progressed);
    # the latency and memory goals are reported as met or missed, not hidden behind it.
    ok = not failed and not internal and goals["heavy client progresses"]
    report["verdict"] = "pass" if ok else "fail"
    m = report["machine"]
    lines = [f"# Fairness under one heavy client ({report['verdict']})", "",
             f"`{report['command']}`; {m['cpus']} CPUs, server torch threads {args.threads}, load average "
             f"{load_start[0]:.1f} at the start, {load_end[0]:.1f} at the end (shared machine: taken under load)", "",
             "| measure | value | goal |", "|---|---|---|",
             f"| honest requests alone / under load | {len(alone)} / {len(loaded)} | |",
             f"| honest p50 alone / under load | {report['honest_p50_alone_s']} s / {report['honest_p50_loaded_s']} s | |",
             f"| honest p99 alone / under load | {report['honest_p99_alone_s']} s / {report['honest_p99_loaded_s']} s "
             f"(x{report['p99_ratio']}) | <= x2: {'met' if goals['honest p99 <= 2x alone'] else 'missed'} |",
             f"| honest failures | {len(failed)} | 0: {'met' if not failed else 'missed'} |",
             f"| server RSS idle / peak | {report['rss_idle_mib']} / {report['rss_peak_mib']} MiB "
             f"(+{report['rss_peak_over_idle_mib']}) | <= +1024: "
             f"{'met' if goals['RSS peak <= +1 GiB over idle'] else 'missed'} |",
             f"| tracebacks in the server log | {len(internal)} | 0 |", "",
             "| heavy payload | sent | 200 | mean latency | inputs/s | statuses |", "|---|---|---|---|---|---|"]
    lines += [f"| {k} | {v['sent']} | {v['ok']} | {v['mean_s']} s | {v['inputs_per_s']} | {v['statuses']} |"
              for k, v in per_payload.items()]
    md = "\n".join(lines) + "\n"
    print(md)
    if not args.no_save:
        save_results("fairness", report, md)
    return 0 if ok else 1
