"""Every bench runs end to end (``python -m bench <name> --smoke`` or its smallest options): a
baseline cannot break silently. Tiny random backbones, tiny sizes; only that it ran and wrote
well-formed results is checked, never a timing.

Results go to a temporary folder (``TASKSWAP_BENCH_RESULTS``), never to ``bench/results``.
"""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import httpx
import pytest
import torch

from adapters.backbones.tiny import tiny_backbone_spec
from bench.__main__ import BENCHES
from bench.__main__ import main as bench
from bench.http_bench import Served
from bench.peers import parse_args as parse_peers
from bench.rollout_bench import shadow_cost
from support.server import tiny_backbones_env

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture
def results(tmp_path, monkeypatch, one_torch_thread):
    """Where the benches write; ``sys.argv`` (the dispatcher sets it) and torch's thread count
    are restored afterwards."""
    out = tmp_path / "results"
    monkeypatch.setenv("TASKSWAP_BENCH_RESULTS", str(out))
    monkeypatch.setattr(sys, "argv", list(sys.argv))
    return out


def written(results: Path, name: str) -> dict:
    """The JSON of result ``name`` (its markdown must be there too, with a title)."""
    assert (results / f"{name}.md").read_text().startswith("#")
    return json.loads((results / f"{name}.json").read_text())


def finite(x) -> bool:
    return isinstance(x, (int, float)) and math.isfinite(x)


