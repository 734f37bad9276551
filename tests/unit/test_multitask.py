"""Tasks riding on one shared trunk adaptation (kinds ``shared_lora`` + ``multitask``).

Registration: the shared adaptation is its own versioned entry; a task names its version
plus its own head; every wrong reference is a clear 4xx-class error. Serving: tasks riding
on one version that a request asks about the same inputs run the adapted trunk once (rows
counted at the backbone's forward), and answer as each task registered alone as an
ordinary LoRA task with the same weights (1e-5). Lifecycle: an adaptation that tasks ride
on cannot be deleted (409 naming them); deleting a task leaves the adaptation.
"""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest
import torch

from adapters.cost import estimate
from adapters.errors import Conflict, IncompatibleAdapter, InvalidAdapter, InvalidInput
from adapters.runtime import Runtime
from adapters.shared_sets import SWITCH_LEASE_S
from support.factories import head_adapter, peft_lora_dir
from support.multitask_factories import lora_task_dir, multitask_task_dir, shared_lora_dir

TEXTS = ["good movie", "the plot was awful and boring", "fun fun fun", "a very sad film", "not great"]
LABELS = {"sentiment": ("neg", "pos"), "subjective": ("obj", "subj"), "topic": ("film", "food", "news")}


def scores(result) -> torch.Tensor:
    return torch.tensor([list(r.scores.values()) for r in result.rows])


@pytest.fixture
def counted(text_backbone, monkeypatch):
    """Rows and calls of every trunk forward of the text backbone."""
    seen = {"calls": 0, "rows": 0}
    forward = text_backbone.forward

    def counting(batch, *args, **kw):
        seen["calls"] += 1
        seen["rows"] += int(batch["input_ids"].shape[0])
        return forward(batch, *args, **kw)

    monkeypatch.setattr(text_backbone, "forward", counting)
    return seen


@pytest.fixture
def shared_setup(registry, text_backbone, tmp_path, one_torch_thread):
    """``base`` (a shared LoRA) with three tasks on it, and the same three as lora tasks."""
    base_dir = shared_lora_dir(tmp_path / "base", text_backbone, "base", seed=3)
    base = registry.register(base_dir)
    for i, (task, labels) in enumerate(LABELS.items()):
        registry.register(multitask_task_dir(tmp_path / task, text_backbone, task, "base", base.version,
                                             labels, seed=20 + i))
        registry.register(lora_task_dir(tmp_path / f"{task}-alone", text_backbone, f"{task}-alone",
                                        base_dir, labels, seed=20 + i))
    return registry, base


def test_a_shared_adaptation_is_its_own_versioned_entry(shared_setup):
    registry, base = shared_setup
    assert base.kind == "shared_lora" and base.head is None
    rider = registry.resolve("sentiment")
    assert rider.kind == "multitask"
    assert rider.manifest.shared.name == "base" and rider.manifest.shared.version == base.version
    assert rider.weights is base.weights  # the LoRA is loaded once, whatever rides on it
    versions = registry.show("sentiment")["versions"]
    assert versions[-1]["shared"] == f"base@{base.version}"


def test_a_version_prefix_or_none_is_stored_as_the_full_id(registry, text_backbone, tmp_path, one_torch_thread):
    base = registry.register(shared_lora_dir(tmp_path / "base", text_backbone, "base"))
    t = registry.register(multitask_task_dir(tmp_path / "t", text_backbone, "t", "base", base.version[:12]))
    assert t.manifest.shared.version == base.version
    u = registry.register(multitask_task_dir(tmp_path / "u", text_backbone, "u", "base", None))
    assert u.manifest.shared.version == base.version  # none named: the active one, stored exactly
    assert registry.store.get_alias("u").versions[-1].shared == f"base@{base.version}"


def test_riders_run_the_adapted_trunk_once_and_match_each_task_alone(shared_setup, counted):
    registry, _ = shared_setup
    rt = Runtime(registry)
    tasks = list(LABELS)
    req = rt.prepare(tasks, TEXTS, "text")
    assert req.rows == len(TEXTS)  # one adapted row per input for all three
    counted.update(calls=0, rows=0)
    together = rt.run([req])[0]
    assert counted["rows"] == len(TEXTS)
    for task, res in zip(tasks, together):
        counted.update(calls=0, rows=0)
        alone = rt.run([rt.prepare([f"{task}-alone"], TEXTS, "text")])[0][0]
        assert counted["rows"] == len(TEXTS)
        assert torch.allclose(scores(res), scores(alone), atol=1e-5), task
    separate = rt.prepare([f"{t}-alone" for t in tasks], TEXTS, "text")
    assert separate.rows == 3 * len(TEXTS)
    assert sum(estimate(req).per_input) < sum(estimate(separate).per_input) / 2.5


