"""Qualified task names (``team/task``) on both stores (the folder and S3 on moto): their own
prefix ``ns/<namespace>/tasks/<task>/``, bare names where they always were, listing, the
change log, rollouts, delete, gc and registration by store path across both layouts."""

from __future__ import annotations

import pytest

from adapters.errors import InvalidInput, NotFound
from adapters.registry import Registry
from adapters.store.base import ROUTE_WORDS, check_name, task_prefix
from support.s3 import moto_s3  # noqa: F401  (session fixture)
from support.store_fixtures import adapter, info, kind, make_store, register, store  # noqa: F401 (fixtures)


@pytest.mark.parametrize("name", ["sentiment", "vision/defects", "a/b", "team-1/x.y_z", "rollout"])
def test_good_names(name):
    assert check_name(name) == name


@pytest.mark.parametrize("name,words", [
    ("default/x", "written bare"), ("a/b/c", "task 'b/c'"), ("A/x", "namespace"), ("/x", "namespace"),
    ("x/", "task ''"), ("x/rollout", "URL word"), ("x/versions", "URL word"), ("n" * 33 + "/x", "namespace"),
    ("x/" + "t" * 65, "task"), ("x\n", "invalid"),
])
def test_bad_names_say_why(name, words):
    with pytest.raises(InvalidInput, match="invalid") as info_:
        check_name(name)
    assert words in info_.value.message


def test_layout_keeps_bare_names_where_they_were():
    assert task_prefix("sentiment") == "tasks/sentiment"
    assert task_prefix("vision/defects") == "ns/vision/tasks/defects"
    assert "rollout" in ROUTE_WORDS


def test_namespaced_tasks_live_beside_bare_ones(store, adapter, kind):
    bare = register(store, adapter(0), "defects")
    team = register(store, adapter(1, "vision/defects"), "vision/defects")
    other = register(store, adapter(2, "audio/defects"), "audio/defects")
    assert len({bare, team, other}) == 3
    assert sorted(store.list_aliases()) == ["audio/defects", "defects", "vision/defects"]
    assert store.get_alias("vision/defects").active == team and store.get_alias("defects").active == bare
    assert store.version_path("vision/defects", team).is_dir()
    with pytest.raises(NotFound):
        store.version_path("audio/defects", team)  # a version belongs to its task's prefix
    if kind == "local":
        assert (store.root / "ns" / "vision" / "tasks" / "defects" / "alias.json").is_file()
        assert (store.root / "tasks" / "defects" / "alias.json").is_file()
    gen = store.generation()
    store.update_rollout("vision/defects", lambda _: {"candidate": team, "mode": "shadow"})
    assert store.changes_since(gen)[1].keys() == {"vision/defects"}
    assert store.list_rollouts(["vision/defects", "defects"]) == {"vision/defects": {"candidate": team, "mode": "shadow"}}

    store.delete("vision/defects")
    assert sorted(store.list_aliases()) == ["audio/defects", "defects"]
    assert store.get_alias("vision/defects") is None
    assert store.gc(grace_s=0) is not None  # sweeps both layouts without tripping on either
    assert store.get_alias("audio/defects").active == other
    assert store.version_path("audio/defects", other).is_dir()


def test_registration_by_store_path_of_a_namespaced_version(store, adapter):
    v = register(store, adapter(1, "vision/defects"), "vision/defects")
    assert store.resolve_store_path(f"ns/vision/tasks/defects/versions/{v}").is_dir()


def test_registry_serves_a_namespaced_task(make_store, adapter, text_backbone):
    registry = Registry(make_store(), {"text": text_backbone})
    loaded, _ = registry.register_replacing(adapter(3, "vision/defects"))
    assert loaded.name == "vision/defects"
    assert registry.resolve("vision/defects").version == loaded.version
    with pytest.raises(NotFound) as missing:
        registry.resolve("vision/other")
    assert "vision/defects" in missing.value.message  # the namespace's own tasks are listed
    with pytest.raises(NotFound) as elsewhere:
        registry.resolve("audio/other")
    assert "vision/defects" not in elsewhere.value.message  # another namespace's are not
    refused = []
    with pytest.raises(PermissionError):
        registry.register_replacing(adapter(4, "audio/x"), authorize=lambda n: refused.append(n) or _deny())
    assert refused == ["audio/x"] and registry.store.get_alias("audio/x") is None  # nothing written


def _deny():
    raise PermissionError("no")
