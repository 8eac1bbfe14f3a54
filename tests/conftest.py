"""Shared fixtures: the real-data folder beside the repository, tiny shapes, a real MLflow server,
and the cluster tests kept together under pytest-xdist.

`make test` runs the suite on two pytest-xdist workers (`-n 2 --dist loadgroup`). The tests of
tests/test_cluster.py (and any test marked `cluster`) form one group: one worker brings the local
SLURM cluster up once and runs them one after the other, never two clusters at once. Every other
test uses only its own tmp folders and free ports and runs on either worker.
"""

from __future__ import annotations

import itertools
import logging
import os
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
import warnings
from pathlib import Path

import pytest

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"


CLUSTER_GROUP = "cluster"
CLUSTER_TESTS = "tests/test_cluster.py::"  # node id prefix of the file holding the cluster fixture

TESTS = Path(__file__).resolve().parent
# The tiers (docs/test-time.md), chosen here by folder, file or test-id prefix (relative to
# tests/), so that a new test in one of these places joins its tier without a mark of its own,
# and a test file needs no edit to change tier. `make test-fast` deselects numerics, integration,
# cluster and slow; `make test` runs them all. The costs are wall times on 2 loaded CPU cores.
TIERS = {
    "numerics": (
        "numerics/",  # our simulator and mappings vs PennyLane / transformers / torch
        "unit/test_bench_peers.py::test_peer_agrees_with_qcxr_at_4_qubits",  # vs PennyLane etc.
        "unit/test_heads.py::test_pennylane_simulator_gives_the_same_head",  # vs PennyLane
        "unit/test_data_preprocess.py::test_matches_transformers_processor",  # vs transformers
        "unit/test_data_preprocess.py::test_cached_form_then_center_crop_is_the_processor_crop",
        # resnet18_28 vs MedMNIST's torch ResNet-18, eval and train mode: 30 s
        "unit/test_resnet18_28.py::test_features_equal_torch_in_eval_and_train_mode",
        # estimators vs the exact value, statistically: trajectories 9 s + 7 s, shots 3 s + 1 s
        "unit/test_noise.py::test_trajectories_converge_as_inverse_sqrt_t_with_unbiased_gradients",
        "unit/test_noise.py::test_shot_gradients_are_unbiased_parameter_shift",
        "unit/test_noise.py::test_shots_are_unbiased_with_variance_one_over_n",
    ),
    "integration": (
        "test_multirun.py::",  # train.py in subprocesses: exit codes, job folders, stores
        "test_run_lifecycle.py::",  # signals and kills of a training process
        "test_parallel.py::",  # concurrent training processes on one store
        "test_mlflow_restart.py::",  # a real MLflow server restarted under a running job
        "test_mlflow_server.py::",  # a real MLflow server
        "test_smoke.py::",  # whole training runs, end to end
        "test_robustness.py::",  # whole training runs, then the robustness CLI
        "test_predict.py::",  # a training run on real X-rays, then qcxr.predict and pyfunc
        "test_demo_log.py::",  # train.py writing its log to a file
        "test_evaluate.py::",  # a training run, then qcxr.evaluate on other data
        "test_sweeps.py::test_toy_",  # Optuna sweeps of the toy app in subprocesses
        "test_sweeps.py::test_real_study",  # a real study through train.py
        "unit/test_train_run.py::",  # whole training runs: NaN, memory guard, resume
        # benchmark rows measured in spawned processes: time limits, memory caps, crashes
        "unit/test_bench_heads.py::test_scale_table_rows_and_largest_n_search",  # 14 s
        "unit/test_bench_peers.py::test_crash_timeout_and_memory_cap_are_rows_not_fatal",
    ),
    # Costly cases whose code path a cheaper sibling keeps in the inner loop (named after #).
    "slow": (
        # 12 s and 8 s (the first MobileNetV2 compiled in a session); tiny stays, and
        # unit/test_backbones.py builds and applies MobileNetV2 in the inner loop
        "test_configs.py::test_backbone_builds_and_its_features_have_the_configured_size"
        "[mobilenet_v2",
        # 4 s; [cdl_tuning] stays
        "test_sweeps.py::test_every_search_space_value_composes[dqc_tuning]",
        # 9 s; [features] stays (the same dropout stream, without the backbone)
        "unit/test_train_steps.py::test_qcnn_train_step_applies_dropout[image]",
        # 5 s; the MPS head's step and its sown weight also run in test_smoke.py (integration)
        "unit/test_train_steps.py::test_mps_head_step_returns_discarded_weight",
        # 60-80 s each (ResNet-18 (28) train steps compiled and run at 28 px); the batch-norm
        # step and the torch agreement stay in unit/test_batch_norm.py, unit/test_resnet18_28.py
        "unit/test_bench_train_step_torch.py::",
        # 7 s; the split method's tables, choice and guards stay in unit/test_split.py
        "unit/test_split.py::test_split_reaches_qubit_counts_the_statevector_cannot",
        # 15 s: `mlflow models predict` in a subprocess; the pyfunc model it loads is compared
        # in process by test_predict.py's other tests
        "test_predict.py::test_mlflow_models_predict_offline",
        # 20 s: `mlflow models serve` started, asked once over REST on 127.0.0.1, stopped
        "test_predict.py::test_mlflow_models_serve_answers_a_rest_request",
    ),
}


