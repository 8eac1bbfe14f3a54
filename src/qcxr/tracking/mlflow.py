"""`MLflowTracker`: the Tracker on an MLflow store (the only module here that imports mlflow).

The default store is `sqlite:///<repo root>/mlruns/mlflow.db`, artifacts beside it under
`mlruns/<experiment>/`. Several processes may write one SQLite store at once (Hydra's joblib
launcher): every call takes an exclusive file lock beside the database and retries when SQLite
still reports `database is locked`, and the experiment is created idempotently, so no run is lost.
Metrics are buffered and written in batches (one SQLite transaction per step would cost more
than the step); the trainer calls `flush` before every checkpoint, so whatever a checkpoint
covers is in the store when the checkpoint exists. A reopened (resumed) run skips (key, step)
pairs the store already holds, so a step re-run after a kill is logged once.

A tracking server that does not answer (restarting, a network cut) is retried: MLflow's client
retries each HTTP request itself (`MLFLOW_HTTP_REQUEST_MAX_RETRIES`, default 7, with backoff
`MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR` 2 s: 0, 4, 8, ... 120 s, about 4 minutes), and on top of that
every write here is retried until `retry_s` seconds have passed since its first attempt. Metrics
stay in the buffer until their write succeeds, and a retried batch carries the same timestamps, so
the store keeps each (key, step) once. When the budget is spent the write raises
`TrackerUnavailable`, naming the server and the fix, and the tracker stops talking to the server
(ending the run would only wait out the budget again).

What the MLflow UI shows first: experiments carry `mlflow.experimentKind =
custom_model_development` (the model-training view, not the GenAI one), runs carry MLflow's own
source tags (`mlflow.source.name/type`, `mlflow.source.git.commit`, `mlflow.user`) and their
splits as dataset inputs with content digests.
"""

from __future__ import annotations

import contextlib
import fcntl
import getpass
import json
import logging
import os
import random
import re
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TypeVar
from urllib.parse import unquote, urlparse

import mlflow
import requests
from mlflow.entities import Dataset, DatasetInput, InputTag, Metric, Param, RunStatus
from mlflow.tracking import MlflowClient

from qcxr.tracking.base import TrackerUnavailable

log = logging.getLogger(__name__)

T = TypeVar("T")
_MAX_PARAM_CHARS = 6000  # MLflow 3's limit on a param value
_PARAM_BATCH = 100  # MLflow's limit on params per log_batch
_METRIC_BATCH = 1000  # MLflow's limit on metrics per log_batch
_RETRIES = 30
EXPERIMENT_KIND_TAG = "mlflow.experimentKind"
# The MLflow UI opens an experiment without this tag in its GenAI view (traces, token usage).
EXPERIMENT_KIND = "custom_model_development"
_DIGEST_CHARS = 32  # MLflow's dataset digest column holds 36 characters
# MLflow accepts only these characters in param and metric names; labels such as CXR-LT 2024's
# "Round(ed) Atelectasis" carry others.
_KEY_CHARS = re.compile(r"[^0-9A-Za-z_\-. :/]")


def mlflow_key(key: str) -> str:
    """A param or metric name MLflow accepts: every other character becomes "_".

    `test/auroc/Round(ed) Atelectasis` -> `test/auroc/Round_ed_ Atelectasis`. Keys that already
    fit are unchanged.
    """
    return _KEY_CHARS.sub("_", str(key))


def _mlflow_keys(keys) -> dict[str, str]:
    """Original -> MLflow name for `keys`; two keys that would share a name are an error."""
    names: dict[str, str] = {}
    seen: dict[str, str] = {}
    for key in keys:
        name = mlflow_key(key)
        if seen.setdefault(name, str(key)) != str(key):
            raise ValueError(
                f"keys {seen[name]!r} and {key!r} both become {name!r} in MLflow (it accepts only "
                "letters, digits, _ - . : / and spaces in names); rename one of the labels"
            )
        names[str(key)] = name
    return names


def sqlite_file(uri: str) -> Path | None:
    """The database file of a `sqlite:///` URI, else None."""
    parsed = urlparse(uri)
    if parsed.scheme != "sqlite" or not parsed.path:
        return None
    return Path(unquote(parsed.path))


def _transient(err: Exception) -> bool:
    text = str(err).lower()
    return any(s in text for s in ("database is locked", "database table is locked", "busy"))


