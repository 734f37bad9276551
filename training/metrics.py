"""Training metrics: each task type computes its own (:mod:`adapters.tasks.metrics`,
:mod:`adapters.tasks.token_metrics`); re-exported here, with :data:`SplitMetrics`, the
metrics of one split whatever the task type (each has ``summary``, ``card_row``,
``detail_table`` and ``to_dict``)."""

from adapters.tasks.metrics import (ClassificationMetrics, ClassReport, RegressionMetrics, classification_metrics,
                                    regression_metrics)
from adapters.tasks.token_metrics import TokenMetrics

SplitMetrics = ClassificationMetrics | RegressionMetrics | TokenMetrics

__all__ = ["ClassReport", "ClassificationMetrics", "RegressionMetrics", "SplitMetrics", "TokenMetrics",
           "classification_metrics", "regression_metrics"]
