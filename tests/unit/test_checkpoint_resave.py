"""A run killed between an epoch's best and latest checkpoint resumes and saves that best again."""

import jax.numpy as jnp
import numpy as np

from qcxr.train.checkpoint import Checkpoints


def test_best_of_an_epoch_saved_again_after_a_kill(tmp_path):
    first = {"w": jnp.zeros(3)}
    ckpt = Checkpoints(tmp_path / "checkpoints")
    ckpt.save_latest(1, first, {"epoch": 1})
    ckpt.save_best(2, first, {"epoch": 2})  # killed here: no latest for epoch 2
    ckpt.close()

    resumed = Checkpoints(tmp_path / "checkpoints")
    state, meta = resumed.restore_latest(first)
    assert meta["epoch"] == 1
    again = {"w": jnp.ones(3)}
    resumed.save_best(2, again, {"epoch": 2})  # epoch 2 re-run: its best saved again
    resumed.save_latest(2, again, {"epoch": 2})
    best, best_meta = resumed.restore_best(first)
    np.testing.assert_array_equal(best["w"], np.ones(3))
    assert best_meta["epoch"] == 2
    resumed.close()
