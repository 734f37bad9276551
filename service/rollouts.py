"""Fit jobs and shadow/canary rollouts of one worker, behind the routes of ``service.service``.

What lives where:

- the policy (candidate, mode, fraction) is a document in the store
  (:mod:`adapters.rollout`), set, dropped and promoted by the registry's lifecycle
  (:mod:`adapters.lifecycle`: the writer lock, the store writes, the candidate's checks);
  the store follower puts it on the task's row of the registry's table with the task's
  alias, so every replica and worker applies the same policy and a restart reads it back;
- routing happens when a request's adapters are pinned (``Runtime.prepare``), shadow
  scoring in the same batch (``Runtime._run_shadows``), the comparison here (``observe``,
  kept on the task's row);
- ``if_better`` and the shadow report compare versions on the task type's headline metric
  as their manifests record it (:mod:`service.headline`): accuracy, R², token accuracy...;
- promote = switch the alias to the candidate (one atomic store write), then clear the
  policy; a policy whose candidate is already active is ignored, so a crash between the
  two writes changes nothing anyone sees.

This module holds no table of its own: it validates HTTP-shaped requests, runs fit jobs and
shapes reports.
"""

from __future__ import annotations

import logging
from dataclasses import asdict
from pathlib import Path

from adapters.errors import Conflict, InvalidInput, NotFound, TaskswapError
from adapters.store.base import EXPECT_NO_VERSION, check_name
from service.headline import if_better, recorded
from service.fit_data import check_fit_data
from service.fit_inputs import check_fit_examples, check_job_images, check_job_texts
from service.jobs import Job, JobRunner

log = logging.getLogger("taskswap.rollout")