# ---- the command itself ----------------------------------------------------------------
def test_help_lists_every_bench():
    out = subprocess.run([sys.executable, "-m", "bench", "--help"], cwd=REPO, capture_output=True,
                         text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    for name in BENCHES:
        assert f"  {name} " in out.stdout


def test_an_unknown_bench_is_refused_with_the_list(capsys):
    assert bench(["no-such-bench"]) == 2
    assert "unknown bench 'no-such-bench'" in capsys.readouterr().err


@pytest.mark.parametrize("name", sorted(BENCHES))
def test_each_bench_parses_its_own_options(name, capsys, monkeypatch):
    monkeypatch.setattr(sys, "argv", list(sys.argv))
    with pytest.raises(SystemExit) as e:
        bench([name, "--help"])
    assert e.value.code == 0
    assert capsys.readouterr().out.startswith(f"usage: python -m bench {name} ")


# ---- in process ------------------------------------------------------------------------
def test_runtime(results):
    bench(["runtime", "--smoke", "--threads", "1",
           "--only", "text,vision,tokens,flatness,hot_swap,memory,padding"])
    res = written(results, "runtime-smoke")
    assert res["complete"]
    for part in ("text", "vision", "tokens", "padding"):
        assert all(finite(v["ratio"]) for v in res[part]["rows"].values()), part
    assert res["memory"]["heads"] > 0 and res["hot_swap"]["lora"]["n"] == 2


def test_generation(results):
    bench(["generation", "--smoke", "--threads", "1"])
    res = written(results, "generation-smoke")
    assert [r["streams"] for r in res["rows"]] == [1, 4] and res["threads"] == 1
    for r in res["rows"]:
        assert set(r["tokens_per_s"]) == {"base", "mixed8", "hf_one", "hf_mixed"}
        assert all(finite(v) and v > 0 for v in r["tokens_per_s"].values())
        assert all(finite(v) and v > 0 for v in r["ttft_median_s"].values())
        assert finite(r["mixed8_vs_base"]) and finite(r["mixed8_vs_hf_one"])


def test_dense(results):
    bench(["dense", "--smoke"])
    res = written(results, "dense_bench-smoke")
    assert set(res["results"]) == {"raw trunk", "classifier", "detector", "both, one request",
                                   "both, two requests"}
    assert all(finite(r["images_per_s"]) and r["images_per_s"] > 0 for r in res["results"].values())
    assert finite(res["mixed_vs_slower"]) and res["slower"] in ("classifier", "detector")


def test_dense_transfer(results):
    bench(["dense-transfer", "--smoke"])
    res = written(results, "dense_transfer-smoke")
    runs = {(r["task_type"], r["size"], r["method"]) for r in res["rows"]}
    assert runs == {(t, n, m) for t in ("detection", "segmentation") for n in (4, 8)
                    for m in ("head", "lora", "top_layers", "scratch")}
    assert all(r["epochs_run"] >= 1 and 0 <= r[k] <= 1 for r in res["rows"]
               for k in (("map50", "map") if r["task_type"] == "detection" else ("miou", "miou_ch2bet")))


def test_top_layers_with_lora(results):
    bench(["top-layers", "--smoke", "--lora"])
    rows = written(results, "top_layers_bench_lora-smoke")["results"]
    assert {"raw", "heads", "mix k2", "3 tasks k1", "LoRA qv x2", "LoRA all x1"} <= set(rows)
    assert all(finite(r["ratio_to_raw"]) for r in rows.values())


def test_multitask(results):
    bench(["multitask", "--smoke"])
    res = written(results, "multitask-smoke")
    assert set(res["results"]) == {"raw", "shared x3", "separate x3"}
    assert finite(res["shared_over_separate"]) and res["shared_over_separate"] > 0


def test_multitask_accuracy(results):
    bench(["multitask", "--accuracy", "--smoke"])
    res = written(results, "multitask-accuracy-smoke")
    assert set(res["summary"]) == {"sentiment", "subjectivity", "person"}
    for row in res["rows"]:
        for variant in ("alone", "joint"):
            assert all(0 <= row[variant][t][m] <= 1 for t in res["summary"] for m in ("accuracy", "macro_f1"))


def test_top_layers_compare_every_method(results):
    bench(["top-layers-compare", "--smoke"])
    res = written(results, "top_layers_accuracy-smoke")
    assert {r["method"] for r in res["rows"]} == {"head", "lora", "top_layers k=1", "top_layers k=2",
                                                  "top_layers k=all", "scratch", "plain peft"}
    assert all(0 <= r["test_accuracy"] <= 1 for r in res["rows"])
    assert (results / "top_layers_accuracy-smoke.png").stat().st_size > 0


def test_peft_plain(results, capsys):
    bench(["peft-plain", "--smoke"])
    assert "PlainResult(test_accuracy=" in capsys.readouterr().out


def test_transfer_report_pooled(results):
    assert bench(["transfer-report", "--smoke"]) == 0
    out = results / "transfer_report-smoke"
    lines = (out / "transfer_report.csv").read_text().splitlines()
    assert len(lines) == 1 + 2 * 3  # header + 2 data sets x head, lora, scratch
    assert (out / "transfer_report.md").read_text().startswith("|")
    assert (out / "transfer_report.png").stat().st_size > 0


def test_transfer_report_tokens(results):
    assert bench(["transfer-report", "--smoke", "--task", "tokens"]) == 0
    res = json.loads((results / "transfer_report-smoke" / "transfer_report_tokens.json").read_text())
    assert {r["method"] for r in res["rows"]} == {"head", "lora", "scratch"}


def test_scale_populate(results, tmp_path, capsys):
    bench(["scale-populate", "--smoke", "--store", str(tmp_path / "store"), "--tasks", "4"])
    assert "'written': 4" in capsys.readouterr().out


def test_preempt(results):
    assert bench(["preempt", "--tiny", "--rounds", "3", "--calls", "1", "--requests", "2"]) == 0
    res = written(results, "preempt")
    assert set(res["rows_per_s_median"]) == {"off", "on"} and finite(res["on_over_off"])
    assert res["preemptions"] == 0  # one namespace alone never parks a batch


def test_knobs(results):
    bench(["knobs", "--smoke"])
    res = written(results, "knobs-smoke")
    assert [lv["compete"] for lv in res["levels"]] == [0, 1]
    for lv in res["levels"]:
        assert set(lv["rows"]) == {f"threads {t}, budget {b}" for t in (1, 2) for b in (1024, "off")}
        assert all(finite(v["rows_per_s"]) and finite(v["ratio_cpu"]) for v in lv["rows"].values())


def test_profile_beside_a_compare_checkout(results):
    """This checkout as its own compare checkout: two profiled servers, phases alternating."""
    bench(["profile", "--smoke", "--compare-checkout", str(REPO)])
    res = written(results, "profile-predict-smoke")
    for s in (res["summary"], res["compare"]["summary"]):
        assert s["errors"] == 0 and finite(s["process_cpu_ms"]) and s["process_cpu_ms"] > 0
        # the batch worker's stages are found by name in the worker's stacks
        assert any(k.startswith("batch worker thread: trunk forward") for k in s["stages_ms"]), s["stages_ms"]
        assert any(k.startswith("event loop thread:") for k in s["stages_ms"]), s["stages_ms"]
    assert finite(res["compare"]["by_stage"]["process, all threads"]["ratio"])


def test_peers_in_process_parts(results):
    bench(["peers", "--smoke", "--only", "models,st"])
    res = written(results, "peers-smoke")
    assert "3 separate models" in res["models"]["timing"]["rows_per_s"]
    assert all(finite(r["ratio"]) for r in res["st"]["rows"].values())


def test_rollout_shadow_cost(tmp_path, one_torch_thread):
    """The in-process part of ``python -m bench rollout`` (its HTTP part: the server test below)."""
    res = shadow_cost(1, tiny_backbone_spec("text", tmp_path / "text"))
    assert finite(res["head_shadow_ratio"]) and finite(res["lora_shadow_ratio"])


def test_gpu_without_cuda(results, capsys):
    """Without CUDA only the refusal and the plan run (tests/project/test_bench_gpu.py has the rest)."""
    if torch.cuda.is_available():
        pytest.skip("a CUDA device is present: `python -m bench gpu` would measure for minutes")
    with pytest.raises(SystemExit) as e:
        bench(["gpu"])
    assert e.value.code == 2 and "needs a CUDA device" in capsys.readouterr().err
    assert bench(["gpu", "--dry-run"]) == 0
    assert "-m bench runtime --device cuda" in capsys.readouterr().out


# ---- with real servers -----------------------------------------------------------------
@pytest.mark.server
def test_raw_service_answers_with_features(tmp_path, tiny_dir, text_backbone):
    """The raw-backbone baseline answers 200 with two pooled features per text (it once
    answered 500: its queued items have no ``timings``)."""
    spec = tiny_backbones_env(tiny_dir)[0]
    raw = Served("bench.raw_service:RawBackbone", {"RAW_BACKBONE": json.dumps(spec),
                                                   "TASKSWAP_TORCH_THREADS": "1"}, tmp_path, "raw")
    try:
        raw.wait_ready(timeout_s=180)
        r = httpx.post(raw.url + "/predict", json={"texts": ["a good movie", "bad plot"]}, timeout=60)
        assert r.status_code == 200, r.text
        rows = r.json()["predictions"]
        want = text_backbone.embed(["a good movie", "bad plot"])[:, :2]  # [2, 2]
        got = torch.tensor([[p["scores"]["a"], p["scores"]["b"]] for p in rows])
        torch.testing.assert_close(got, want, atol=1e-4, rtol=1e-4)
    finally:
        raw.stop()


@pytest.mark.server
def test_http(results):
    bench(["http", "--smoke", "--threads", "1"])
    res = written(results, "http-smoke")
    rows = res["throughput"]
    assert rows["raw backbone service"]["errors"] == 0  # the raw service answers
    assert all(r["errors"] == 0 and finite(r["ratio"]) for r in rows.values())
    assert res["first_prediction"]["lora"]["n"] == 2 and not res["server_errors"]


@pytest.mark.server
def test_http_embeddings(results):
    bench(["http", "--smoke", "--embeddings", "--threads", "1"])
    rows = written(results, "http-embeddings-smoke")["throughput"]
    assert "Taskswap POST /v1/embeddings (base64)" in rows and all(r["errors"] == 0 for r in rows.values())


@pytest.mark.server
def test_scale(results):
    bench(["scale", "--smoke"])
    res = written(results, "scale-smoke")
    assert res["cold"]["tasks"] == 20 and res["http"]["registration"]["n"] == 3
    assert set(res["s3"]) == {"10"}


@pytest.mark.server
def test_cold_start(results):
    bench(["cold-start", "--smoke"])
    res = written(results, "cold-start-smoke")
    marks = res["runs"]["this checkout"][0]["marks_s"]
    assert list(marks) == ["worker", "engine", "ready log", "readyz"] and marks["readyz"] >= marks["worker"] > 0
    assert "stages:" in res["runs"]["this checkout"][0]["log_line"] and res["tasks"] == 5


@pytest.mark.server
def test_rollout(results):
    bench(["rollout", "--smoke"])
    res = written(results, "rollout-smoke")
    assert res["http"]["windows"] and res["http"]["errors"] == 0


@pytest.mark.server
def test_peers_infinity(results):
    """infinity-emb lives in its own virtual environment (see bench/peers.py), not in CI's."""
    command = Path(parse_peers([]).infinity)
    if not command.exists():
        pytest.skip(f"infinity-emb is not installed ({command}; the venv recipe is in bench/peers.py)")
    bench(["peers", "--smoke", "--only", "infinity"])
    assert "skipped" not in written(results, "peers-smoke")["infinity"]


@pytest.mark.server
def test_convergence(results):
    bench(["convergence", "--reps", "1", "--stores", "local", "--out", "convergence-smoke"])
    res = written(results, "convergence-smoke")
    assert not res["server_errors"] and set(res["summary"]) == {"local"}


@pytest.mark.server
@pytest.mark.parametrize("argv", [
    ["crash-loop", "--cycles", "1"],
    ["fuzz", "--examples", "1", "--timeout", "300"],
    ["hostile-load", "--seconds", "3", "--tiny"],
    ["fairness", "--seconds", "4", "--alone", "2", "--tiny", "--lora-rank", "16"],
    ["tenancy", "--seconds", "2", "--rounds", "1", "--tiny"],
    ["load-faults", "--seconds", "3", "--tiny", "--period", "0.5"],
    ["memory-churn", "--cycles", "3", "--warmup", "1", "--every", "1", "--tiny"],
], ids=lambda a: a[0])
def test_reliability(argv, results, capsys):
    assert bench([*argv, "--no-save"]) == 0, capsys.readouterr().out[-3000:]
    assert "pass" in capsys.readouterr().out
    assert not results.exists()  # --no-save writes nothing


def test_generation_transfer(results):
    assert bench(["generation-transfer", "--smoke", "--threads", "1"]) == 0
    res = json.loads((results / "generation_transfer_fr-smoke.json").read_text())
    assert [r["variant"] for r in res["rows"]] == ["zero-shot", "3-shot", "lora"]
    assert all(0 <= r["chrf"] <= 100 and r["n"] == 4 for r in res["rows"])
    assert res["machine"]["load_avg"] and res["test_catalogs"].startswith("coreutils")
