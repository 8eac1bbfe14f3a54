"""The native engine against PennyLane (default.qubit, float64) for every ansatz of the library.

Reference: PennyLane's own circuit (gate by gate for the paper's ansatz, its templates for
basic_entangler and strongly_entangling), run in float64 with backprop (autograd interface: no
compilation, so the reference is cheap). Tolerances, absolute, against that float64 reference, on
fresh random weights and inputs (never zeros), values and gradients w.r.t. weights and inputs:
1e-5 for our float32 run, 1e-10 for our float64 run.

Every engine path is checked: the statevector for the whole batch at once (autodiff through the
batched state) and one sample at a time (chunk_size=1: the adjoint method of
statevector._adjoint_circuit), and the split method (methods/split.py) wherever it applies (at
most split.MAX_TERMS terms).

Coverage: every ansatz x n = 1..10 x layers = 1..4. The inner loop (not slow) runs a covering
design: for each ansatz every n and every layer count appears; the full product runs as slow.
"""

import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pennylane as qml
import pytest
from pennylane import numpy as pnp

from qcxr.quantum import ANSATZE, ENCODINGS, compile_ansatz, expvals, make_ansatz, reference
from qcxr.quantum.methods import split

TOL = {jnp.float32: 1e-5, jnp.float64: 1e-10}


def _draw(a, batch, seed):
    rng = np.random.default_rng(seed)
    w = rng.normal(0.0, 2.0, size=a.weight_shape)
    x = rng.uniform(-np.pi / 2, np.pi / 2, size=(batch, a.num_qubits))
    c = rng.normal(size=(batch, a.num_qubits))  # a random read-out: every output's gradient counts
    return w, x, c


def _reference(a, w, x, c):
    circuit = reference.qnode(a, "pennylane", "autograd")

    # One sample at a time: PennyLane's broadcasting under autograd fails from ~14 wires.
    def loss(w, x, c):
        return pnp.sum(circuit(w, x) * c)

    vals, gws, gxs = [], [], []
    for xi, ci in zip(x, c, strict=True):
        wp, xp = pnp.array(w, requires_grad=True), pnp.array(xi, requires_grad=True)
        vals.append(np.asarray(circuit(wp, xp)))
        gw, gx = qml.grad(loss, argnums=[0, 1])(wp, xp, ci)
        gws.append(np.asarray(gw))
        gxs.append(np.asarray(gx))
    return np.stack(vals), [np.sum(gws, axis=0), np.stack(gxs)]


def _native(a, w, x, c, dtype, **opts):
    with jax.enable_x64(dtype == jnp.float64):
        args = [jnp.asarray(v, dtype) for v in (w, x, c)]

        def loss(w, x, c):
            val = expvals(a, w, x, **opts)
            return jnp.sum(val * c), val

        # One compilation per case and dtype: values come out as the auxiliary output.
        (_, val), grads = jax.jit(jax.value_and_grad(loss, argnums=(0, 1), has_aux=True))(*args)
        assert val.dtype == dtype and all(g.dtype == dtype for g in grads)
        return np.asarray(val), [np.asarray(g) for g in grads]


def _check(name, n, layers, dtypes=(jnp.float32, jnp.float64), block_size=3, adjoint=None):
    a = make_ansatz(name, n, layers)
    w, x, c = _draw(a, batch=3, seed=1000 * n + 10 * layers + len(name))
    ref_val, ref_grads = _reference(a, w, x, c)
    # Every path: the statevector for the whole batch (autodiff) and one sample at a time
    # (adjoint, in the dtypes `adjoint` names; default: all), and the split method where it
    # applies.
    adjoint = dtypes if adjoint is None else adjoint
    sv = "statevector"
    cases = [(d, None, sv) for d in dtypes] + [(d, 1, sv) for d in adjoint]
    if split.split_terms(compile_ansatz(a)) <= split.MAX_TERMS:
        cases += [(d, None, "split") for d in dtypes]
    for dtype, chunk, method in cases:
        val, grads = _native(
            a, w, x, c, dtype, block_size=block_size, chunk_size=chunk, method=method
        )
        np.testing.assert_allclose(val, ref_val, atol=TOL[dtype], rtol=0)
        for g, rg in zip(grads, ref_grads, strict=True):
            np.testing.assert_allclose(g, rg, atol=TOL[dtype], rtol=0)


