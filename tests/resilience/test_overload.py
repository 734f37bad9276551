"""Overload and memory over real HTTP (issue 4, "Reliability").

- Beyond capacity the server sheds load with 429 + ``Retry-After`` instead of queueing
  without bound; memory stays flat through the burst; it serves normally right after.
- Adapter churn (register, predict, delete, over and over) does not grow memory.

The queue is made tiny so a laptop-sized burst overloads it. ``bench/memory_churn.py``
and ``bench/load_faults.py`` are the long versions.
"""

from __future__ import annotations

import collections
import concurrent.futures as cf
import time

import httpx
import pytest

from adapters.format.archive import make_archive
from support.factories import head_adapter, peft_lora_dir
from support.proc_mem import tree_rss_bytes
from support.server import server_factory, tiny_backbones_env  # noqa: F401  (pytest fixture)

pytestmark = pytest.mark.server
MiB = 1 << 20
TEXTS = ["the movie was good and the plot was fine"] * 64
OVERLOAD_ENV = {"TASKSWAP_MAX_QUEUE_ROWS": "64", "TASKSWAP_MAX_BATCH_ROWS": "64",
                "TASKSWAP_MAX_INPUTS": "64", "TASKSWAP_MAX_WAIT_MS": "2"}
BURST_S = 4.0


@pytest.fixture(scope="module")
def srv(server_factory, tiny_dir, tmp_path_factory, text_backbone):
    """Tasks h (head), l1, l2 (LoRA): one request on all three costs 64 x 3 = 192 rows,
    three times the queue's 64, so at most one such request waits at any time."""
    s = server_factory.start(store=tmp_path_factory.mktemp("store"), backbones=tiny_backbones_env(tiny_dir),
                             env=OVERLOAD_ENV)
    root = tmp_path_factory.mktemp("adapters")
    folders = [head_adapter(root / "h", text_backbone, "h")]
    folders += [peft_lora_dir(root / f"l{i}", str(tiny_dir / "text"), seed=i) for i in (1, 2)]
    for folder, name in zip(folders, ["h", "l1", "l2"]):
        r = s.register_archive(make_archive(folder), name=name if name != "h" else None)
        assert r.status_code == 201, r.text
    return s


def _predict(url: str, n: int | None = None, until: float | None = None) -> list[tuple[int, str | None, str]]:
    """Back-to-back requests from one client, ``n`` of them or until ``until`` (monotonic):
    (status, Retry-After, error kind). After a 429 the client pauses 20 ms, as a client that
    retries does, so the test's own threads do not starve the server of the 2 cores."""
    out = []
    with httpx.Client(base_url=url, timeout=120) as c:
        while (len(out) < n) if n is not None else (time.monotonic() < until):
            r = c.post("/predict", json={"tasks": ["h", "l1", "l2"], "texts": TEXTS})
            kind = r.json().get("error", "") if r.status_code != 200 else ""
            out.append((r.status_code, r.headers.get("retry-after"), kind))
            if r.status_code == 429:
                time.sleep(0.02)
    return out


def test_overload_is_shed_with_429_and_retry_after_then_recovers(srv):
    assert [s for s, _, _ in _predict(srv.url, 2)] == [200, 200]  # warm
    rss_before = tree_rss_bytes(srv.proc.pid)
    start = time.monotonic()
    # 32 clients for BURST_S seconds: long enough that "kept serving" counts many service
    # times even on a loaded machine (a fixed 32 x 6 requests ended within 1 s, and under
    # load saw only 6 served)
    with cf.ThreadPoolExecutor(32) as pool:
        futures = [pool.submit(_predict, srv.url, until=start + BURST_S) for _ in range(32)]
        results = [r for f in futures for r in f.result()]
    burst_s = time.monotonic() - start
    rss_after = tree_rss_bytes(srv.proc.pid)
    statuses = collections.Counter(s for s, _, _ in results)
    print(f"\noverload: {len(results)} requests in {burst_s:.1f}s -> {dict(statuses)}; "
          f"RSS {rss_before / MiB:.0f} -> {rss_after / MiB:.0f} MiB")
    assert set(statuses) <= {200, 429}, statuses  # shed or served, nothing else
    assert statuses[429] >= len(results) // 4, statuses  # it really was overloaded
    assert statuses[200] >= 8, statuses  # and kept serving at capacity meanwhile
    for status, retry_after, kind in results:
        if status == 429:
            assert kind == "over_capacity" and retry_after is not None and int(retry_after) >= 1
    assert rss_after - rss_before < 300 * MiB, "memory grew through the burst: queueing without bound?"
    # load gone: every request is served again, at once
    assert [s for s, _, _ in _predict(srv.url, 5)] == [200] * 5
    assert srv.internal_errors() == []


def test_adapter_churn_does_not_grow_memory(srv, tmp_path, text_backbone, tiny_dir):
    """Register (head and LoRA alternately), predict, delete — RSS after 40 cycles stays
    within a generous bound of RSS after a 10-cycle warm-up."""
    lora = peft_lora_dir(tmp_path / "lora", str(tiny_dir / "text"), seed=9)
    lora_zip = make_archive(lora)

    def cycle(i: int) -> None:
        name = f"churn{i % 3}"
        if i % 2:
            data = make_archive(head_adapter(tmp_path / f"h{i}", text_backbone, name, seed=i))
            r = srv.register_archive(data)
        else:
            r = srv.register_archive(lora_zip, name=name)
        assert r.status_code == 201, r.text
        assert srv.predict(name, texts=["good movie"] * 8).status_code == 200
        assert srv.delete(f"/adapters/{name}", admin=True).status_code == 200

    for i in range(10):
        cycle(i)
    rss_warm = tree_rss_bytes(srv.proc.pid)
    for i in range(10, 50):
        cycle(i)
    rss_end = tree_rss_bytes(srv.proc.pid)
    print(f"\nchurn: RSS after warm-up {rss_warm / MiB:.1f} MiB, after 40 more cycles {rss_end / MiB:.1f} MiB")
    assert rss_end - rss_warm < 64 * MiB
    assert [a["name"] for a in srv.get("/adapters").json()["adapters"]] == ["h", "l1", "l2"]
