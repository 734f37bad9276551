"""Why the drug-review numbers of ``bench domain`` look odd: linear probes on the same frozen
features, swept over regularisation, and where the source-only head puts its threshold.

On the ``drugs`` shift (:mod:`bench.domain_shifts`), MiniLM mean-pooled features:

- the test split's majority-class rate;
- the ``head`` method's target-supervised head (as ``bench domain`` trains it);
- scikit-learn logistic regression on the labelled drug training reviews at several ``C``
  (inverse regularisation), on raw and on per-dimension standardised features (what the
  ``head`` method fits on), with train and test accuracy;
- per seed, the source-only (film-review) probe's accuracy on the drug test split and the
  share of drug reviews it calls positive (72% are).

    python -m bench domain-probe --threads 1
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run as a script from anywhere

import numpy as np  # noqa: E402
import torch  # noqa: E402
from sklearn.linear_model import LogisticRegression  # noqa: E402
from sklearn.preprocessing import StandardScaler  # noqa: E402

from adapters.backbones.base import load_backbone  # noqa: E402
from adapters.backbones.defaults import default_spec  # noqa: E402
from bench.common import machine, save_results  # noqa: E402
from bench.domain_shifts import load_shift  # noqa: E402
from training.config import TrainConfig  # noqa: E402
from training.features import extract_features  # noqa: E402
from training.trainer import train  # noqa: E402


def parse_args(argv=None):
    p = argparse.ArgumentParser(prog="python -m bench domain-probe", description=__doc__.split("\n")[0])
    p.add_argument("--seeds", default="0,1,2", help="comma-separated seeds of the source sample")
    p.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    return p.parse_args(argv)


def _probe(x_tr, y_tr, x_te, y_te, c, standardise):
    if standardise:
        s = StandardScaler().fit(x_tr)
        x_tr, x_te = s.transform(x_tr), s.transform(x_te)
    m = LogisticRegression(C=c, max_iter=5000).fit(x_tr, y_tr)
    return m.score(x_tr, y_tr), m.score(x_te, y_te), float(m.predict(x_te).mean())


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    load_before = [round(x, 2) for x in os.getloadavg()]
    backbone = load_backbone(default_spec("text"))
    lines = []
    with tempfile.TemporaryDirectory(prefix="taskswap-domain-probe-") as tmp:
        cache = Path(tmp) / "features"
        feats = lambda d: extract_features(backbone, d.inputs, "mean", cache, 64, False, "f").numpy()  # noqa: E731
        seeds = [int(s) for s in args.seeds.split(",")]
        _, target_train, target_test = load_shift("drugs", seeds[0], 10**9)
        x_tr, x_te = feats(target_train), feats(target_test)
        y_tr, y_te = np.array(target_train.labels), np.array(target_test.labels)
        head = train(target_train, backbone, TrainConfig(name="target", seed=seeds[0], progress=False),
                     Path(tmp) / "tgt", test=target_test, cache_dir=cache)
        lines += [f"Drug test split: {len(y_te)} reviews, majority-class (positive) rate {y_te.mean():.4f}; "
                  f"training split {len(y_tr)} reviews, {y_tr.mean():.4f} positive.", "",
                  f"`head` method, target-supervised (seed {seeds[0]}): test accuracy "
                  f"{head.metrics['test'].accuracy:.4f}.", "",
                  "| features | C | train acc | test acc | share called positive |", "|---|---|---|---|---|"]
        for standardise in (False, True):
            for c in (0.01, 0.1, 1.0, 10.0):
                a, b, pos = _probe(x_tr, y_tr, x_te, y_te, c, standardise)
                lines.append(f"| {'standardised' if standardise else 'raw'} | {c} | {a:.4f} | {b:.4f} | {pos:.2f} |")
        lines += ["", "| seed | source-only probe (raw, C=1) test acc | share of drug reviews called positive |",
                  "|---|---|---|"]
        for seed in seeds:
            source, _, _ = load_shift("drugs", seed, 10**9)
            _, b, pos = _probe(feats(source), np.array(source.labels), x_te, y_te, 1.0, False)
            lines.append(f"| {seed} | {b:.4f} | {pos:.2f} |")
    meta = {"command": "python -m bench domain-probe " + " ".join(sys.argv[2:] if argv is None else argv),
            "machine": machine(), "load_before": load_before, "load_after": [round(x, 2) for x in os.getloadavg()]}
    md = ("# Drug reviews: linear probes on frozen MiniLM features\n\n"
          f"Command: `{meta['command']}`; torch threads {meta['machine']['threads']}, {meta['machine']['cpus']} CPUs; "
          f"load average before / after: {meta['load_before']} / {meta['load_after']}.\n\n" + "\n".join(lines) + "\n")
    save_results("domain-probe", {"meta": meta, "lines": lines}, md)
    print(md)
    return 0


if __name__ == "__main__":
    sys.exit(main())
