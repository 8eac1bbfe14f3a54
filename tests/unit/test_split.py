"""The split method (qcxr.quantum.methods.split): term counts, the auto choice, guards, exactness.

Its agreement with PennyLane (values and gradients, every ansatz) is in
tests/numerics/test_engine_vs_pennylane.py; here it is also checked against the statevector path
at sizes PennyLane would be slow for, and its structure is checked directly.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from qcxr.quantum import MemoryBudgetError, compile_ansatz, expvals, make_ansatz
from qcxr.quantum.dispatch import engine
from qcxr.quantum.kernels import program as kernels
from qcxr.quantum.methods import split


@pytest.mark.parametrize("layers", [1, 2, 3, 4])
def test_ring_terms_grow_fourfold_per_applied_ring(layers):
    # The last ring is folded into the measurement; every earlier one crosses the middle cut twice.
    prog = compile_ansatz(make_ansatz("ry_cnot_ring", 12, layers))
    assert split.split_terms(prog) == 4 ** (layers - 1)
    plan = split.plan_split(prog)
    assert plan.final_terms == 4 ** (layers - 1) and plan.cut == 6


def test_perm_tables_reproduce_the_permutation_of_a_product_state():
    # One CNOT ring on a product state, through the split tables, equals the statevector gather.
    n = 6
    prog = compile_ansatz(make_ansatz("ry_cnot_ring", n, 2))
    (kind, rows), step = prog.ops[0], split.plan_split(prog).steps[0][1]
    assert kind == "perm"
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(1, 8)), rng.normal(size=(1, 8))
    with jax.enable_x64(True):
        xs, ys = split._perm_halves(jnp.asarray(x), jnp.asarray(y), step, "major")
        psi = jnp.asarray(np.outer(x, y).reshape(1, -1))
        want = np.asarray(kernels.permute(psi, rows, n))[0]
    got = np.einsum("th,tl->hl", xs, ys).reshape(-1)
    np.testing.assert_allclose(got, want, atol=1e-12)
    assert xs.shape[0] == step.factor == 4


@pytest.mark.slow
@pytest.mark.parametrize("name", ["ry_cnot_ring", "basic_entangler", "strongly_entangling"])
def test_split_matches_statevector_at_15_qubits(name):
    # Real (ring) and complex (RX, Rot) circuits, float64, values and gradients.
    layers = 2 if name == "strongly_entangling" else 3
    a = make_ansatz(name, 15, layers)
    rng = np.random.default_rng(15)
    with jax.enable_x64(True):
        w = jnp.asarray(rng.normal(0.0, 2.0, a.weight_shape))
        x = jnp.asarray(rng.uniform(-1.5, 1.5, (3, 15)))
        c = jnp.asarray(rng.normal(size=(3, 15)))
        out = {}
        for method in ("statevector", "split"):

            def loss(w, x, method=method):
                return jnp.sum(expvals(a, w, x, method=method) * c)

            val = expvals(a, w, x, method=method)
            out[method] = (val, *jax.grad(loss, argnums=(0, 1))(w, x))
    for sv, sp in zip(out["statevector"], out["split"], strict=True):
        np.testing.assert_allclose(sp, sv, atol=1e-10, rtol=0)


def test_auto_picks_split_for_the_paper_circuit_and_statevector_where_cheaper():
    def pick(n, layers, name="ry_cnot_ring"):
        return engine.choose_method(compile_ansatz(make_ansatz(name, n, layers)), "auto")

    assert pick(16, 3) == "split" and pick(14, 3) == "split"
    assert pick(19, 3) == "mps" and pick(40, 3) == "mps"  # MPS (linear in n) wins from ~19
    assert pick(8, 3) == "statevector"  # small states: the statevector's few GEMMs win
    assert pick(19, 6) == "statevector"  # 4^5 terms: too deep for the split method


def test_split_on_a_too_deep_circuit_is_refused_clearly():
    a = make_ansatz("ry_cnot_ring", 10, 7)
    with pytest.raises(ValueError, match="too deep.*method='statevector'"):
        expvals(a, jnp.zeros(a.weight_shape), jnp.zeros((2, 10)), method="split")
    with pytest.raises(ValueError, match="unknown method"):
        expvals(a, jnp.zeros(a.weight_shape), jnp.zeros((2, 10)), method="lanczos")


def test_split_memory_guard_refuses_before_allocating_and_auto_falls_back():
    a = make_ansatz("ry_cnot_ring", 44, 3)
    w, x = jnp.zeros(a.weight_shape), jnp.zeros((32, 44))
    with pytest.raises(MemoryBudgetError) as err:  # traced only: nothing is allocated
        jax.eval_shape(lambda w, x: expvals(a, w, x, method="split", memory_budget=2**30), w, x)
    for part in ("44 qubits", "batch of 32", "split method", "16 terms", "budget of 1.0 GiB"):
        assert part in str(err.value)
    # auto: the split method and the statevector do not fit; the MPS method does.
    assert engine.resolve_method(a, 32, "float32", memory_budget=2**30) == "mps"
    with pytest.raises(MemoryBudgetError, match="chunks of 1"):
        jax.eval_shape(
            lambda w, x: expvals(a, w, x, method="statevector", memory_budget=2**30), w, x
        )


def test_split_reaches_qubit_counts_the_statevector_cannot():
    # 32 qubits (one 2^32 state alone needs 16 GiB): the split method holds 16 x 2 x 2^16
    # amplitudes per sample.
    a = make_ansatz("ry_cnot_ring", 32, 3)
    assert split.split_bytes(compile_ansatz(a), 2, 4) < 2**30
    w = a.init_weights(jax.random.key(0))
    x = jax.random.uniform(jax.random.key(1), (2, 32), minval=-1.5, maxval=1.5)
    z = expvals(a, w, x)
    assert z.shape == (2, 32) and bool(jnp.all(jnp.abs(z) <= 1 + 1e-5))


def test_split_memory_guard_runs_before_the_tables_are_built():
    # 50 qubits: plan_split would build int/uint64 tables of 2^25 entries (hundreds of MB) per CNOT
    # ring; the estimate comes from the program alone, so the guard refuses first, in a few MB
    # (the --scale benchmark was once OOM-killed estimating the split method at 60 qubits).
    import tracemalloc

    a = make_ansatz("ry_cnot_ring", 50, 3)
    w = a.init_weights(jax.random.key(0))
    x = jnp.zeros((32, 50), jnp.float32)
    tracemalloc.start()
    try:
        with pytest.raises(MemoryBudgetError, match="split method.*method='mps'"):
            jax.eval_shape(lambda w, x: expvals(a, w, x, method="split"), w, x)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 64 * 2**20
    # and the estimate is the plan's own where the plan is small
    prog = compile_ansatz(make_ansatz("ry_cnot_ring", 12, 3))
    plan = split.plan_split(prog)
    hi, lo = 2**plan.cut, 2 ** (12 - plan.cut)
    k, nh, nl = plan.final_terms, len(plan.hi_masks), len(plan.lo_masks)
    halves = (hi + lo) * (1 + sum(plan.terms) + 4 * plan.max_terms)
    measure = 3 * k * max(nh * hi, nl * lo) + 4 * k * k * (nh + nl)
    assert split.split_bytes(prog, 32, 4) == 32 * 4 * (halves + measure)
