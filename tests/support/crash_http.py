"""Crash safety of the real server: kill -9 it mid-registration, restart, check everything.

One *cycle* (:func:`crash_cycle`): an admin client registers (head or LoRA archives,
every one a new version), rolls back and deletes tasks over HTTP without pause, logging
``begin``/``ack`` lines exactly like ``crash_worker`` ("ack" = a 2xx answer); at a random
moment every process of the server (the arbiter and its workers) gets SIGKILL. The
server is restarted on the same store and port, then :func:`check_after_restart` proves:

- nothing half-written is visible: every stored version's content hash is its name;
- every acknowledged change is there (active version, and every acknowledged version
  in the history); the one change in flight landed whole or not at all;
- the restarted server serves every task, answering with the acknowledged version;
- no orphans: the server's startup gc (``TASKSWAP_GC_GRACE_S=0``, safe with one server; run
  before ready, ``TASKSWAP_STARTUP_GC=before_ready``)
  left no staging folder, temp file or unreferenced version in the store, and
  ``collect_stale_uploads`` left no upload or registration folder in the server's
  ``TMPDIR`` (before that fix, 3 of 5 kills left one, up to 512 MiB each).

Used by ``tests/resilience/test_crash_server.py`` (a few cycles) and ``bench/crash_loop.py`` (many).
"""

from __future__ import annotations

import os
import random
import signal
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from adapters.upload_cleanup import UPLOAD_PREFIXES
from support.crash_worker import TASKS, Expected, _settle_in_flight, assert_no_orphans
from support.proc_mem import tree_pids

# One server per store: collect every leftover at startup, before /readyz says ready.
CRASH_ENV = {"TASKSWAP_GC_GRACE_S": "0", "TASKSWAP_STARTUP_GC": "before_ready"}


def server_tmpdir(root: Path) -> Path:
    """A private TMPDIR for the server (pass as env ``TMPDIR``), so its scratch is countable."""
    path = Path(root) / "server-tmp"
    path.mkdir(parents=True, exist_ok=True)
    return path


def kill_9(srv) -> int:
    """SIGKILL the server's whole process tree at once (workers included); returns how many."""
    pids = tree_pids(srv.proc.pid)
    for pid in pids:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    srv.proc.wait(timeout=30)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and any(_alive(p) for p in pids):
        time.sleep(0.05)
    srv.proc = None
    return len(pids)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:  # a zombie (not yet reaped by its parent) is dead for our purposes
        return Path(f"/proc/{pid}/stat").read_text().split(") ")[1][0] != "Z"
    except (OSError, IndexError):
        return False


class AdminClient(threading.Thread):
    """Registers / rolls back / deletes over HTTP until ``stop`` or the server dies.

    ``active`` / ``versions`` are the acknowledged state at the start of the cycle (used
    to pick rollback targets); ``lines`` collects the intent log of this cycle.
    """

    def __init__(self, srv, expected: Expected, backbone, lora_zip: bytes, scratch: Path, seed: int):
        super().__init__(daemon=True)
        self.srv, self.bb, self.lora_zip, self.scratch = srv, backbone, lora_zip, Path(scratch)
        self.active = dict(expected.active)
        self.versions = {k: list(v) for k, v in expected.versions.items()}
        self.rng = random.Random(seed)
        self.seed = seed
        self.lines: list[str] = []
        self.stop = threading.Event()
        self.acks = 0
        self.unexpected: list[str] = []  # a non-2xx answer while the server was alive

    def run(self) -> None:
        with httpx.Client(base_url=self.srv.url, timeout=60, headers=self.srv.headers(admin=True)) as c:
            i = 0
            while not self.stop.is_set():
                try:
                    self.one(c, f"{self.seed}.{i}")
                except httpx.TransportError:
                    return  # the server was killed: the change in flight stays unacknowledged
                i += 1

    def one(self, c: httpx.Client, seq: str) -> None:
        name, r = self.rng.choice(TASKS), self.rng.random()
        older = [v for v in self.versions.get(name, []) if v != self.active.get(name)]
        if older and r < 0.2:
            target = self.rng.choice(older)
            self.lines.append(f"begin {seq} activate {name} {target}")
            resp = c.post(f"/adapters/{name}/activate", json={"version": target})
            if self._ok(resp, seq, "activate", name, target):
                self.active[name] = target
        elif name in self.active and r < 0.3:
            self.lines.append(f"begin {seq} delete {name}")
            if self._ok(c.delete(f"/adapters/{name}"), seq, "delete", name, None):
                self.active.pop(name)
                self.versions.pop(name, None)
        else:
            data, labels = self._new_adapter(name)
            self.lines.append(f"begin {seq} register {name}")
            resp = c.post("/adapters", files={"file": ("a.zip", data)},
                          data={"name": name, **({"labels": labels} if labels else {})})
            if self._ok(resp, seq, "register", name, resp.json().get("version") if resp.status_code == 201 else None):
                v = resp.json()["version"]
                self.active[name] = v
                self.versions.setdefault(name, []).append(v)

    def _ok(self, resp: httpx.Response, seq: str, op: str, name: str, version: str | None) -> bool:
        if resp.status_code >= 300:
            self.unexpected.append(f"{op} {name}: {resp.status_code} {resp.text[:200]}")
            self.stop.set()
            return False
        self.lines.append(f"ack {seq} {op} {name} {version or ''}".rstrip())
        self.acks += 1
        return True

    def _new_adapter(self, name: str) -> tuple[bytes, str | None]:
        """A zip that is a new version for sure: a freshly seeded head, or the LoRA with
        fresh label names (the labels are part of the content hash)."""
        if self.rng.random() < 0.25:
            k = self.rng.randrange(1 << 30)
            return self.lora_zip, f'["neg{k}", "pos{k}"]'
        from adapters.format.archive import make_archive
        from support.factories import head_adapter
        with tempfile.TemporaryDirectory(dir=self.scratch) as tmp:
            folder = head_adapter(Path(tmp) / "h", self.bb, name, seed=self.rng.randrange(1 << 30))
            return make_archive(folder), None


