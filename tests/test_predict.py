"""A trained run is a model (issue 23, items 1, 2 and 5), on the real X-rays of
`../shared/data/nih-cxr14-64px`: one tiny run (tiny backbone, CDL head, one epoch) is trained
once, then

- `python -m qcxr.predict <run id> <images>`, `mlflow.pyfunc.load_model("runs:/<id>/model")`
  and the run's own logged test predictions (`predictions_test.csv`) agree on the same test
  images to 1e-5;
- a run folder and `models:/<model id>` load the same model;
- an unreadable image is an error naming it, or skipped with `--on-bad skip`;
- `qcxr.study summarize --register` makes `models:/<name>/1` of the best trial's run (item 4);
- `mlflow models predict -m runs:/<id>/model -t csv --env-manager local` gives the same numbers
  offline, and `mlflow models serve --env-manager local` answers a REST request on 127.0.0.1
  with them (subprocesses: slow).

Integration tier (tests/conftest.py TIERS): the training run takes about 30 s on 2 cores.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from qcxr.predict.__main__ import main
from qcxr.run import run
from tests.train_helpers import compose_run, mlflow_client

pytestmark = pytest.mark.realdata

NUM_IMAGES = 12  # test images compared
TOL = 1e-5


@pytest.fixture(scope="module")
def trained(tmp_path_factory, shared_data):
    """(tmp folder, run id, tracking URI, test image paths, the run's test predictions)."""
    tmp = tmp_path_factory.mktemp("predict")
    root = shared_data / "nih-cxr14-64px"
    cfg = compose_run(
        tmp,
        [
            "task=cxr8",
            "head=cdl",
            "data=folder_csv",
            f"data.image_dir={root / 'images'}",
            f"data.label_dir={root / 'labels.csv'}",
            "data.min_positives=0",
            "data.num_threads=1",
            "backbone=tiny",
            "backbone.image_size=16",
            "backbone.feature_dim=8",
            "trainer.batch_size=16",
            "trainer.max_epochs=1",
            "trainer.progress=false",
            "trainer.compilation_cache=false",
        ],
        tiny=False,
    )
    run(cfg)
    client = mlflow_client(tmp)
    (found,) = client.search_runs([client.get_experiment_by_name("cxr8").experiment_id])
    run_id = found.info.run_id
    logged = pd.read_csv(client.download_artifacts(run_id, "predictions_test.csv", str(tmp)))
    logged = logged.head(NUM_IMAGES)
    paths = [str(root / "images" / name) for name in logged["image_id"]]
    uri = f"sqlite:///{tmp / 'mlruns' / 'mlflow.db'}"
    return tmp, run_id, uri, paths, logged


def _labels(frame: pd.DataFrame) -> list[str]:
    return [c.removeprefix("prob/") for c in frame.columns if c.startswith("prob/")]


def _pyfunc_predict(uri: str, model_uri: str, frame: pd.DataFrame) -> pd.DataFrame:
    import mlflow

    previous = mlflow.get_tracking_uri()
    mlflow.set_tracking_uri(uri)
    try:
        return mlflow.pyfunc.load_model(model_uri).predict(frame)
    finally:
        mlflow.set_tracking_uri(previous)


def test_cli_pyfunc_and_logged_test_predictions_agree(trained):
    tmp, run_id, uri, paths, logged = trained
    out = tmp / "preds.csv"
    assert (
        main([run_id, *paths, "--out", str(out), "--tracking-uri", uri, "--batch-size", "5"]) == 0
    )
    cli = pd.read_csv(out)
    labels = _labels(logged)
    assert list(cli.columns) == ["path", *labels]
    assert cli["path"].tolist() == paths
    pyfunc = _pyfunc_predict(uri, f"runs:/{run_id}/model", pd.DataFrame({"image": paths}))
    assert list(pyfunc.columns) == labels and len(pyfunc) == NUM_IMAGES
    run_probs = logged[[f"prob/{n}" for n in labels]].to_numpy(np.float64)
    np.testing.assert_allclose(
        cli[labels].to_numpy(np.float64), pyfunc.to_numpy(np.float64), atol=TOL
    )
    np.testing.assert_allclose(pyfunc.to_numpy(np.float64), run_probs, atol=TOL)
    assert np.ptp(run_probs, axis=0).max() > 1e-4  # the images differ: a constant would not pass


def test_run_folder_and_model_id_load_the_same_model(trained, capsys):
    tmp, run_id, uri, paths, logged = trained
    assert main([str(tmp / "run"), *paths[:3]]) == 0  # CSV on stdout
    from io import StringIO

    folder = pd.read_csv(StringIO(capsys.readouterr().out))
    labels = _labels(logged)
    expected = logged[[f"prob/{n}" for n in labels]].to_numpy(np.float64)[:3]
    np.testing.assert_allclose(folder[labels].to_numpy(np.float64), expected, atol=TOL)
    client = mlflow_client(tmp)
    (model,) = client.search_logged_models(
        experiment_ids=[client.get_run(run_id).info.experiment_id]
    )
    assert model.source_run_id == run_id and model.name == "model"
    by_id = _pyfunc_predict(uri, f"models:/{model.model_id}", pd.DataFrame({"image": paths[:3]}))
    np.testing.assert_allclose(by_id.to_numpy(np.float64), expected, atol=TOL)
    # Decoded images as arrays (RGBA PNGs read by Pillow) give the same numbers as their paths.
    arrays = [np.asarray(Image.open(p)) for p in paths[:3]]
    by_array = _pyfunc_predict(uri, f"models:/{model.model_id}", pd.DataFrame({"image": arrays}))
    np.testing.assert_allclose(by_array.to_numpy(np.float64), expected, atol=TOL)


def test_unreadable_images_are_named_or_skipped(trained, caplog):
    tmp, run_id, uri, paths, logged = trained
    broken = tmp / "broken.png"
    broken.write_bytes(b"not a png")
    missing = tmp / "missing.png"
    args = [str(tmp / "run"), paths[0], str(broken), str(missing), paths[1]]
    out = tmp / "skip.csv"
    assert main([*args, "--out", str(out)]) == 1
    assert str(broken) in caplog.text and str(missing) in caplog.text
    assert "2 of 4 images could not be read" in caplog.text
    assert not out.exists()  # nothing was computed, nothing written
    caplog.clear()
    assert main([*args, "--out", str(out), "--on-bad", "skip"]) == 0
    assert "skipped 2 of 4 images" in caplog.text
    assert pd.read_csv(out)["path"].tolist() == [paths[0], paths[1]]


def test_mlflow_models_predict_offline(trained):
    tmp, run_id, uri, paths, logged = trained
    inputs = tmp / "in.csv"
    pd.DataFrame({"image": paths[:4]}).to_csv(inputs, index=False)
    out = tmp / "mlflow_out.json"
    env = {**os.environ, "MLFLOW_TRACKING_URI": uri, "HF_HUB_OFFLINE": "1"}
    cmd = [sys.executable, "-m", "mlflow", "models", "predict", "-m", f"runs:/{run_id}/model"]
    cmd += ["-i", str(inputs), "-t", "csv", "--env-manager", "local", "-o", str(out)]
    done = subprocess.run(cmd, env=env, cwd=tmp, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    result = pd.read_json(out)
    predictions = pd.DataFrame(list(result["predictions"]))
    labels = _labels(logged)
    expected = logged[[f"prob/{n}" for n in labels]].to_numpy(np.float64)[:4]
    np.testing.assert_allclose(predictions[labels].to_numpy(np.float64), expected, atol=TOL)


def test_registered_best_trial_loads_as_models_name_version(trained, capsys):
    """`qcxr.study summarize <study> --register <name>` (item 4): the best trial's run model is
    registered, and `models:/<name>/1` predicts as the run did."""
    import optuna

    from qcxr.study.__main__ import main as study_main

    tmp, run_id, uri, paths, logged = trained
    storage = f"sqlite:///{tmp / 'study.db'}"
    study = optuna.create_study(study_name="tiny", storage=storage, direction="maximize")
    study.set_user_attr("optimized_metric", "val/auroc_macro")
    distributions = {"optimizer.learning_rate": optuna.distributions.FloatDistribution(1e-5, 1e-1)}
    for value, trial_run in ((0.7, run_id), (0.6, "another-run")):
        study.add_trial(
            optuna.trial.create_trial(
                params={"optimizer.learning_rate": 1e-3},
                distributions=distributions,
                value=value,
                user_attrs={"qcxr:mlflow_run_id": trial_run},
            )
        )
    args = ["summarize", "tiny", "--storage", storage, "--tracking-uri", uri, "--no-mlflow"]
    assert study_main([*args, "--out", str(tmp / "study"), "--register", "cxr8-tiny"]) == 0
    assert f"registered models:/cxr8-tiny/1 (run {run_id})" in capsys.readouterr().out
    out = tmp / "registered.csv"
    assert main(["models:/cxr8-tiny/1", *paths[:4], "--out", str(out), "--tracking-uri", uri]) == 0
    labels = _labels(logged)
    expected = logged[[f"prob/{n}" for n in labels]].to_numpy(np.float64)[:4]
    np.testing.assert_allclose(pd.read_csv(out)[labels].to_numpy(np.float64), expected, atol=TOL)
    assert main(["models:/cxr8-tiny/2", paths[0], "--tracking-uri", uri]) == 1  # no version 2


def test_mlflow_models_serve_answers_a_rest_request(trained):
    """`mlflow models serve --env-manager local` on 127.0.0.1 (item 5): one REST request, the
    run's numbers back, then the server and its workers are stopped."""
    import json
    import signal
    import time
    import urllib.error
    import urllib.request

    from tests.conftest import free_port

    tmp, run_id, uri, paths, logged = trained
    port = free_port()
    env = {**os.environ, "MLFLOW_TRACKING_URI": uri, "HF_HUB_OFFLINE": "1"}
    # MLflow execs `uvicorn` by name: the interpreter's own bin folder first on the PATH.
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    cmd = [sys.executable, "-m", "mlflow", "models", "serve", "-m", f"runs:/{run_id}/model"]
    cmd += ["--env-manager", "local", "-h", "127.0.0.1", "-p", str(port), "-w", "1"]
    with open(tmp / "serve.log", "w") as log_file:
        server = subprocess.Popen(
            cmd, cwd=tmp, env=env, stdout=log_file, stderr=subprocess.STDOUT, start_new_session=True
        )
    try:
        deadline = time.monotonic() + 300
        while True:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/ping", timeout=5) as r:
                    if r.status == 200:
                        break
            except (urllib.error.URLError, ConnectionError, TimeoutError):
                pass
            assert server.poll() is None, (tmp / "serve.log").read_text()[-3000:]
            assert time.monotonic() < deadline, (tmp / "serve.log").read_text()[-3000:]
            time.sleep(0.5)
        body = json.dumps(
            {"dataframe_split": {"columns": ["image"], "data": [[p] for p in paths[:3]]}}
        )
        request = urllib.request.Request(
            f"http://127.0.0.1:{port}/invocations",
            data=body.encode(),
            headers={"Content-Type": "application/json"},
        )
        with urllib.request.urlopen(request, timeout=120) as r:
            answer = json.loads(r.read())
    finally:
        with contextlib.suppress(ProcessLookupError):  # it may have died on its own
            os.killpg(server.pid, signal.SIGTERM)
        try:
            server.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(server.pid, signal.SIGKILL)
            server.wait(timeout=30)
    predictions = pd.DataFrame(answer["predictions"])
    labels = _labels(logged)
    expected = logged[[f"prob/{n}" for n in labels]].to_numpy(np.float64)[:3]
    np.testing.assert_allclose(predictions[labels].to_numpy(np.float64), expected, atol=TOL)
