"""Crash-safety harness: a process that changes a store without pause, and a checker.

``python tests/support/crash_worker.py --backbone-dir D`` loads the tiny text backbone once, then
for each ``fork STORE LOG SEED`` line on stdin forks a worker that opens a
:class:`Registry` on the store and loops over register / activate (rollback) / delete
on a few task names, writing an intent log::

    begin <seq> register <name>            (before the call)
    ack   <seq> register <name> <version>  (after it returned, fsynced)

The parent kills it with SIGKILL at a random moment; :func:`check_store` then proves
what the issue asks: every acknowledged change is there and intact, the one change in
flight is either fully there or not at all, nothing half-written is visible, and
``gc`` leaves no orphan behind. The same checker serves ``tests/resilience/test_crash_*.py`` (HTTP
too, where "ack" is a 2xx response) and ``bench/crash_loop.py``.
"""

from __future__ import annotations

import argparse
import os
import random
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

TASKS = ("crash-a", "crash-b", "crash-c", "crash-d")


# ---- the expected state, rebuilt from the intent log --------------------------------------
@dataclass
class Expected:
    """Per task: the active version and the versions acknowledged since its last delete."""

    active: dict[str, str] = field(default_factory=dict)
    versions: dict[str, list[str]] = field(default_factory=dict)
    acked: int = 0
    in_flight: tuple[str, str, str | None] | None = None  # (op, name, target version)

    def apply(self, op: str, name: str, version: str | None) -> None:
        if op == "register":
            self.active[name] = version
            self.versions.setdefault(name, []).append(version)
        elif op == "activate":
            self.active[name] = version
        elif op == "delete":
            self.active.pop(name, None)
            self.versions.pop(name, None)

    def replay(self, lines: list[str]) -> "Expected":
        """Apply every ``ack`` line; remember the last ``begin`` left without one."""
        pending = None
        for line in lines:
            parts = line.split()
            if len(parts) < 3:
                continue  # a torn last line: the kill landed mid-write
            if parts[0] == "begin":
                pending = (parts[2], parts[3], parts[4] if len(parts) > 4 else None)
            elif parts[0] == "ack" and len(parts) >= 4:
                self.apply(parts[2], parts[3], parts[4] if len(parts) > 4 else None)
                self.acked += 1
                pending = None
        self.in_flight = pending
        return self


@dataclass
class CheckReport:
    tasks: int
    versions: int
    leftovers_collected: int
    in_flight: str | None
    in_flight_landed: bool | None


def check_store(root: Path, expected: Expected, backbones: dict, predict_inputs=("good movie",)) -> CheckReport:
    """Raise AssertionError unless the store at ``root`` is consistent with ``expected``.

    Then collect leftovers (``gc(grace_s=0)``: nothing else writes now) and prove none
    remain. Returns what was checked; ``expected`` is updated to the real outcome of the
    change that was in flight.
    """
    from adapters.format.adapter_dir import content_hash
    from adapters.registry import Registry
    from adapters.runtime import Runtime
    from adapters.store import open_store

    store = open_store(str(root))
    aliases = store.list_aliases()  # every alias parses: no torn alias.json is visible
    # 1. nothing half-written: every version an alias names is whole (its hash is its name)
    n_versions = 0
    for name, alias in aliases.items():
        assert alias.active in {v.version for v in alias.versions}, f"{name}: active not in history"
        for v in alias.versions:
            path = store.version_path(name, v.version)
            assert content_hash(path) == v.version, f"{name}/{v.version[:12]} is not intact"
            n_versions += 1
    # 2. every acknowledged change is there; the one in flight landed whole or not at all
    landed = _settle_in_flight(expected, aliases)
    assert set(aliases) == set(expected.active), (
        f"tasks in store {sorted(aliases)} != acknowledged {sorted(expected.active)} "
        f"(in flight: {expected.in_flight})")
    for name, alias in aliases.items():
        assert alias.active == expected.active[name], (
            f"{name}: active {alias.active[:12]} != acknowledged {expected.active[name][:12]}")
        stored = {v.version for v in alias.versions}
        lost = [v[:12] for v in expected.versions.get(name, []) if v not in stored]
        assert not lost, f"{name}: acknowledged versions lost: {lost}"
    # 3. servable: a fresh registry (a restarted server) loads and runs every task
    registry = Registry(store, backbones)
    registry.sync()
    runtime = Runtime(registry)
    for name in aliases:
        prepared = runtime.prepare([name], list(predict_inputs), "text")
        (result,) = runtime.run([prepared])[0]
        assert result.version == aliases[name].active and len(result.rows) == len(predict_inputs)
    # 4. no orphans: gc collects every crash leftover, and then nothing unreferenced remains
    removed = store.gc(grace_s=0)
    assert_no_orphans(Path(root), store.list_aliases())
    assert store.list_aliases() == aliases, "gc changed what is visible"
    op = " ".join(x for x in (expected.in_flight or ()) if x) or None
    return CheckReport(len(aliases), n_versions, len(removed), op, landed)


def _settle_in_flight(expected: Expected, aliases: dict) -> bool | None:
    """Decide from the store whether the unacknowledged change landed; update ``expected``."""
    if expected.in_flight is None:
        return None
    op, name, target = expected.in_flight
    alias = aliases.get(name)
    before = expected.active.get(name)
    if op == "register":
        landed = alias is not None and alias.active != before and alias.active not in expected.versions.get(name, [])
        if landed:
            expected.apply("register", name, alias.active)
    elif op == "activate":
        landed = alias is not None and alias.active == target and before != target
        if landed:
            expected.apply("activate", name, target)
    else:
        landed = alias is None and before is not None
        if landed:
            expected.apply("delete", name, None)
    expected.in_flight = None
    return landed


