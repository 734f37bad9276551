"""``detection`` training: CenterNet targets and loss, COCO mAP of the served decoding."""

from __future__ import annotations

import torch

from training.dense.fit import detection_loss, detection_target_set
from training.dense.metrics import coco_map, detections
from training.tasks.dense import DenseTraining

HEAT_PRIOR = -2.19  # CenterNet's initial heat-map bias: sigmoid = 0.1


class DetectionTraining(DenseTraining):
    name = "detection"
    outputs_word = "labels"
    loss_words = "CenterNet focal loss on the heat maps + L1 on centre offsets and log sizes"
    loss_name = "focal + L1"
    headline_name = "mAP@[.5:.95]"
    headline_metric = "map"
    default_strides = (8, 16)
    default_input_size = 160

    def n_out(self, n_labels: int) -> int:
        return n_labels + 4

    def init_head(self, head, n_labels: int) -> None:
        with torch.no_grad():
            head.out.bias[:n_labels] = HEAT_PRIOR

    def dense_targets(self, data, cfg, stride: int):
        return detection_target_set(data, cfg, stride)

    def dense_loss(self, out, targets, idx, n_labels: int):
        return detection_loss(out, targets, idx, n_labels)

    def dense_scores(self, head, maps, data, cfg, spec) -> dict:
        return coco_map(data, detections(head, maps, data, cfg.input_size, spec.max_detections, spec.nms_iou))
