"""The distributed QCNN (qcxr.quantum.cutting.qcnn) and the wire cut (cutting.py) against PennyLane.

References, all PennyLane default.qubit in float64 with backprop (autograd), built from the same
circuit representation (reference.circuit_qnode), values and gradients w.r.t. the weights and the
inputs, on random weights and inputs:
- the joined 8-qubit circuit (what the cut reconstructs), and the paper's uncut comparison circuit;
- the paper's code path: the 9 fragment QNodes, one sample at a time, recombined in NumPy.
Tolerances, absolute: 1e-5 (our float32) and 1e-10 (our float64) against PennyLane; fragments vs
exact inside our engine: 1e-6 (float32) and 1e-12 (float64).

The paper's back fragment uses the cut wire only as a control and measures it in Z, where the Y
terms of the reconstruction cancel; a variant in which the cut wire is a rotated target checks the
Y preparation/coefficient pairing (swapping it, as the published code does, changes the result).
"""

import jax
import jax.numpy as jnp
import numpy as np
import pennylane as qml
import pytest
from pennylane import numpy as pnp

from qcxr.quantum import (
    Circuit,
    WireCut,
    cut_probs,
    joined_circuit,
    qcnn_circuit,
    qcnn_cut,
    qcnn_probs,
    reference,
)
from qcxr.quantum.cutting.qcnn import conv_pair, encode
from qcxr.quantum.cutting.wirecut import back_circuits, coefficients, front_circuits
from qcxr.quantum.methods.statevector import run_circuit
from qcxr.quantum.representation.circuit import op, probs, weight

TOL_PL = {jnp.float32: 1e-5, jnp.float64: 1e-10}
TOL_CUT = {jnp.float32: 1e-6, jnp.float64: 1e-12}


def _draw(num_weights, batch=3, seed=0, outputs=32):
    rng = np.random.default_rng(seed)
    w = rng.normal(0.0, 2.0, num_weights)
    x = rng.normal(0.0, 1.5, (batch, 8))
    c = rng.normal(size=(batch, outputs))
    return w, x, c


def _pl_per_sample(fn, w, x, c):
    """Values and (sum over samples of d/dw, per-sample d/dx) of sum(fn(w, x_b) * c_b)."""
    vals, gws, gxs = [], [], []
    for xi, ci in zip(x, c, strict=True):
        wp, xp = pnp.array(w, requires_grad=True), pnp.array(xi, requires_grad=True)
        vals.append(np.asarray(fn(wp, xp)))
        gw, gx = qml.grad(lambda w, x, ci=ci: pnp.sum(fn(w, x) * ci), argnums=[0, 1])(wp, xp)
        gws.append(np.asarray(gw))
        gxs.append(np.asarray(gx))
    return np.stack(vals), [np.sum(gws, axis=0), np.stack(gxs)]


def _pl_fragments(cut):
    """The paper's code path in PennyLane: 9 fragment QNodes, recombined (correct Y pairing)."""
    fronts = [reference.circuit_qnode(c) for c in front_circuits(cut)]
    backs = [reference.circuit_qnode(c) for c in back_circuits(cut)]

    def fn(w, x):
        e = [f(w, x) for f in fronts]
        z, xx, y = (p[0] - p[1] for p in e)
        coef = [(1 + z) / 2, (1 - z) / 2, xx / 2, -xx / 2, y / 2, -y / 2]
        return sum(cj * b(w, x) for cj, b in zip(coef, backs, strict=True))

    return fn


def _ours(fn, w, x, c, dtype):
    with jax.enable_x64(dtype == jnp.float64):
        args = [jnp.asarray(v, dtype) for v in (w, x, c)]

        def loss(w, x, c):
            val = fn(w, x)
            return jnp.sum(val * c), val

        (_, val), grads = jax.jit(jax.value_and_grad(loss, argnums=(0, 1), has_aux=True))(*args)
        assert val.dtype == dtype and all(g.dtype == dtype for g in grads)
        return np.asarray(val), [np.asarray(g) for g in grads]


def _assert_close(got, want, tol):
    (val, grads), (rval, rgrads) = got, want
    np.testing.assert_allclose(val, rval, atol=tol, rtol=0)
    for g, rg in zip(grads, rgrads, strict=True):
        np.testing.assert_allclose(g, rg, atol=tol, rtol=0)


