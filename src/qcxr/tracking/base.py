"""The Tracker protocol the trainer logs through, and a tracker that records nothing."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Protocol, runtime_checkable


class TrackerUnavailable(RuntimeError):
    """The tracking server stayed unreachable for the tracker's whole retry budget.

    Raised by a write that could not land; the tracker keeps what it had not written, and the
    message names the server and the fix. `qcxr.run.run` turns it into a RunError that says how
    to resume the run from its latest checkpoint.
    """


@runtime_checkable
class Tracker(Protocol):
    """Where a run's parameters, metrics and artifacts go (docs/style.md, package boundaries)."""

    def start(self, run_name: str, tags: Mapping[str, str], run_id: str | None = None) -> str:
        """Open a run (or reopen `run_id` to resume it); return its id."""

    def log_params(self, params: Mapping[str, object]) -> None:
        """Log a flat dict of parameters."""

    def log_metrics(self, metrics: Mapping[str, float], step: int) -> None:
        """Log scalar metrics at a step."""

    def log_artifact(self, path: str | Path, artifact_path: str | None = None) -> None:
        """Log a file or a folder."""

    def log_dataset(
        self,
        name: str,
        digest: str,
        source: str,
        context: str,
        profile: Mapping[str, object] | None = None,
    ) -> None:
        """Record a dataset the run reads (one per split), identified by its content digest."""

    def log_model(
        self,
        python_model: object,
        artifacts: Mapping[str, str],
        input_example: object,
        signature: object = None,
        pip_requirements: list[str] | None = None,
        name: str = "model",
        step: int = 0,
    ) -> str | None:
        """Log a model that serves predictions (MLflow: a pyfunc model); return its URI."""

    def flush(self) -> None:
        """Make everything logged so far durable (called before every checkpoint is written)."""

    def end(self, status: str = "FINISHED") -> None:
        """Close the run with FINISHED, FAILED or KILLED."""


class NullTracker:
    """A Tracker that keeps the last value of every metric (and the artifacts of each logged
    model) in memory and writes nothing."""

    def __init__(self) -> None:
        self.params: dict[str, object] = {}
        self.metrics: dict[str, float] = {}
        self.history: list[tuple[str, float, int]] = []
        self.datasets: list[dict[str, object]] = []
        self.models: dict[str, dict[str, str]] = {}  # name -> the artifacts of a logged model
        self.status: str | None = None
        self.run_id = "null"

    def start(self, run_name: str, tags: Mapping[str, str], run_id: str | None = None) -> str:
        self.tags = dict(tags)
        self.run_name = run_name
        return self.run_id

    def log_params(self, params: Mapping[str, object]) -> None:
        self.params.update(params)

    def log_metrics(self, metrics: Mapping[str, float], step: int) -> None:
        for key, value in metrics.items():
            self.metrics[key] = float(value)
            self.history.append((key, float(value), int(step)))

    def log_artifact(self, path: str | Path, artifact_path: str | None = None) -> None:
        return None

    def log_dataset(
        self,
        name: str,
        digest: str,
        source: str,
        context: str,
        profile: Mapping[str, object] | None = None,
    ) -> None:
        self.datasets.append(
            {
                "name": name,
                "digest": digest,
                "source": source,
                "context": context,
                "profile": dict(profile or {}),
            }
        )

    def log_model(
        self,
        python_model: object,
        artifacts: Mapping[str, str],
        input_example: object,
        signature: object = None,
        pip_requirements: list[str] | None = None,
        name: str = "model",
        step: int = 0,
    ) -> str | None:
        self.models[name] = dict(artifacts)
        return None

    def flush(self) -> None:
        return None

    def end(self, status: str = "FINISHED") -> None:
        self.status = status