def _unreachable(err: BaseException) -> bool:
    """Whether `err` (or an error it wraps) says the server did not answer.

    MLflow wraps what `requests` raised once its own retries are spent in an MlflowException
    ("API request to ... failed with exception ...") whose cause is the requests error.
    """
    seen: set[int] = set()
    while err is not None and id(err) not in seen:
        seen.add(id(err))
        if isinstance(
            err,
            requests.exceptions.ConnectionError
            | requests.exceptions.Timeout
            | requests.exceptions.RetryError  # 5xx answers (a proxy before a restarting server)
            | ConnectionError,
        ):
            return True
        err = err.__cause__ or err.__context__
    return False


class MLflowTracker:
    """Tracker on an MLflow tracking store.

    Args:
        tracking_uri: MLflow tracking URI; `$MLFLOW_TRACKING_URI` wins when it is set and this is
            None.
        experiment: experiment name (the task name: one experiment per task).
        artifact_root: folder under which a new experiment keeps its artifacts (default: the
            SQLite database's folder for sqlite URIs, MLflow's default otherwise).
        flush_every: buffered metric values that trigger a write.
        retry_s: seconds for which a write to a server that does not answer is retried, counted
            from its first attempt (MLflow's own per-request retries run inside each attempt).
    """

    def __init__(
        self,
        tracking_uri: str | None,
        experiment: str,
        artifact_root: str | None = None,
        flush_every: int = 500,
        retry_s: float = 300.0,
    ):
        self.tracking_uri = tracking_uri or os.environ.get("MLFLOW_TRACKING_URI")
        if not self.tracking_uri:
            raise ValueError("MLflowTracker needs tracking_uri (or MLFLOW_TRACKING_URI)")
        self.experiment = str(experiment)
        db = sqlite_file(self.tracking_uri)
        self._lock_path = None
        if db is not None:
            db.parent.mkdir(parents=True, exist_ok=True)
            self._lock_path = db.with_suffix(db.suffix + ".lock")
            if artifact_root is None:
                artifact_root = str(db.parent)
        self.artifact_root = artifact_root
        self.flush_every = int(flush_every)
        self.retry_s = float(retry_s)
        self.unavailable: TrackerUnavailable | None = None  # set once the budget was spent
        self._buffer: list[Metric] = []
        self._logged: set[tuple[str, int]] = set()  # (key, step) already in a reopened run
        self._client: MlflowClient | None = None
        self.run_id: str | None = None

    # ---- plumbing ---------------------------------------------------------------------------
    @contextlib.contextmanager
    def _locked(self):
        if self._lock_path is None:
            yield
            return
        with open(self._lock_path, "a") as handle:
            fcntl.flock(handle, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)

    def _call(self, fn: Callable[[], T], _build: bool = False) -> T:
        if self.unavailable is not None:
            raise self.unavailable
        if not _build:
            self.client  # noqa: B018 - build the client first: the file lock must not nest
        started = time.monotonic()
        busy = down = 0
        while True:
            try:
                with self._locked():
                    return fn()
            except Exception as err:  # noqa: BLE001 - MLflow wraps SQLAlchemy's errors variously
                if _unreachable(err):
                    waited = time.monotonic() - started
                    if waited >= self.retry_s:
                        self.unavailable = TrackerUnavailable(
                            f"the MLflow tracking server {self.tracking_uri} did not answer "
                            f"for {waited:.1f} s (tracker.retry_s={self.retry_s:g}): {err}. "
                            "Fix: check that the server is running and reachable from this "
                            f"node (curl {self.tracking_uri}/health), or give it longer "
                            "(tracker.retry_s=...)"
                        )
                        raise self.unavailable from err
                    down += 1
                    delay = min(10.0, 0.5 * 2**down, self.retry_s - waited)
                    log.warning(
                        "MLflow server %s unreachable for %.0f s (%s); retry %d in %.1f s "
                        "(gives up after tracker.retry_s=%g s)",
                        self.tracking_uri,
                        waited,
                        type(err.__cause__ or err.__context__ or err).__name__,
                        down,
                        delay,
                        self.retry_s,
                    )
                    time.sleep(delay)
                    continue
                if not _transient(err) or busy == _RETRIES - 1:
                    raise
                delay = min(2.0, 0.05 * 2**busy) * (0.5 + random.random())
                busy += 1
                log.warning("MLflow store busy (%s); retry %d in %.2f s", err, busy, delay)
                time.sleep(delay)

    @property
    def client(self) -> MlflowClient:
        if self._client is None:
            # Building the client creates (or migrates) the SQLite schema: do it under the lock.
            self._client = self._call(lambda: _make_client(self.tracking_uri), _build=True)
        return self._client

    def _experiment_id(self) -> str:
        def get_or_create() -> str:
            found = self.client.get_experiment_by_name(self.experiment)
            if found is not None:
                if EXPERIMENT_KIND_TAG not in found.tags:  # an experiment made by older code
                    self.client.set_experiment_tag(
                        found.experiment_id, EXPERIMENT_KIND_TAG, EXPERIMENT_KIND
                    )
                return found.experiment_id
            location = None
            if self.artifact_root is not None:
                location = (Path(self.artifact_root) / self.experiment).resolve().as_uri()
            try:
                return self.client.create_experiment(
                    self.experiment,
                    artifact_location=location,
                    tags={EXPERIMENT_KIND_TAG: EXPERIMENT_KIND},
                )
            except mlflow.exceptions.MlflowException:
                # Another process created it between our lookup and our insert.
                found = self.client.get_experiment_by_name(self.experiment)
                if found is None:
                    raise
                return found.experiment_id

        return self._call(get_or_create)

    # ---- the Tracker protocol ---------------------------------------------------------------
    def start(self, run_name: str, tags: Mapping[str, str], run_id: str | None = None) -> str:
        """Open a run, or reopen `run_id` (a resumed run) and mark it RUNNING again."""
        if run_id is not None:
            self._call(lambda: self.client.update_run(run_id, status="RUNNING"))
            self.run_id = run_id
            self._logged = self._call(lambda: _logged_steps(self.client, run_id))
        else:
            experiment_id = self._experiment_id()
            all_tags = {**source_tags(tags), **{k: str(v) for k, v in tags.items()}}
            run = self._call(
                lambda: self.client.create_run(experiment_id, run_name=run_name, tags=all_tags)
            )
            self.run_id = run.info.run_id
            self._logged = set()
        log.info("MLflow run %s (%s) in %s", self.run_id, run_name, self.tracking_uri)
        return self.run_id

    def log_params(self, params: Mapping[str, object]) -> None:
        """Log params (values longer than MLflow's limit are cut, with a warning)."""
        items = []
        names = _mlflow_keys(params)
        for key, value in params.items():
            text = str(value)
            if len(text) > _MAX_PARAM_CHARS:
                log.warning("param %s is %d chars; truncated for MLflow", key, len(text))
                text = text[:_MAX_PARAM_CHARS]
            items.append(Param(names[str(key)], text))
        for i in range(0, len(items), _PARAM_BATCH):
            chunk = items[i : i + _PARAM_BATCH]
            self._call(lambda c=chunk: self.client.log_batch(self.run_id, params=c))

    def log_metrics(self, metrics: Mapping[str, float], step: int) -> None:
        """Buffer metric values at a step; written every `flush_every` values, by `flush` and at
        the end. A (key, step) that a reopened run already holds is skipped."""
        now = int(time.time() * 1000)
        names = _mlflow_keys(metrics)
        self._buffer.extend(
            Metric(names[str(k)], float(v), now, int(step))
            for k, v in metrics.items()
            if (names[str(k)], int(step)) not in self._logged
        )
        if len(self._buffer) >= self.flush_every:
            self.flush()

    def flush(self) -> None:
        """Write the buffered metrics."""
        while self._buffer:
            chunk = self._buffer[:_METRIC_BATCH]
            self._call(lambda c=chunk: self.client.log_batch(self.run_id, metrics=c))
            del self._buffer[: len(chunk)]  # only once written: a failed write loses nothing

    def log_dataset(
        self,
        name: str,
        digest: str,
        source: str,
        context: str,
        profile: Mapping[str, object] | None = None,
    ) -> None:
        """Log a dataset input (MLflow's Dataset column; runs can be filtered by its digest).

        Args:
            name: the dataset's name, e.g. "synthetic-train".
            digest: hex digest of its content (cut to MLflow's 36-character column).
            source: where it comes from (a URI or a description).
            context: the split it is used as (train, val, test, external).
            profile: small JSON-able statistics (rows, positives per label), shown by the UI.
        """
        dataset = Dataset(
            name=name,
            digest=digest[:_DIGEST_CHARS],
            source_type="local",
            source=json.dumps({"uri": source}),
            profile=json.dumps(dict(profile or {})),
        )
        entry = DatasetInput(dataset, tags=[InputTag("mlflow.data.context", context)])
        for attempt in range(3):
            try:
                self._call(lambda: self.client.log_inputs(self.run_id, datasets=[entry]))
                return
            except mlflow.exceptions.MlflowException as err:
                # Two runs (SLURM array tasks) logging the same new dataset at once: the slower
                # one's insert hits the store's unique key (PostgreSQL: UniqueViolation); the
                # dataset exists now, so a retry links it (found by the cluster grid test).
                duplicate = "UniqueViolation" in str(err) or "UNIQUE constraint" in str(err)
                if not duplicate or attempt == 2:
                    raise
                log.info("dataset %s was created by another run at the same time; retrying", name)
                time.sleep(0.5 * (attempt + 1))

    def set_tags(self, tags: Mapping[str, str]) -> None:
        """Set run tags."""
        for key, value in tags.items():
            self._call(lambda k=key, v=value: self.client.set_tag(self.run_id, k, str(v)))

    def log_artifact(self, path: str | Path, artifact_path: str | None = None) -> None:
        """Log a file, or a folder's tree."""
        path = Path(path)
        if path.is_dir():
            dest = artifact_path if artifact_path is not None else path.name
            self._call(lambda: self.client.log_artifacts(self.run_id, str(path), dest))
        else:
            self._call(lambda: self.client.log_artifact(self.run_id, str(path), artifact_path))

    def log_model(
        self,
        python_model: object,
        artifacts: Mapping[str, str],
        input_example: object,
        signature: object = None,
        pip_requirements: list[str] | None = None,
        name: str = "model",
        step: int = 0,
    ) -> str:
        """Log a pyfunc model (`mlflow.pyfunc.PythonModel` with artifacts) from this run.

        The model is MLflow 3's LoggedModel named `name`, with this run as its source, so
        `runs:/<run id>/<name>` loads it; the run's metrics at `step` (flushed first) are linked
        to it, as the UI's model page shows them. The write runs under the store's lock, like
        every other.

        Args:
            python_model: the `mlflow.pyfunc.PythonModel` instance.
            artifacts: artifact name -> local path, copied into the model.
            input_example: a model input (MLflow stores it and checks that the model serves it).
            signature: an `mlflow.models.ModelSignature`, or None to infer it from the example.
            pip_requirements: the model's requirements; given, MLflow does not infer them (which
                loads the model in a subprocess).
            name: the model's name in the run.
            step: the step whose metrics describe the model (the run's final evaluation).

        Returns:
            The model's URI (`models:/<model id>`).
        """
        from mlflow.models import Model

        self.flush()

        def log() -> str:
            # Model.log would create the LoggedModel in the active (default) experiment: created
            # here, in the run's own, with the run's params (MLflow's own default).
            run = self.client.get_run(self.run_id)
            model = self.client.create_logged_model(
                run.info.experiment_id,
                name=name,
                source_run_id=self.run_id,
                params=dict(run.data.params),
            )
            # Model.log writes to the global tracking URI; this tracker's is set for the call.
            # MLflow's artifact bars would be carriage-return walls in a run's log file; its
            # warning that a PythonModel instance is cloudpickled is muted (the class is
            # pickled by reference to its installed module).
            pyfunc_log = logging.getLogger("mlflow.pyfunc")
            level = pyfunc_log.level
            pyfunc_log.setLevel(logging.ERROR)
            try:
                with global_tracking_uri(self.tracking_uri), artifact_bars(False):
                    info = Model.log(
                        artifact_path=None,
                        name=name,
                        flavor=mlflow.pyfunc,
                        run_id=self.run_id,
                        model_id=model.model_id,
                        python_model=python_model,
                        artifacts=dict(artifacts),
                        signature=signature,
                        input_example=input_example,
                        pip_requirements=pip_requirements,
                        step=int(step),
                    )
            finally:
                pyfunc_log.setLevel(level)
            return info.model_uri

        return self._call(log)

    def end(self, status: str = "FINISHED") -> None:
        """Flush and close the run with `status` (FINISHED, FAILED or KILLED)."""
        if self.run_id is None:
            return
        if self.unavailable is not None:
            log.error(
                "MLflow run %s not ended %s: its server %s is unreachable; %d metric values "
                "were not written (the run's checkpoints let it resume)",
                self.run_id,
                status,
                self.tracking_uri,
                len(self._buffer),
            )
            return
        try:
            self.flush()
        finally:
            RunStatus.from_string(status)  # validates the name
            self._call(lambda: self.client.set_terminated(self.run_id, status=status))


