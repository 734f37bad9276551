"""Fit jobs and shadow/canary rollouts of one worker, behind the routes of ``service.service``.

What lives where:

- the policy (candidate, mode, fraction) is a document in the store
  (:mod:`adapters.rollout`); this process follows it through :class:`RolloutBook`, which the
  engine refreshes whenever the store generation moves, so every replica and worker
  applies the same policy and a restart reads it back;
- routing happens when a request's adapters are pinned (``Runtime.prepare``), shadow
  scoring in the same batch (``Runtime._run_shadows``), the comparison here (``observe``);
- promote = switch the alias to the candidate (one atomic store write), then clear the
  policy; a policy whose candidate is already active is ignored, so a crash between the
  two writes changes nothing anyone sees.
"""

from __future__ import annotations

import logging
from dataclasses import asdict
from pathlib import Path

from adapters.errors import Conflict, IncompatibleAdapter, InvalidInput, NotFound
from adapters.rollout import RolloutBook, RolloutPolicy, now
from adapters.store.base import check_name
from service.inputs import _DATA_URL, decode_base64_image
from service.jobs import Job, JobRunner

log = logging.getLogger("taskswap.rollout")


class Rollouts:
    """``fit / set / drop / promote / report`` for one engine (one worker)."""

    def __init__(self, engine):
        self.engine = engine
        s = engine.settings
        self.book = RolloutBook(engine.registry.store)
        self.jobs = JobRunner(engine.registry.store, s.replica_id, self._finish_fit,
                              max_jobs=s.fit_max_jobs, max_queued=s.fit_max_queued,
                              timeout_s=s.fit_timeout_s, niceness=s.fit_niceness, threads=s.fit_threads,
                              lease_s=s.fit_lease_s)

    def refresh(self, names: list[str] | None = None) -> None:
        """Re-read the rollout policies (of ``names`` only, when given: a store change's tasks)."""
        registry = self.engine.registry
        if names is None:
            self.book.refresh(registry.aliases)
        else:
            self.book.refresh(registry.aliases_of(names), only=names)

    def close(self) -> None:
        self.jobs.close()

    # ---- fit ---------------------------------------------------------------------------
    def submit_fit(self, task: str, body) -> dict:
        """Validate a fit request (the cheap checks, at once), queue it; returns the job."""
        check_name(task)
        s = self.engine.settings
        n = len(body.labels)
        if n > s.fit_max_examples:
            raise InvalidInput(f"{n} examples is over the limit of {s.fit_max_examples} per fit "
                               "(TASKSWAP_FIT_MAX_EXAMPLES); send fewer, or train offline with `taskswap train`")
        modality = "text" if body.texts is not None else "image"
        images = None
        if body.images is not None:  # undecodable images fail now, not in the job
            images = [self._check_image(b64, i) for i, b64 in enumerate(body.images)]
        if body.texts is not None:
            bad = [i for i, t in enumerate(body.texts) if not t.strip() or len(t) > s.max_text_chars]
            if bad:
                raise InvalidInput(f"texts {bad[:10]} are empty or longer than {s.max_text_chars} "
                                   "characters (TASKSWAP_MAX_TEXT_CHARS)")
        alias = self.engine.registry.aliases.get(task)
        if body.promote in ("shadow", "canary") and alias is None:
            raise NotFound(f"task {task!r} has no active version to run a {body.promote} beside; "
                           "fit it with promote='active' first")
        backbone = self._backbone_for(task, body.backbone, modality)
        spec = {"name": task, "labels": body.labels, "label_names": body.label_names,
                "texts": body.texts, "images": images, "options": body.options.model_dump(),
                "backbone": _spec_dict(backbone)}
        if body.promote == "if_better" and alias is not None:
            spec["compare_with"] = str(self.engine.registry.store.version_path(task, alias.active))
        return self.jobs.submit(task, body.promote, spec, n, {"canary_fraction": body.canary_fraction,
                                                               "backbone": backbone.name})

    def _check_image(self, b64: str, i: int) -> str:
        """The image's base64 without a ``data:`` URL prefix, once it decodes within limits."""
        decode_base64_image(b64, f"images[{i}]", self.engine.limits)  # raises a clear 400
        return _DATA_URL.sub("", b64.strip(), count=1)

    def _backbone_for(self, task: str, name: str | None, modality: str):
        backbones = self.engine.backbones
        if name is None:
            try:
                name = self.engine.registry.show(task)["backbone"] if task in self.engine.registry.aliases else None
            except NotFound:
                name = None
        if name is None:
            want = "text" if modality == "text" else "image"
            name = next((n for n, bb in backbones.items() if bb.modality == want), None)
            if name is None:
                raise InvalidInput(f"no backbone of this server takes {modality} inputs "
                                   f"(backbones: {sorted(backbones)})")
        if name not in backbones:
            raise NotFound(f"backbone {name!r} is not served here (backbones: {sorted(backbones)})")
        bb = backbones[name]
        if (bb.modality == "text") != (modality == "text"):
            raise InvalidInput(f"backbone {name!r} takes {bb.modality} inputs but {modality} examples were sent")
        return bb

    def _finish_fit(self, job: Job, folder: Path, result: dict) -> dict:
        """Register the fitted head as the job asked (in the job's thread)."""
        public = {"metrics": result.get("metrics", {}), "fit_seconds": round(result.get("seconds", 0.0), 3),
                  "examples": result.get("examples"), "best_epoch": result.get("best_epoch")}
        promote = job.promote
        if promote == "if_better":
            verdict = self._better(result)
            public["comparison"] = verdict
            if not verdict["promote"]:
                return {**public, "version": None, "role": "none", "promoted": False}
            promote = "active"
        name, backbone = job.task, job.extra.get("backbone")
        if promote == "active":
            loaded, previous = self.engine.register_folder(folder, name, backbone, activate=True)
            return {**public, "version": loaded.version, "role": "active", "promoted": True,
                    "previous_version": previous}
        loaded, _ = self.engine.register_folder(folder, name, backbone, activate=False)
        fraction = job.extra.get("canary_fraction", 0.1) if promote == "canary" else 0.0
        self.set(name, loaded.version, promote, fraction)
        return {**public, "version": loaded.version, "role": promote, "promoted": False}

    @staticmethod
    def _better(result: dict) -> dict:
        mine = result.get("metrics", {}).get("val_accuracy")
        active = result.get("active")
        if active is None:
            return {"promote": True, "reason": "the task had no active version", "candidate_val_accuracy": mine}
        if not active.get("comparable"):
            return {"promote": False, "reason": active.get("reason"), "candidate_val_accuracy": mine}
        theirs = active["val_accuracy"]
        better = mine is not None and mine > theirs
        return {"promote": better, "candidate_val_accuracy": mine, "active_val_accuracy": theirs,
                "active_version": active.get("version"),
                "reason": ("beats" if better else "does not beat") + " the active version on the same "
                          "validation examples"}

    # ---- policy --------------------------------------------------------------------------
    def set(self, task: str, version: str, mode: str, fraction: float) -> dict:
        """Put a stored version in shadow or canary (checked before it is published)."""
        eng = self.engine
        alias = eng.registry.store.get_alias(check_name(task))
        if alias is None:
            raise NotFound(f"task {task!r} is not registered")
        target = alias.find(version).version
        if target == alias.active:
            raise Conflict(f"version {target[:12]} is already the active version of {task!r}; "
                           "name another stored version as the candidate")
        with eng.registry.writer:
            eng.registry.sync()
            candidate = eng.registry.candidate(task, target)  # loads and checks it now
            active = eng.registry.resolve(task)
            if candidate.manifest.task_type != active.manifest.task_type:
                raise IncompatibleAdapter(f"candidate {target[:12]} is a {candidate.manifest.task_type} task "
                                          f"but the active version is {active.manifest.task_type}; a "
                                          "candidate must answer the same kind of question")
            if candidate.backbone is not active.backbone:
                raise IncompatibleAdapter(f"candidate {target[:12]} runs on backbone {candidate.backbone.name!r} "
                                          f"but the active version on {active.backbone.name!r}; a candidate "
                                          "must share the active version's trunk pass")
            policy = RolloutPolicy(task=task, candidate=target, mode=mode, fraction=fraction, updated_at=now())
            eng.registry.store.update_rollout(task, lambda _old: policy.model_dump())
            eng.registry.sync()
            self.refresh()
        return self.report(task)

    def drop(self, task: str) -> dict:
        """Remove the task's candidate policy (the candidate stays a stored version)."""
        eng = self.engine
        if eng.registry.store.get_alias(check_name(task)) is None:
            raise NotFound(f"task {task!r} is not registered")
        with eng.registry.writer:
            eng.registry.store.update_rollout(task, lambda _old: None)
            eng.registry.sync()
            self.refresh()
        self.book.forget(task)
        return self.report(task)

    def promote(self, task: str) -> dict:
        """Make the candidate the active version (one atomic alias switch), then clear the policy."""
        eng = self.engine
        policy = eng.registry.store.get_rollout(check_name(task))
        alias = eng.registry.store.get_alias(task)
        if alias is None:
            raise NotFound(f"task {task!r} is not registered")
        if policy is None:
            raise Conflict(f"task {task!r} has no candidate in shadow or canary; set one with "
                           f"POST /adapters/{task}/rollout, or use /activate for a plain switch")
        candidate = RolloutPolicy.model_validate(policy).candidate
        previous = alias.active
        with eng.registry.writer:
            eng.registry.activate(task, candidate)
            eng.registry.store.update_rollout(task, lambda _old: None)
            eng.registry.sync()
            self.refresh()
        eng.publish_state()
        return {"task": task, "active_version": candidate, "previous_version": previous}

    def report(self, task: str) -> dict:
        eng = self.engine
        info = eng.registry.show(task)
        p = self.book.policy(task)
        return {"task": task, "active_version": info["active_version"],
                "mode": p.mode if p else "none", "candidate_version": p.candidate if p else None,
                "fraction": p.fraction if p else None, "updated_at": p.updated_at if p else None,
                "replica_id": eng.settings.replica_id, "routing_header": eng.settings.routing_header,
                "shadow": self.book.reports(task)}

    # ---- per batch -----------------------------------------------------------------------
    def observe(self, results) -> None:
        """Fold the shadow scores of one request's results into the comparisons and metrics."""
        metrics = self.engine.metrics
        for r in results:
            if r.shadow is None:
                continue
            c = r.shadow.result
            stats = self.book.stats(r.task, r.version, c.version)
            stats.observe([_top(row) for row in r.rows], [_top(row) for row in c.rows],
                          r.shadow.added_seconds, r.shadow.extra_trunk_rows)
            if metrics is not None:
                metrics.observe_shadow(r, c, r.shadow.added_seconds)


def _top(row) -> tuple[str | None, float]:
    """(top label, its score), or (None, first output value) for rows without a label."""
    if row.label is not None:
        return row.label, float(row.score)
    values = row.values or {}
    return None, float(next(iter(values.values()), 0.0))


def _spec_dict(bb) -> dict:
    """The backbone's spec as keyword arguments of ``BackboneSpec`` (the child loads the same one)."""
    d = asdict(bb.spec)
    return {k: v for k, v in d.items() if isinstance(v, (str, int, float, bool, type(None)))}