def _test_id(item) -> str | None:
    """The test's id relative to tests/, as `TIERS` writes it."""
    try:
        where = item.path.relative_to(TESTS).as_posix()
    except ValueError:  # a test outside tests/ (none today)
        return None
    return f"{where}::{item.nodeid.split('::', 1)[-1]}"


def _deselects_every(markexpr: str, tier: str) -> bool:
    """Whether `-m markexpr` deselects every test marked `tier`, whatever its other marks."""
    try:
        from _pytest.mark.expression import Expression
    except ImportError:  # pytest moved it: collect everything, deselect as usual
        return False
    expr = Expression.compile(markexpr)
    others = sorted(expr.idents() - {tier})
    for values in itertools.product((False, True), repeat=len(others)):
        marks = {tier, *(name for name, on in zip(others, values, strict=True) if on)}
        if expr.evaluate(lambda name, /, marks=marks, **kwargs: not kwargs and name in marks):
            return False
    return True


def pytest_ignore_collect(collection_path, config):
    """A tier's folder (tests/numerics/) is not even imported when `-m` deselects all of that
    tier: make test-fast saves the PennyLane, torch and transformers imports of its modules."""
    markexpr = config.option.markexpr
    if not markexpr:
        return None
    for tier, places in TIERS.items():
        folders = [TESTS / p.rstrip("/") for p in places if p.endswith("/")]
        if collection_path in folders and _deselects_every(markexpr, tier):
            return True
    return None


@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(config, items):
    """Tier marks by place (`TIERS`), before `-m` deselects; the `cluster` mark implies the
    cluster's xdist group (for cluster tests outside tests/test_cluster.py, once pytest-xdist's
    marks work again: see `_ClusterScheduling`)."""
    unused = {(tier, p) for tier, places in TIERS.items() for p in places if not p.endswith("/")}
    for item in items:
        name = _test_id(item)
        for tier, places in TIERS.items():
            for place in places:
                if name is not None and name.startswith(place):
                    item.add_marker(getattr(pytest.mark, tier))
                    unused.discard((tier, place))
        if item.get_closest_marker("cluster") is not None:
            item.add_marker(pytest.mark.xdist_group(CLUSTER_GROUP))
    whole_suite = not config.args or [Path(a).resolve() for a in config.args] == [TESTS]
    if whole_suite and not config.option.keyword and unused:  # a test renamed or moved
        listed = ", ".join(f"{tier}: {place}" for tier, place in sorted(unused))
        message = f"tests/conftest.py TIERS names no test: {listed}"
        warnings.warn(pytest.PytestWarning(message), stacklevel=2)


try:
    from xdist.scheduler import LoadGroupScheduling
except ImportError:  # pytest-xdist is in the dev extra; without it the suite runs in one process
    LoadGroupScheduling = None

