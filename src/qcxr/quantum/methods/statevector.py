"""The statevector method: the full 2^n state, for the layered library shape and for any circuit.

Layer 3 of qcxr.quantum (a method, built from kernels.py). `simulate` runs a compiled library
ansatz (kernels.Program) with the fast paths; `run_circuit` runs any circuit of the representation
(circuit.py) gate by gate on a state reshaped to [B] + [2] * n.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np

from qcxr.quantum.kernels.program import (
    Program,
    apply_gate,
    apply_rotation_layer,
    block_sizes,
    blocks_to_front,
    dot,
    inverse_rows,
    kron_blocks,
    layer_mats,
    permute,
    product_state,
    wire_probs,
    z_expectations,
)
from qcxr.quantum.representation import gates
from qcxr.quantum.representation.ansatz import Ansatz
from qcxr.quantum.representation.circuit import Circuit


@functools.lru_cache(maxsize=64)
def _adjoint_circuit(program: Program, blocks: tuple[int, ...]):
    """The circuit on one sample as (mats per state layer, product-state vectors [n, 2]) -> <Z> [n],
    differentiated by the adjoint method.

    The forward pass keeps only the final state. The backward pass walks the circuit in reverse
    with two vectors side by side: the cotangent (each gate's transpose applied) and the state
    (each gate undone: the inverse permutation, the conjugate transpose of a rotation block), so
    the state before every block is recomputed in cache instead of stored. With one sample the
    state has no batch axis, so a rotation layer's transpose and inverse are rotation layers of
    the same shape (the blocks commute), applied with the same front-moving GEMM as the forward
    pass. A block's gradient is one contraction over the rows of the cotangent and the state
    after it, in the same layout, times the block's conjugate; so the state is only undone where
    a later step needs it (never below the first state layer's last block).
    Rotation matrices must be unitary (every gate of the library is).
    """
    n = program.num_qubits
    ops = program.ops

    def run(mats, vec):
        state = product_state(vec[None])
        layer = 0
        for kind, arg in ops:
            if kind == "rot":
                state = blocks_to_front(state, kron_blocks(mats[layer], blocks), blocks)[None]
                layer += 1
            else:
                state = permute(state, arg, n)
        return state

    def measure(state):
        return z_expectations(state, program.final_rows, n)[0]

    @jax.custom_vjp
    def circuit(mats, vec):
        return measure(run(mats, vec))

    def fwd(mats, vec):
        state = run(mats, vec)
        return measure(state), (mats, vec, state)

    def bwd(res, ct):
        mats, vec, state = res
        (g,) = jax.vjp(measure, state)[1](ct)
        u = state
        dmats = [None] * len(mats)
        layer = len(mats)
        for kind, arg in reversed(ops):
            if kind == "perm":  # a permutation's transpose is its inverse
                inv = inverse_rows(arg, n)
                g, u = permute(g, inv, n), permute(u, inv, n)
                continue
            layer -= 1
            kron, kvjp = jax.vjp(lambda m: kron_blocks(m, blocks), mats[layer])
            g, u = g.reshape(-1), u.reshape(-1)
            dkron = [None] * len(blocks)
            for i in reversed(range(len(blocks))):  # the forward order: trailing block first
                k = blocks[i]
                # Materialised transposes: a dot contracting the matrix's first axis misses XLA's
                # fast CPU kernel (measured 0.95 vs 0.48 ms at 19 qubits).
                m_t, m_h = jax.lax.optimization_barrier((kron[i].T, jnp.conj(kron[i]).T))
                gk, uk = g.reshape(-1, 2**k), u.reshape(-1, 2**k)
                # The block's gradient from the pair after it (same layout, one contraction over
                # the rows): sum_r g[r, a] u_before[r, b] = (G^T U_after conj(M))[a, b] for
                # unitary M. It needs no undone state, so the last block's undo is dead code.
                dkron[i] = dot(dot(gk, uk, 0, 0), jnp.conj(kron[i]), 1, 0)
                u = dot(m_h, uk, 1, 1)  # undo: m^dagger, to the front
                g = dot(m_t, gk, 1, 1)  # transpose: m^T, to the front
            dmats[layer] = kvjp(dkron)[0]
            g, u = g.reshape(1, -1), u.reshape(1, -1)
        (dvec,) = jax.vjp(lambda v: product_state(v[None]), vec)[1](g)
        return tuple(dmats), dvec

    circuit.defvjp(fwd, bwd)
    return circuit


def simulate(
    ansatz: Ansatz, program: Program, weights, vec, block_size: int, remat: bool
) -> jnp.ndarray:
    """<Z> on every wire of a compiled library ansatz, from its folded product-state vectors.

    Args:
        ansatz: the library ansatz (its rotation gate).
        program: compile_ansatz(ansatz), with an entangler (final_rows is not None).
        weights: f[*ansatz.weight_shape].
        vec: [B, n, 2] single-qubit states after the encoding and the folded layers
            (kernels.folded_vectors).
        block_size: wires per Kronecker block.
        remat: rematerialise each rotation layer in the backward pass.

    Returns:
        f[B, n] expectations. One sample (B = 1) is differentiated by the adjoint method.
    """
    n = ansatz.num_qubits
    blocks = block_sizes(n, block_size)
    if vec.shape[0] == 1:  # one sample: adjoint differentiation, nothing kept but the final state
        layers = [arg for kind, arg in program.ops if kind == "rot"]
        mats = [layer_mats(ansatz, weights, layer) for layer in layers]
        dtype = jnp.result_type(vec, *mats)
        f = _adjoint_circuit(program, blocks)
        return f(tuple(m.astype(dtype) for m in mats), vec[0].astype(dtype))[None]
    state, layout = product_state(vec), "major"

    def rot(s, layer, layout):
        return apply_rotation_layer(s, layer_mats(ansatz, weights, layer), blocks, layout)[0]

    def perm(s, rows, layout):
        return permute(s, rows, n, layout)

    if remat:
        # Permutations keep nothing for backprop (their VJP is the inverse gather).
        rot = jax.checkpoint(rot, static_argnums=(1, 2))
    for kind, arg in program.ops:
        state = (rot if kind == "rot" else perm)(state, arg, layout)
        layout = "minor" if kind == "rot" else "major"
    return z_expectations(state, program.final_rows, n, layout)


def map_samples(sim, xf: jnp.ndarray, remat: bool, lanes: int) -> jnp.ndarray:
    """Run `sim` on one sample at a time (the adjoint path), `lanes` independent samples per step.

    Independent samples in one loop step are separate chains of operations, which XLA's CPU
    runtime runs concurrently: while one sample's single-threaded gradient contraction runs, the
    other's matrix products use the other core (measured on the 2-core CPU at 19 qubits: 10%
    faster per step with two lanes; no gain from more). Single samples keep only their final state
    for backprop, unless remat asks for nothing at all (then each is recomputed).
    """
    batch, n = xf.shape
    body = sim if not remat else jax.checkpoint(sim)
    lanes = max(1, min(lanes, batch))
    num, rest = divmod(batch, lanes)
    xs = xf[: num * lanes].reshape(num, lanes, 1, n)

    def step(xl):
        return jnp.concatenate([body(xl[i]) for i in range(lanes)])

    out = jax.lax.map(step, xs).reshape(num * lanes, n)
    if rest:  # the remainder, one sample at a time
        tail = jax.lax.map(body, xf[num * lanes :].reshape(rest, 1, n)).reshape(rest, n)
        out = jnp.concatenate([out, tail])
    return out


def _angle_values(o, weights: jnp.ndarray, x: jnp.ndarray) -> tuple[tuple, bool]:
    """The op's angles as arrays (f[] or f[B]) and whether any depends on the sample."""
    vals, per_sample = [], False
    for a in o.angles:
        if a.source == "weight":
            vals.append(weights[a.index])
        elif a.source == "input":
            vals.append(x[:, a.index])
            per_sample = True
        else:
            vals.append(jnp.asarray(a.value, x.dtype))
    return tuple(vals), per_sample


def circuit_state(
    circuit: Circuit, weights: jnp.ndarray, x: jnp.ndarray, initial: jnp.ndarray | None = None
) -> jnp.ndarray:
    """The state a circuit prepares for a batch (its measurement is not applied).

    Single-qubit gates on wires no two-qubit gate has touched yet act on per-wire 2-vectors (the
    product-state fast path: the leading encoding costs O(n), not O(2^n)); the 2^n state is built
    at the first two-qubit gate, and every later gate is one einsum on the state reshaped to
    [B] + [2] * n, batched over samples (kernels.apply_gate). Pure, jit- and grad-able; the state
    stays real when every gate and the initial state are real.

    Args:
        circuit: the Circuit.
        weights: f[P], P >= circuit.num_weights (flat: circuits index it directly).
        x: f[B, I] input angles, I >= circuit.num_inputs.
        initial: optional [B, n, 2] per-wire initial states (default |0> on every wire), e.g.
            the preparations of a cut fragment.

    Returns:
        [B, 2, ..., 2] amplitudes, axis 1 + w for wire w.
    """
    n = circuit.num_qubits
    b = x.shape[0]
    dtype = jnp.result_type(weights.dtype, x.dtype, jnp.float32)
    weights, x = weights.astype(dtype), x.astype(dtype)
    if initial is None:
        vecs: list = [jnp.zeros((b, 2), dtype).at[:, 0].set(1.0) for _ in range(n)]
    else:
        vecs = [initial[:, w] for w in range(n)]
    state = None
    for o in circuit.ops:
        angles, per_sample = _angle_values(o, weights, x)
        m = gates.matrix(o.gate, angles, dtype)
        if state is None and len(o.wires) == 1:
            w = o.wires[0]
            spec = "bij,bj->bi" if per_sample else "ij,bj->bi"
            vt = jnp.result_type(m.dtype, vecs[w].dtype)
            vecs[w] = jnp.einsum(spec, m.astype(vt), vecs[w].astype(vt))
            continue
        if state is None:
            state = _product(vecs)
        state = apply_gate(state, m, o.wires)
    return _product(vecs) if state is None else state


def measure_state(state: jnp.ndarray, measurement) -> jnp.ndarray:
    """A circuit's measurement on states shaped [B] + [2] * n.

    Args:
        state: [B, 2, ..., 2] amplitudes.
        measurement: a circuit.Measurement.

    Returns:
        f[B, k] <Z> per measured wire, or f[B, 2^k] probabilities (first wire most significant).
    """
    p = wire_probs(state, measurement.wires)
    if measurement.kind == "probs":
        return p
    k = len(measurement.wires)
    # <Z_j> from the joint probabilities: sign (-1)^bit_j of each outcome.
    bits = (np.arange(2**k)[:, None] >> np.arange(k - 1, -1, -1)[None, :]) & 1
    return p @ jnp.asarray(1.0 - 2.0 * bits, p.dtype)


def run_circuit(circuit: Circuit, weights: jnp.ndarray, x: jnp.ndarray) -> jnp.ndarray:
    """Run any circuit of the representation on a batch: the general statevector path.

    Args:
        circuit: the Circuit.
        weights: f[P], P >= circuit.num_weights (flat: circuits index it directly).
        x: f[B, I] input angles, I >= circuit.num_inputs.

    Returns:
        f[B, circuit.output_size]: <Z> per measured wire, or the probabilities of the measured
        wires (first wire most significant). See circuit_state for how it runs.
    """
    return measure_state(circuit_state(circuit, weights, x), circuit.measurement)


def _product(vecs: list) -> jnp.ndarray:
    dtype = jnp.result_type(*vecs)
    flat = product_state(jnp.stack([v.astype(dtype) for v in vecs], 1))
    return flat.reshape((flat.shape[0],) + (2,) * len(vecs))
