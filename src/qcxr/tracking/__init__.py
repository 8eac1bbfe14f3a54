"""Experiment tracking behind a small protocol: `Tracker`, `NullTracker`, `MLflowTracker`.

Only `tracking/mlflow.py` imports mlflow, and only when an `MLflowTracker` is built.
"""

from qcxr.tracking.base import NullTracker, Tracker, TrackerUnavailable


def mlflow_tracker(*args, **kwargs):
    """Build an `MLflowTracker` (`conf/tracker/mlflow.yaml`); see `qcxr.tracking.mlflow`."""
    from qcxr.tracking.mlflow import MLflowTracker

    return MLflowTracker(*args, **kwargs)


def null_tracker() -> NullTracker:
    """Build a `NullTracker` (`conf/tracker/none.yaml`): logs nothing."""
    return NullTracker()


__all__ = ["NullTracker", "Tracker", "TrackerUnavailable", "mlflow_tracker", "null_tracker"]