# Covering design: for each ansatz, n = 1..10 with the layer count cycling 1..4 (and a second
# pass shifted by two), so every n and every layer count is exercised for every ansatz; the paper's
# ansatz runs the full product. The inner loop keeps two small real cases (ring and separable).
COVER = {(a, n, (n + s) % 4 + 1) for a in ANSATZE for n in range(1, 11) for s in (0, 2)}
PAPER = set(itertools.product(["ry_cnot_ring"], range(1, 11), range(1, 5)))
FAST = [(a, 3, 2) for a in ("ry_cnot_ring", "ry_separable")]  # the rest run as slow
SLOW = sorted((COVER | PAPER) - set(FAST))


@pytest.mark.parametrize("name,n,layers", FAST)
def test_values_and_gradients_match_pennylane(name, n, layers):
    _check(name, n, layers)


@pytest.mark.slow
@pytest.mark.parametrize("name,n,layers", SLOW)
def test_values_and_gradients_match_pennylane_full(name, n, layers):
    _check(name, n, layers, adjoint=(jnp.float64,))


@pytest.mark.parametrize("encoding", ENCODINGS)
def test_encodings_match_pennylane(encoding):
    a = make_ansatz("ry_cnot_ring", 4, 2, encoding=encoding)
    w, x, c = _draw(a, batch=2, seed=7)
    ref_val, ref_grads = _reference(a, w, x, c)
    for chunk, method in ((None, "statevector"), (1, "statevector"), (None, "split")):
        val, grads = _native(a, w, x, c, jnp.float64, chunk_size=chunk, method=method)
        np.testing.assert_allclose(val, ref_val, atol=1e-10, rtol=0)
        for g, rg in zip(grads, ref_grads, strict=True):
            np.testing.assert_allclose(g, rg, atol=1e-10, rtol=0)


@pytest.mark.slow
@pytest.mark.parametrize("name", ["ry_cnot_ring", "strongly_entangling"])  # real and complex
def test_block_size_remat_and_chunking_do_not_change_results(name):
    a = make_ansatz(name, 7, 3)
    w, x, c = _draw(a, batch=5, seed=3)
    sv = {"method": "statevector"}
    base_val, base_grads = _native(a, w, x, c, jnp.float64, block_size=7, chunk_size=None, **sv)
    for opts in (
        {"block_size": 2, "remat": True, **sv},
        {"block_size": 4, "chunk_size": 2, **sv},
        {"block_size": 3, "chunk_size": 1, **sv},
        {"block_size": 5, "chunk_size": 1, "remat": True, **sv},
        {"block_size": 2, "method": "split"},
        {"block_size": 5, "method": "split"},
    ):
        val, grads = _native(a, w, x, c, jnp.float64, **opts)
        np.testing.assert_allclose(val, base_val, atol=1e-12, rtol=0)
        for g, bg in zip(grads, base_grads, strict=True):
            np.testing.assert_allclose(g, bg, atol=1e-12, rtol=0)


@pytest.mark.slow
def test_jax_interface_reference_agrees_with_autograd_reference():
    # The `simulator=pennylane` path runs the JAX-interface QNode: check it against the same
    # circuit through autograd, values and gradients.
    a = make_ansatz("strongly_entangling", 3, 2)
    w, x, c = _draw(a, batch=2, seed=5)
    ref_val, ref_grads = _reference(a, w, x, c)
    with jax.enable_x64(True):
        wj, xj, cj = (jnp.asarray(v) for v in (w, x, c))
        val = reference.expvals(a, wj, xj)
        grads = jax.grad(lambda w, x: jnp.sum(reference.expvals(a, w, x) * cj), argnums=(0, 1))(
            wj, xj
        )
    np.testing.assert_allclose(val, ref_val, atol=1e-10, rtol=0)
    for g, rg in zip(grads, ref_grads, strict=True):
        np.testing.assert_allclose(g, rg, atol=1e-10, rtol=0)


@pytest.mark.slow
def test_float32_at_14_qubits_against_float64_reference():
    # PennyLane's own float32 carries ~1e-5 rounding at 14 qubits; ours stays within 1e-5 of the
    # float64 reference there too.
    _check("ry_cnot_ring", 14, 3, dtypes=(jnp.float32,), block_size=5)
