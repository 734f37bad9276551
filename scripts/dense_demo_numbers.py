"""The dense demos' held-out numbers on the embedded MobileNetV2, one thread, with the same
settings as ``taskswap train --demo shapes-detect`` / ``--demo brain-regions`` (docs/dense-vision.md).

    .venv/bin/python scripts/dense_demo_numbers.py det    # shapes-detect: COCO mAP
    .venv/bin/python scripts/dense_demo_numbers.py seg    # brain-regions: mIoU on ch2 and ch2bet
"""
import time, sys, torch
from adapters.backbones.base import load_backbone
from adapters.backbones.defaults import default_spec
from training.dense.demos import shapes_detect, brain_regions
from training.dense.fit import DenseFitConfig, fit_dense
from training.dense_run import score
from training.tasks import training_task
torch.set_num_threads(1)
bb = load_backbone(default_spec("vision"))
print("maps", bb.map_channels, flush=True)
which = sys.argv[1]
t = time.perf_counter()
if which == "det":
    tr, te = shapes_detect("train", 300), shapes_detect("test", 100)
    cfg = DenseFitConfig("detection", [8, 16], input_size=160, epochs=40)
    fit = fit_dense(bb, tr, cfg, training_task(cfg.task_type))
    print("fit", fit.seconds, fit.history[::8], flush=True)
    print(score(fit, te, cfg), time.perf_counter() - t)
else:
    tr, te = brain_regions("train"), brain_regions("test")
    cfg = DenseFitConfig("segmentation", [8, 16, 32], input_size=224, epochs=40)
    fit = fit_dense(bb, tr, cfg, training_task(cfg.task_type))
    print("fit", fit.seconds, fit.history[::8], flush=True)
    for vol in ("ch2", "ch2bet"):
        print(vol, score(fit, brain_regions("test", vol), cfg), time.perf_counter() - t)
