"""Native statevector engine for layered rotation + CNOT circuits, in pure JAX.

What makes it fast (DESIGN.md, "Quantum simulation is ours"):
- The angle encoding and every rotation layer before the first entangler are single-qubit gates on
  |0...0>, so the state after them is a product state, built directly from per-wire 2-vectors.
- A rotation layer is applied a few qubits at a time as a small Kronecker block (2^k x 2^k)
  contracted into the state. Each contraction takes the block's qubits from the front of the state
  and puts them at the back (`bkr,jk->brj` is a plain matmul layout for XLA), so after a whole
  layer the qubit order is back where it started and no transpose is ever materialised.
- A CNOT network is a permutation of basis indices (a linear map over GF(2)): one gather, whose
  gradient is the inverse gather (a custom VJP, instead of JAX's default scatter-add).
- CNOT networks at the end of the circuit (and any CZ) are never applied: their effect on <Z_i> is a
  parity of basis bits, folded into +-1 sign tables, so every <Z_i> comes from one pass over
  |amplitude|^2 (two small matmuls over a (hi, lo) split of the index).
- A circuit of real gates (H, RY, CNOT) keeps a real state: half the memory and arithmetic.
- A circuit with no entangler never builds the 2^n state at all.

The state is batch-major: [batch, 2^n], wire 0 the most significant bit of the index.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass

import jax
import jax.numpy as jnp
import numpy as np

from qcxr.quantum import gates
from qcxr.quantum.ansatz import ANSATZE, Ansatz, encoding_vectors
from qcxr.quantum.memory import check_memory, choose_chunk_size

_HIGHEST = jax.lax.Precision.HIGHEST
# Up to this many qubits the permutation tables are compile-time constants (4 MiB at 20).
_CONST_INDEX_MAX_QUBITS = 20


@dataclass(frozen=True)
class Program:
    """An ansatz compiled for the engine.

    Attributes:
        num_qubits: wires.
        folded: indices of rotation layers folded into the product state.
        ops: ("rot", layer) and ("perm", rows) operations applied to the full state, in order.
        final_rows: GF(2) rows of the trailing CNOT network folded into the measurement, or None if
            the circuit has no entangler at all (then <Z> comes from the product state).
    """

    num_qubits: int
    folded: tuple[int, ...]
    ops: tuple[tuple, ...]
    final_rows: tuple[int, ...] | None

    @property
    def num_state_layers(self) -> int:
        """Rotation layers applied to the full 2^n state."""
        return sum(op[0] == "rot" for op in self.ops)

    @property
    def num_perms(self) -> int:
        """Permutations (gathers) applied to the full state."""
        return sum(op[0] == "perm" for op in self.ops)


def identity_rows(n: int) -> tuple[int, ...]:
    """GF(2) rows of the identity map: row j is the index-bit mask of wire j."""
    return tuple(1 << (n - 1 - w) for w in range(n))


def cnot_rows(n: int, pairs, rows: tuple[int, ...] | None = None) -> tuple[int, ...]:
    """Compose CNOTs into a linear map over GF(2) on basis-index bits.

    Row j is the mask of input index bits whose parity is output wire j's bit.

    Args:
        n: wires.
        pairs: (control, target) CNOTs in the order they are applied.
        rows: the map applied before them (identity if None).

    Returns:
        The composed rows.
    """
    r = list(identity_rows(n) if rows is None else rows)
    for c, t in pairs:
        r[t] ^= r[c]
    return tuple(r)


def compile_ansatz(ansatz: Ansatz) -> Program:
    """Compile an ansatz into product-state folding, state ops and a folded measurement."""
    n, layers = ansatz.num_qubits, ansatz.num_layers
    moments: list[tuple] = []
    for layer in range(layers):
        moments.append(("rot", layer))
        pairs = ansatz.entangling_pairs(layer)
        if pairs:
            moments.append(("cnot", pairs))
    folded = []
    while moments and moments[0][0] == "rot":
        folded.append(moments.pop(0)[1])
    if not moments:
        return Program(n, tuple(folded), (), None)
    trailing = []
    while moments and moments[-1][0] == "cnot":
        trailing.insert(0, moments.pop())
    final_rows = identity_rows(n)
    for _, pairs in trailing:
        final_rows = cnot_rows(n, pairs, final_rows)
    ops: list[tuple] = []
    for kind, arg in moments:
        if kind == "cnot":
            # Consecutive CNOT networks merge into one permutation.
            prev = ops.pop()[1] if ops and ops[-1][0] == "perm" else identity_rows(n)
            ops.append(("perm", cnot_rows(n, arg, prev)))
        else:
            ops.append(("rot", arg))
    return Program(n, tuple(folded), tuple(ops), final_rows)


def _gf2_apply(index: jnp.ndarray, rows: tuple[int, ...], n: int) -> jnp.ndarray:
    """Apply a GF(2) map to basis indices (uint32 array)."""
    out = jnp.zeros_like(index)
    for j, mask in enumerate(rows):
        bit = jax.lax.population_count(index & jnp.uint32(mask)) & jnp.uint32(1)
        out = out | (bit << jnp.uint32(n - 1 - j))
    return out


def _inverse_rows(rows: tuple[int, ...], n: int) -> tuple[int, ...]:
    """Invert a GF(2) map given by rows (Gauss-Jordan over GF(2))."""
    a = [(rows[j], 1 << (n - 1 - j)) for j in range(n)]  # (row over inputs, row over outputs)
    inv = [0] * n
    for col in range(n):
        bit = 1 << (n - 1 - col)
        piv = next(i for i in range(col, n) if a[i][0] & bit)
        a[col], a[piv] = a[piv], a[col]
        for i in range(n):
            if i != col and a[i][0] & bit:
                a[i] = (a[i][0] ^ a[col][0], a[i][1] ^ a[col][1])
    for col in range(n):
        inv[col] = a[col][1]
    return tuple(inv)


@jax.custom_vjp
def _gather(state: jnp.ndarray, idx: jnp.ndarray, inv_idx: jnp.ndarray) -> jnp.ndarray:
    return _take(state, idx)


def _take(state, idx):
    return state.at[:, idx].get(mode="promise_in_bounds", unique_indices=True)


def _gather_fwd(state, idx, inv_idx):
    return _gather(state, idx, inv_idx), (idx, inv_idx)


def _gather_bwd(res, g):
    idx, inv_idx = res
    # The transpose of a permutation is its inverse: a gather, not a scatter-add.
    return _take(g, inv_idx), None, None


_gather.defvjp(_gather_fwd, _gather_bwd)


def permute(state: jnp.ndarray, rows: tuple[int, ...], n: int) -> jnp.ndarray:
    """Apply a CNOT network (as GF(2) rows) to a batch of states.

    Args:
        state: [B, 2^n] amplitudes.
        rows: the network's GF(2) map (see cnot_rows).
        n: wires.

    Returns:
        [B, 2^n] amplitudes psi'[A b] = psi[b].
    """
    if n <= _CONST_INDEX_MAX_QUBITS:
        idx, inv_idx = _perm_tables(rows, n)
    else:  # computed in the graph: no 2^n constants in the compiled program
        index = jnp.arange(2**n, dtype=jnp.uint32)
        idx = _gf2_apply(index, _inverse_rows(rows, n), n).astype(jnp.int32)
        inv_idx = _gf2_apply(index, rows, n).astype(jnp.int32)
    return _gather(state, idx, inv_idx)


@functools.lru_cache(maxsize=32)
def _perm_tables(rows: tuple[int, ...], n: int) -> tuple[np.ndarray, np.ndarray]:
    index = np.arange(2**n, dtype=np.uint64)

    def apply(r):
        out = np.zeros_like(index)
        for j, mask in enumerate(r):
            out |= (np.bitwise_count(index & np.uint64(mask)) & 1).astype(np.uint64) << np.uint64(
                n - 1 - j
            )
        return out.astype(np.int32)

    return apply(_inverse_rows(rows, n)), apply(rows)


def block_sizes(n: int, block_size: int) -> tuple[int, ...]:
    """Split n wires into ceil(n / block_size) consecutive blocks of near-equal size."""
    nb = max(1, math.ceil(n / max(1, block_size)))
    base, extra = divmod(n, nb)
    return tuple(base + (1 if i < extra else 0) for i in range(nb))


def _cycle(state: jnp.ndarray, m: jnp.ndarray, k: int) -> jnp.ndarray:
    """Contract the leading k wires with m [2^k, 2^k] and move them to the back."""
    b = state.shape[0]
    s = state.reshape(b, 2**k, -1)
    return jnp.einsum("bkr,jk->brj", s, m, precision=_HIGHEST).reshape(b, -1)


def _front_gram(g: jnp.ndarray, s: jnp.ndarray, k: int) -> jnp.ndarray:
    """G[j, k'] = sum over batch and the other wires of g[.., j, ..] s[.., k', ..] (front block)."""
    b = g.shape[0]
    gg, ss = g.reshape(b, 2**k, -1), s.reshape(b, 2**k, -1)
    return jnp.einsum("bjr,bkr->bjk", gg, ss, precision=_HIGHEST).sum(0)


@functools.partial(jax.custom_vjp, nondiff_argnums=(2,))
def _rotate(state: jnp.ndarray, mats: tuple, blocks: tuple[int, ...]) -> jnp.ndarray:
    for m, k in zip(mats, blocks, strict=True):
        state = _cycle(state, m, k)
    return state


def _rotate_fwd(state, mats, blocks):
    out = _rotate(state, mats, blocks)
    return out, (out, mats)


def _rotate_bwd(blocks, res, g):
    # The blocks commute and are unitary. The cotangent of the input is the transposed layer,
    # applied with the same transpose-free cycling; the cotangent of block i is G_i conj(M_i), where
    # G_i pairs g with the *output* state over all other wires. Cycling g by M^T and the output by
    # M^dagger (= M^-1) together leaves those pairings unchanged, brings each block to the front in
    # turn, and turns the output back into the input, so only the output is kept for backprop.
    out, mats = res
    s = out
    grads = []
    for m, k in zip(mats, blocks, strict=True):
        gm = _front_gram(g, s, k)
        dm = gm @ jnp.conj(m) if jnp.iscomplexobj(m) else gm @ m
        grads.append(dm if jnp.iscomplexobj(m) else jnp.real(dm).astype(m.dtype))
        g = _cycle(g, m.T, k)
        s = _cycle(s, jnp.conj(m).T, k)
    return g, tuple(grads)


_rotate.defvjp(_rotate_fwd, _rotate_bwd)


def apply_rotation_layer(state: jnp.ndarray, mats: jnp.ndarray, blocks: tuple[int, ...]):
    """Apply one single-qubit gate per wire, a Kronecker block of wires at a time.

    Each block contraction takes the leading wires and puts them at the back (a plain matmul
    layout), so after the whole layer the wire order is restored without a transpose. The backward
    pass is a custom VJP that keeps only the layer's output (see _rotate_bwd).

    Args:
        state: [B, 2^n] amplitudes, wire 0 most significant.
        mats: [n, 2, 2] unitary gate matrices, one per wire.
        blocks: block sizes summing to n (see block_sizes).

    Returns:
        [B, 2^n] amplitudes in the same wire order.
    """
    kron = []
    start = 0
    for k in blocks:
        m = mats[start]
        for w in range(start + 1, start + k):
            m = jnp.kron(m, mats[w])
        kron.append(m)
        start += k
    dtype = jnp.result_type(state.dtype, mats.dtype)
    return _rotate(state.astype(dtype), tuple(m.astype(dtype) for m in kron), tuple(blocks))


def product_state(vectors: jnp.ndarray) -> jnp.ndarray:
    """Kronecker product of per-wire single-qubit states.

    Built as the outer product of two halves, each a product over its wires reduced with `prod`.
    The reduction keeps XLA from fusing the small products into the large final multiply, which
    would recompute the whole chain (with index arithmetic) for every one of the 2^n outputs.

    Args:
        vectors: [B, n, 2] amplitudes.

    Returns:
        [B, 2^n] amplitudes, wire 0 most significant.
    """
    b, n, _ = vectors.shape
    h = n // 2
    hi, lo = _half_product(vectors[:, :h]), _half_product(vectors[:, h:])
    return (hi[:, :, None] * lo[:, None, :]).reshape(b, -1)


def _half_product(vectors: jnp.ndarray) -> jnp.ndarray:
    m = vectors.shape[1]
    if m == 0:
        return jnp.ones((vectors.shape[0], 1), vectors.dtype)
    bits = (np.arange(2**m)[:, None] >> np.arange(m - 1, -1, -1)[None, :]) & 1  # [2^m, m]
    sel = jnp.where(bits[None].astype(bool), vectors[:, None, :, 1], vectors[:, None, :, 0])
    return jnp.prod(sel, axis=-1)


def _sign_table(masks: np.ndarray, shift: int, nbits: int, dtype) -> np.ndarray:
    vals = np.arange(2**nbits, dtype=np.uint64) << np.uint64(shift)
    par = np.bitwise_count(vals[:, None] & masks[None, :].astype(np.uint64)) & 1
    return (1.0 - 2.0 * par).astype(dtype)


def z_expectations(state: jnp.ndarray, rows: tuple[int, ...], n: int) -> jnp.ndarray:
    """<Z_j> for every wire after a (never applied) trailing CNOT network.

    <Z_j> = sum_b |psi_b|^2 (-1)^parity(b & rows[j]); the sign factorises over a (hi, lo) split of
    the index bits, so two small tables replace a 2^n x n one.

    Args:
        state: [B, 2^n] amplitudes.
        rows: GF(2) rows of the trailing network (identity_rows(n) for none).
        n: wires.

    Returns:
        f[B, n] expectations.
    """
    p = jnp.real(state * jnp.conj(state)) if jnp.iscomplexobj(state) else state * state
    b = p.shape[0]
    hi, lo = n // 2, n - n // 2
    masks = np.asarray(rows, dtype=np.uint64)
    s_lo = _sign_table(masks, 0, lo, p.dtype)
    s_hi = _sign_table(masks, lo, hi, p.dtype)
    t = jnp.einsum("bhl,lj->bhj", p.reshape(b, 2**hi, 2**lo), s_lo, precision=_HIGHEST)
    return jnp.einsum("bhj,hj->bj", t, s_hi, precision=_HIGHEST)


def _layer_mats(ansatz: Ansatz, weights: jnp.ndarray, layer: int) -> jnp.ndarray:
    return gates.matrices(ansatz.rotation, weights[layer])


def _simulate(ansatz: Ansatz, program: Program, weights, x, block_size: int, remat: bool):
    """<Z> for a flat batch x [B, n]."""
    n = ansatz.num_qubits
    vec = encoding_vectors(ansatz.encoding, x)  # [B, n, 2]
    for layer in program.folded:
        m = _layer_mats(ansatz, weights, layer)
        vec = jnp.einsum("nij,bnj->bni", m, vec.astype(jnp.result_type(m, vec)), precision=_HIGHEST)
    if program.final_rows is None:
        p = jnp.abs(vec) ** 2
        return p[..., 0] - p[..., 1]
    state = product_state(vec)
    blocks = block_sizes(n, block_size)

    def rot(s, layer):
        return apply_rotation_layer(s, _layer_mats(ansatz, weights, layer), blocks)

    def perm(s, rows):
        return permute(s, rows, n)

    if remat:
        rot = jax.checkpoint(rot, static_argnums=(1,))
        perm = jax.checkpoint(perm, static_argnums=(1,))
    for kind, arg in program.ops:
        state = rot(state, arg) if kind == "rot" else perm(state, arg)
    return z_expectations(state, program.final_rows, n)


def resolve_ansatz(ansatz: Ansatz | str, weights: jnp.ndarray, num_qubits: int) -> Ansatz:
    """Accept an Ansatz or a library name (then layers come from the weights' first axis)."""
    if isinstance(ansatz, Ansatz):
        if ansatz.num_qubits != num_qubits:
            raise ValueError(
                f"ansatz {ansatz.name!r} has {ansatz.num_qubits} qubits but x has {num_qubits} "
                "features on its last axis; they must match"
            )
        return ansatz
    if ansatz not in ANSATZE:
        raise ValueError(f"unknown ansatz {ansatz!r}; choose one of {sorted(ANSATZE)}")
    return Ansatz(ansatz, num_qubits, int(weights.shape[0]))


def expvals(
    ansatz: Ansatz | str,
    weights: jnp.ndarray,
    x: jnp.ndarray,
    *,
    block_size: int = 5,
    remat: bool = False,
    chunk_size: int | str | None = None,
    memory_budget: float | None = None,
) -> jnp.ndarray:
    """<Z_i> on every qubit of an ansatz for a batch of encoded features.

    Pure, jit- and grad-able in `weights` and `x`. The memory guard runs at trace time, before any
    allocation, from static shapes.

    Args:
        ansatz: an Ansatz, or a library name (`conf/ansatz/` ids; layers from weights.shape[0]).
        weights: f[layers, qubits] (or the ansatz's weight_shape, e.g. [layers, qubits, 3] for Rot).
        x: f[..., qubits] encoding angles, already scaled.
        block_size: wires per Kronecker block in rotation layers (a speed knob; 5 was best on a
            2-core CPU at 19 qubits).
        remat: rematerialise each layer in the backward pass (jax.checkpoint): less memory, ~1.3x time.
        chunk_size: simulate the batch in sequential micro-batches of this size inside the step
            (each checkpointed, so backprop keeps one micro-batch's intermediates); "auto" picks the
            largest that fits the budget; None processes the whole batch at once.
        memory_budget: bytes the simulation may use (default: see memory.default_budget()).

    Returns:
        f[..., qubits] expectations, the dtype of the promoted inputs.
    """
    x = jnp.asarray(x)
    weights = jnp.asarray(weights)
    n = x.shape[-1]
    a = resolve_ansatz(ansatz, weights, n)
    if tuple(weights.shape) != a.weight_shape:
        raise ValueError(
            f"weights of shape {tuple(weights.shape)} do not fit ansatz {a.name!r} with "
            f"{a.num_qubits} qubits and {a.num_layers} layers: expected {a.weight_shape}"
        )
    dtype = jnp.result_type(weights.dtype, x.dtype, jnp.float32)
    weights, x = weights.astype(dtype), x.astype(dtype)
    lead = x.shape[:-1]
    xf = x.reshape(-1, n)
    batch = xf.shape[0]
    program = compile_ansatz(a)
    if chunk_size == "auto":
        chunk_size = choose_chunk_size(
            a, program, batch, dtype, remat, memory_budget, block_size
        )
    chunk = batch if chunk_size is None else max(1, min(int(chunk_size), batch))
    check_memory(a, program, batch, chunk, dtype, remat, memory_budget, block_size)
    sim = functools.partial(
        _simulate, a, program, weights, block_size=block_size, remat=remat
    )
    if chunk >= batch:
        out = sim(xf)
    else:
        num = -(-batch // chunk)
        pad = num * chunk - batch
        xs = jnp.pad(xf, ((0, pad), (0, 0))).reshape(num, chunk, n)
        out = jax.lax.map(jax.checkpoint(sim), xs).reshape(num * chunk, n)[:batch]
    return out.reshape(*lead, n)
