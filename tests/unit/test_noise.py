"""Noise models, trajectories and shots: statistics with fixed seeds and stated tolerances.

The exact method (density_matrix) is checked against PennyLane default.mixed in
tests/numerics/test_noise_vs_pennylane.py; here it is the reference for the Monte Carlo methods.
All in float64 on 2-3 qubits (tiny shapes, a few seconds each).
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from qcxr.quantum import MemoryBudgetError, SimOptions, expvals, make_ansatz, make_noise
from qcxr.quantum.dispatch import noisy
from qcxr.quantum.methods import shots
from qcxr.quantum.methods import trajectories as traj

NOISE = {"depolarizing": 0.05, "amplitude_damping": 0.05, "readout": 0.02}
# Pauli noise only: the trajectories' fast layered path (errors pushed through the CNOT rings).
PAULI = {"depolarizing": 0.1, "bit_flip": 0.05, "readout": 0.02}


def _setup(n=3, layers=2, batch=4, seed=0):
    a = make_ansatz("ry_cnot_ring", n, layers)
    rng = np.random.default_rng(seed)
    w = jnp.asarray(rng.normal(0.0, 2.0, size=a.weight_shape), jnp.float64)
    x = jnp.asarray(rng.uniform(-1.5, 1.5, size=(batch, n)), jnp.float64)
    return a, w, x


@pytest.mark.parametrize("noise", [NOISE, PAULI], ids=["general", "layered"])
def test_trajectories_converge_as_inverse_sqrt_t_with_unbiased_gradients(noise):
    # Fixed seed: 16 independent keys of T = 128 trajectories each (one compilation); their mean
    # is a T = 2048 estimate. Values: the RMS error over the 16 x 6 outputs at T = 128 over the
    # RMS error of the mean must be ~4 (accepted 2 to 8), and every error stays below 4 / sqrt(T)
    # (the per-trajectory values here have standard deviation < 1: 4 sigma). Gradients (pathwise
    # for fixed draws, see trajectories.py): the mean over the keys is within 5 standard errors
    # (their spread over the keys) + 1e-3 of the exact gradient.
    keys = jax.random.split(jax.random.PRNGKey(7), 16)
    t = 128
    with jax.enable_x64(True):
        a, w, x = _setup(n=3, layers=2, batch=2)
        assert traj.layered_applies(a.circuit(), make_noise(noise)) == (noise is PAULI)
        c = jnp.asarray(np.random.default_rng(1).normal(size=x.shape))

        def loss(w, k, method):
            v = expvals(a, w, x, noise=noise, method=method, trajectories=t, key=k)
            return jnp.sum(v * c), v

        (_, exact), g_exact = jax.value_and_grad(loss, has_aux=True)(w, None, "density_matrix")
        vg = jax.vmap(jax.value_and_grad(loss, has_aux=True), (None, 0, None))
        (_, vals), grads = jax.jit(vg, static_argnums=2)(w, keys, "trajectories")
    err = np.asarray(vals - exact)  # [16, B, n]
    err_mean = err.mean(0)
    assert np.abs(err).max() < 4 / np.sqrt(t)
    assert np.abs(err_mean).max() < 4 / np.sqrt(16 * t)
    ratio = np.sqrt(np.mean(err**2)) / np.sqrt(np.mean(err_mean**2))
    assert 2 < ratio < 8, ratio
    g = np.asarray(grads)
    sem = g.std(0, ddof=1) / np.sqrt(len(keys))
    assert np.all(np.abs(g.mean(0) - np.asarray(g_exact)) < 5 * sem + 1e-3)
    assert np.all(sem > 0)


@pytest.mark.slow
def test_trajectory_chunks_run_the_same_draws():
    with jax.enable_x64(True):
        a, w, x = _setup(n=2, layers=1, batch=2)
        c, model = a.circuit(), make_noise(NOISE)
        k = jax.random.PRNGKey(0)
        outs = [
            traj.simulate(c, model, w.reshape(-1), x, k, 8, chunk) for chunk in ("all", "state")
        ]
    np.testing.assert_allclose(outs[0], outs[1], atol=1e-12)


def _shot_stats(a, w, x, noise, n_shots, keys, method):
    f = jax.jit(
        jax.vmap(lambda k: expvals(a, w, x, noise=noise, method=method, shots=n_shots, key=k))
    )
    est = np.asarray(f(keys))
    return est.mean(0), est.var(0, ddof=1)


def _check_shots(shot_counts):
    noise = {"readout": 0.05}
    keys = jax.random.split(jax.random.PRNGKey(11), 400)
    with jax.enable_x64(True):
        a, w, x = _setup(n=3, layers=1, batch=2)
        exact = np.asarray(expvals(a, w, x, noise=noise))
        var = {}
        for n_shots in shot_counts:
            mean, var[n_shots] = _shot_stats(a, w, x, noise, n_shots, keys, "auto")
            theory = (1 - exact**2) / n_shots
            assert np.all(np.abs(mean - exact) < 4.5 * np.sqrt(theory / len(keys)))
            assert np.all(np.abs(var[n_shots] / theory - 1) < 0.25), var[n_shots] / theory
    return var


def test_shots_are_unbiased_with_variance_one_over_n():
    # 400 keys, readout error on. The mean within 4.5 standard errors of the exact value, the
    # empirical variance within 25% of (1 - <Z>^2) / N.
    _check_shots((256,))


@pytest.mark.slow
def test_shot_variance_ratio():
    # As above at N = 64 and N = 1024; variance ratio between 11 and 23 (16 expected).
    var = _check_shots((64, 1024))
    ratio = var[64] / var[1024]
    assert np.all((11 < ratio) & (ratio < 23)), ratio


@pytest.mark.slow
def test_shots_on_the_density_matrix_are_unbiased():
    noise = {"depolarizing": 0.1, "phase_damping": 0.1}
    keys = jax.random.split(jax.random.PRNGKey(5), 200)
    with jax.enable_x64(True):
        a, w, x = _setup(n=2, layers=1, batch=2)
        exact = np.asarray(expvals(a, w, x, noise=noise, method="density_matrix"))
        mean, _ = _shot_stats(a, w, x, noise, 256, keys, "density_matrix")
    sem = np.sqrt((1 - exact**2) / 256 / len(keys))
    assert np.all(np.abs(mean - exact) < 4.5 * sem)


def test_shots_sample_whole_bitstrings():
    # A Bell-like distribution (|00> or |11>): every shot has equal bits, so the two wires'
    # estimates are identical; a binomial per wire would make them differ.
    p = jnp.asarray([[0.3, 0.0, 0.0, 0.7]])
    z = shots.sample_z(p, 2, (0, 1), 101, jax.random.PRNGKey(0))
    assert float(z[0, 0]) == float(z[0, 1])
    z1 = shots.sample_z(p, 2, (1, 0), 101, jax.random.PRNGKey(0))
    np.testing.assert_allclose(z1, z)


def test_shot_gradients_are_unbiased_parameter_shift():
    # The custom_vjp backward: the parameter-shift rule with fresh shots per shifted circuit. Mean
    # over 100 keys of the gradient w.r.t. weights and inputs within 4.5 standard errors (the
    # empirical spread over keys) plus 1e-3 of the exact (density-matrix) gradient.
    noise = {"bit_flip": 0.05}
    keys = jax.random.split(jax.random.PRNGKey(2), 100)
    with jax.enable_x64(True):
        a, w, x = _setup(n=2, layers=1, batch=2)
        c = jnp.asarray([[1.0, -0.5], [0.3, 2.0]])

        def loss(w, x, k, n_shots):
            v = expvals(a, w, x, noise=noise, method="density_matrix", shots=n_shots, key=k)
            return jnp.sum(v * c)

        gw0, gx0 = jax.grad(loss, (0, 1))(w, x, None, None)
        g = jax.jit(jax.vmap(jax.grad(loss, (0, 1)), (None, None, 0, None)), static_argnums=3)
        gws, gxs = g(w, x, keys, 512)
    for est, exact in ((np.asarray(gws), np.asarray(gw0)), (np.asarray(gxs), np.asarray(gx0))):
        sem = est.std(0, ddof=1) / np.sqrt(len(keys))
        assert np.all(np.abs(est.mean(0) - exact) < 4.5 * sem + 1e-3)
        assert np.all(sem > 0)  # the estimates are random


def test_keys_none_is_fixed_and_keys_differ():
    with jax.enable_x64(True):
        a, w, x = _setup(n=2, layers=1, batch=2)
        kw = dict(noise={"depolarizing": 0.1}, method="trajectories", trajectories=4)
        v0 = expvals(a, w, x, **kw)
        v1 = expvals(a, w, x, key=jax.random.PRNGKey(noisy.DEFAULT_SEED), **kw)
        v2 = expvals(a, w, x, key=jax.random.PRNGKey(1), **kw)
    np.testing.assert_array_equal(v0, v1)
    assert np.abs(np.asarray(v0 - v2)).max() > 0


def test_zero_or_null_noise_is_the_ideal_fast_path():
    a, w, x = _setup(n=2, layers=1, batch=2)
    ideal = expvals(a, w, x)
    np.testing.assert_array_equal(expvals(a, w, x, noise={"depolarizing": 0.0}), ideal)
    np.testing.assert_array_equal(expvals(a, w, x, noise={"bit_flip": None}), ideal)
    assert not SimOptions.from_keys(noise={"bit_flip": 0, "readout": None}).noisy


def test_noisy_encoding_switch_and_auto_method():
    with jax.enable_x64(True):
        a, w, x = _setup(n=2, layers=1, batch=2)
        noise = {"amplitude_damping": 0.2}
        on = expvals(a, w, x, noise=noise)
        off = expvals(a, w, x, noise=noise, noisy_encoding=False)
        exact = expvals(a, w, x, noise=noise, method="density_matrix")
    assert np.abs(np.asarray(on - off)).max() > 1e-3
    np.testing.assert_array_equal(on, exact)  # auto at 2 qubits: the density matrix
    c, model = make_ansatz("ry_cnot_ring", 8).circuit(), make_noise({"depolarizing": 0.01})
    assert noisy.choose_method(c, model, "auto", 32, jnp.float32, 16, 2**34) == "trajectories"
    assert noisy.choose_method(c, model, "auto", 32, jnp.float32, 64, 2**34) == "density_matrix"
    assert noisy.choose_method(c, model, "auto", 32, jnp.float32, 64, 2**20) == "trajectories"


@pytest.mark.parametrize(
    "kwargs,match",
    [
        ({"noise": {"depolarising": 0.1}}, "unknown noise channel"),
        ({"noise": {"bit_flip": 1.5}}, r"probability in \[0, 1\]"),
        ({"noise": {"bit_flip": "a lot"}}, "must be a number"),
        ({"noise": {"bit_flip": 0.1}, "method": "statevector"}, "cannot apply gate noise"),
        ({"noise": {"bit_flip": 0.1}, "method": "split"}, "ideal circuits"),
        ({"shots": 0}, "positive integer"),
        ({"noise": {"bit_flip": 0.1}, "trajectories": 0}, "positive integer"),
    ],
)
def test_bad_input_gets_a_clear_error(kwargs, match):
    a, w, x = _setup(n=2, layers=1, batch=1)
    with pytest.raises(ValueError, match=match):
        expvals(a, w, x, **kwargs)


def test_memory_guard_names_the_fix():
    a, w, x = _setup(n=3, layers=1, batch=2)
    with pytest.raises(MemoryBudgetError, match="method='trajectories'"):
        expvals(a, w, x, noise={"bit_flip": 0.1}, method="density_matrix", memory_budget=1e3)


def test_shots_refuse_tied_weights():
    from qcxr.quantum.representation.circuit import Circuit, expval_z, op, weight

    c = Circuit(1, (op("ry", 0, angles=weight(0)), op("ry", 0, angles=weight(0))), expval_z([0]))
    with pytest.raises(ValueError, match="shared"):
        jax.grad(lambda w: jnp.sum(expvals(c, w, jnp.zeros((1, 1)), shots=10)))(jnp.ones(1))
