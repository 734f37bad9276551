"""``segmentation`` training: pixel cross-entropy, per-class IoU and mIoU of the served masks."""

from __future__ import annotations

from training.dense.fit import mask_target_set, segmentation_loss
from training.dense.metrics import segmentation_scores
from training.tasks.dense import DenseTraining


class SegmentationTraining(DenseTraining):
    name = "segmentation"
    outputs_word = "labels"
    loss_words = "pixel cross-entropy at the input size"
    loss_name = "cross-entropy"
    headline_name = "mIoU"
    headline_metric = "miou"
    default_strides = (8, 16, 32)
    default_input_size = 224

    def n_out(self, n_labels: int) -> int:
        return n_labels

    def dense_targets(self, data, cfg, stride: int):
        return mask_target_set(data, cfg)

    def dense_loss(self, out, targets, idx, n_labels: int):
        return segmentation_loss(out, targets, idx)

    def dense_scores(self, head, maps, data, cfg, spec) -> dict:
        return segmentation_scores(head, maps, data)
