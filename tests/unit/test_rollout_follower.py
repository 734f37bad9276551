"""A follower replica's rollout policies follow the store however its registry got in step.

A request for a task the process has not seen yet makes the registry sync itself
(``Registry.show`` / ``resolve`` on a miss). That sync takes in the store's newer generation,
so the watcher's next sync finds nothing new; the policy changes it carried must still reach
the task's row in the table, which holds its policy (they did not: a follower answered
"mode": "none" for good).
"""

from __future__ import annotations

import pytest

from support.factories import head_adapter
from support.server import tiny_backbones_env


def _engine(store, tiny_dir, replica):
    from service.engine import Engine
    from service.settings import Settings
    # the watcher stays out of the way (60 s): the test calls sync itself
    eng = Engine(Settings(store=str(store), backbones=tiny_backbones_env(tiny_dir), replica_id=replica,
                          admin_token="a" * 16, torch_threads=1, sync_interval_s=60))
    eng.start()
    assert eng.ready, eng.error
    return eng


@pytest.fixture
def pair(tmp_path, tiny_dir, text_backbone, vision_backbone):
    a = _engine(tmp_path / "store", tiny_dir, "a")
    b = _engine(tmp_path / "store", tiny_dir, "b")
    yield a, b
    a.close()
    b.close()


def test_a_policy_taken_in_by_a_request_time_sync_reaches_the_task_row(pair, tmp_path, text_backbone):
    a, b = pair
    v = [a.registry.register(head_adapter(tmp_path / f"h{s}", text_backbone, "t", seed=s)).version
         for s in (1, 2)]
    a.registry.activate("t", v[0])
    a.rollouts.set("t", v[1], "canary", 0.3)
    assert b.registry.show("t")["active_version"] == v[0]  # a miss: the registry syncs itself
    b.sync()  # the watcher's tick: the store's generation is no longer new to the registry
    got = b.rollouts.report("t")
    assert (got["mode"], got["candidate_version"], got["fraction"]) == ("canary", v[1], 0.3)
