"""A training log written to a file (`make demo > log`, a SLURM log, CI) reads well (issue 23,
item 6): with the default `trainer.progress=auto` and stdout and stderr going to a file, it holds
one line per epoch (epoch, train loss, val loss, val AUROC, seconds) and no carriage-return bar
fragments, MLflow's own artifact bars included (the run logs its model). Integration tier: a real
`python train.py` in a subprocess, tiny shapes, three epochs (about 30 s on 2 cores)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

from tests.train_helpers import TINY

ROOT = Path(__file__).resolve().parents[1]
EPOCHS = 3


def test_log_file_has_one_line_per_epoch_and_no_bar_fragments(tmp_path):
    env = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"}
    env["PYTHONPATH"] = f"{ROOT / 'src'}{os.pathsep}{ROOT}"
    cmd = [
        sys.executable,
        str(ROOT / "train.py"),
        f"paths.cache_dir={tmp_path / 'cache'}",
        f"tracker.tracking_uri=sqlite:///{tmp_path / 'store' / 'mlflow.db'}",
        *(o for o in TINY if not o.startswith("trainer.progress=")),  # the default: auto
        f"trainer.max_epochs={EPOCHS}",
        f"trainer.patience={EPOCHS}",
    ]
    log = tmp_path / "log"
    with open(log, "w") as out:
        done = subprocess.run(
            cmd, cwd=tmp_path, env=env, stdout=out, stderr=subprocess.STDOUT, timeout=900
        )
    text = log.read_text()
    assert done.returncode == 0, text[-3000:]
    assert "\r" not in text and "it/s]" not in text, text[-3000:]
    number = r"-?\d+\.\d+"
    epoch_line = re.compile(
        rf"epoch (\d+): train loss {number}, val loss {number}, val AUROC {number}, {number} s"
    )
    epochs = [int(m.group(1)) for m in epoch_line.finditer(text)]
    assert epochs == list(range(1, EPOCHS + 1)), text[-3000:]
    assert "logged in" in text  # the model was logged, without bars
