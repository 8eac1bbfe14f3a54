"""Robustness of trained DQC heads to noise and finite shots (issue 16, item 4):
`python -m qcxr.robustness <run id | experiment>`.

Restores each trained DQC run's best checkpoint from MLflow, re-evaluates its test split over a
grid of noise levels x shot counts (`evaluate.evaluate_grid`), and logs test AUROC per grid point
(per label and macro) with a figure as a child run nested under the trained run; given an
experiment, a summary run holds the mean +- sd over runs. `docs/robustness.md` has the commands
and the synthetic default's numbers; the report (`qcxr.report`) shows the curve and the table.
"""

from qcxr.robustness.evaluate import GridResult, evaluate_grid, summarize

__all__ = ["GridResult", "evaluate_grid", "summarize"]
