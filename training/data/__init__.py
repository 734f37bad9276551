"""Labelled data sets for training: one in-memory shape, file loaders and demo data sets.

Example::

    >>> from training.data import load_demo, stratified_split
    >>> train = load_demo("digits", "train", limit=100)
    >>> fit, val = stratified_split(train, 0.8, seed=0)
"""

from training.data.dataset import (
    LabelledData,
    open_image,
    open_input,
    stratified_sample,
    stratified_sample_indices,
    stratified_split,
    take_per_class,
)
from training.data.demo import DEMO_DATASETS, DemoDataUnavailable, load_demo
from training.data.files import IMAGE_EXTENSIONS, load_image_csv, load_image_folder, load_text_table

__all__ = [
    "DEMO_DATASETS",
    "IMAGE_EXTENSIONS",
    "DemoDataUnavailable",
    "LabelledData",
    "load_demo",
    "load_image_csv",
    "load_image_folder",
    "load_text_table",
    "open_image",
    "open_input",
    "stratified_sample",
    "stratified_sample_indices",
    "stratified_split",
    "take_per_class",
]