@contextlib.contextmanager
def global_tracking_uri(uri: str):
    """MLflow's global tracking URI set to `uri` for the block (for the calls that only read
    the global one: `Model.log`, `register_model`, `pyfunc.load_model`), then restored, and
    with it $MLFLOW_TRACKING_URI.

    MLflow's own `_use_tracking_uri` restores the global but, when none was set, *unsets*
    $MLFLOW_TRACKING_URI: the next run in the same process (a joblib worker's second job)
    then logged to the repo's default store instead of the one the user named.
    """
    from mlflow.tracking._tracking_service import utils

    name = "MLFLOW_TRACKING_URI"
    previous_env = os.environ.get(name)
    previous = utils._tracking_uri
    utils.set_tracking_uri(uri)
    try:
        yield
    finally:
        utils.set_tracking_uri(previous)
        if previous_env is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = previous_env


@contextlib.contextmanager
def artifact_bars(enabled: bool):
    """MLflow's artifact upload/download progress bars on or off for the block (its
    MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR variable, restored afterwards)."""
    name = "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR"
    previous = os.environ.get(name)
    os.environ[name] = str(bool(enabled)).lower()
    try:
        yield
    finally:
        if previous is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = previous


def source_tags(tags: Mapping[str, str]) -> dict[str, str]:
    """MLflow's own source tags (the runs table's Source column) from the run's plain tags.

    Args:
        tags: the run's tags; `source` (the entry script) and `git_commit` (a sha, `-dirty`
            when the tree had uncommitted changes) are read when present.

    Returns:
        mlflow.source.type/name, mlflow.user, and mlflow.source.git.commit/dirty when known.
    """
    out = {"mlflow.source.type": "LOCAL", "mlflow.user": getpass.getuser()}
    if tags.get("source"):
        out["mlflow.source.name"] = str(tags["source"])
    commit = str(tags.get("git_commit", ""))
    if commit and commit != "unknown":
        out["mlflow.source.git.commit"] = commit.removesuffix("-dirty")
        out["mlflow.source.git.dirty"] = str(commit.endswith("-dirty")).lower()
    return out


