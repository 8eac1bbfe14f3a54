"""SimOptions: the one options value from the head's config keys to the engine (issue 21 item 2)."""

from __future__ import annotations

import numpy as np
import pytest

from qcxr.models.heads import dqc_head
from qcxr.quantum import NoiseModel, SimOptions, expvals, make_ansatz
from qcxr.quantum.dispatch import engine

ANSATZ = make_ansatz("ry_cnot_ring", 4, 2)


def test_values_are_normalised_validated_and_hashable():
    o = SimOptions.from_keys(noise={"depolarizing": 1e-3, "readout": None}, noisy_encoding=False)
    assert o.noise == NoiseModel(depolarizing=1e-3, noisy_encoding=False)
    assert o.trajectories == 64 and o.noisy and o.stochastic
    assert hash(o) == hash(SimOptions(noise=NoiseModel(depolarizing=1e-3, noisy_encoding=False)))
    assert not SimOptions().noisy and SimOptions(method="trajectories").noisy
    with pytest.raises(ValueError, match="unknown method 'exact'"):
        SimOptions(method="exact")
    with pytest.raises(ValueError, match="trajectories=0 must be a positive integer"):
        SimOptions().replace(trajectories=0)  # replace validates again
    with pytest.raises(ValueError, match="max_bond"):
        SimOptions(max_bond=0)
    with pytest.raises(TypeError, match="pass the method as method="):
        engine.resolve_method(ANSATZ, 8, "float32", "mps")  # a method where options go
    with pytest.raises(TypeError, match="not both"):
        expvals(ANSATZ, np.zeros(ANSATZ.weight_shape), np.zeros((2, 4)), SimOptions(), remat=True)


def test_the_head_holds_one_value_that_the_engine_and_the_log_use():
    head = dqc_head(4, ANSATZ, method="auto", block_size=3, noise={"bit_flip": 0.0})
    assert head.sim == SimOptions(block_size=3)
    resolved = head.resolved(32)
    assert resolved.replace(method="auto") == head.sim and resolved.method == "statevector"
    assert resolved.method == engine.resolve_method(ANSATZ, 32, "float32", head.sim)
    rng = np.random.default_rng(0)
    w = rng.uniform(-1, 1, ANSATZ.weight_shape).astype(np.float32)
    x = rng.uniform(-1, 1, (5, 4)).astype(np.float32)
    # the options value and the same keys spelled out give the same numbers
    np.testing.assert_array_equal(
        expvals(ANSATZ, w, x, head.sim), expvals(ANSATZ, w, x, block_size=3, method="auto")
    )