def test_riders_beside_other_kinds_in_one_batch(shared_setup, counted, text_backbone, tmp_path):
    """Per-row LoRA (another LoRA task and a head in the same chunk), and two requests in
    one batch: each request's riders share their rows, answers unchanged."""
    registry, _ = shared_setup
    registry.register(peft_lora_dir(tmp_path / "other", text_backbone.spec.source, seed=7), name="other")
    registry.register(head_adapter(tmp_path / "plain", text_backbone, "plain"))
    rt = Runtime(registry)
    mixed = rt.prepare(["sentiment", "other", "topic", "plain"], TEXTS, "text")
    second = rt.prepare(["subjective", "sentiment"], TEXTS[:2], "text")
    counted.update(calls=0, rows=0)
    out = rt.run([mixed, second])
    assert counted["rows"] == 3 * len(TEXTS) + 2  # shared, other, plain; then 2 shared
    ref = {t: scores(rt.run([rt.prepare([f"{t}-alone"], TEXTS, "text")])[0][0]) for t in LABELS}
    assert torch.allclose(scores(out[0][0]), ref["sentiment"], atol=1e-5)
    assert torch.allclose(scores(out[0][2]), ref["topic"], atol=1e-5)
    assert torch.allclose(scores(out[1][0]), ref["subjective"][:2], atol=1e-5)
    assert torch.allclose(scores(out[1][1]), ref["sentiment"][:2], atol=1e-5)


def test_a_request_naming_the_shared_adaptation_is_refused(shared_setup):
    registry, _ = shared_setup
    with pytest.raises(InvalidInput, match="shared adaptation; ask a task that rides on it"):
        Runtime(registry).prepare(["base"], TEXTS, "text")


def test_registration_refuses_wrong_references(registry, text_backbone, vision_backbone, tmp_path,
                                               one_torch_thread):
    base = registry.register(shared_lora_dir(tmp_path / "base", text_backbone, "base"))
    with pytest.raises(IncompatibleAdapter, match="'nope'.*not registered here.*register the shared"):
        registry.register(multitask_task_dir(tmp_path / "a", text_backbone, "a", "nope", base.version))
    with pytest.raises(IncompatibleAdapter, match="does not exist"):
        registry.register(multitask_task_dir(tmp_path / "b", text_backbone, "b", "base", "f" * 64))
    head = registry.register(head_adapter(tmp_path / "h", text_backbone, "h"))
    with pytest.raises(IncompatibleAdapter, match="'h' is a head task, not a shared adaptation"):
        registry.register(multitask_task_dir(tmp_path / "c", text_backbone, "c", "h", head.version))
    with pytest.raises(IncompatibleAdapter, match="runs on backbone 'text' but task 'd' on 'vision'"):
        registry.register(multitask_task_dir(tmp_path / "d", vision_backbone, "d", "base", base.version))
    with pytest.raises(IncompatibleAdapter, match="input_dim is 7"):
        registry.register(multitask_task_dir(tmp_path / "e", text_backbone, "e", "base", base.version,
                                             input_dim=7))
    assert sorted(registry.aliases) == ["base", "h"]


def test_a_shared_adaptation_with_a_head_is_refused(registry, text_backbone, tmp_path, one_torch_thread):
    folder = peft_lora_dir(tmp_path / "p", text_backbone.spec.source)  # keeps its classifier
    shared_lora_dir(tmp_path / "s", text_backbone, "s")
    (tmp_path / "p" / "adapter.json").write_bytes((tmp_path / "s" / "adapter.json").read_bytes())
    with pytest.raises(InvalidAdapter, match="modules_to_save 'classifier"):
        registry.register(folder)


def test_a_plain_peft_folder_still_registers_as_one_lora_task(registry, text_backbone, tmp_path,
                                                              one_torch_thread):
    a = registry.register(peft_lora_dir(tmp_path / "p", text_backbone.spec.source), name="p")
    assert a.kind == "lora" and a.manifest.shared is None


def test_delete_never_removes_an_adaptation_in_use(shared_setup):
    registry, base = shared_setup
    with pytest.raises(Conflict, match=r"'base' is used by tasks \['sentiment', 'subjective', 'topic'\]"):
        registry.delete("base")
    registry.delete("sentiment")
    assert "base" in registry.aliases
    assert registry.resolve("topic").weights is base.weights  # the others still answer on it
    registry.delete("subjective")
    registry.delete("topic")
    registry.delete("base")
    assert "base" not in registry.aliases


# ---- sets: a new adaptation version moves its tasks with it, all or none ------------------
def actives(registry, names) -> dict:
    return {n: registry.store.get_alias(n).active for n in names}


def new_base(tmp_path, text_backbone, seed: int):
    return shared_lora_dir(tmp_path / f"base-{seed}", text_backbone, "base", seed=seed)


