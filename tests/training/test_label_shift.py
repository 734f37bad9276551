"""Label-shift adaptation (training.calibration, training.domain.label_shift): EM recovers a
known target prior from calibrated posteriors, the prior ratio and calibration fold exactly
into the head, the head method records its calibration, and ``label_shift`` (alone and after
coral / pseudo_label) writes versions the real registry and runtime serve as the run scored."""

from __future__ import annotations

import json
import shutil
import typing

import pytest
import torch

from adapters.errors import InvalidInput
from adapters.format import HeadSpec, content_hash
from adapters.heads import Head
from adapters.registry import Registry
from adapters.runtime import Runtime
from adapters.store import open_store
from service.rollout_schemas import AdaptRequest
from support.training_helpers import sentiment_rows
from training.adapt import adapt, load_head
from training.calibration import CALIBRATION_FILE, Calibration, fit_calibration
from training.config import TrainConfig
from training.data import LabelledData
from training.domain import ADAPTATIONS, AdaptConfig
from training.domain.label_shift import em_prior, fold_prior_shift
from training.feature_stats import first_layer_inputs
from training.features import extract_features, inputs_digest
from training.trainer import train

pytestmark = pytest.mark.usefixtures("one_torch_thread")
LABELS = ["neg", "pos"]


def _gaussians(n, prior, g):
    """Three classes, unit-variance Gaussians at 1.5 e_y: the exact log-posterior at a uniform
    prior is 1.5 x (up to a per-row constant)."""
    y = torch.multinomial(torch.tensor(prior), n, replacement=True, generator=g)
    return torch.randn(n, 3, generator=g) + 1.5 * torch.eye(3)[y], y


def test_em_recovers_a_known_target_prior_from_calibrated_posteriors():
    g = torch.Generator().manual_seed(0)
    xv, yv = _gaussians(600, [1 / 3] * 3, g)  # the source validation split
    xt, yt = _gaussians(2000, [0.7, 0.2, 0.1], g)  # unlabelled target rows
    overconfident = lambda x: 4.0 * 1.5 * x  # noqa: E731  a head four times too sure of itself
    cal = fit_calibration(overconfident(xv), yv)
    assert 3.0 < cal.temperature < 5.0 and cal.nll_after < cal.nll_before
    assert sum(cal.prior) == pytest.approx(1.0) and max(abs(p - 1 / 3) for p in cal.prior) < 0.05
    truth = yt.bincount(minlength=3).double() / len(yt)
    pt, iterations = em_prior(cal.log_probs(overconfident(xt)), torch.tensor(cal.prior))
    assert 1 < iterations < 100 and float((pt - truth).abs().max()) < 0.05
    # without calibration the same EM lands further from the truth: calibration matters
    raw, _ = em_prior(overconfident(xt).log_softmax(-1), torch.tensor([1 / 3] * 3))
    assert float((raw - truth).abs().max()) > 2 * float((pt - truth).abs().max())
    # on rows drawn at the source prior, EM stays at the source prior
    xs, _ = _gaussians(2000, [1 / 3] * 3, g)
    same, _ = em_prior(cal.log_probs(overconfident(xs)), torch.tensor(cal.prior))
    assert float((same - torch.tensor(cal.prior, dtype=torch.float64)).abs().max()) < 0.05


@pytest.mark.parametrize("hidden,normalize", [((), False), ((6,), True)])
def test_folded_head_equals_the_calibrated_reweighted_posterior(hidden, normalize):
    torch.manual_seed(0)
    head = Head(HeadSpec(pooling="mean", input_dim=5, hidden=list(hidden), normalize=normalize), 3).eval()
    x = torch.randn(40, 5)
    cal = Calibration(2.5, [0.3, -0.1, -0.2], [0.5, 0.3, 0.2], 100, 1.0, 0.9)
    pt = torch.tensor([0.2, 0.2, 0.6], dtype=torch.float64)
    shift = torch.tensor(cal.bias, dtype=torch.float64) + (pt / torch.tensor(cal.prior, dtype=torch.float64)).log()
    folded = fold_prior_shift(head, cal.temperature, shift)
    with torch.no_grad():
        calibrated = cal.log_probs(head(x)).exp()  # [rows, classes]
        want = calibrated * (pt / torch.tensor(cal.prior, dtype=torch.float64))
        want = want / want.sum(-1, keepdim=True)
        assert torch.allclose(folded(x).softmax(-1).double(), want, atol=1e-5)
        assert not torch.allclose(folded(x).softmax(-1), head(x).softmax(-1), atol=1e-3)


