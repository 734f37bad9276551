"""A ``Server-Timing`` header (W3C) with one prediction's stages, for finding where latency goes.

The stages, from the handler's entry (after HTTP parsing and request validation) to the answer
being built, in milliseconds of wall time:

- ``admit``: waiting for the namespace's in-flight slot (:mod:`service.admission`);
- ``pre``: the worker-thread hop, input checks or image/audio decoding, ``prepare`` and the
  cost estimate (tokenising);
- ``queue``: in the batcher's fair queue until the request's first slice starts;
- ``run``: from its first slice's start to its last slice's heads (other requests' slices run
  in between when it is sliced);
- ``post``: from its last heads to this header (the event loop picking the answer up, checks,
  metrics, building the response model).

Only stages whose stamps exist are written. The header is off by default
(``TASKSWAP_SERVER_TIMING``): it tells a caller how busy the server is.

>>> stages({"entered": 0, "admitted": 1_000_000, "prepared": 3_000_000, "submitted": 3_000_000,
...         "started": 8_000_000, "heads_done": 20_000_000}, now_ns=21_000_000)
[('admit', 1.0), ('pre', 2.0), ('queue', 5.0), ('run', 12.0), ('post', 1.0)]
>>> header([('pre', 2.0), ('queue', 5.25)])
'pre;dur=2.0, queue;dur=5.25'
"""

from __future__ import annotations

HEADER = "Server-Timing"
# (stage, stamp it starts at, stamp it ends at); "now" is the moment the header is written
_STAGES = (("admit", "entered", "admitted"), ("pre", "admitted", "submitted"),
           ("queue", "submitted", "started"), ("run", "started", "heads_done"), ("post", "heads_done", "now"))


def stages(timings: dict[str, int], now_ns: int) -> list[tuple[str, float]]:
    """``[(stage, milliseconds)]`` for the stages whose two ``time.time_ns()`` stamps exist."""
    t = {**timings, "now": now_ns}
    return [(name, round((t[b] - t[a]) / 1e6, 3)) for name, a, b in _STAGES if a in t and b in t]


def header(parts: list[tuple[str, float]]) -> str:
    return ", ".join(f"{name};dur={ms}" for name, ms in parts)


def parse(value: str) -> dict[str, float]:
    """``{stage: ms}`` from a header this module wrote (for benches and tests)."""
    out = {}
    for part in filter(None, (p.strip() for p in value.split(","))):
        name, _, dur = part.partition(";dur=")
        out[name] = float(dur)
    return out