if LoadGroupScheduling is not None:

    class _ClusterScheduling(LoadGroupScheduling):
        """`--dist loadgroup`, with every test of tests/test_cluster.py in the cluster group.

        pytest-xdist 3.8.0 passes `xdist_group` marks to the scheduler by renaming `item._nodeid`,
        which pytest 9.2 no longer reads (pytest-dev/pytest-xdist#1386): the marks are silently
        ignored and the cluster tests would be spread over both workers, each bringing up its own
        cluster. The scheduler sees node ids, so the group is chosen by file here.
        """

        def _split_scope(self, nodeid: str) -> str:
            if nodeid.startswith(CLUSTER_TESTS):
                return CLUSTER_GROUP
            return super()._split_scope(nodeid)

    def pytest_xdist_make_scheduler(config, log):
        """Use `_ClusterScheduling` for `--dist loadgroup`; xdist's own scheduler otherwise."""
        if config.getvalue("dist") == "loadgroup":
            return _ClusterScheduling(config, log)
        return None


# ---- a compilation cache for the session -------------------------------------------------------
JAX_CACHE_ENV = "QCXR_TEST_JAX_CACHE"  # set it to a folder to keep the cache between sessions


def pytest_configure(config):
    """JAX's persistent compilation cache in a folder of this session (of this xdist worker), set
    before any test compiles: the same tiny train steps, heads and circuits, jitted anew by test
    after test (a new closure each time, so the in-memory cache misses), are compiled once. The
    folder is removed at the end unless `QCXR_TEST_JAX_CACHE` names one to keep."""
    import jax

    kept = os.environ.get(JAX_CACHE_ENV)
    worker = os.environ.get("PYTEST_XDIST_WORKER", "main")
    if kept:  # one subfolder per worker: JAX writes cache files without a lock
        folder = Path(kept) / worker
        folder.mkdir(parents=True, exist_ok=True)
    else:
        folder = Path(tempfile.mkdtemp(prefix=f"qcxr-jax-cache-{worker}-"))
        config.add_cleanup(lambda: shutil.rmtree(folder, ignore_errors=True))
    jax.config.update("jax_compilation_cache_dir", str(folder))
    # Compiles under 0.1 s are cheaper than reading an entry back; the rest are cached.
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.1)


# ---- one migrated MLflow database, copied for every new SQLite store ---------------------------
@pytest.fixture(scope="session", autouse=True)
def _mlflow_store_template(tmp_path_factory):
    """Every new `sqlite:///` MLflow store of an in-process test starts as a copy of one store
    migrated once per session (MLflow runs its ~60 Alembic migrations for each new database:
    seconds per test). The copy holds the tables and no experiment: MLflow then creates the
    default experiment with the store's own artifact root, as for a new database. Stores made by
    subprocesses (train.py, mlflow server) are not affected; `mlflow_db_template` hands them the
    file to start from. Yields the function that makes the template (None without MLflow)."""
    try:
        from mlflow.store.tracking import sqlalchemy_store
    except ImportError:  # without MLflow nothing to copy
        yield None
        return
    store_class = sqlalchemy_store.SqlAlchemyStore
    original = store_class.__init__
    template = tmp_path_factory.getbasetemp() / "mlflow-template" / "mlflow.db"

    def make_template() -> None:
        template.parent.mkdir()
        uri = f"sqlite:///{template}"
        original(store_class.__new__(store_class), uri, str(template.parent))
        store_class._engine_map.pop(uri).dispose()  # MLflow keeps one engine per URI
        with sqlite3.connect(template) as db:  # the default experiment: each store makes its own
            db.execute("DELETE FROM experiments")

    def init_from_template(self, db_uri, default_artifact_root, *args, **kwargs):
        path = _sqlite_file(db_uri)
        if path is not None and not path.exists() and path.parent.is_dir():
            if not template.exists():
                make_template()
            shutil.copyfile(template, path)
        original(self, db_uri, default_artifact_root, *args, **kwargs)

    def ensure_template() -> Path:
        if not template.exists():
            make_template()
        return template

    store_class.__init__ = init_from_template
    try:
        yield ensure_template
    finally:
        store_class.__init__ = original


