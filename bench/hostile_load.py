"""Hostile load: honest clients and attackers on one real server, for minutes.

    python -m bench hostile-load                     # 180 s, MiniLM text + MobileNetV2 vision
    python -m bench hostile-load --seconds 30 --tiny  # quick, tiny random backbones

A real ``bentoml serve`` on 127.0.0.1 (``tests/support/server.py``). Honest clients predict
texts (several tasks, head and LoRA) and small images in a loop; hostile clients send, at
random, every attack class of SECURITY.md: texts the tokenizer rejects (lone surrogate,
NUL, non-characters) mixed with good ones, oversized texts, malformed and deeply nested
JSON, JSON sent as text/plain, a slowloris body (cut off by the read timeout: 408),
40-megapixel PNG bombs within the per-image cap (four per request: the request's
pixel budget), five of them (over it), 1,000 task names, a 100,000-character task name,
and as admin the zip archives that once got a 500, a PEFT config with a catastrophic
regex, a head whose weights overflow, a TOKEN_CLS PEFT directory, ``r`` unequal to the
tensors' rank.

Reported (``bench/results/reliability_hostile.{json,md}``): honest requests and how many
failed (must be 0), hostile requests by class and status, 5xx answers (must be 0, from
the clients and from the server's access log), the server tree's RSS before and at peak
(sampled every 50 ms), and tracebacks in the server log (must be none).
"""

from __future__ import annotations

import argparse
import base64
import collections
import io
import json
import random
import sys
import tempfile
import threading
import time
from pathlib import Path

import httpx

from bench.common import TEXT_SPEC, VISION_SPEC, load, machine, percentile, run_for, save_results, write_heads

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))  # the real-server helper the tests use

from support.proc_mem import tree_rss_bytes  # noqa: E402
from support.server import ServerFactory  # noqa: E402

TEXTS = ["a great movie", "the plot was awful and boring", "fine", "I would watch it again"]


def png(w: int, h: int, color=(0, 0, 0)) -> bytes:
    from PIL import Image
    buf = io.BytesIO()
    Image.new("RGB", (w, h), color).save(buf, "PNG")
    return buf.getvalue()


def build(root: Path, tiny: bool):
    """(server backbones env, admin payloads, text tasks, image task folders)."""
    from adapters.format.archive import make_archive
    if tiny:
        from adapters.backbones.tiny import tiny_backbone_spec
        specs = [tiny_backbone_spec("text", root / "t"), tiny_backbone_spec("vision", root / "v")]
    else:
        specs = [TEXT_SPEC, VISION_SPEC]
    env = [{"name": s.name, "source": s.source, "max_length": s.max_length, "image_size": s.image_size}
           for s in specs]
    text, vision = load(specs[0]), load(specs[1])
    heads = write_heads(root / "heads", text, 2, prefix="h")
    img = write_heads(root / "img", vision, 1, prefix="img")
    sys.path.insert(0, str(REPO / "tests"))
    sys.path.insert(0, str(REPO / "tests" / "resilience"))  # the hostile inputs the tests send
    from support.factories import head_adapter, peft_lora_dir
    from test_fuzz_archive import CASES
    from test_hardening_http import peft_token_cls_dir
    from test_non_finite import huge_head
    src = str(text.source_path)
    lora = peft_lora_dir(root / "lora", src, r=4)

    def peft_variant(name: str, **cfg) -> bytes:
        folder = peft_lora_dir(root / name, src, r=4)
        c = json.loads((folder / "adapter_config.json").read_text())
        (folder / "adapter_config.json").write_text(json.dumps({**c, **cfg}))
        return make_archive(folder)

    admin = {f"zip: {k}": data for k, (data, _) in CASES.items()}
    admin["catastrophic regex"] = peft_variant("re", alpha_pattern={r"(?:.*?){20}\d\d": 4})
    admin["r unequal to rank"] = peft_variant("r2", r=2)
    admin["huge head weights"] = make_archive(huge_head(head_adapter(root / "huge", text, "huge")))
    admin["TOKEN_CLS peft"] = make_archive(peft_token_cls_dir(root / "tok", src))
    return env, admin, heads, lora, img


class _Status:
    def __init__(self, status_code):
        self.status_code = status_code


