"""Two real replicas on one S3 bucket (a moto server on loopback), each with its own local
cache as separate hosts would have: registration, registration by store path, rollback
and a restart of both replicas — everything is still there and answers the same."""

from __future__ import annotations

import time

import pytest

from support.factories import head_adapter
from support.replica_helpers import Timings, head_archive, predictions, served_version, wait_for
from support.s3 import moto_s3  # noqa: F401  (session fixture)
from support.server import server_factory, tiny_backbones_env  # noqa: F401  (fixture)

pytestmark = pytest.mark.server


@pytest.fixture(scope="module")
def timings(request):
    t = Timings(request.config, "replica convergence, S3 store (moto), sync interval 0.5 s")
    yield t
    t.report()


def test_two_replicas_on_s3_converge_and_survive_restart(server_factory, moto_s3, tiny_dir, text_backbone,
                                                         tmp_path, timings):
    url = moto_s3.new_store_url("replicas")
    bb = tiny_backbones_env(tiny_dir)

    def env(name: str) -> dict:
        return {**moto_s3.env, "TASKSWAP_SYNC_INTERVAL_S": "0.5", "TASKSWAP_REPLICA_ID": name,
                "TASKSWAP_STORE_CACHE": str(tmp_path / f"cache-{name}")}

    a = server_factory.start(store=url, backbones=bb, env=env("a"))
    b = server_factory.start(store=url, backbones=bb, env=env("b"), admin_token=a.admin)

    # Register through A (archive upload); B serves it.
    v1 = a.register_archive(head_archive(tmp_path / "v1", text_backbone, "news", seed=1))
    assert v1.status_code == 201, v1.text
    v1, t0 = v1.json()["version"], time.monotonic()
    wait_for(lambda: served_version(b, "news") == v1, "B serves A's registration")
    timings.add("register on A -> B serves it (lazy load on a miss)", time.monotonic() - t0)

    # Register through B by store path (an operator uploaded the folder under imports/).
    folder = head_adapter(tmp_path / "v2", text_backbone, "news", seed=2)
    client = moto_s3.client()
    prefix = url.removeprefix(f"s3://{moto_s3.bucket}/")
    for p in folder.iterdir():
        client.put_object(Bucket=moto_s3.bucket, Key=f"{prefix}/imports/news-v2/{p.name}", Body=p.read_bytes())
    r = b.post("/adapters", admin=True, json={"store_path": "imports/news-v2"})
    assert r.status_code == 201, r.text
    v2, t0 = r.json()["version"], time.monotonic()
    wait_for(lambda: served_version(a, "news") == v2, "A follows B's new version")
    timings.add("new version on B (by store path) -> A serves it (watcher)", time.monotonic() - t0)

    # Roll back through A; B follows.
    assert a.post("/adapters/news/activate", admin=True, json={"version": v1}).status_code == 200
    t0 = time.monotonic()
    wait_for(lambda: served_version(b, "news") == v1, "B follows A's rollback")
    timings.add("rollback on A -> B serves the old version (watcher)", time.monotonic() - t0)

    a.register_archive(head_archive(tmp_path / "t", text_backbone, "topic", seed=3))
    before = {srv: (predictions(srv, "news"), predictions(srv, "topic")) for srv in (a, b)}
    assert before[a] == before[b]
    listing = a.get("/adapters").json()["adapters"]

    # Restart both replicas (fresh processes, the bucket is the only memory; keep caches).
    for srv in (a, b):
        srv.restart()
    for srv in (a, b):
        assert (predictions(srv, "news"), predictions(srv, "topic")) == before[a]
        after = srv.get("/adapters").json()
        assert [(t["name"], t["active_version"], [v["version"] for v in t["versions"]])
                for t in after["adapters"]] == \
               [(t["name"], t["active_version"], [v["version"] for v in t["versions"]]) for t in listing]
        assert after["generation"] >= 4
    assert served_version(a, "news") == v1  # the rollback survived

    # A replica on a new host (empty cache) downloads every version it needs.
    c = server_factory.start(store=url, backbones=bb, env=env("c"), admin_token=a.admin)
    assert (predictions(c, "news"), predictions(c, "topic")) == before[a]

    # Delete through C: A and B stop serving it.
    assert c.delete("/adapters/topic", admin=True).status_code == 200
    t0 = time.monotonic()
    wait_for(lambda: served_version(a, "topic") is None and served_version(b, "topic") is None,
             "A and B drop the deleted task")
    timings.add("delete on C -> A and B answer 404 (watcher)", time.monotonic() - t0)
