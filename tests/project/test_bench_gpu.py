"""``python -m bench gpu``: the parts that run without a GPU (arguments, refusal, result files)."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

from bench import gpu

REPO = Path(__file__).resolve().parents[2]


def test_plan_runs_each_bench_per_dtype_with_half_only_for_fp16():
    args = gpu.parse_args(["--device", "cuda:1"])
    plan = gpu.commands(args)
    assert [(d, b) for d, b, _ in plan] == [("fp32", "runtime"), ("fp32", "http"),
                                             ("fp16", "runtime"), ("fp16", "http")]
    for dtype, bench, argv in plan:
        assert argv[1:4] == ["-m", "bench", bench]
        assert argv[argv.index("--device") + 1] == "cuda:1"
        assert ("--half" in argv) == (dtype == "fp16")
        assert argv[argv.index("--out") + 1] == f"gpu-{dtype}-{bench}"
        assert "--quick" in argv
    assert all("--quick" not in a for _, _, a in gpu.commands(gpu.parse_args(["--full"])))


@pytest.mark.parametrize("argv, needle", [
    (["--dtypes", "fp8"], "--dtypes 'fp8'"),
    (["--dtypes", ""], "--dtypes ''"),
    (["--benches", "runtime,disk"], "--benches"),
    (["--device", "cpu"], "CUDA device"),
    (["--device", "cuda:x"], "CUDA device"),
])
def test_bad_arguments_name_the_flag(argv, needle, capsys):
    with pytest.raises(SystemExit) as e:
        gpu.parse_args(argv)
    assert e.value.code == 2
    assert needle in capsys.readouterr().err


def test_refuses_without_cuda(monkeypatch, tmp_path, capsys):
    import torch
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(SystemExit) as e:
        gpu.main(["--results", str(tmp_path)])
    assert e.value.code == 2
    assert "needs a CUDA device" in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == []  # nothing written under a GPU label


def test_dry_run_prints_commands_without_cuda():
    out = subprocess.run([sys.executable, "-m", "bench", "gpu", "--dry-run", "--dtypes", "fp16",
                          "--benches", "http"], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip().endswith("-m bench http --device cuda --half --out gpu-fp16-http --quick")


def test_summary_reads_child_results_and_reports_failures(tmp_path):
    (tmp_path / "gpu-fp32-runtime.json").write_text(json.dumps({"text": {"rows": {
        "raw backbone": {"rows_per_s": 9000.0, "ratio": 1.0, "ratio_cpu": 1.0},
        "heads x64": {"rows_per_s": 8100.0, "ratio": 0.9, "ratio_cpu": 0.9}}}}))
    (tmp_path / "gpu-fp16-runtime.json").write_text("{}")  # stale file from an earlier run: ignored
    runs = [{"dtype": "fp32", "bench": "runtime", "rc": 0, "seconds": 61.0, "log_tail": ""},
            {"dtype": "fp16", "bench": "runtime", "rc": 1, "seconds": 3.0,
             "log_tail": "RuntimeError: expected scalar type Half"}]
    md = gpu.write_summary(tmp_path, "NVIDIA Test GPU", runs).read_text()
    data = json.loads((tmp_path / "gpu.json").read_text())
    assert data["device"] == "NVIDIA Test GPU"
    assert data["runs"][0]["headline"]["text: heads x64"] == {"rows_per_s": 8100.0, "ratio": 0.9}
    assert data["runs"][1]["headline"] == {}
    assert "| text: heads x64 | 8100.0 | 0.900 |" in md
    assert "fp16 runtime bench: **failed** (exit 1)" in md
    assert "expected scalar type Half" in md
