"""Engine internals and guards: GF(2) maps, normalisation, memory guard, ansatz library."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from qcxr.quantum import (
    ANSATZE,
    INITS,
    MemoryBudgetError,
    compile_ansatz,
    estimate_bytes,
    expvals,
    make_ansatz,
)
from qcxr.quantum.dispatch.memory import cache_bytes, choose_chunk_size
from qcxr.quantum.kernels import program as kernels


def test_cnot_network_permutation_matches_dense_cnots():
    n, pairs = 4, [(0, 1), (1, 2), (2, 3), (3, 0)]
    rng = np.random.default_rng(0)
    psi = rng.normal(size=(2, 2**n)).astype(np.float32)
    dense = psi.copy()
    for c, t in pairs:  # apply each CNOT by flipping bit t where bit c is set (wire 0 = MSB)
        idx = np.arange(2**n)
        src = np.where((idx >> (n - 1 - c)) & 1, idx ^ (1 << (n - 1 - t)), idx)
        dense = dense[:, src]
    got = kernels.permute(jnp.asarray(psi), kernels.cnot_rows(n, pairs), n, "major")
    np.testing.assert_array_equal(np.asarray(got), dense)
    # From batch-minor input the permutation also returns batch-major (the layout change is free).
    got_minor = kernels.permute(jnp.asarray(psi.T), kernels.cnot_rows(n, pairs), n, "minor")
    np.testing.assert_array_equal(np.asarray(got_minor), dense)


def test_gf2_inverse_undoes_the_map():
    n = 7
    rows = kernels.cnot_rows(n, [(i, (i + 3) % n) for i in range(n)])
    inv = kernels.inverse_rows(rows, n)
    index = jnp.arange(2**n, dtype=jnp.uint32)
    there = kernels.gf2_apply(index, rows, n)
    back = kernels.gf2_apply(there, inv, n)
    np.testing.assert_array_equal(np.asarray(back), np.asarray(index))
    assert len(set(np.asarray(there).tolist())) == 2**n  # a permutation


def test_in_graph_and_constant_permutation_tables_agree(monkeypatch):
    n = 6
    rows = kernels.cnot_rows(n, [(i, (i + 1) % n) for i in range(n)])
    psi = jax.random.normal(jax.random.key(0), (3, 2**n))
    const = kernels.permute(psi, rows, n, "major")
    monkeypatch.setattr(kernels, "_CONST_INDEX_MAX_QUBITS", 0)
    np.testing.assert_array_equal(kernels.permute(psi, rows, n, "major"), const)


@pytest.mark.parametrize("name", sorted(ANSATZE))
def test_state_stays_normalised(name):
    a = make_ansatz(name, 6, 3)
    prog = compile_ansatz(a)
    w = a.init_weights(jax.random.key(1))
    x = jax.random.uniform(jax.random.key(2), (4, 6), minval=-1.5, maxval=1.5)
    vec = kernels.encoding_vectors(a.encoding, x)
    for layer in prog.folded:
        vec = jnp.einsum("nij,bnj->bni", kernels.layer_mats(a, w, layer), vec.astype(jnp.complex64))
    state, layout = kernels.product_state(vec), "major"
    norms = [jnp.sum(jnp.abs(state) ** 2, axis=1)]
    for kind, arg in prog.ops:
        if kind == "rot":
            mats = kernels.layer_mats(a, w, arg)
            state, layout = kernels.apply_rotation_layer(state, mats, (2, 4), layout)
        else:
            state, layout = kernels.permute(state, arg, 6, layout), "major"
        axis = 0 if layout == "minor" else 1
        norms.append(jnp.sum(jnp.abs(state) ** 2, axis=axis))
    np.testing.assert_allclose(np.stack(norms), 1.0, atol=1e-5)
    assert np.all(np.abs(np.asarray(expvals(a, w, x))) <= 1 + 1e-6)


def test_memory_guard_refuses_before_allocating():
    a = make_ansatz("ry_cnot_ring", 30, 3)
    w = jnp.zeros(a.weight_shape)
    x = jnp.zeros((32, 30))
    with pytest.raises(MemoryBudgetError) as err:
        # Traced only: an allocation of 2^30 x 32 amplitudes would fail long before the message.
        jax.eval_shape(
            lambda w, x: expvals(
                a, w, x, chunk_size=None, memory_budget=8 * 2**30, method="statevector"
            ),
            w,
            x,
        )
    msg = str(err.value)
    for part in ("30 qubits", "batch of 32", "GiB", "budget of 8.0 GiB", "chunk_size", "remat"):
        assert part in msg


def test_memory_guard_estimate_grows_with_qubits_and_shrinks_with_chunks_and_remat():
    def est(n, chunk, remat, layers=6):
        a = make_ansatz("ry_cnot_ring", n, layers)
        return estimate_bytes(a, compile_ansatz(a), chunk, "float32", remat)

    assert est(20, 32, False) > 1.9 * est(19, 32, False)
    assert est(19, 8, False) < est(19, 32, False) / 3
    assert est(19, 32, True) < est(19, 32, False) / 1.5


def test_auto_chunk_fits_the_budget_and_matches_unchunked():
    a = make_ansatz("ry_cnot_ring", 8, 2)
    w = a.init_weights(jax.random.key(0))
    x = jax.random.normal(jax.random.key(1), (8, 8))
    full = estimate_bytes(a, compile_ansatz(a), 8, "float32", False)
    budget = full // 3  # forces chunks of 2
    sv = {"method": "statevector"}
    got = expvals(a, w, x, chunk_size="auto", memory_budget=budget, **sv)
    np.testing.assert_allclose(got, expvals(a, w, x, chunk_size=None, **sv), atol=1e-6)
    with pytest.raises(MemoryBudgetError):
        expvals(a, w, x, chunk_size=None, memory_budget=budget, **sv)


def test_auto_chunk_is_cache_sized_on_cpu():
    # A batch of 19-qubit float32 states (64 MiB) is far larger than the L2 cache: one sample per
    # chunk (the adjoint path); at 8 qubits the whole batch fits.
    big, small = make_ansatz("ry_cnot_ring", 19, 3), make_ansatz("ry_cnot_ring", 8, 3)
    chunk = choose_chunk_size(big, compile_ansatz(big), 32, "float32", False)
    assert chunk == (32 if 32 * 2**19 * 4 <= cache_bytes() else 1)
    assert choose_chunk_size(small, compile_ansatz(small), 32, "float32", False) == 32


def test_no_entangler_never_builds_the_state():
    prog = compile_ansatz(make_ansatz("ry_separable", 40, 3))
    assert prog.final_rows is None and prog.ops == ()
    a = make_ansatz("ry_separable", 40, 3)  # 40 qubits: only possible as product states
    out = expvals(a, a.init_weights(jax.random.key(0)), jnp.ones((2, 40)))
    assert out.shape == (2, 40)


def test_paper_circuit_compiles_to_two_state_layers_and_a_folded_last_ring():
    prog = compile_ansatz(make_ansatz("ry_cnot_ring", 8, 3))
    assert prog.folded == (0,)
    assert [op[0] for op in prog.ops] == ["perm", "rot", "perm", "rot"]
    assert prog.final_rows != kernels.identity_rows(8)


@pytest.mark.parametrize("init", INITS)
def test_initialisations(init):
    a = make_ansatz("ry_cnot_ring", 19, 200, init=init)
    w = np.asarray(a.init_weights(jax.random.key(0)))
    if init == "normal_2pi":
        assert abs(w.std() - 2 * np.pi) < 0.2 and abs(w.mean()) < 0.4  # 4 standard errors
    elif init == "uniform_2pi":
        assert w.min() >= 0 and w.max() < 2 * np.pi and abs(w.mean() - np.pi) < 0.1
    else:
        assert abs(w.std() - 0.01) < 0.001


def test_bad_ansatz_arguments_are_clear():
    with pytest.raises(ValueError, match="unknown ansatz"):
        make_ansatz("nope", 3)
    with pytest.raises(ValueError, match="unknown init"):
        make_ansatz("ry_cnot_ring", 3, init="zeros")
    a = make_ansatz("ry_cnot_ring", 3, 2)
    with pytest.raises(ValueError, match="expected \\(2, 3\\)"):
        expvals(a, jnp.zeros((3, 3)), jnp.zeros((1, 3)))
    with pytest.raises(ValueError, match="must match"):
        expvals(a, jnp.zeros((2, 3)), jnp.zeros((1, 4)))


def test_34_qubit_head_init_does_not_trip_the_guard_and_no_fix_suggests_a_batch_below_one():
    # Issue 11: at 34 qubits the guard fired during parameter init (batch 1) and suggested "a
    # smaller batch than 1". Init no longer simulates; the guard speaks at the real batch.
    from qcxr.models import dqc_head

    a = make_ansatz("ry_cnot_ring", 34, 3)
    head = dqc_head(34, a, method="statevector")
    budget = 20 * 2**30
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("QCXR_MEMORY_BUDGET_GB", "20")
        shapes = jax.eval_shape(head.init, jax.random.key(0), jnp.zeros((1, 64)))
        assert shapes["params"]["circuit"].shape == (3, 34)
        params = jax.tree.map(lambda s: jnp.zeros(s.shape, s.dtype), shapes)
        with pytest.raises(MemoryBudgetError, match="batch of 32") as err:
            jax.eval_shape(head.apply, params, jnp.zeros((32, 64)))
    assert "a smaller batch than 32" in str(err.value)
    for method in ("statevector", "split"):  # one sample over budget: no batch fix offered
        with pytest.raises(MemoryBudgetError, match="batch of 1") as err:
            jax.eval_shape(
                lambda w, x, m=method: expvals(a, w, x, memory_budget=budget / 64, method=m),
                jnp.zeros(a.weight_shape),
                jnp.zeros((1, 34)),
            )
        assert "smaller batch" not in str(err.value) and "fewer qubits than 34" in str(err.value)