@dataclass
class CycleReport:
    acked: int
    killed_after_s: float
    processes_killed: int
    in_flight: str | None
    in_flight_landed: bool | None
    tasks: int
    versions: int
    scratch_left: list[str] = field(default_factory=list)  # our upload/registration scratch in TMPDIR
    bentoml_tmp_left: int = 0  # BentoML's own (empty) temp folders left by the kills


def crash_cycle(srv, expected: Expected, backbone, lora_zip: bytes, scratch: Path, seed: int,
                kill_after_s: float, tmpdir: Path) -> CycleReport:
    """Run the admin client, kill -9 the server after ``kill_after_s``, restart, check.
    ``expected`` is updated with this cycle's acknowledged changes (and the in-flight one's
    real outcome). Raises AssertionError on any violation."""
    client = AdminClient(srv, expected, backbone, lora_zip, scratch, seed)
    client.start()
    time.sleep(kill_after_s)
    killed = kill_9(srv)
    client.stop.set()
    client.join(timeout=60)
    assert not client.is_alive(), "admin client hung after the kill"
    assert not client.unexpected, f"admin call refused while the server was up: {client.unexpected}"
    expected.replay(client.lines)
    in_flight = " ".join(x for x in (expected.in_flight or ()) if x) or None
    srv.start()  # startup gc runs before /readyz says ready
    landed, tasks, versions = check_after_restart(srv, expected)
    # ours must be gone (collect_stale_uploads at startup); BentoML's own empty socket folders
    # (bentoml-uds-*, bentoml-client-*) are counted but are not ours to collect
    left = sorted(p.name for p in Path(tmpdir).iterdir())
    scratch_left = [n for n in left if n.startswith(UPLOAD_PREFIXES)]
    return CycleReport(client.acks, kill_after_s, killed, in_flight, landed, tasks, versions, scratch_left,
                       len(left) - len(scratch_left))


def check_after_restart(srv, expected: Expected) -> tuple[bool | None, int, int]:
    """Store intact and complete, in-flight change settled, every task served; returns
    (whether the in-flight change landed, tasks, versions)."""
    from adapters.format.adapter_dir import content_hash
    from adapters.store import open_store

    root = Path(srv.store)
    store = open_store(str(root))
    aliases = store.list_aliases()
    n_versions = 0
    for name, alias in aliases.items():
        for v in alias.versions:
            assert content_hash(store.version_path(name, v.version)) == v.version, \
                f"{name}/{v.version[:12]} is not intact"
            n_versions += 1
    assert_no_orphans(root, aliases)  # the restarted server's startup gc collected every leftover
    landed = _settle_in_flight(expected, aliases)
    listed = {a["name"]: a for a in srv.get("/adapters").json()["adapters"]}
    assert set(listed) == set(expected.active), f"served {sorted(listed)} != acknowledged {sorted(expected.active)}"
    for name, active in expected.active.items():
        assert listed[name]["active_version"] == active, f"{name}: active is not the acknowledged version"
        stored = {v["version"] for v in listed[name]["versions"]}
        lost = [v[:12] for v in expected.versions[name] if v not in stored]
        assert not lost, f"{name}: acknowledged versions lost: {lost}"
        r = srv.predict(name, texts=["good movie", "bad plot"])
        assert r.status_code == 200, f"{name}: {r.status_code} {r.text[:300]}"
        assert r.json()["results"][0]["version"] == active
    return landed, len(aliases), n_versions
