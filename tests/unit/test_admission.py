"""The per-namespace admission gate (service/admission.py) and the Server-Timing stages
(service/server_timing.py): order, limits, refusals and cancellation, on a real event loop."""

from __future__ import annotations

import asyncio

import pytest

from adapters.errors import CapacityError
from service import server_timing
from service.admission import NamespaceGate


async def _hold(gate: NamespaceGate, ns: str, log: list, name: str, release: asyncio.Event) -> None:
    async with gate.slot(ns):
        log.append(name)
        await release.wait()


def test_a_namespace_past_its_slots_waits_in_arrival_order_and_another_is_not_held():
    async def run():
        gate, log, release = NamespaceGate(max_inflight=2, max_waiting=10), [], asyncio.Event()
        tasks = [asyncio.create_task(_hold(gate, "team-a", log, f"a{i}", release)) for i in range(5)]
        await asyncio.sleep(0.01)
        assert log == ["a0", "a1"] and gate.in_flight("team-a") == 2 and gate.waiting("team-a") == 3
        other = asyncio.create_task(_hold(gate, "team-b", log, "b0", asyncio.Event()))
        await asyncio.sleep(0.01)
        assert log[-1] == "b0"  # team-b's slots are its own
        release.set()
        await asyncio.gather(*tasks)
        assert log[:2] + log[3:] == ["a0", "a1", "a2", "a3", "a4"]
        assert gate.in_flight("team-a") == 0 and gate.waiting("team-a") == 0
        other.cancel()
    asyncio.run(run())


def test_past_the_waiting_limit_a_request_is_refused_with_retry_after_naming_the_settings():
    async def run():
        gate, log, release = NamespaceGate(max_inflight=1, max_waiting=1), [], asyncio.Event()
        held = [asyncio.create_task(_hold(gate, "team-a", log, f"a{i}", release)) for i in range(2)]
        await asyncio.sleep(0.01)
        with pytest.raises(CapacityError) as exc:
            async with gate.slot("team-a"):
                pass
        assert "TASKSWAP_NAMESPACE_MAX_INFLIGHT" in str(exc.value) and exc.value.retry_after_s > 0
        release.set()
        await asyncio.gather(*held)
        assert log == ["a0", "a1"]
    asyncio.run(run())


def test_a_cancelled_waiter_neither_takes_nor_loses_a_slot():
    async def run():
        gate, log, release = NamespaceGate(max_inflight=1, max_waiting=5), [], asyncio.Event()
        first = asyncio.create_task(_hold(gate, "ns", log, "first", release))
        await asyncio.sleep(0.01)
        gone = asyncio.create_task(_hold(gate, "ns", log, "gone", release))
        last = asyncio.create_task(_hold(gate, "ns", log, "last", release))
        await asyncio.sleep(0.01)
        gone.cancel()  # a client hung up while waiting
        await asyncio.sleep(0.01)
        assert gate.waiting("ns") == 1
        release.set()
        await asyncio.gather(first, last)
        assert log == ["first", "last"] and gate.in_flight("ns") == 0
    asyncio.run(run())


def test_an_exception_inside_the_slot_releases_it():
    async def run():
        gate = NamespaceGate(max_inflight=1, max_waiting=0)
        with pytest.raises(ValueError):
            async with gate.slot("ns"):
                raise ValueError("boom")
        async with gate.slot("ns"):
            assert gate.in_flight("ns") == 1
    asyncio.run(run())


def test_bad_limits_are_refused():
    with pytest.raises(ValueError):
        NamespaceGate(max_inflight=0, max_waiting=1)


def test_server_timing_stages_round_trip():
    t = {"entered": 0, "admitted": 2_000_000, "submitted": 5_000_000, "started": 9_000_000,
         "trunk_done": 15_000_000, "heads_done": 16_000_000}
    parts = server_timing.stages(t, now_ns=17_500_000)
    assert parts == [("admit", 2.0), ("pre", 3.0), ("queue", 4.0), ("run", 7.0), ("post", 1.5)]
    assert server_timing.parse(server_timing.header(parts)) == dict(parts)
    assert server_timing.stages({"submitted": 1}, now_ns=5) == []  # a stage needs both its stamps