def slow_body(c: httpx.Client) -> _Status:
    """A slowloris body: headers, then one byte a second; the server must cut it off (408)."""
    import socket
    from urllib.parse import urlparse
    u = urlparse(str(c.base_url))
    body = b'{"task": "h-0000", "texts": ["' + b"x" * 200 + b'"]}'
    with socket.create_connection((u.hostname, u.port), timeout=120) as sock:
        sock.sendall(b"POST /predict HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                     + f"Content-Length: {len(body)}\r\n\r\n".encode())
        sock.settimeout(1.0)
        answer = b""
        for byte in body:
            try:
                sock.sendall(bytes([byte]))
                answer += sock.recv(4096)
            except socket.timeout:
                continue
            except OSError:
                break
            if b"\r\n" in answer:
                break
    line = answer.split(b"\r\n", 1)[0].split()
    return _Status(int(line[1]) if len(line) > 1 and line[1].isdigit() else "no answer")


def hostile_requests(admin: dict[str, bytes]) -> dict[str, callable]:
    bomb = base64.b64encode(png(8000, 5000)).decode()  # 40 MP, ~120 KB: 160 MB decoded naively

    def raw_json(body: bytes):
        return lambda c: c.post("/predict", content=body, headers={"content-type": "application/json"})

    out = {
        "lone surrogate": raw_json(b'{"task": "h-0000", "texts": ["good", "\\ud800"]}'),
        "NUL": raw_json(b'{"task": "h-0000", "texts": ["a\\u0000b"]}'),
        "non-character": raw_json(b'{"task": "h-0000", "texts": ["\\ufffe"]}'),
        "text over cap": lambda c: c.post("/predict", json={"task": "h-0000", "texts": ["x" * 10_001]}),
        "malformed JSON": raw_json(b'{"task": "h-0000", "texts": ['),
        "deep nesting": raw_json(b"[" * 10_000 + b"]" * 10_000),
        "4 x 40 MP PNG": lambda c: c.post("/predict", json={"task": "img", "images": [bomb] * 4}),
        "5 x 40 MP PNG": lambda c: c.post("/predict", json={"task": "img", "images": [bomb] * 5}),
        "1,000 task names": lambda c: c.post("/predict/upload", files={"files": ("a.png", png(8, 8))},
                                             data={"task": [f"t{i}" for i in range(1000)]}),
        "100,000-char task": lambda c: c.post("/predict", json={"task": "x" * 100_000, "texts": ["a"]}),
        "slow body": slow_body,
        "JSON as text/plain": lambda c: c.post("/predict", content=b'{"task": "h-0000", "texts": ["a"]}',
                                               headers={"content-type": "text/plain"}),
    }
    for name, data in admin.items():
        out[f"admin {name}"] = (lambda d: lambda c: c.post(
            "/adapters", files={"file": ("a.zip", d)}, data={"name": "hostile"}, headers=c.admin))(data)
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--seconds", type=float, default=180)
    ap.add_argument("--honest", type=int, default=3, help="honest clients (texts; one more sends images)")
    ap.add_argument("--hostile", type=int, default=3, help="hostile clients")
    ap.add_argument("--tiny", action="store_true", help="tiny random backbones instead of MiniLM/MobileNetV2")
    ap.add_argument("--read-timeout", type=float, default=10, help="TASKSWAP_READ_TIMEOUT_S of the server")
    ap.add_argument("--no-save", action="store_true")
    args = ap.parse_args(argv)

    with tempfile.TemporaryDirectory(prefix="hostile-") as tmp, ServerFactory(Path(tmp)) as servers:
        root = Path(tmp)
        env, admin, heads, lora, img = build(root, args.tiny)
        srv = servers.start(store=root / "store", backbones=env,
                            env={"TASKSWAP_READ_TIMEOUT_S": str(args.read_timeout)})
        from adapters.format.archive import make_archive
        for folder in heads:
            assert srv.register_archive(make_archive(folder)).status_code == 201
        assert srv.register_archive(make_archive(lora), name="lora").status_code == 201
        assert srv.register_archive(make_archive(img[0]), name="img").status_code == 201
        small = base64.b64encode(png(64, 64, (200, 30, 30))).decode()
        honest = [lambda c: c.post("/predict", json={"tasks": ["h-0000", "h-0001", "lora"], "texts": TEXTS}),
                  lambda c: c.post("/predict", json={"task": "img", "images": [small, small]})]
        hostile = hostile_requests(admin)
        for h in honest:
            with srv.new_client() as c:
                r = h(c)
                assert r.status_code == 200, r.text
        base_rss = tree_rss_bytes(srv.proc.pid)
        stop = threading.Event()
        honest_log, hostile_log, rss = [], [], [base_rss]

        def honest_loop(i: int) -> None:
            call = honest[1] if i == args.honest else honest[0]
            with srv.new_client() as c:
                c.timeout = 180
                while not stop.is_set():
                    t = time.perf_counter()
                    try:
                        status = call(c).status_code
                    except httpx.HTTPError as exc:
                        status = type(exc).__name__
                    honest_log.append((status, time.perf_counter() - t))

        def hostile_loop(seed: int) -> None:
            rng = random.Random(seed)
            names = sorted(hostile)
            with srv.new_client() as c:
                c.timeout = 180
                c.admin = srv.headers(admin=True)
                while not stop.is_set():
                    name = rng.choice(names)
                    try:
                        status = hostile[name](c).status_code
                    except httpx.HTTPError as exc:
                        status = type(exc).__name__
                    hostile_log.append((name, status))

        def sampler() -> None:
            while not stop.is_set():
                rss.append(tree_rss_bytes(srv.proc.pid))
                time.sleep(0.05)

        threads = [threading.Thread(target=honest_loop, args=(i,)) for i in range(args.honest + 1)]
        threads += [threading.Thread(target=hostile_loop, args=(s,)) for s in range(args.hostile)]
        threads.append(threading.Thread(target=sampler))
        wall = run_for(threads, stop, args.seconds, join_timeout=200)
        log_text = srv.log_path.read_text(errors="replace")
        log_5xx = sum(1 for line in log_text.splitlines() if "(status=5" in line)
        internal = srv.internal_errors()

    honest_failed = [s for s, _ in honest_log if s != 200]
    by_class = collections.defaultdict(collections.Counter)
    for name, status in hostile_log:
        by_class[name][str(status)] += 1
    client_5xx = sum(1 for s, _ in honest_log if str(s).startswith("5")) + \
        sum(1 for _, s in hostile_log if str(s).startswith("5"))
    lat = [t for _, t in honest_log]
    report = {
        "command": "python -m bench hostile-load " + " ".join(sys.argv[1:]), "seconds": round(wall, 1),
        "machine": machine(), "honest_requests": len(honest_log), "honest_failed": len(honest_failed),
        "honest_failures": collections.Counter(map(str, honest_failed)),
        "honest_p50_s": round(percentile(lat, 50), 3), "honest_p99_s": round(percentile(lat, 99), 3),
        "hostile_requests": len(hostile_log), "hostile_by_class": {k: dict(v) for k, v in sorted(by_class.items())},
        "client_5xx": client_5xx, "server_log_5xx": log_5xx, "tracebacks": len(internal),
        "rss_before_mib": round(base_rss / 2**20), "rss_peak_mib": round(max(rss) / 2**20),
    }
    ok = report["honest_failed"] == 0 and client_5xx == 0 and log_5xx == 0 and not internal
    report["verdict"] = "pass" if ok else "fail"
    lines = [f"# Hostile load ({report['verdict']})", "", f"`{report['command']}`, {wall:.0f} s, "
             f"{machine()['cpus']} CPUs, load average {machine()['load_avg'][0]:.1f}", "",
             "| measure | value |", "|---|---|",
             f"| honest requests | {len(honest_log)} |", f"| honest failed (must be 0) | {len(honest_failed)} |",
             f"| honest latency p50 / p99 | {report['honest_p50_s']} s / {report['honest_p99_s']} s |",
             f"| hostile requests | {len(hostile_log)} |",
             f"| 5xx, clients / server log (must be 0) | {client_5xx} / {log_5xx} |",
             f"| tracebacks in the server log | {len(internal)} |",
             f"| server RSS before / peak | {report['rss_before_mib']} / {report['rss_peak_mib']} MiB |",
             "", "| hostile class | statuses |", "|---|---|"]
    lines += [f"| {k} | {', '.join(f'{s}: {n}' for s, n in sorted(v.items()))} |" for k, v in sorted(by_class.items())]
    md = "\n".join(lines) + "\n"
    print(md)
    if not args.no_save:
        save_results("reliability_hostile", report, md)
    return 0 if ok else 1

