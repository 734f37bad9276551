"""``label_shift``: the target class prior re-estimated by EM over the source head's calibrated
posteriors of the unlabelled target inputs, folded into the head's last layer
(:mod:`training.domain.label_shift`); the trunk is untouched, serving costs nothing extra.

It also *refines* another method's result (``coral+label_shift``, ``pseudo_label+label_shift``:
:mod:`training.domain.composed`): the posteriors are then that version's, calibrated with the
source head's temperature and bias (recorded on the source validation split; the first
method's own calibration is not known).
"""

from __future__ import annotations

import torch

from adapters.errors import InvalidInput
from training.domain.base import AdaptationMethod, Adapted
from training.domain.label_shift import em_prior, fold_prior_shift


def _log_posteriors(ctx, adapted: Adapted) -> torch.Tensor:
    """``[rows, classes]`` log-probabilities of ``adapted`` on the target inputs, uncalibrated."""
    if adapted.predict is not None:  # a trunk-adapting method's served probabilities
        return adapted.predict(ctx.target_inputs).double().clamp_min(1e-30).log()
    with torch.no_grad():
        return adapted.head(ctx.target_features).double().log_softmax(-1)


class LabelShiftMethod(AdaptationMethod):
    name = "label_shift"
    needs_source_stats = False
    needs_calibration = True
    refines = True
    task_types = ("single_label",)
    recipe = ("Label-shift correction (Saerens, Latinne & Decaestecker, 2002): the head's posteriors were "
              "calibrated on the source validation split (temperature and per-class bias, Alexandari et al., "
              "2020); the target class prior was re-estimated by EM over the calibrated posteriors of "
              "{target_rows} unlabelled target inputs (at most {em_iterations} iterations), and the "
              "calibration and the prior ratio log(p_target / p_source) were folded into the head's last "
              "layer, so the trunk is unchanged and serving costs nothing extra.")

    def run(self, ctx, cfg):
        return self.refine(ctx, Adapted(ctx.head), cfg)

    def refine(self, ctx, adapted, cfg):
        cal = ctx.calibration
        n = adapted.head.linear_layers()[-1].out_features
        if cal is None or len(cal.prior) != n:
            raise InvalidInput(f"label_shift needs the source head's calibration for {n} classes "
                               "(source_calibration.json, written by `taskswap train --method head` for "
                               "single-label heads); retrain the source head, or use coral / pseudo_label")
        log_post = cal.log_probs(_log_posteriors(ctx, adapted))  # [rows, classes], calibrated
        ps = torch.tensor(cal.prior, dtype=torch.float64)
        pt, iterations = em_prior(log_post, ps, cfg.em_iterations)
        shift = torch.tensor(cal.bias, dtype=torch.float64) + (pt / ps.clamp_min(1e-4)).log()
        head = fold_prior_shift(adapted.head, cal.temperature, shift)
        predict = adapted.predict and _reweighted(adapted.predict, cal.temperature, shift)
        labels = list(ctx.manifest.labels or [])
        record = {"source_prior": dict(zip(labels, _round(ps))), "target_prior": dict(zip(labels, _round(pt))),
                  "em_iterations_run": iterations,
                  "calibration": {"temperature": round(cal.temperature, 6), "bias": _round(cal.bias),
                                  "rows": cal.rows, "nll_before": cal.nll_before, "nll_after": cal.nll_after}}
        return Adapted(head, adapted.peft_model, predict, {**adapted.notes, "label_shift": record})

    def card_lines(self, notes):
        rec = notes.get("label_shift")
        if rec is None:
            return []
        fmt = lambda prior: ", ".join(f"{k} {v:.3f}" for k, v in prior.items())  # noqa: E731
        cal = rec["calibration"]
        return [f"- class prior: source {fmt(rec['source_prior'])}; estimated on the target data "
                f"{fmt(rec['target_prior'])} ({rec['em_iterations_run']} EM iterations)",
                f"- calibration on the source validation split ({cal['rows']} rows): temperature "
                f"{cal['temperature']:.3f}, NLL {cal['nll_before']:.4f} -> {cal['nll_after']:.4f}"]


def _reweighted(predict, temperature: float, shift: torch.Tensor):
    """``predict`` (probabilities) with the folded head's change applied: the same answers
    as the new head on the same trunk (``log p`` differs from the logits by a per-row constant)."""
    def out(xs: list) -> torch.Tensor:
        lp = predict(xs).double().clamp_min(1e-30).log()
        return (lp / temperature + shift).softmax(-1).float()
    return out


def _round(xs) -> list[float]:
    return [round(float(x), 6) for x in xs]