def test_calibration_file_round_trip_and_damage(tmp_path):
    cal = Calibration(1.7, [0.1, -0.1], [0.4, 0.6], 30, 0.7, 0.6)
    cal.save(tmp_path)
    assert Calibration.load(tmp_path) == cal and Calibration.load(tmp_path / "missing") is None
    (tmp_path / CALIBRATION_FILE).write_text('{"temperature": -1, "bias": [0], "prior": [1], "rows": 1, '
                                             '"nll_before": 0, "nll_after": 0}')
    with pytest.raises(Exception, match="temperature must be > 0"):
        Calibration.load(tmp_path)


def test_every_table_method_is_offered_over_http():
    offered = typing.get_args(AdaptRequest.model_fields["method"].annotation)
    assert set(offered) == set(ADAPTATIONS)


def _data(rows, source="toy"):
    return LabelledData("text", [t for t, _ in rows], [LABELS.index(y) for _, y in rows], LABELS, source)


def _shifted(rows):
    return [("patient dosage tablet side effects " + t, y) for t, y in rows]


def _skewed(n, seed):
    """Target rows four fifths negative (the source is balanced)."""
    rows = sentiment_rows(2 * n, seed=seed)
    neg = [r for r in rows if r[1] == "neg"]
    pos = [r for r in rows if r[1] == "pos"]
    return _shifted(neg[:4 * n // 5] + pos[:n - 4 * n // 5])


@pytest.fixture(scope="module")
def source_adapter(tmp_path_factory, text_backbone):
    out = tmp_path_factory.mktemp("src") / "sentiment"
    train(_data(sentiment_rows(80, seed=1)), text_backbone,
          TrainConfig(name="sentiment", epochs=60, lr=0.01, progress=False), out, cache_dir=None)
    return out


def test_head_training_records_its_calibration_on_the_validation_split(source_adapter):
    cal = Calibration.load(source_adapter)
    meta = json.loads((source_adapter / "metrics.json").read_text())
    assert cal is not None and cal.rows == meta["training"]["examples"]["validation"]
    assert len(cal.bias) == len(cal.prior) == 2 and sum(cal.prior) == pytest.approx(1.0)
    assert cal.nll_after <= cal.nll_before + 1e-9  # the fitted NLL is never worse than T = 1, b = 0


def _served(reg, path, texts):
    loaded = reg.register(path)
    rt = Runtime(reg)
    res = rt.run([rt.prepare([loaded.name], texts, "text")])[0][0]
    return loaded, torch.tensor([[row.scores[lab] for lab in LABELS] for row in res.rows])


def test_label_shift_writes_a_head_version_with_the_estimated_prior(source_adapter, text_backbone, tmp_path):
    rows = _skewed(60, seed=7)
    target = [t for t, _ in rows]
    r = adapt(source_adapter, target, tmp_path / "adapted", AdaptConfig(method="label_shift", progress=False),
              text_backbone, target_labelled=_data(rows[:20], "target"), target_description="toy target")
    m, rec = r.manifest, r.manifest.training["adaptation"]
    assert m.kind == "head" and rec["method"] == "label_shift" and not rec["trunk_changed"]
    assert rec["source_version"] == content_hash(source_adapter)
    assert rec["target_data"] == {"sha256": inputs_digest(target), "inputs": 60, "description": "toy target"}
    ls = rec["label_shift"]
    assert set(ls["target_prior"]) == set(LABELS) and sum(ls["target_prior"].values()) == pytest.approx(1.0)
    assert ls["target_prior"]["neg"] > ls["source_prior"]["neg"]  # four fifths of the targets are negative
    assert ls["calibration"]["temperature"] == pytest.approx(Calibration.load(source_adapter).temperature, rel=1e-5)
    card = (r.path / "README.md").read_text()
    assert "Label-shift correction" in card and "estimated on the target data" in card
    assert f"neg {ls['target_prior']['neg']:.3f}" in card
    # served through the real registry and runtime == the source head, calibrated and reweighted
    reg = Registry(open_store(str(tmp_path / "store")), {"text": text_backbone})
    loaded, served = _served(reg, r.path, target)
    assert loaded.version != content_hash(source_adapter)
    feats = first_layer_inputs(extract_features(text_backbone, target, m.head.pooling, None, progress=False),
                               m.head.normalize)
    cal = Calibration.load(source_adapter)
    ps = torch.tensor(cal.prior, dtype=torch.float64)
    pt = torch.tensor([ls["target_prior"][k] for k in LABELS], dtype=torch.float64)
    with torch.no_grad():
        want = cal.log_probs(load_head(source_adapter, m)(feats)).exp() * (pt / ps)
    assert torch.allclose(served.double(), want / want.sum(-1, keepdim=True), atol=1e-4)


@pytest.mark.parametrize("method,kind", [("coral+label_shift", "head"), ("pseudo_label+label_shift", "lora")])
def test_composed_methods_apply_the_prior_after_the_first(source_adapter, text_backbone, tmp_path, method, kind):
    rows = _skewed(40, seed=11)
    target = [t for t, _ in rows]
    labelled = _data(rows[:20], "target")
    cfg = AdaptConfig(method=method, epochs=1, lr=5e-3, batch_size=8, progress=False)
    r = adapt(source_adapter, target, tmp_path / "adapted", cfg, text_backbone, target_labelled=labelled)
    rec = r.manifest.training["adaptation"]
    assert r.manifest.kind == kind and rec["method"] == method and "label_shift" in rec
    assert "Then: Label-shift correction" in (r.path / "README.md").read_text()
    reg = Registry(open_store(str(tmp_path / "store")), {"text": text_backbone})
    _, served = _served(reg, r.path, labelled.inputs)
    acc = float((served.argmax(-1) == torch.tensor(labelled.labels)).double().mean())
    assert acc == pytest.approx(r.metrics["adapted"].accuracy)  # the run scored what the server serves


def test_label_shift_needs_the_recorded_calibration(source_adapter, text_backbone, tmp_path):
    old = tmp_path / "old"
    shutil.copytree(source_adapter, old)
    (old / CALIBRATION_FILE).unlink()
    target = [t for t, _ in _skewed(30, seed=3)]
    with pytest.raises(InvalidInput, match="records no calibration"):
        adapt(old, target, tmp_path / "x", AdaptConfig(method="label_shift", progress=False), text_backbone)
    with pytest.raises(InvalidInput, match="em_iterations"):
        AdaptConfig(method="label_shift", em_iterations=0)
    r = adapt(old, target, tmp_path / "y", AdaptConfig(method="coral", progress=False), text_backbone)
    assert r.manifest.training["adaptation"]["method"] == "coral"  # the others do not need it


def test_cli_label_shift_adapts_a_registered_task(source_adapter, text_backbone, tmp_path, capsys):
    from training import cli
    reg = Registry(open_store(str(tmp_path / "store")), {"text": text_backbone})
    version = reg.register(source_adapter).version
    target = tmp_path / "target.txt"
    target.write_text("\n".join(t for t, _ in _skewed(30, seed=5)))
    code = cli.main(["adapt", "--task", "sentiment", "--store", str(tmp_path / "store"), "--method", "label_shift",
                     "--em-iterations", "50", "--target-data", str(target), "--out", str(tmp_path / "out"),
                     "--quiet", "--no-cache"])
    assert code == 0 and "label_shift" in capsys.readouterr().out
    rec = json.loads((tmp_path / "out" / "adapter.json").read_text())["training"]["adaptation"]
    assert rec["source_version"] == version and rec["settings"]["em_iterations"] == 50
    assert rec["label_shift"]["em_iterations_run"] <= 50
    assert reg.register(tmp_path / "out").version != version
    code = cli.main(["adapt", "--task", "sentiment", "--store", str(tmp_path / "store"), "--method", "label_shift",
                     "--em-iterations", "0", "--target-data", str(target), "--out", str(tmp_path / "o2"), "--quiet"])
    assert code == 2 and "em_iterations must be between 1 and 10000" in capsys.readouterr().err
