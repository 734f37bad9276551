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


def test_a_namespace_s_own_limit_replaces_the_default():
    async def run():
        own = {"big": 3, "small": 1}
        gate, log, release = NamespaceGate(2, max_waiting=10, limit_of=own.get), [], asyncio.Event()
        held = {ns: [asyncio.create_task(_hold(gate, ns, log, f"{ns}{i}", release)) for i in range(4)]
                for ns in ("big", "small", "plain")}
        await asyncio.sleep(0.01)
        assert {ns: gate.in_flight(ns) for ns in held} == {"big": 3, "small": 1, "plain": 2}
        assert {ns: gate.waiting(ns) for ns in held} == {"big": 1, "small": 3, "plain": 2}
        assert gate.limit("small") == 1 and gate.limit("plain") == 2  # plain: the default
        release.set()
        await asyncio.gather(*[t for ts in held.values() for t in ts])
        assert all(gate.in_flight(ns) == 0 and gate.waiting(ns) == 0 for ns in held)
    asyncio.run(run())


def test_the_refusal_names_the_quota_when_the_namespace_has_its_own_limit():
    async def run():
        gate, release = NamespaceGate(4, max_waiting=0, limit_of={"small": 1}.get), asyncio.Event()
        first = asyncio.create_task(_hold(gate, "small", [], "first", release))
        await asyncio.sleep(0.01)
        with pytest.raises(CapacityError) as exc:
            async with gate.slot("small"):
                pass
        release.set()
        await first
        return str(exc.value)
    message = asyncio.run(run())
    assert "its max_inflight quota" in message and "its limit 1" in message and "'small'" in message
    assert "TASKSWAP_NAMESPACE_MAX_WAITING" in message


def test_a_raised_limit_admits_every_waiter_it_makes_room_for_on_the_next_release():
    async def run():
        own = {"ns": 1}
        gate, log = NamespaceGate(None, max_waiting=10, limit_of=own.get), []
        first_done = asyncio.Event()
        rest = asyncio.Event()
        first = asyncio.create_task(_hold(gate, "ns", log, "first", first_done))
        await asyncio.sleep(0.01)
        waiters = [asyncio.create_task(_hold(gate, "ns", log, f"w{i}", rest)) for i in range(3)]
        await asyncio.sleep(0.01)
        assert log == ["first"] and gate.waiting("ns") == 3
        own["ns"] = 3
        first_done.set()  # one release: room for three now
        await first
        await asyncio.sleep(0.01)
        assert log == ["first", "w0", "w1", "w2"] and gate.in_flight("ns") == 3
        own["ns"] = 1  # lowered: those in flight finish, none is taken back
        rest.set()
        await asyncio.gather(*waiters)
        assert gate.in_flight("ns") == 0
    asyncio.run(run())


def test_no_default_limit_counts_but_never_waits():
    async def run():
        gate, log, release = NamespaceGate(None, max_waiting=0), [], asyncio.Event()
        held = [asyncio.create_task(_hold(gate, "ns", log, str(i), release)) for i in range(20)]
        await asyncio.sleep(0.01)
        assert len(log) == 20 and gate.in_flight("ns") == 20 and gate.limit("ns") is None
        release.set()
        await asyncio.gather(*held)
    asyncio.run(run())
