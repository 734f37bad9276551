"""``head``: a head fitted on frozen features, computed once and cached (seconds)."""

from __future__ import annotations

from adapters.format import write_head_adapter
from training.dense.fit import fit_dense
from training.export import write_head_dir
from training.method_settings import HEAD
from training.methods.base import TrainingMethod
from training.probe import fit_probe
from training.token_fit import fit_token_head


class HeadMethod(TrainingMethod):
    settings = HEAD
    kind = "head"
    scores_train_split = True
    fits_tokens = True
    fits_dense = True
    dense_recipe = ("A head (a one-level FPN over strides {strides}, width {width}) on the frozen trunk's "
                    "spatial maps at {input_size} px, computed once per image and cached.")
    kind_words = "head adapter"
    recipe = ("The backbone stays frozen. Its pooled features (`{pooling}` pooling) were computed "
              "once for every example and cached; a {head} was fitted on them with AdamW and "
              "{loss}, features standardised during fitting (folded into the saved weights).")
    token_recipe = ("The backbone stays frozen. Each sentence was tokenised as its words; the features of "
                    "each word's first sub-token were computed once, and a {head} was fitted on them with "
                    "AdamW and {loss}, features standardised during fitting (folded into the saved "
                    "weights). At serving time the head runs on every token and a word takes its first "
                    "sub-token's label.")

    def fit(self, backbone, train, val, cfg, cache_dir):
        return fit_probe(backbone, train, val, cfg, cache_dir)

    def fit_tokens(self, backbone, train, val, cfg):
        return fit_token_head(backbone, train, val, cfg)

    def write(self, out, manifest, card, fit):
        write_head_dir(out, manifest, fit.head, card)
        stats = getattr(fit, "feature_stats", None)  # pooled heads (a TokenFit has none)
        if stats is not None:
            stats.save(out)  # source statistics for a later `taskswap adapt` (training.domain)
        calibration = getattr(fit, "calibration", None)
        if calibration is not None:
            calibration.save(out)  # for `taskswap adapt --method label_shift`

    def fit_dense(self, backbone, train, cfg, task):
        return fit_dense(backbone, train, cfg, task)

    def write_dense(self, out, manifest, card, fit):
        write_head_adapter(out, manifest, fit.head.state_for_file(), card=card)
