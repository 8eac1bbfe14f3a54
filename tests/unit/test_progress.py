"""trainer.progress (issue 23, item 6): `auto` draws bars only on a terminal; in a file, a SLURM
log or CI each epoch is one log line and stderr holds no carriage-return bar fragments; `true` and
`false` force it. The epoch loop runs for real (a logistic regression on fixed batches, Orbax
checkpoints in tmp_path)."""

from __future__ import annotations

import io
import logging
import re

import jax.numpy as jnp
import numpy as np
import optax
import pytest

from qcxr.tracking.base import NullTracker
from qcxr.train import loop, steps
from qcxr.train.checkpoint import Checkpoints

B, D, L = 4, 6, 2
EPOCHS = 3


class FixedBatches:
    """Two train batches and one val batch of random features (the loop's source protocol)."""

    def __init__(self):
        rng = np.random.default_rng(0)
        self.data = {
            split: [
                {
                    "image": rng.normal(size=(B, D)).astype(np.float32),
                    "labels": np.array([[1, 0], [0, 1], [1, 1], [0, 0]], bool),
                    "mask": np.ones(B, bool),
                    "index": np.arange(B) + B * i,
                }
                for i in range(n)
            ]
            for split, n in (("train", 2), ("val", 1))
        }

    def num_batches(self, split):
        return len(self.data[split])

    def batches(self, split, epoch):
        yield from self.data[split]


class Terminal(io.StringIO):
    def isatty(self):
        return True


def _fit(tmp_path, progress: bool):
    def apply(params, batch, *args, **kwargs):
        return batch["image"] @ params["w"]

    params = {"w": jnp.zeros((D, L))}
    tx = optax.sgd(0.1)
    checkpoints = Checkpoints(tmp_path / "checkpoints")
    try:
        return loop.fit(
            state=steps.init_state(params, tx),
            train_step=steps.make_train_step(apply, tx),
            eval_step=steps.make_eval_step(apply),
            source=FixedBatches(),
            label_names=["a", "b"],
            tracker=NullTracker(),
            checkpoints=checkpoints,
            max_epochs=EPOCHS,
            patience=EPOCHS,
            progress=progress,
        )
    finally:
        checkpoints.close()


def test_auto_follows_the_stream_and_true_false_force_it():
    assert loop.show_progress("auto", Terminal()) is True
    assert loop.show_progress("auto", io.StringIO()) is False
    for forced, want in ((True, True), ("true", True), ("False", False), (False, False)):
        assert loop.show_progress(forced, io.StringIO()) is want
        assert loop.show_progress(forced, Terminal()) is want
    with pytest.raises(ValueError, match="auto .*true or false"):
        loop.show_progress("sometimes")


def test_captured_stream_gets_one_line_per_epoch_and_no_bar_fragments(tmp_path, capsys, caplog):
    progress = loop.show_progress("auto")  # pytest's captured stderr is not a terminal
    assert progress is False
    with caplog.at_level(logging.INFO, logger="qcxr.train.loop"):
        _fit(tmp_path, progress)
    err = capsys.readouterr().err
    assert "\r" not in err and "it/s" not in err
    lines = [r.getMessage() for r in caplog.records if r.getMessage().startswith("epoch ")]
    assert len(lines) == EPOCHS
    for epoch, line in enumerate(lines, 1):  # epoch, train loss, val loss, val metric, time
        number = r"-?\d+\.\d+"
        pattern = rf"epoch {epoch}: train loss {number}, val loss {number}, val AUROC {number}, "
        assert re.fullmatch(pattern + rf"{number} s( \(best\))?", line), line


def test_forced_bars_are_drawn_on_a_captured_stream(tmp_path, capsys):
    _fit(tmp_path, loop.show_progress("true"))
    assert "\r" in capsys.readouterr().err  # what `auto` keeps out of log files
