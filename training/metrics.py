"""Training metrics: each task type computes its own (:mod:`adapters.tasks.metrics`); re-exported here."""

from adapters.tasks.metrics import (ClassReport, Metrics, RegressionMetrics, classification_metrics,
                                    regression_metrics)

__all__ = ["ClassReport", "Metrics", "RegressionMetrics", "classification_metrics", "regression_metrics"]
