"""The one settings object of a training run; every field documented where it is declared.

Hyper-parameters left as ``None`` take the defaults of the chosen method for the chosen task
type (:data:`training.method_settings.METHOD_SETTINGS`; the settings import no training
code, the method classes in :mod:`training.methods` sit above this module): a head on cached features can
afford hundreds of cheap epochs, LoRA and from-scratch training pass the whole backbone per
step and get a few.

Example::

    >>> c = TrainConfig(name="sentiment", method="lora")
    >>> c.epochs, c.lr, c.lora_r
    (6, 0.002, 8)
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from adapters.format.manifest import NAME_PATTERN
from training.method_settings import COMMON_HYPERPARAMETERS, METHOD_SETTINGS, MethodSettings, method_settings
from training.tasks import TRAINING_TASKS


class TrainConfig(BaseModel):
    """What to train and how. Data and backbone are passed beside it (see ``training.trainer``)."""

    model_config = ConfigDict(extra="forbid", use_attribute_docstrings=True)

    name: str = Field(pattern=NAME_PATTERN)
    """Task name the adapter registers under: lowercase letters, digits, '_', '-', '.'."""
    method: str = "head"
    """A key of ``training.method_settings.METHOD_SETTINGS`` (and of ``training.methods.METHODS``,
    whose ``training_method(name)`` fits it): 'head': frozen features + head; 'lora': PEFT LoRA
    + head; 'top_layers': the last ``layers`` blocks fine-tuned + head; 'scratch': random init
    baseline."""
    task_type: str = "single_label"
    """What the head predicts: a key of ``training.tasks.TRAINING_TASKS`` ('single_label', 'regression')."""

    hidden: list[int] = Field(default_factory=list)
    """Hidden layer widths of the head; [] is a linear head (logistic regression)."""
    activation: Literal["relu", "gelu", "tanh"] = "relu"
    pooling: Literal["mean", "cls", "pooler"] | None = None
    """Pooling of backbone features; None: the backbone's default (text 'mean', MobileNet 'pooler')."""
    normalize: bool = False
    """L2-normalise pooled features before the head."""

    epochs: int | None = Field(None, ge=1)
    lr: float | None = Field(None, gt=0)
    batch_size: int | None = Field(None, ge=1)
    patience: int | None = Field(None, ge=1)
    """Early stopping: epochs without a lower validation loss before training stops."""
    weight_decay: float | None = Field(None, ge=0)
    select: Literal["loss", "headline", "last"] | None = None
    """lora/top_layers/scratch: which state is kept: the epoch with the lowest validation loss,
    the highest validation headline (accuracy, R²; ties: the lower loss), or the last one (the
    whole schedule runs; validation is still scored and reported). None: the method's default."""

    val_fraction: float = Field(0.2, gt=0, lt=1)
    """Share of each class carved off for validation when no validation data is given."""
    seed: int = 0
    """Seeds the split, the initialisation and the shuffling: same seed, same adapter."""

    lora_r: int = Field(8, ge=1)
    lora_alpha: float = Field(16.0, gt=0)
    lora_dropout: float = Field(0.0, ge=0, lt=1)
    lora_targets: list[str] | None = None
    """Module names (PEFT ``target_modules``); None: every ``Linear`` inside the encoder blocks
    (``training.lora.block_linear_targets``), else the 1x1 convolutions of a conv net."""

    layers: int | None = Field(None, ge=1)
    """top_layers: how many of the last blocks to fine-tune (None: 2, capped at the block count)."""
    layer_decay: float = Field(0.8, gt=0, le=1)
    """top_layers: each block below the top trains at this times the lr of the block above."""
    head_lr: float | None = Field(None, gt=0)
    """lora/top_layers: the head's learning rate (None: the method's default)."""
    warmup_fraction: float = Field(0.1, ge=0, lt=1)
    """lora/top_layers: linear warm-up over this share of the steps, then linear decay to 0."""
    head_dropout: float | None = Field(None, ge=0, lt=1)
    """lora/top_layers: dropout on the fresh head's input while training (not served; None: the
    default, 0.1 for single-label lora, else 0)."""
    head_init: Literal["standardised", "normal"] | None = None
    """lora/top_layers: the fresh head reads raw features with its weights drawn at std 0.02
    and zero bias ('normal', BERT's classifier init; the default of single-label lora), or
    'standardised' features (centred, divided by the frozen trunk's mean feature std, folded
    into the saved head; the default otherwise)."""
    schedule: Literal["linear", "constant"] = "linear"
    """lora/top_layers: 'linear': warm-up then linear decay to 0 (fitted to ``max_train_minutes``);
    'constant': ``lr`` throughout (no warm-up)."""
    clip_norm: float | None = Field(1.0, gt=0)
    """lora/top_layers/scratch: clip the gradients' global norm to this; None: no clipping."""
    warm_start: bool = False
    """lora/top_layers: start from a head fitted on frozen features (cheap: cached features), so
    epoch 0 is the frozen head. Off by default: a fresh head (trained on standardised features)
    is used instead; on Rotten Tomatoes at 200 labels per class the warm-started runs hardly
    left their start (docs/top-layers.md)."""

    init_from: str | None = None
    """head: a head adapter folder (``taskswap train --init-from TASK[@VERSION]`` resolves a
    stored task to one) to warm-start from: same task type, backbone and head shape; labels
    it shares keep their rows, new labels start as a fresh head's (:mod:`training.init_from`)."""
    feature_batch_size: int = Field(64, ge=1)
    """Rows per backbone forward when computing features (and when evaluating)."""
    max_train_minutes: float | None = Field(None, gt=0)
    """LoRA/top_layers/scratch: stop at the first step past this wall-clock budget (mid-epoch if need be),
    score that state on validation, and keep the best state seen."""
    progress: bool = True
    """Show progress on stderr (:mod:`training.progress`): a step bar per epoch on a TTY, one line
    per epoch (and what was kept, by which rule) anywhere else."""

    @model_validator(mode="after")
    def _method_defaults(self):
        if self.method not in METHOD_SETTINGS:
            raise ValueError(f"method {self.method!r} is unknown; use one of {list(METHOD_SETTINGS)}")
        if self.task_type not in TRAINING_TASKS:
            raise ValueError(f"task_type {self.task_type!r} is unknown; use one of {sorted(TRAINING_TASKS)}")
        if self.init_from is not None and not METHOD_SETTINGS[self.method].warm_starts_from_a_head:
            raise ValueError(f"init_from warm-starts the 'head' method only, not {self.method!r}")
        for key, value in self.method_settings.defaults_for(self.task_type).items():
            if getattr(self, key) is None:
                setattr(self, key, value)
        return self

    @property
    def method_settings(self) -> MethodSettings:
        """The settings of the method ``method`` names; its behaviour (fitting, writing) is
        ``training.methods.training_method(cfg.method)``."""
        return method_settings(self.method)

    def hyperparameters(self) -> dict:
        """The settings that shaped the weights (for the manifest and the model card)."""
        keys = [*COMMON_HYPERPARAMETERS, *self.method_settings.hyperparameters]
        return {k: getattr(self, k) for k in keys}