class Rollouts:
    """``fit / set / drop / promote / report`` for one engine (one worker)."""

    def __init__(self, engine):
        self.engine = engine
        s = engine.settings
        self.jobs = JobRunner(engine.store, s.replica_id, self._finish_fit,
                              max_jobs=s.fit_max_jobs, max_queued=s.fit_max_queued,
                              timeout_s=s.fit_timeout_s, niceness=s.fit_niceness, threads=s.fit_threads,
                              lease_s=s.fit_lease_s,
                              max_jobs_of=lambda namespace: engine.quotas.get(namespace).max_jobs)

    def close(self) -> None:
        self.jobs.close()

    # ---- fit ---------------------------------------------------------------------------
    def submit_fit(self, task: str, body) -> dict:
        """Validate a fit request (the cheap checks, at once), queue it; returns the job."""
        check_name(task)
        s = self.engine.settings
        n = len(body.examples if body.examples is not None else body.labels)
        if n > s.fit_max_examples:
            raise InvalidInput(f"{n} examples is over the limit of {s.fit_max_examples} per fit "
                               "(TASKSWAP_FIT_MAX_EXAMPLES); send fewer, or train offline with `taskswap train`")
        if body.examples is not None:
            return self._submit_generation_fit(task, body, n)
        modality = "text" if body.texts is not None else "image"
        ex = check_fit_examples(body, self.engine.limits)  # /predict's rules: 400 now, not in the job
        alias = self.engine.registry.aliases.get(task)
        if body.promote in ("shadow", "canary") and alias is None:
            raise NotFound(f"task {task!r} has no active version to run a {body.promote} beside; "
                           "fit it with promote='active' first")
        backbone = self._backbone_for(task, body.backbone, modality)
        active_type = self.engine.registry.show(task)["task_type"] if alias is not None else None
        check_fit_data(ex.labels, body.options.val_fraction, active_type)  # the trainer's refusals: 422 now
        spec = {"name": task, "labels": ex.labels, "label_names": ex.label_names,
                "texts": ex.texts, "images": ex.images, "options": body.options.model_dump(),
                "backbone": _spec_dict(backbone)}
        if body.promote == "if_better" and alias is not None:
            spec["compare_with"] = str(self.engine.store.version_path(task, alias.active))
        return self.jobs.submit(task, body.promote, spec, n, {
            "canary_fraction": body.canary_fraction, "backbone": backbone.name,
            "compared_version": alias.active if body.promote == "if_better" and alias is not None else None})

    # ---- adapt ---------------------------------------------------------------------------
    def submit_adapt(self, task: str, body) -> dict:
        """Validate an adapt request (cheap checks, at once), queue it; returns the job. The
        source is the task's active version; the result is a new version of the task."""
        check_name(task)
        s = self.engine.settings
        alias = self.engine.registry.aliases.get(task)
        if alias is None:
            raise NotFound(f"task {task!r} has no active version to adapt; register or fit it first")
        target = body.texts if body.texts is not None else body.images
        source = body.source_texts if body.texts is not None else body.source_images
        val = body.val_texts if body.texts is not None else body.val_images
        n = len(target) + len(source or []) + len(val or [])
        if n > s.fit_max_examples:
            raise InvalidInput(f"{n} inputs (target, source and val together) is over the limit of "
                               f"{s.fit_max_examples} per job (TASKSWAP_FIT_MAX_EXAMPLES); send fewer, or "
                               "adapt offline with `taskswap adapt`")
        modality = "text" if body.texts is not None else "image"
        info = self.engine.registry.show(task)
        if info.get("kind") != "head":
            raise InvalidInput(f"task {task!r} is a {info.get('kind')!r} adapter; {body.method} adapts "
                               "'head' adapters only")
        lists = {"texts": target, "source_texts": source, "val_texts": val}
        if modality == "text":  # /predict's rules, at once (not a late failure in the job)
            inputs = {k: v and check_job_texts(v, self.engine.limits, k) for k, v in lists.items()}
        else:
            inputs = {k.replace("texts", "images"): v and check_job_images(v, k.replace("texts", "images"),
                                                                           self.engine.limits)
                      for k, v in lists.items()}
        labels = list(info.get("labels") or [])
        unknown = sorted(set(body.val_labels or []) - set(labels))
        if unknown:
            raise InvalidInput(f"val_labels {unknown[:10]} are not labels of {task!r} ({labels})")
        version_dir = str(self.engine.store.version_path(task, alias.active))
        backbone = self._backbone_for(task, None, modality)
        spec = {"name": task, "source_dir": version_dir, "method": body.method, "shrinkage": body.shrinkage,
                "epochs": body.epochs, "lr": body.lr, "keep_fraction": body.keep_fraction,
                "em_iterations": body.em_iterations,
                "modality": modality, **inputs, "val_labels": body.val_labels, "backbone": _spec_dict(backbone)}
        if body.promote == "if_better":
            spec["compare_with"] = version_dir
        return self.jobs.submit(task, body.promote, spec, len(target), {
            "canary_fraction": body.canary_fraction, "backbone": backbone.name,
            "compared_version": alias.active if body.promote == "if_better" else None}, kind="adapt")

    def _submit_generation_fit(self, task: str, body, n: int) -> dict:
        """A LoRA for a generation task on one of the server's language models, as a job."""
        alias = self.engine.registry.aliases.get(task)
        if body.promote in ("shadow", "canary") and alias is None:
            raise NotFound(f"task {task!r} has no active version to run a {body.promote} beside; "
                           "fit it with promote='active' first")
        lms = self.engine.lms
        name = body.backbone or next(iter(lms), None)
        if name is None:
            raise InvalidInput("this server serves no language model (TASKSWAP_LM_BACKBONES); generation "
                               "tasks cannot be fitted here")
        if name not in lms:
            raise NotFound(f"language model {name!r} is not served here (language models: {sorted(lms)})")
        spec = {"name": task, "task_type": "generation", "options": body.options.model_dump(),
                "examples": [e.model_dump(exclude_none=True) for e in body.examples],
                "generation": (body.generation.model_dump() if body.generation is not None else None),
                "backbone": _spec_dict(lms[name])}
        if body.promote == "if_better" and alias is not None:
            spec["compare_with"] = str(self.engine.store.version_path(task, alias.active))
        return self.jobs.submit(task, body.promote, spec, n, {
            "canary_fraction": body.canary_fraction, "backbone": name,
            "compared_version": alias.active if body.promote == "if_better" and alias is not None else None})

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
        """Register the fitted (or adapted) head as the job asked (in the job's thread)."""
        public = {"metrics": result.get("metrics", {}), "fit_seconds": round(result.get("seconds", 0.0), 3),
                  "examples": result.get("examples"), "best_epoch": result.get("best_epoch")}
        if "adaptation" in result:  # an adapt job: what the new version's manifest records
            public["adaptation"] = result["adaptation"]
        promote, expected = job.promote, None
        if promote == "if_better":
            verdict = self._better(result)
            public["comparison"] = verdict
            if not verdict["promote"]:
                return {**public, "version": None, "role": "none", "promoted": False}
            # The swap replaces exactly the version it was compared with (none: no version).
            promote, expected = "active", job.extra.get("compared_version") or EXPECT_NO_VERSION
        name, backbone = job.task, job.extra.get("backbone")
        if promote == "active":
            try:
                loaded, previous = self.engine.register_folder(folder, name, backbone, activate=True,
                                                               expected=expected)
            except Conflict as exc:  # another version was registered after the comparison
                return {**public, "version": None, "role": "none", "promoted": False,
                        "refused": f"not promoted: {exc.message}"}
            return {**public, "version": loaded.version, "role": "active", "promoted": True,
                    "previous_version": previous}
        loaded, _ = self.engine.register_folder(folder, name, backbone, activate=False)
        fraction = job.extra.get("canary_fraction", 0.1) if promote == "canary" else 0.0
        self.set(name, loaded.version, promote, fraction)
        return {**public, "version": loaded.version, "role": promote, "promoted": False}

    @staticmethod
    def _better(result: dict) -> dict:
        """Promote when the candidate beats the active version on the task type's headline
        (:func:`service.headline.if_better`), measured on the same validation examples."""
        return if_better(result.get("metrics", {}), result.get("active"))

    # ---- policy --------------------------------------------------------------------------
    def set(self, task: str, version: str, mode: str, fraction: float) -> dict:
        """Put a stored version in shadow or canary (checked before it is published)."""
        self.engine.registry.set_candidate(task, version, mode, fraction)
        return self.report(task)

    def drop(self, task: str) -> dict:
        """Remove the task's candidate policy (the candidate stays a stored version)."""
        self.engine.registry.drop_candidate(task)
        return self.report(task)

    def promote(self, task: str) -> dict:
        """Make the candidate the active version (one atomic alias switch), then clear the policy."""
        eng = self.engine
        change = eng.registry.promote(task)
        eng.publish_state()
        return {"task": task, "active_version": change.loaded.version, "previous_version": change.replaced}

    def report(self, task: str) -> dict:
        eng = self.engine
        info = eng.registry.show(task)
        p = eng.registry.policy(task)
        return {"task": task, "active_version": info["active_version"],
                "mode": p.mode if p else "none", "candidate_version": p.candidate if p else None,
                "fraction": p.fraction if p else None, "updated_at": p.updated_at if p else None,
                "replica_id": eng.settings.replica_id, "routing_header": eng.settings.routing_header,
                "shadow": eng.registry.shadow_reports(task), "headline": self._headlines(task, p)}

    def _headlines(self, task: str, policy) -> dict | None:
        """The active and candidate versions' recorded validation headlines, compared in the
        task type's direction (None without a candidate, or one that cannot be loaded here:
        the report still answers). The candidate is the one shadow rows already load."""
        if policy is None:
            return None
        registry = self.engine.registry
        try:
            active, candidate = registry.resolve(task), registry.candidate(task, policy.candidate)
        except TaskswapError as exc:
            log.warning("no headline comparison for %s: %s", task, exc)
            return None
        return recorded(active.manifest.metrics, candidate.manifest.metrics)

    # ---- per batch -----------------------------------------------------------------------
    def observe(self, results) -> None:
        """Fold the shadow scores of one request's results into the comparisons and metrics."""
        metrics = self.engine.metrics
        for r in results:
            if r.shadow is None:
                continue
            c = r.shadow.result
            stats = self.engine.registry.shadow_stats(r.task, r.version, c.version)
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
