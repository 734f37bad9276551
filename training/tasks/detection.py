"""``detection`` training: CenterNet targets and loss, COCO mAP of the served decoding."""

from __future__ import annotations

import torch

from adapters.errors import InvalidInput
from training.dense import demos
from training.dense.data import load_coco
from training.dense.fit import detection_loss, detection_target_set
from training.dense.metrics import coco_map, detections, pr_curve50
from training.dense.plots import draw_boxes, plot_pr
from training.tasks.dense import DenseTraining

HEAT_PRIOR = -2.19  # CenterNet's initial heat-map bias: sigmoid = 0.1
DEMO_TEST_IMAGES = 100  # the held-out canvases of shapes-detect the trainer scores


class DetectionTraining(DenseTraining):
    name = "detection"
    outputs_word = "labels"
    loss_words = "CenterNet focal loss on the heat maps + L1 on centre offsets and log sizes"
    loss_name = "focal + L1"
    headline_name = "mAP@[.5:.95]"
    headline_metric = "map"
    default_strides = (8, 16)
    default_input_size = 160
    demo = "shapes-detect"

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
        return coco_map(data, detections(head, maps, data, cfg.input_size, spec))

    def dense_plots(self, head, maps, data, cfg, spec, folder, split):
        dets = detections(head, maps, data, cfg.input_size, spec)
        recall, precision = pr_curve50(data, dets)
        plot_pr(recall, precision, folder / "pr_curve.png", f"precision-recall at IoU 0.5 ({split})")
        truths = [(b.tolist(), [data.label_names[k] for k in c.tolist()]) for b, c in zip(data.boxes, data.classes)]
        draw_boxes(data.images, dets, truths, folder / "predictions.png", f"{split}", spec.score_threshold)
        return [("pr_curve.png", f"precision-recall at IoU 0.5, {split}"),
                ("predictions.png", f"answered boxes on the first {split} images")]

    def serving_options(self, dense_spec) -> dict:
        return {"threshold": dense_spec.min_score_threshold, "max_detections": dense_spec.max_detections}

    def served_scores(self, data, answers: list) -> dict:
        return coco_map(data, [[dict(b) for b in a.boxes or []] for a in answers])

    def load_files(self, path, labels, masks=None, image_root=None):
        data = load_coco(path, image_root)
        if labels is not None and data.label_names != list(labels):
            raise InvalidInput(f"{path}: its categories {data.label_names} (in id order) are not the "
                               f"task's labels {list(labels)}")
        return data

    def demo_test(self, limit, seed=0):
        return {"test": demos.shapes_detect("test", limit or DEMO_TEST_IMAGES, seed)}