def test_a_new_adaptation_version_moves_every_task_and_rolls_back(shared_setup, text_backbone, tmp_path):
    registry, base = shared_setup
    sets, names = registry.shared_sets, ["base", *LABELS]
    before = actives(registry, names)
    head = multitask_task_dir(tmp_path / "new-topic", text_backbone, "topic", "base", base.version,
                              LABELS["topic"], seed=99)  # a new head for one task; the others carry theirs
    doc = sets.register(new_base(tmp_path, text_backbone, 4), {"topic": head})
    after = actives(registry, names)
    assert all(after[n] != before[n] for n in names)
    assert doc["active"] == {"adaptation": after["base"], "tasks": {t: after[t] for t in LABELS}}
    assert doc["previous"]["adaptation"] == base.version and doc["pending"] is None
    for t in LABELS:
        loaded = registry.resolve(t)
        assert loaded.manifest.shared.version == after["base"]
        assert loaded.weights is registry.resolve_version("base", after["base"]).weights
    rt = Runtime(registry)
    assert rt.prepare(list(LABELS), TEXTS, "text").rows == len(TEXTS)  # still one row per input
    sets.rollback("base")
    assert actives(registry, names) == before
    assert registry.resolve("sentiment").manifest.shared.version == base.version


def test_a_failure_in_the_middle_of_a_switch_leaves_the_old_set(shared_setup, text_backbone, tmp_path,
                                                                 monkeypatch):
    registry, _ = shared_setup
    names = ["base", *LABELS]
    before = actives(registry, names)
    real, calls = registry.lifecycle.activate, []

    def failing(task, version, expected=None):
        calls.append(task)
        if len(calls) == 3:  # the adaptation and one task have switched
            raise OSError("the store went away")
        return real(task, version, expected)

    monkeypatch.setattr(registry.lifecycle, "activate", failing)
    with pytest.raises(OSError, match="went away"):
        registry.shared_sets.register(new_base(tmp_path, text_backbone, 5))
    assert actives(registry, names) == before
    assert registry.shared_sets.document("base")["pending"] is None


def test_a_crash_in_the_middle_of_a_switch_is_undone_by_the_next_process(shared_setup, text_backbone,
                                                                           tmp_path, monkeypatch, backbones):
    """The crash: the aliases half switched, ``pending`` still in the document, no undo ran
    (a killed process runs no handler). A new process on the store recovers the old set."""
    from adapters.registry import Registry
    registry, _ = shared_setup
    names = ["base", *LABELS]
    before = actives(registry, names)
    sets = registry.shared_sets
    real_move = sets._move

    def crash_half_way(name, target, token, moved=None):
        real = registry.lifecycle.activate
        real(name, target["adaptation"])
        first = sorted(target["tasks"])[0]
        real(first, target["tasks"][first])
        raise SystemExit("killed")  # a killed process runs no undo: the patched activate is gone

    def killed(moved):
        raise SystemExit("killed")  # the undo: a dead process never gets there

    monkeypatch.setattr(sets, "_move", crash_half_way)
    monkeypatch.setattr(sets, "_put_back", killed)
    with pytest.raises(SystemExit):
        sets.register(new_base(tmp_path, text_backbone, 6))
    half = actives(registry, names)
    assert half["base"] != before["base"] and sum(half[t] != before[t] for t in LABELS) == 1
    assert sets.document("base")["pending"] is not None
    monkeypatch.setattr(sets, "_move", real_move)
    restarted = Registry(registry.store, backbones)
    restarted.sync()
    with pytest.raises(Conflict, match="in progress"):  # its lease still runs: it may be alive
        restarted.shared_sets.recover("base")
    later = datetime.now(timezone.utc) + timedelta(seconds=SWITCH_LEASE_S + 1)
    restarted.shared_sets.clock = lambda: later  # the dead switch's lease has run out
    assert restarted.shared_sets.recover("base") is True
    assert actives(restarted, names) == before
    assert restarted.shared_sets.document("base")["pending"] is None
    assert restarted.resolve("sentiment").manifest.shared.version == before["base"]


def test_a_set_version_is_activated_all_or_none(shared_setup, text_backbone, tmp_path):
    """``activate(name, version)`` switches the adaptation and every task riding on it to their
    versions on that adaptation version; a task with none is a Conflict naming it, nothing moved."""
    registry, base = shared_setup
    sets, names = registry.shared_sets, ["base", *LABELS]
    before = actives(registry, names)
    sets.register(new_base(tmp_path, text_backbone, 7))
    moved = actives(registry, names)
    doc = sets.activate("base", base.version[:12])  # back by version, as a rollback would
    assert actives(registry, names) == before and doc["previous"]["adaptation"] == moved["base"]
    assert sets.describe("base")["versions"][-1]["tasks"] == {t: moved[t] for t in LABELS}
    bare = registry.lifecycle.register(new_base(tmp_path, text_backbone, 8), activate=False).loaded.version
    with pytest.raises(Conflict, match="sentiment.*subjective.*topic.*nothing was switched"):
        sets.activate("base", bare)
    assert actives(registry, names) == before and sets.document("base")["pending"] is None
    with pytest.raises(Conflict, match="already the active version"):
        sets.activate("base", base.version)