@pytest.mark.parametrize("dtype", [jnp.float32, jnp.float64])
def test_fragments_equal_exact_in_values_and_gradients(dtype):
    w, x, c = _draw(35, batch=5, seed=1)
    frag = _ours(lambda w, x: qcnn_probs(w, x, "fragments"), w, x, c, dtype)
    exact = _ours(lambda w, x: qcnn_probs(w, x, "exact"), w, x, c, dtype)
    _assert_close(frag, exact, TOL_CUT[dtype])
    np.testing.assert_allclose(frag[0].sum(axis=1), 1.0, atol=TOL_CUT[dtype])


def test_fragments_match_the_joined_circuit_in_pennylane():
    w, x, c = _draw(35, batch=2, seed=2)
    ref = _pl_per_sample(reference.circuit_qnode(qcnn_circuit("exact")), w, x, c)
    got = _ours(lambda w, x: qcnn_probs(w, x, "fragments"), w, x, c, jnp.float64)
    _assert_close(got, ref, TOL_PL[jnp.float64])


@pytest.mark.slow
def test_exact_and_fragments_match_the_joined_circuit_in_pennylane_both_dtypes():
    w, x, c = _draw(35, seed=2)
    ref = _pl_per_sample(reference.circuit_qnode(qcnn_circuit("exact")), w, x, c)
    for mode in ("exact", "fragments"):
        for dtype in (jnp.float32, jnp.float64):
            got = _ours(lambda w, x, mode=mode: qcnn_probs(w, x, mode), w, x, c, dtype)
            _assert_close(got, ref, TOL_PL[dtype])


@pytest.mark.slow
def test_fragments_match_the_papers_nine_fragment_qnodes():
    w, x, c = _draw(35, seed=3)
    ref = _pl_per_sample(_pl_fragments(qcnn_cut()), w, x, c)
    got = _ours(lambda w, x: qcnn_probs(w, x, "fragments"), w, x, c, jnp.float64)
    _assert_close(got, ref, TOL_PL[jnp.float64])


@pytest.mark.slow
def test_uncut_comparison_circuit_matches_pennylane():
    w, x, c = _draw(45, seed=4)
    circuit = qcnn_circuit("none")
    assert circuit.num_weights == 45 and circuit.num_qubits == 8
    ref = _pl_per_sample(reference.circuit_qnode(circuit), w, x, c)
    for dtype in (jnp.float32, jnp.float64):
        got = _ours(lambda w, x: qcnn_probs(w, x, "none"), w, x, c, dtype)
        _assert_close(got, ref, TOL_PL[dtype])


@pytest.mark.slow
def test_the_cut_circuit_is_the_issue_s_8_qubit_circuit():
    # encode 0-3 -> front pairs -> H.RY(x3) on wire 3 -> encode 4-7 -> back pairs, built directly.
    ops = encode(range(4), range(4))
    for k, (a, b) in enumerate(((0, 1), (1, 2), (2, 3))):
        ops += conv_pair(a, b, 5 * k)
    ops += encode([3], [3]) + encode(range(4, 8), range(4, 8))
    for k in range(4):
        ops += conv_pair(3 + k, 4 + k, 15 + 5 * k)
    direct = Circuit(8, ops, probs(range(3, 8)))
    w, x, _ = _draw(35, seed=5)
    with jax.enable_x64(True):
        np.testing.assert_allclose(
            run_circuit(direct, jnp.asarray(w), jnp.asarray(x)),
            qcnn_probs(jnp.asarray(w), jnp.asarray(x), "exact"),
            atol=1e-13,
        )


def _y_variant() -> WireCut:
    """The QCNN cut with the cut wire also a rotated target in the back fragment (Y terms count)."""
    base = qcnn_cut()
    back_ops = (op("rx", 0, angles=weight(35)), *conv_pair(1, 0, 36), *base.back.ops)
    return WireCut(base.front, 3, Circuit(5, back_ops, probs(range(5))))


def _swapped_y(cut, w, x):
    """The published code's reconstruction: +<Y>/2 paired with |-i>, -<Y>/2 with |+i>."""
    e = [run_circuit(c, w, x) for c in front_circuits(cut)]
    coef = coefficients(jnp.stack([p[:, 0] - p[:, 1] for p in e], axis=1))
    coef = coef[:, jnp.array([0, 1, 2, 3, 5, 4])]
    backs = [run_circuit(c, w, x) for c in back_circuits(cut)]
    return sum(coef[:, j : j + 1] * b for j, b in enumerate(backs))


