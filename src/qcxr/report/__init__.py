"""The CDL-vs-DQC analysis report (issue #6): `python -m qcxr.report`.

Reads finished runs from MLflow, pairs two heads by (task, seed), and writes a folder with
report.md, figures/ and tables/: mean and per-label AUROC with paired t-tests and the paper's
percent difference, volcano plots, loss curves, epochs to early stop, and step and epoch times.
"""

from qcxr.report.build import Report, build_report

__all__ = ["Report", "build_report"]
