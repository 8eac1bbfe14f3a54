"""Circuits of the representation (quantum/representation) against PennyLane, built from the same
data.

Reference: reference.circuit_qnode turns a Circuit into PennyLane gates one for one and runs it on
default.qubit in float64 with backprop (autograd interface). Our general statevector path
(statevector.run_circuit through qcxr.quantum.run) must agree, values and gradients w.r.t. the
flat weights and the inputs, to 1e-5 (float32) and 1e-10 (float64), absolute, on random circuits
that use every gate of circuit.GATES with weight, input and constant angles, measured as <Z> and
as probabilities of a wire subset in a shuffled order.

The library builders are checked too: Ansatz.circuit() run by PennyLane equals the independent
template-based reference (reference.qnode), and a Circuit equal to a library build runs on the fast
paths with the same numbers as the general path.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pennylane as qml
import pytest
from pennylane import numpy as pnp

from qcxr.quantum import ANSATZE, Circuit, expvals, make_ansatz, match_library, reference, run
from qcxr.quantum.representation.circuit import GATES, const, expval_z, inp, op, probs, weight

TOL = {jnp.float32: 1e-5, jnp.float64: 1e-10}


def random_circuit(n: int, num_ops: int, seed: int, measure: str) -> Circuit:
    """A random circuit: an H + RY(x) encoding, then every gate of GATES in random order."""
    rng = np.random.default_rng(seed)
    ops = [op("h", w) for w in range(n)] + [op("ry", w, angles=inp(w)) for w in range(n)]
    names = sorted(GATES) * (1 + num_ops // len(GATES))
    rng.shuffle(names)
    next_weight = 0
    for g in names[:num_ops]:
        k, p = GATES[g]
        wires = tuple(int(w) for w in rng.choice(n, size=k, replace=False))
        angles = []
        for _ in range(p):
            kind = rng.integers(3)
            if kind == 0:
                angles.append(weight(next_weight))
                next_weight += 1
            elif kind == 1:
                angles.append(inp(int(rng.integers(n))))
            else:
                angles.append(const(float(rng.normal())))
        ops.append(op(g, *wires, angles=tuple(angles)))
    ops.append(op("rx", 0, angles=weight(next_weight)))  # at least one weight, every circuit
    wires = [int(w) for w in rng.permutation(n)]
    m = probs(wires[: max(1, n - 1)]) if measure == "probs" else expval_z(wires)
    return Circuit(n, tuple(ops), m)


def _reference(circuit, w, x, c):
    f = reference.circuit_qnode(circuit)
    vals, gws, gxs = [], [], []
    for xi, ci in zip(x, c, strict=True):
        wp, xp = pnp.array(w, requires_grad=True), pnp.array(xi, requires_grad=True)
        vals.append(np.asarray(f(wp, xp)))
        gw, gx = qml.grad(lambda w, x, ci=ci: pnp.sum(f(w, x) * ci), argnums=[0, 1])(wp, xp)
        gws.append(np.asarray(gw))
        gxs.append(np.asarray(gx))
    return np.stack(vals), [np.sum(gws, axis=0), np.stack(gxs)]


def _native(circuit, w, x, c, dtype):
    with jax.enable_x64(dtype == jnp.float64):
        args = [jnp.asarray(v, dtype) for v in (w, x, c)]

        def loss(w, x, c):
            val = run(circuit, w, x)
            return jnp.sum(val * c), val

        (_, val), grads = jax.jit(jax.value_and_grad(loss, argnums=(0, 1), has_aux=True))(*args)
        assert val.dtype == dtype
        return np.asarray(val), [np.asarray(g) for g in grads]


def _check(circuit, batch=3, seed=0):
    rng = np.random.default_rng(seed)
    w = rng.normal(0.0, 2.0, circuit.num_weights)
    x = rng.uniform(-np.pi / 2, np.pi / 2, (batch, circuit.num_qubits))
    c = rng.normal(size=(batch, circuit.output_size))
    ref_val, ref_grads = _reference(circuit, w, x, c)
    for dtype in (jnp.float32, jnp.float64):
        val, grads = _native(circuit, w, x, c, dtype)
        np.testing.assert_allclose(val, ref_val, atol=TOL[dtype], rtol=0)
        for g, rg in zip(grads, ref_grads, strict=True):
            np.testing.assert_allclose(g, rg, atol=TOL[dtype], rtol=0)


@pytest.mark.parametrize("measure", ["expval_z", "probs"])
@pytest.mark.parametrize("n,num_ops,seed", [(3, 20, 1), (4, 34, 2)])
def test_random_circuits_match_pennylane(n, num_ops, seed, measure):
    _check(random_circuit(n, num_ops, seed, measure), seed=seed)


@pytest.mark.slow
@pytest.mark.parametrize("seed", range(6))
def test_random_circuits_match_pennylane_more(seed):
    n = 2 + seed % 5
    _check(random_circuit(n, 40, 100 + seed, ("expval_z", "probs")[seed % 2]), seed=seed)


def test_one_wire_and_product_only_circuits_match_pennylane():
    # No two-qubit gate: the state is never built from an entangler (product-state path only).
    ops = (
        op("h", 0),
        op("ry", 0, angles=inp(0)),
        op("rot", 0, angles=(weight(0), inp(0), const(0.3))),
        op("s", 0),
        op("rx", 1, angles=weight(1)),
        op("y", 1),
    )
    _check(Circuit(2, ops, probs([1, 0])))
    _check(Circuit(1, ops[:4], expval_z([0])))


@pytest.mark.parametrize("name", sorted(ANSATZE))
def test_library_builds_match_the_template_reference(name):
    # Ansatz.circuit() through PennyLane gate for gate == PennyLane's own templates.
    a = make_ansatz(name, 4, 2)
    rng = np.random.default_rng(3)
    w = rng.normal(0.0, 2.0, a.weight_shape)
    x = rng.uniform(-1.5, 1.5, 4)
    from_templates = reference.qnode(a, "pennylane", "autograd")(pnp.array(w), pnp.array(x))
    from_circuit = reference.circuit_qnode(a.circuit())(pnp.array(w.reshape(-1)), pnp.array(x))
    np.testing.assert_allclose(from_circuit, from_templates, atol=1e-12, rtol=0)


@pytest.mark.parametrize("name", sorted(ANSATZE))
def test_library_shaped_circuits_take_the_fast_path_with_equal_results(name):
    a = make_ansatz(name, 5, 2, encoding="rx" if name == "basic_entangler" else "h_ry")
    circuit = a.circuit()
    assert match_library(circuit) == make_ansatz(name, 5, 2, encoding=a.encoding) or (
        name == "ry_separable" and match_library(circuit) is not None
    )
    w = a.init_weights(jax.random.key(0))
    x = jax.random.uniform(jax.random.key(1), (3, 5), minval=-1.5, maxval=1.5)
    with jax.enable_x64(True):
        w64, x64 = w.astype(jnp.float64), x.astype(jnp.float64)
        fast = expvals(circuit, w64.reshape(-1), x64)
        general = run(circuit, w64.reshape(-1), x64)  # the general path runs library shapes too
        library = expvals(a, w64, x64)
    np.testing.assert_allclose(fast, library, atol=1e-12, rtol=0)
    np.testing.assert_allclose(general, library, atol=1e-12, rtol=0)


def test_a_changed_library_circuit_is_not_matched():
    c = make_ansatz("ry_cnot_ring", 4, 2).circuit()
    assert match_library(c) is not None
    swapped = c.with_ops(after=(op("cnot", 1, 0),))
    assert match_library(swapped) is None
    assert match_library(c.with_ops(measurement=expval_z([1, 0, 2, 3]))) is None


def test_bad_circuits_fail_clearly():
    with pytest.raises(ValueError, match="unknown gate 'cy'"):
        op("cy", 0, 1)
    with pytest.raises(ValueError, match="2 distinct wire"):
        op("crz", 1, 1, angles=weight(0))
    with pytest.raises(ValueError, match="takes 1 angle"):
        op("ry", 0)
    with pytest.raises(ValueError, match=r"op 0 \(cnot on wires \(0, 3\)\) uses wire\(s\) \[3\]"):
        Circuit(3, (op("cnot", 0, 3),), expval_z([0]))
    with pytest.raises(ValueError, match="measurement uses wire"):
        Circuit(2, (), probs([2]))
    c = Circuit(2, (op("ry", 0, angles=weight(4)),), probs([0, 1]))
    with pytest.raises(ValueError, match="reads 5 weights"):
        run(c, jnp.zeros(3), jnp.zeros((1, 2)))
    with pytest.raises(ValueError, match="use qcxr.quantum.run"):
        expvals(c, jnp.zeros(5), jnp.zeros((1, 2)))
