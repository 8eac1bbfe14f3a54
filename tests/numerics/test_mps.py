"""The MPS method (methods/mps.py) against PennyLane, the statevector and the split method.

Reference: PennyLane's default.qubit in float64 with backprop (tests/numerics/
test_engine_vs_pennylane.py's helpers). Tolerances, absolute, values and gradients w.r.t. weights
and inputs: 1e-5 for our float32 run, 1e-10 for float64. A sparse sample of ansatz x qubits (2-12)
x layers (1-4) x encoding runs in the inner loop; 14-24 qubits against the statevector and split
methods run as slow.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from qcxr.quantum import compile_ansatz, expvals, make_ansatz
from qcxr.quantum.dispatch.engine import METHODS, resolve_method
from qcxr.quantum.dispatch.memory import MemoryBudgetError
from qcxr.quantum.methods import mps
from tests.numerics.test_engine_vs_pennylane import TOL, _draw, _native, _reference

# (ansatz, qubits, layers, encoding): every ansatz, 2-12 qubits, 1-4 layers, real and complex.
# The inner loop runs four (every ansatz, real and complex); the rest run as slow.
FAST = [
    ("ry_cnot_ring", 2, 2, "h_ry"),
    ("ry_cnot_ring", 5, 4, "rx"),
    ("basic_entangler", 6, 1, "rx"),
    ("strongly_entangling", 5, 2, "h_ry"),
]
SLOW = [
    ("ry_cnot_ring", 7, 3, "h_ry"),
    ("ry_cnot_ring", 12, 3, "h_ry"),
    ("basic_entangler", 4, 3, "ry"),
    ("strongly_entangling", 3, 4, "rx"),
]


@pytest.mark.parametrize(
    "name,n,layers,encoding",
    FAST + [pytest.param(*c, marks=pytest.mark.slow) for c in SLOW],
)
def test_mps_matches_pennylane(name, n, layers, encoding):
    a = make_ansatz(name, n, layers, encoding=encoding)
    w, x, c = _draw(a, 2, seed=n * 10 + layers)
    ref_val, ref_grads = _reference(a, w, x, c)
    for dtype in (jnp.float32, jnp.float64):
        val, grads = _native(a, w, x, c, dtype, method="mps")
        np.testing.assert_allclose(val, ref_val, atol=TOL[dtype], rtol=0)
        for g, r in zip(grads, ref_grads, strict=True):
            np.testing.assert_allclose(g, r, atol=TOL[dtype], rtol=0)


def test_exact_bond_is_derived_from_the_circuit():
    # The paper's ring: 4 per applied ring (two of three applied, the last folded): 16 at any n.
    for n in (8, 19, 40, 100):
        plan = mps.plan_mps(compile_ansatz(make_ansatz("ry_cnot_ring", n, 3)))
        assert plan.exact_bond == 16 and set(plan.measure_bonds) == {4}
    # Small n: capped by 2^(wires on the smaller side).
    assert mps.plan_mps(compile_ansatz(make_ansatz("ry_cnot_ring", 6, 3))).exact_bond == 8
    # One ring as an MPO: bond 4 at every cut (prefix parity right, right parity left to wire 0).
    ring = compile_ansatz(make_ansatz("ry_cnot_ring", 9, 2)).ops[0][1]
    assert mps.network_mpo(ring, 9).bonds == (4,) * 8 + (1,)


def test_network_mpo_is_the_permutation():
    # Contract the MPO densely and compare with the GF(2) map y = F b (kernels.cnot_rows).
    a = make_ansatz("strongly_entangling", 5, 3)
    for layer in range(3):
        rows = compile_ansatz(a).final_rows if layer == 2 else None
        if rows is None:
            from qcxr.quantum.kernels.program import cnot_rows

            rows = cnot_rows(5, a.entangling_pairs(layer))
        m = np.ones((1, 1, 1))  # [y..., b..., bond]
        for t in mps.network_mpo(rows, 5).tensors:
            m = np.einsum("YBa,aybc->YyBbc", m.reshape(-1, m.shape[-2], m.shape[-1])[..., :], t)
            m = m.reshape(m.shape[0] * 2, m.shape[2] * 2, m.shape[-1])
        dense = m[..., 0]  # [y, b]
        for b in range(32):
            y = sum(((bin(b & r).count("1") & 1) << (4 - j)) for j, r in enumerate(rows))
            assert dense[:, b].tolist() == [int(i == y) for i in range(32)]


@pytest.mark.slow  # ~30 s: compiles the SVD sweeps four times
def test_max_bond_error_decreases_to_zero_at_the_exact_bond():
    a = make_ansatz("ry_cnot_ring", 6, 3)
    w, x, _ = _draw(a, 2, seed=3)
    with jax.enable_x64(True):
        w, x = jnp.asarray(w), jnp.asarray(x)
        exact = expvals(a, w, x, method="statevector")
        assert mps.plan_mps(compile_ansatz(a)).exact_bond == 8
        errors, lost = [], []
        for chi in (1, 2, 4, 8):
            run = jax.jit(
                lambda w, x, chi=chi: expvals(
                    a, w, x, method="mps", max_bond=chi, return_discarded=True
                )
            )
            val, d = run(w, x)
            errors.append(float(jnp.max(jnp.abs(val - exact))))
            lost.append(float(jnp.max(d)))
        grad = jax.jit(jax.grad(lambda w: jnp.sum(expvals(a, w, x, method="mps", max_bond=2))))(w)
        assert bool(jnp.all(jnp.isfinite(grad)))
    # The discarded weight falls monotonically; the <Z> error with it, to zero at the exact bond.
    assert all(d2 <= d1 + 1e-12 for d1, d2 in zip(lost, lost[1:], strict=False)), lost
    assert errors[0] > 0.05 and lost[0] > 0.05  # a product state is far from this one
    assert errors[2] < errors[0] and errors[-1] < 1e-12 and lost[-1] == 0.0, errors


def test_memory_guard_raises_before_allocating():
    a = make_ansatz("ry_cnot_ring", 60, 3)
    x = jnp.zeros((32, 60))
    w = a.init_weights(jax.random.key(0))
    with pytest.raises(MemoryBudgetError, match="MPS method"):
        jax.eval_shape(lambda w, x: expvals(a, w, x, method="mps", memory_budget=2**20), w, x)


def test_auto_choice_by_size():
    assert "mps" in METHODS

    def pick(n, **kw):
        return resolve_method(make_ansatz("ry_cnot_ring", n, 3), 32, "float32", **kw)

    assert pick(8) == "statevector"
    assert pick(16) == "split"
    assert pick(40) == "mps"
    assert pick(100) == "mps"
    # A budget too small for the statevector and split at 19 qubits leaves the MPS method.
    assert pick(19, memory_budget=75 * 2**20) == "mps"
    assert pick(19, method="split") == "split"


def test_max_bond_validation():
    with pytest.raises(ValueError, match="max_bond"):
        expvals("ry_cnot_ring", jnp.zeros((2, 4)), jnp.zeros((1, 4)), method="mps", max_bond=0)


@pytest.mark.slow
@pytest.mark.parametrize("n", [14, 21])
def test_mps_matches_statevector_and_split(n):
    a = make_ansatz("ry_cnot_ring", n, 3)
    w, x, c = _draw(a, 2, seed=n)
    ref_val, ref_grads = _native(a, w, x, c, jnp.float64, method="statevector")
    for method in ("split", "mps"):
        val, grads = _native(a, w, x, c, jnp.float64, method=method)
        np.testing.assert_allclose(val, ref_val, atol=1e-10, rtol=0)
        for g, r in zip(grads, ref_grads, strict=True):
            np.testing.assert_allclose(g, r, atol=1e-10, rtol=0)
