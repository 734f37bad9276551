"""``segmentation`` training: pixel cross-entropy, per-class IoU and mIoU of the served masks."""

from __future__ import annotations

from pathlib import Path

from adapters.errors import InvalidInput
from adapters.tasks.masks import png_decode
from training.dense import demos
from training.dense.coco_masks import load_coco_masks
from training.dense.data import load_mask_folders
from training.dense.fit import mask_target_set, segmentation_loss
from training.dense.metrics import label_maps, segmentation_scores
from training.dense.plots import draw_masks, plot_iou_bars
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
    demo = "brain-regions"

    def n_out(self, n_labels: int) -> int:
        return n_labels

    def dense_targets(self, data, cfg, stride: int):
        return mask_target_set(data, cfg)

    def dense_loss(self, out, targets, idx, n_labels: int):
        return segmentation_loss(out, targets, idx)

    def dense_scores(self, head, maps, data, cfg, spec) -> dict:
        return segmentation_scores(data, label_maps(head, maps, data))

    def dense_plots(self, head, maps, data, cfg, spec, folder, split):
        masks = label_maps(head, maps, data)
        plot_iou_bars(segmentation_scores(data, masks)["iou"], folder / "iou_per_class.png", f"IoU per class ({split})")
        draw_masks(data.images, masks, data.masks, data.label_names, folder / "predictions.png",
                   f"answered and true masks ({split})")
        return [("iou_per_class.png", f"IoU per class, {split}"),
                ("predictions.png", f"answered masks on the first {split} images")]

    def served_scores(self, data, answers: list) -> dict:
        return segmentation_scores(data, [png_decode(a.mask_png) for a in answers])

    def load_files(self, path, labels, masks=None, image_root=None):
        if Path(path).suffix.lower() == ".json":  # a COCO file: polygons / RLE in 'segmentation'
            data = load_coco_masks(path, image_root)
            if labels is not None and data.label_names != list(labels):
                raise InvalidInput(f"{path}: its labels {data.label_names} (background, then the categories "
                                   f"in id order) are not the task's labels {list(labels)}")
            return data
        if masks is None:
            raise InvalidInput("a segmentation data set is a COCO file with 'segmentation' annotations, or an "
                               "image folder (--data) and a folder of PNG masks (--masks, <image stem>.png)")
        return load_mask_folders(path, masks, list(labels))

    def demo_test(self, limit, seed=0):
        tests = {"test": demos.brain_regions("test"), "test_ch2bet": demos.brain_regions("test", "ch2bet")}
        return {k: d.subset(list(range(min(limit, len(d))))) if limit else d for k, d in tests.items()}