@pytest.mark.parametrize(
    "dtypes", [(jnp.float64,), pytest.param((jnp.float32,), marks=pytest.mark.slow)]
)
def test_y_terms_matter_when_the_cut_wire_is_a_target(dtypes):
    cut = _y_variant()
    w, x, c = _draw(41, batch=2, seed=6)
    ref = _pl_per_sample(reference.circuit_qnode(joined_circuit(cut)), w, x, c)
    for dtype in dtypes:
        got = _ours(lambda w, x: cut_probs(cut, w, x), w, x, c, dtype)
        _assert_close(got, ref, TOL_PL[dtype])
    with jax.enable_x64(True):
        wj, xj = jnp.asarray(w), jnp.asarray(x)
        swapped = np.asarray(_swapped_y(cut, wj, xj))
        assert np.abs(swapped - ref[0]).max() > 1e-2  # the published pairing is wrong here
        # ... and harmless on the paper's circuit, where the cut wire is only a control.
        paper = np.asarray(_swapped_y(qcnn_cut(), wj[:35], xj))
        np.testing.assert_allclose(paper, qcnn_probs(wj[:35], xj, "exact"), atol=1e-12)


@pytest.mark.slow
def test_one_parameter_per_angle_gradients_sum_over_fragment_runs():
    # Weight 14 (front pair (2,3)'s last CRZ) appears in all three front runs; weight 15 in all six
    # back runs. Their gradients are the joined circuit's, i.e. summed over the runs that use them.
    w, x, c = _draw(35, seed=7)
    with jax.enable_x64(True):
        wj, xj, cj = (jnp.asarray(v) for v in (w, x, c))
        g_frag = jax.grad(lambda w: jnp.sum(qcnn_probs(w, xj, "fragments") * cj))(wj)
        g_exact = jax.grad(lambda w: jnp.sum(qcnn_probs(w, xj, "exact") * cj))(wj)
    assert np.all(np.abs(np.asarray(g_exact)[[14, 15]]) > 1e-3)
    np.testing.assert_allclose(g_frag, g_exact, atol=1e-12)


@pytest.mark.slow
def test_shots_estimate_is_unbiased_and_shrinks_as_one_over_root_shots():
    w, x, _ = _draw(35, batch=4, seed=8)
    with jax.enable_x64(True):
        wj, xj = jnp.asarray(w), jnp.asarray(x)
        exact = np.asarray(qcnn_probs(wj, xj, "exact"))
        errs = {}
        for shots in (100, 10_000):
            runs = [
                np.asarray(qcnn_probs(wj, xj, "fragments", shots=shots, key=jax.random.key(s)))
                for s in range(20)
            ]
            errs[shots] = np.sqrt(np.mean((np.stack(runs) - exact) ** 2))
            if shots == 100:
                runs_at_100 = runs
            # The mean of 20 estimates is 20x closer (in variance) than one: unbiased.
            mean_err = np.sqrt(np.mean((np.mean(runs, axis=0) - exact) ** 2))
            assert mean_err < 0.5 * errs[shots]
        again = qcnn_probs(wj, xj, "fragments", shots=100, key=jax.random.key(0))
    ratio = errs[100] / errs[10_000]
    assert 6 < ratio < 16, ratio  # sqrt(10_000 / 100) = 10
    np.testing.assert_array_equal(again, runs_at_100[0])  # the key fixes the samples


def test_bad_qcnn_arguments_fail_clearly():
    w, x = jnp.zeros(35), jnp.zeros((2, 8))
    with pytest.raises(ValueError, match="unknown QCNN mode 'cut'"):
        qcnn_probs(w, x, "cut")
    with pytest.raises(ValueError, match=r"weights f\[45\]"):
        qcnn_probs(w, x, "none")
    with pytest.raises(ValueError, match=r"x f\[B, 8\], got \(35,\) and \(2, 7\)"):
        qcnn_probs(w, jnp.zeros((2, 7)))
    with pytest.raises(ValueError, match="needs a PRNG key"):
        qcnn_probs(w, x, shots=10)
    with pytest.raises(ValueError, match="shots apply to mode 'fragments'"):
        qcnn_probs(w, x, "exact", shots=10, key=jax.random.key(0))