@pytest.fixture(scope="session")
def mlflow_db_template(_mlflow_store_template) -> Path:
    """The migrated MLflow database (tables, no experiment) that new in-process stores copy: a
    test copies it to `<store>/mlflow.db` before a subprocess opens `sqlite:///<store>/mlflow.db`,
    which then skips MLflow's migrations (seconds per store) as in-process stores do."""
    if _mlflow_store_template is None:
        pytest.skip("mlflow is not installed")
    return _mlflow_store_template()


def _sqlite_file(db_uri: str) -> Path | None:
    """The file of a `sqlite:///<path>` URI (absolute or relative), else None."""
    if not db_uri.startswith("sqlite:///") or "?" in db_uri:
        return None
    path = db_uri.removeprefix("sqlite:///")
    return Path(path) if path and path != ":memory:" else None


@pytest.fixture(autouse=True)
def _root_logger_restored():
    """Each test starts with the root logger as the worker left it at start-up: CLIs called in
    process (`main()` of report, study, robustness, bench) run `logging.basicConfig(INFO)`, which
    (`force=True` in the bench CLIs) would otherwise let INFO lines of every logger into later
    tests' `caplog`."""
    root = logging.getLogger()
    level, handlers = root.level, list(root.handlers)
    yield
    root.setLevel(level)
    for h in list(root.handlers):  # basicConfig's stderr handler; pytest's are subclasses
        if type(h) is logging.StreamHandler and h not in handlers:
            root.removeHandler(h)


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """The `../shared/data` folder of small real chest X-ray sets; skips where it is absent."""
    if not SHARED_DATA.is_dir():
        pytest.skip(f"real data folder {SHARED_DATA} is absent (tests marked realdata need it)")
    return SHARED_DATA


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class MlflowServer:
    """`mlflow server` on 127.0.0.1 with a fixed port, SQLite backend and served artifacts in
    `folder`; it can be stopped and started again on the same port and backend.

    Args:
        folder: a folder that does not exist yet; it receives mlflow.db, artifacts/ and one
            server-<n>.log per start.
    """

    START_TIMEOUT_S = 180
    POLL_S = 0.1  # /health answers within a few seconds of the start; poll it finely

    def __init__(self, folder: Path):
        self.folder = folder
        self.folder.mkdir()
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.proc: subprocess.Popen | None = None
        self.starts = 0

    def start(self) -> None:
        """Start the server and return once /health answers 200; fail with its log otherwise."""
        self.starts += 1
        log_path = self.folder / f"server-{self.starts}.log"
        cmd = [
            sys.executable,
            "-m",
            "mlflow",
            "server",
            "--host",
            "127.0.0.1",
            "--port",
            str(self.port),
            "--backend-store-uri",
            f"sqlite:///{self.folder / 'mlflow.db'}",
            "--artifacts-destination",
            str(self.folder / "artifacts"),
            "--workers",
            "1",
        ]
        # MLflow 3's job runner (eight huey consumers, each importing mlflow: ~20 s of CPU per
        # start) serves GenAI jobs that no test uses.
        env = {**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}
        with open(log_path, "w") as log_file:
            # Its own session, so the server and the workers it forks are stopped together.
            self.proc = subprocess.Popen(
                cmd, stdout=log_file, stderr=subprocess.STDOUT, env=env, start_new_session=True
            )
        deadline = time.monotonic() + self.START_TIMEOUT_S
        while True:
            try:
                with urllib.request.urlopen(f"{self.url}/health", timeout=5) as response:
                    if response.status == 200:
                        return
            except (urllib.error.URLError, ConnectionError, TimeoutError):
                pass
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise AssertionError(f"mlflow server did not start: {log_path.read_text()[-4000:]}")
            time.sleep(self.POLL_S)

    def stop(self) -> None:
        """Stop the server and the workers it forked (SIGTERM, then SIGKILL after 30 s)."""
        if self.proc is None:
            return
        proc, self.proc = self.proc, None
        try:
            os.killpg(proc.pid, signal.SIGTERM)
        except ProcessLookupError:
            pass
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=30)


@pytest.fixture
def mlflow_server(tmp_path):
    """A started `MlflowServer` under tmp_path/server (its `.url` is the tracking URI); stopped
    afterwards, also when the test stopped and restarted it."""
    server = MlflowServer(tmp_path / "server")
    server.start()
    try:
        yield server
    finally:
        server.stop()
