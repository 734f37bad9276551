"""The training-method interface: how a run turns data into a head (and trunk changes).

A method owns what differs between ``head``, ``lora``, ``top_layers`` and the ``scratch``
baseline:

- **settings** — its hyper-parameter defaults (with per-task-type changes) and the extra
  settings its manifest and card report: :attr:`TrainingMethod.settings`, its entry in
  :data:`training.method_settings.METHOD_SETTINGS`, the table ``TrainConfig`` reads (it sits
  below the settings, so ``TrainConfig`` never imports this package);
- **fitting** — :meth:`TrainingMethod.fit` for pooled task types, :meth:`TrainingMethod.fit_tokens`
  for per-token ones (where :attr:`TrainingMethod.fits_tokens`);
- **what it produces** — the adapter kind (:attr:`TrainingMethod.kind`, a key of
  :data:`adapters.kinds.KINDS`; None: a baseline report, not servable) and the model card's
  words for it (:attr:`TrainingMethod.kind_words`, :attr:`TrainingMethod.recipe`).

Adding a method is one new file with a subclass, one entry in
:data:`training.methods.METHODS` and one in :data:`training.method_settings.METHOD_SETTINGS`; the trainers, the settings and the card name no method.
The implementations are stateless singletons.
"""

from __future__ import annotations

from pathlib import Path
from typing import ClassVar

from adapters.backbones.base import Backbone
from adapters.format import Manifest
from training.config import TrainConfig
from training.data import LabelledData
from adapters.format.manifest import GenerationSpec
from training.data.tokens import TokenData
from training.generation.data import GenerationData
from training.generation.fit import GenerationFit
from training.fitted import FitOutput, TokenFit
from training.method_settings import MethodSettings


class TrainingMethod:
    """One way to train. Subclass it, set the class attributes, register it in the table."""

    settings: ClassVar[MethodSettings]
    """Its name, defaults and reported settings (an entry of
    :data:`training.method_settings.METHOD_SETTINGS`)."""
    kind: ClassVar[str | None] = None
    """The adapter kind it writes (``head``, ``lora``, ``top_layers``); None: a report only."""
    scores_train_split: ClassVar[bool] = False
    """Score the training split after fitting (cheap on cached features; a full trunk pass otherwise)."""
    fits_tokens: ClassVar[bool] = False
    """Trains per-token task types (:meth:`fit_tokens`)."""
    fits_generation: ClassVar[bool] = False
    """Trains generation tasks on a language model (:meth:`fit_generation`)."""
    fits_dense: ClassVar[bool] = False
    """Trains dense task types (detection, segmentation: :meth:`fit_dense`)."""
    dense_recipe: ClassVar[str] = ""
    """The dense card's words for how the run trained (``str.format`` fields: ``strides``,
    ``width``, ``input_size``)."""
    needs_data: ClassVar[bool] = True
    """A run needs examples (``prompt`` does not: a generation task from its template alone)."""
    generation_recipe: ClassVar[str] = ""
    """The card's Method section for a generation task (fields: ``lora_r``, ``lora_alpha``, ``targets``)."""
    kind_words: ClassVar[str] = ""
    """What the card calls the result: "head adapter", "LoRA adapter", "top-layers adapter"."""
    recipe: ClassVar[str] = ""
    """The card's Method section for pooled task types (``str.format`` fields: ``pooling``,
    ``head``, ``loss``, ``lora_r``, ``lora_alpha``, ``targets``, ``layers``, ``start``)."""
    token_recipe: ClassVar[str] = ""
    """The same for per-token task types."""
    limitations: ClassVar[tuple[str, ...]] = ()
    """Lines the card adds under Limitations."""

    @property
    def name(self) -> str:
        """The ``method`` value that selects it."""
        return self.settings.name

    @property
    def servable(self) -> bool:
        """Whether the run is an adapter the server can load (else a baseline report)."""
        return self.kind is not None

    def defaults_for(self, task_type: str) -> dict:
        """The defaults of a run of this method for ``task_type``.

        >>> from training.methods import training_method
        >>> training_method("lora").defaults_for("single_label")["head_init"]
        'normal'
        """
        return self.settings.defaults_for(task_type)

    def summary_line(self, backbone_name: str) -> str:
        """The card's first line: what this folder is."""
        return f"A Taskswap **{self.kind_words}** for the frozen backbone `{backbone_name}`."

    def card_words(self, backbone_name: str, tokens: bool = False) -> dict:
        """The model card's facts about the method (:class:`training.card.CardFacts` fields)."""
        return {"method": self.name, "summary_line": self.summary_line(backbone_name),
                "recipe": self.token_recipe if tokens else self.recipe, "servable": self.servable,
                "method_limitations": self.limitations}

    def write(self, out: Path, manifest: Manifest | None, card: str, fit: FitOutput | TokenFit) -> None:
        """Write the run's folder: the adapter files of :attr:`kind` with ``manifest`` and
        ``card`` (through :mod:`training.export`), or the report of a baseline."""
        raise NotImplementedError

    def fit(self, backbone: Backbone, train: LabelledData, val: LabelledData, cfg: TrainConfig,
            cache_dir: Path | None) -> FitOutput:
        """Fit on ``train``, select on ``val`` (pooled task types)."""
        raise NotImplementedError

    def fit_tokens(self, backbone: Backbone, train: TokenData, val: TokenData, cfg: TrainConfig) -> TokenFit:
        """Fit on tagged sentences (per-token task types; only where :attr:`fits_tokens`)."""
        raise NotImplementedError

    def fit_dense(self, backbone: Backbone, train, cfg, task):
        """Fit a dense task (``train``: a ``DenseData``, ``cfg``: a ``DenseFitConfig``, ``task``: the
        type's training half) and return a :class:`training.dense.fit.DenseFit` (only where
        :attr:`fits_dense`)."""
        raise NotImplementedError

    def write_dense(self, out: Path, manifest: Manifest | None, card: str, fit) -> None:
        """Write a dense run's folder (the adapter of :attr:`kind`, or a baseline's report)."""
        raise NotImplementedError

    def fit_generation(self, backbone, train: GenerationData, val: GenerationData, spec: GenerationSpec,
                       cfg: TrainConfig, eval_limit: int) -> GenerationFit:
        """Fit a generation task on a language model (only where :attr:`fits_generation`)."""
        raise NotImplementedError
