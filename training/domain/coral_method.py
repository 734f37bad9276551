"""``coral``: the target's pooled features re-coloured with the source's statistics, folded
into the head (:mod:`training.domain.coral`); the trunk is untouched, serving costs nothing extra."""

from __future__ import annotations

from training.domain.base import AdaptationMethod
from training.domain.coral import coral_map, fold_affine
from training.feature_stats import FeatureStats


class CoralMethod(AdaptationMethod):
    name = "coral"
    recipe = ("CORAL alignment (Sun et al., 2016): the target domain's pooled features "
              "({target_rows} unlabelled inputs) are whitened with their own covariance and "
              "re-coloured with the source training data's ({source_rows} rows), both shrunk by "
              "{shrinkage} times the mean variance; the resulting affine map is folded exactly "
              "into the head's first layer, so the trunk is unchanged and serving costs nothing extra.")

    def adapt(self, head, source, target_features, cfg):
        a, c = coral_map(source, FeatureStats.of(target_features), cfg.shrinkage)
        return fold_affine(head, a, c)
