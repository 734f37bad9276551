"""Crash safety of the store itself: SIGKILL a process registering / rolling back /
deleting through :class:`Registry` at random moments, restart, check the store.

No HTTP here: this isolates the store's write-then-rename atomicity. The same check
against a killed ``bentoml serve`` is in ``test_crash_server.py``; ``bench/crash_loop.py``
runs many more cycles.
"""

from __future__ import annotations

import random

from support.crash_worker import Expected, Zygote, check_store


def test_kill_9_during_registrations_loses_nothing_acknowledged(tmp_path, text_backbone, tiny_dir,
                                                                one_torch_thread):
    store = tmp_path / "store"
    zygote = Zygote(tiny_dir / "text", tmp_path / "worker.err")
    rng = random.Random(2024)
    expected, outcomes, collected, cycles = Expected(), [], 0, 8
    try:
        for cycle in range(cycles):
            log = tmp_path / f"intent-{cycle}.log"
            zygote.run_and_kill(store, log, seed=cycle, after_s=rng.uniform(0.2, 1.5))
            # a kill that lands before the worker opened its log leaves no log: nothing happened
            expected.replay(log.read_text().splitlines() if log.exists() else [])
            report = check_store(store, expected, {"text": text_backbone})
            outcomes.append(report.in_flight_landed)
            collected += report.leftovers_collected
    finally:
        zygote.close()
    print(f"\ncrash cycles={cycles} acked={expected.acked} in-flight landed/not={outcomes} leftovers collected={collected}")
    assert expected.acked >= cycles * 2, f"only {expected.acked} acknowledged changes: kills came too early"
    # the kills really landed mid-change, some before and some after the switch
    assert sum(o is not None for o in outcomes) >= cycles // 2, outcomes