def _logged_steps(client: MlflowClient, run_id: str) -> set[tuple[str, int]]:
    keys = client.get_run(run_id).data.metrics
    return {(key, m.step) for key in keys for m in client.get_metric_history(run_id, key)}


def _make_client(uri: str) -> MlflowClient:
    client = MlflowClient(tracking_uri=uri)
    client.search_experiments(max_results=1)  # forces the store (and its schema) into being
    return client


def register_run_model(tracking_uri: str, run_id: str, name: str, model_name: str = "model") -> str:
    """Register a run's logged model in the model registry as a new version of `name`.

    Args:
        tracking_uri: the MLflow store (its registry is the same URI).
        run_id: the run whose model to register.
        name: the registered model's name (created when new).
        model_name: the logged model's name in the run (qcxr runs log `model`).

    Returns:
        The new version (as MLflow gives it, e.g. "1"): `models:/<name>/<version>` loads it.

    Raises:
        ValueError: the run logged no model of that name (it did not finish, or predates model
            logging).
    """
    client = _make_client(tracking_uri)
    experiment_id = client.get_run(run_id).info.experiment_id
    models, token = [], None
    while True:
        page = client.search_logged_models(
            experiment_ids=[experiment_id],
            filter_string=f"name = '{model_name}'",
            page_token=token,
        )
        models.extend(m for m in page if m.source_run_id == run_id)
        token = page.token
        if not token:
            break
    if not models:
        raise ValueError(
            f"run {run_id} has no logged model {model_name!r} in {tracking_uri}: only finished "
            "runs log one. Fix: register a finished run (or train it again with this qcxr)"
        )
    with global_tracking_uri(tracking_uri), artifact_bars(False):
        version = mlflow.register_model(f"models:/{models[0].model_id}", name)
    log.info("registered %s as models:/%s/%s", run_id, name, version.version)
    return str(version.version)