def assert_no_orphans(root: Path, aliases: dict) -> None:
    """After gc: no staging leftovers, temp files, unreferenced versions or empty tasks."""
    staging = sorted(p.name for p in (root / "staging").iterdir())
    assert not staging, f"staging leftovers after gc: {staging[:5]}"
    temps = [str(p.relative_to(root)) for p in root.rglob(".*.tmp")]
    assert not temps, f"temp files after gc: {temps[:5]}"
    for task in (root / "tasks").iterdir():
        assert task.name in aliases, f"task folder {task.name} has no alias"
        keep = {v.version for v in aliases[task.name].versions}
        on_disk = {p.name for p in (task / "versions").iterdir()}
        assert on_disk == keep, f"{task.name}: unreferenced versions {sorted(on_disk - keep)[:3]}"


# ---- the worker ---------------------------------------------------------------------------
class IntentLog:
    """Append-only, one fsync per line: an ``ack`` on disk means the call had returned."""

    def __init__(self, path: Path):
        self.f = open(path, "a", buffering=1)

    def write(self, line: str) -> None:
        self.f.write(line + "\n")
        self.f.flush()
        os.fsync(self.f.fileno())


def load_text_backbone(backbone_dir: Path):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # tests/: the support package
    import torch
    from adapters.backbones.base import load_backbone
    from adapters.backbones.tiny import tiny_backbone_spec
    torch.set_num_threads(1)  # forked children must never wait on an inherited thread pool
    return load_backbone(tiny_backbone_spec("text", backbone_dir))


def worker(bb, store_dir: Path, log_path: Path, seed: int, max_ops: int) -> None:
    """Loop over random register / activate / delete calls until killed (or ``max_ops``)."""
    from adapters.registry import Registry
    from adapters.store import open_store
    from support.factories import head_adapter

    registry = Registry(open_store(str(store_dir)), {"text": bb})
    registry.sync()
    log = IntentLog(log_path)
    rng = random.Random(seed)
    scratch = store_dir.parent / f"worker-scratch-{os.getpid()}"
    for i in range(max_ops):
        name = rng.choice(TASKS)
        alias = registry.store.get_alias(name)
        seq = f"{seed}.{i}"
        r = rng.random()
        if alias is not None and len(alias.versions) > 1 and r < 0.25:
            target = rng.choice([v.version for v in alias.versions if v.version != alias.active])
            log.write(f"begin {seq} activate {name} {target}")
            registry.activate(name, target)
            log.write(f"ack {seq} activate {name} {target}")
        elif alias is not None and r < 0.35:
            log.write(f"begin {seq} delete {name}")
            registry.delete(name)
            log.write(f"ack {seq} delete {name}")
        else:
            folder = head_adapter(scratch / str(i), bb, name, seed=rng.randrange(1 << 30))
            log.write(f"begin {seq} register {name}")
            loaded = registry.register(folder)
            log.write(f"ack {seq} register {name} {loaded.version}")
            shutil.rmtree(folder, ignore_errors=True)


def zygote(backbone_dir: Path) -> None:
    """Load the backbone once, then fork one worker per ``fork STORE LOG SEED`` line on stdin
    and print its pid; the caller SIGKILLs it. Forking skips ~10 s of imports per cycle."""
    bb = load_text_backbone(backbone_dir)
    signal.signal(signal.SIGCHLD, signal.SIG_IGN)  # killed children are reaped by the kernel
    print("ready", flush=True)
    for line in sys.stdin:
        cmd, store_dir, log_path, seed = line.split()
        assert cmd == "fork"
        pid = os.fork()
        if pid == 0:
            code = 0
            try:
                worker(bb, Path(store_dir), Path(log_path), int(seed), 100_000)
            except BaseException:
                import traceback
                traceback.print_exc()
                code = 1
            finally:
                os._exit(code)
        print(pid, flush=True)


class Zygote:
    """The caller's side: ``Zygote(dir)``, then ``run_and_kill(store, log, seed, after_s)``."""

    def __init__(self, backbone_dir: Path, stderr_path: Path):
        env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1",
               "OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false"}
        self.stderr_path = stderr_path
        self._err = open(stderr_path, "ab")
        self.proc = subprocess.Popen([sys.executable, __file__, "--backbone-dir", str(backbone_dir)],
                                     cwd=Path(__file__).resolve().parents[2], env=env, text=True,
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self._err)
        line = self.proc.stdout.readline()
        if line.strip() != "ready":
            self.close()
            raise RuntimeError(f"crash zygote did not start: {self.stderr_tail()}")

    def stderr_tail(self) -> str:
        return self.stderr_path.read_text(errors="replace")[-3000:]

    def run_and_kill(self, store: Path, log: Path, seed: int, after_s: float) -> None:
        """Fork a worker on ``store``, let it work ``after_s`` seconds, SIGKILL it."""
        self.proc.stdin.write(f"fork {store} {log} {seed}\n")
        self.proc.stdin.flush()
        pid = int(self.proc.stdout.readline())
        time.sleep(after_s)
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            raise AssertionError(f"worker {pid} died on its own: {self.stderr_tail()}") from None
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:  # the zygote ignores SIGCHLD: the kernel reaps it
            try:
                os.kill(pid, 0)
            except ProcessLookupError:
                return
            time.sleep(0.01)
        raise AssertionError(f"worker {pid} survived SIGKILL for 30 s")

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.stdin.close()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)
        self.proc.stdout.close()
        self._err.close()


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--backbone-dir", type=Path, required=True)
    a = p.parse_args(argv)
    zygote(a.backbone_dir)


if __name__ == "__main__":
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
    main()
