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

`expvals` also runs the split method (split.py: the state as a short sum of products across a cut
of the wires, exact, for shallow circuits) and by default picks whichever is cheaper.
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
from qcxr.quantum.memory import (
    check_memory,
    check_split_memory,
    choose_chunk_size,
    choose_lanes,
    fits_split_memory,
)

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


def _precision() -> jax.lax.Precision:
    """Matmul precision: full float32/64 everywhere.

    On the CPU, DEFAULT already computes in the operands' precision (checked: identical results to
    HIGHEST) and lets XLA pick its faster kernels; on GPUs and TPUs DEFAULT may round float32
    operands to TF32 or bfloat16, so HIGHEST is requested there.
    """
    return jax.lax.Precision.DEFAULT if jax.default_backend() == "cpu" else _HIGHEST


def _dot(a: jnp.ndarray, b: jnp.ndarray, ca: int, cb: int) -> jnp.ndarray:
    """2-D dot contracting a's axis ca with b's axis cb; output (a's free axis, b's free axis)."""
    return jax.lax.dot_general(a, b, (((ca,), (cb,)), ((), ())), precision=_precision())


@jax.custom_vjp
def _gather_rows_t(state: jnp.ndarray, idx: jnp.ndarray, inv_idx: jnp.ndarray) -> jnp.ndarray:
    # [N, B] -> [B, N]: gathering rows of B contiguous amplitudes and transposing is cheaper than
    # a separate transpose pass (the layout change rides on the permutation's memory pass).
    return state.at[idx].get(mode="promise_in_bounds", unique_indices=True).T


def _gather_rows_t_fwd(state, idx, inv_idx):
    return _gather_rows_t(state, idx, inv_idx), (idx, inv_idx)


def _gather_rows_t_bwd(res, g):
    idx, inv_idx = res
    return g.at[:, inv_idx].get(mode="promise_in_bounds", unique_indices=True).T, None, None


_gather_rows_t.defvjp(_gather_rows_t_fwd, _gather_rows_t_bwd)


@jax.custom_vjp
def _gather_cols(state: jnp.ndarray, idx: jnp.ndarray, inv_idx: jnp.ndarray) -> jnp.ndarray:
    return state.at[:, idx].get(mode="promise_in_bounds", unique_indices=True)


def _gather_cols_fwd(state, idx, inv_idx):
    return _gather_cols(state, idx, inv_idx), (idx, inv_idx)


def _gather_cols_bwd(res, g):
    idx, inv_idx = res
    return g.at[:, inv_idx].get(mode="promise_in_bounds", unique_indices=True), None, None


_gather_cols.defvjp(_gather_cols_fwd, _gather_cols_bwd)


def permute(state: jnp.ndarray, rows: tuple[int, ...], n: int, layout: str = "major"):
    """Apply a CNOT network (as GF(2) rows) to a batch of states.

    Args:
        state: amplitudes, [B, 2^n] for layout "major" or [2^n, B] for "minor".
        rows: the network's GF(2) map (see cnot_rows).
        n: wires.
        layout: "major" (batch first) or "minor" (batch last: rows of B contiguous amplitudes).

    Returns:
        Amplitudes psi'[A b] = psi[b], batch-major [B, 2^n] (the layout rotation layers take).
    """
    if n <= _CONST_INDEX_MAX_QUBITS:
        idx, inv_idx = _perm_tables(rows, n)
    else:  # computed in the graph: no 2^n constants in the compiled program
        index = jnp.arange(2**n, dtype=jnp.uint32)
        idx = _gf2_apply(index, _inverse_rows(rows, n), n).astype(jnp.int32)
        inv_idx = _gf2_apply(index, rows, n).astype(jnp.int32)
    if layout == "minor":
        return _gather_rows_t(state, idx, inv_idx)
    return _gather_cols(state, idx, inv_idx)


@functools.lru_cache(maxsize=32)
def _perm_tables(rows: tuple[int, ...], n: int) -> tuple[np.ndarray, np.ndarray]:
    index = np.arange(2**n, dtype=np.uint64)

    def apply(r):
        out = np.zeros_like(index)
        for j, mask in enumerate(r):
            bit = (np.bitwise_count(index & np.uint64(mask)) & 1).astype(np.uint64)
            out |= bit << np.uint64(n - 1 - j)
        return out.astype(np.int32)

    return apply(_inverse_rows(rows, n)), apply(rows)


def block_sizes(n: int, block_size: int) -> tuple[int, ...]:
    """Split n wires into ceil(n / block_size) consecutive blocks of near-equal size."""
    nb = max(1, math.ceil(n / max(1, block_size)))
    base, extra = divmod(n, nb)
    return tuple(base + (1 if i < extra else 0) for i in range(nb))


# A block contraction [R, K] -> [J, R]: contracts the trailing k wires (the batch-major state's
# minor axis) and moves them to the front: one plain GEMM, with a hand-written VJP that is two
# plain GEMMs (JAX's own would add transposes). Complex states follow JAX's convention
# (cotangents through the transpose, not the adjoint).


@jax.custom_vjp
def _to_front(s: jnp.ndarray, m: jnp.ndarray) -> jnp.ndarray:
    return _dot(m, s, 1, 1)


def _to_front_fwd(s, m):
    return _to_front(s, m), (s, m)


def _to_front_bwd(res, g):
    s, m = res
    return _dot(g, m, 0, 0), _dot(g, s, 1, 0)


_to_front.defvjp(_to_front_fwd, _to_front_bwd)


@jax.custom_vjp
def _to_back(s: jnp.ndarray, m: jnp.ndarray) -> jnp.ndarray:
    """[K, R] -> [R, J]: the mirror of _to_front, contracting the leading k wires (a batch-minor
    state's major axis) and moving them to the back."""
    return _dot(s, m, 0, 1)


def _to_back_fwd(s, m):
    return _to_back(s, m), (s, m)


def _to_back_bwd(res, g):
    s, m = res
    return _dot(m, g, 0, 1), _dot(g, s, 0, 1)


_to_back.defvjp(_to_back_fwd, _to_back_bwd)


def kron_blocks(mats: jnp.ndarray, blocks: tuple[int, ...]) -> list[jnp.ndarray]:
    """Kronecker products of consecutive per-wire matrices, one [2^k, 2^k] matrix per block."""
    out, start = [], 0
    for k in blocks:
        m = mats[start]
        for w in range(start + 1, start + k):
            m = jnp.kron(m, mats[w])
        out.append(m)
        start += k
    return out


def apply_rotation_layer(state, mats, blocks, layout: str = "major"):
    """Apply one single-qubit gate per wire, a Kronecker block of wires at a time.

    From batch-major [B, 2^n], each block contraction takes the trailing wires and puts them at the
    front (a plain GEMM); after the whole layer the wire order is restored and the batch is last:
    batch-minor [2^n, B], which the following permutation turns back into batch-major for free.
    No transpose is materialised.

    Args:
        state: amplitudes, [B, 2^n] ("major"; a "minor" [2^n, B] input is transposed first).
        mats: [n, 2, 2] gate matrices, one per wire.
        blocks: block sizes summing to n (see block_sizes).
        layout: the input layout.

    Returns:
        (amplitudes [2^n, B], "minor").
    """
    if layout == "minor":
        state = state.T
    dtype = jnp.result_type(state.dtype, mats.dtype)
    kron = [m.astype(dtype) for m in kron_blocks(mats, blocks)]
    b = state.shape[0]
    return _blocks_to_front(state.astype(dtype), kron, blocks).reshape(-1, b), "minor"


def _blocks_to_front(state, kron, blocks):
    """Contract each Kronecker block with the state's trailing wires, moving them to the front.

    Returns the flat amplitudes; after all blocks the wire order is restored (the batch axis of a
    batch-major input ends up last).
    """
    s = state.reshape(-1)
    for m, k in reversed(list(zip(kron, blocks, strict=True))):
        s = _to_front(s.reshape(-1, 2**k), m).reshape(-1)
    return s


def _blocks_to_back(state, kron, blocks):
    """The mirror of _blocks_to_front: each block contracted from the front, moved to the back.

    Returns the flat amplitudes; a batch-minor input [2^n, B] ends batch-major [B, 2^n].
    """
    s = state.reshape(-1)
    for m, k in zip(kron, blocks, strict=True):
        s = _to_back(s.reshape(2**k, -1), m).reshape(-1)
    return s


def product_state(vectors: jnp.ndarray) -> jnp.ndarray:
    """Kronecker product of per-wire single-qubit states, batch-major.

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
    return _outer(_half_product(vectors[:, :h]), _half_product(vectors[:, h:])).reshape(b, -1)


@jax.custom_vjp
def _outer(hi: jnp.ndarray, lo: jnp.ndarray) -> jnp.ndarray:
    """Batched outer product [B, H], [B, L] -> [B, H, L]."""
    return hi[:, :, None] * lo[:, None, :]


def _outer_fwd(hi, lo):
    return _outer(hi, lo), (hi, lo)


def _outer_bwd(res, g):
    # Two batched matrix-vector products over the cotangent; autodiff's version materialises
    # broadcast products of the full state size first.
    hi, lo = res
    g_hi = jnp.einsum("bhl,bl->bh", g, lo, precision=_precision())
    g_lo = jnp.einsum("bhl,bh->bl", g, hi, precision=_precision())
    return g_hi, g_lo


_outer.defvjp(_outer_fwd, _outer_bwd)


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


def z_expectations(state, rows: tuple[int, ...], n: int, layout: str = "major"):
    """<Z_j> for every wire after a (never applied) trailing CNOT network.

    <Z_j> = sum_b |psi_b|^2 (-1)^parity(b & rows[j]); the sign factorises over a (hi, lo) split of
    the index bits, so two small tables replace a 2^n x n one.

    Args:
        state: amplitudes, [B, 2^n] ("major") or [2^n, B] ("minor").
        rows: GF(2) rows of the trailing network (identity_rows(n) for none).
        n: wires.
        layout: the state's layout.

    Returns:
        f[B, n] expectations.
    """
    p = jnp.real(state * jnp.conj(state)) if jnp.iscomplexobj(state) else state * state
    hi, lo = n // 2, n - n // 2
    masks = np.asarray(rows, dtype=np.uint64)
    s_lo = _sign_table(masks, 0, lo, p.dtype)
    s_hi = _sign_table(masks, lo, hi, p.dtype)
    if p.size == 2**n:  # one sample: both layouts are the same vector (a plain matmul)
        t = _dot(p.reshape(2**hi, 2**lo), s_lo, 1, 0)  # [hi, n]
        return jnp.sum(t * s_hi, axis=0)[None]
    if layout == "minor":
        b = p.shape[1]
        t = jax.lax.dot_general(
            p.reshape(2**hi, 2**lo, b), s_lo, (((1,), (0,)), ((), ())), precision=_precision()
        )  # [hi, B, n]
        return jnp.einsum("hbj,hj->bj", t, s_hi)
    b = p.shape[0]
    t = jax.lax.dot_general(
        p.reshape(b, 2**hi, 2**lo), s_lo, (((2,), (0,)), ((), ())), precision=_precision()
    )  # [B, hi, n]
    return jnp.einsum("bhj,hj->bj", t, s_hi)


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
                state = _blocks_to_front(state, kron_blocks(mats[layer], blocks), blocks)[None]
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
                inv = _inverse_rows(arg, n)
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
                dkron[i] = _dot(_dot(gk, uk, 0, 0), jnp.conj(kron[i]), 1, 0)
                u = _dot(m_h, uk, 1, 1)  # undo: m^dagger, to the front
                g = _dot(m_t, gk, 1, 1)  # transpose: m^T, to the front
            dmats[layer] = kvjp(dkron)[0]
            g, u = g.reshape(1, -1), u.reshape(1, -1)
        (dvec,) = jax.vjp(lambda v: product_state(v[None]), vec)[1](g)
        return tuple(dmats), dvec

    circuit.defvjp(fwd, bwd)
    return circuit


def _layer_mats(ansatz: Ansatz, weights: jnp.ndarray, layer: int) -> jnp.ndarray:
    return gates.matrices(ansatz.rotation, weights[layer])


def _simulate(
    ansatz: Ansatz, program: Program, weights, x, block_size: int, remat: bool, plan=None
):
    """<Z> for a flat batch x [B, n] (by the split method if a split plan is given)."""
    n = ansatz.num_qubits
    vec = encoding_vectors(ansatz.encoding, x)  # [B, n, 2]
    for layer in program.folded:
        m = _layer_mats(ansatz, weights, layer)
        vec = jnp.einsum(
            "nij,bnj->bni", m, vec.astype(jnp.result_type(m, vec)), precision=_precision()
        )
    if program.final_rows is None:
        p = jnp.abs(vec) ** 2
        return p[..., 0] - p[..., 1]
    if plan is not None:
        from qcxr.quantum import split

        mats = functools.partial(_layer_mats, ansatz, weights)
        return split.simulate(plan, mats, vec, block_size)
    blocks = block_sizes(n, block_size)
    if x.shape[0] == 1:  # one sample: adjoint differentiation, nothing kept but the final state
        layers = [arg for kind, arg in program.ops if kind == "rot"]
        mats = [_layer_mats(ansatz, weights, layer) for layer in layers]
        dtype = jnp.result_type(vec, *mats)
        f = _adjoint_circuit(program, blocks)
        return f(tuple(m.astype(dtype) for m in mats), vec[0].astype(dtype))[None]
    state, layout = product_state(vec), "major"

    def rot(s, layer, layout):
        return apply_rotation_layer(s, _layer_mats(ansatz, weights, layer), blocks, layout)[0]

    def perm(s, rows, layout):
        return permute(s, rows, n, layout)

    if remat:
        # Permutations keep nothing for backprop (their VJP is the inverse gather).
        rot = jax.checkpoint(rot, static_argnums=(1, 2))
    for kind, arg in program.ops:
        state = (rot if kind == "rot" else perm)(state, arg, layout)
        layout = "minor" if kind == "rot" else "major"
    return z_expectations(state, program.final_rows, n, layout)


#: Simulation methods of expvals.
METHODS = ("auto", "statevector", "split")
#: "auto" takes the split method when its estimated cost is this many times below the
#: statevector's. Measured on the 2-core CPU (batch 32, head-step gradient), statevector / split
#: time against this cost ratio: 3 layers at 10 / 12 / 14 / 16 qubits: 0.65 / 1.6 / 3.0 / 9.7
#: (cost ratio 0.81 / 1.8 / 3.4 / 7.3); 4 layers at 16 / 19 qubits: 1.2 / 1.6 (1.1 / 2.5).
SPLIT_MARGIN = 1.5


def choose_method(program: Program, method: str, block_size: int = 5) -> str:
    """The method expvals runs: "statevector" or "split" (see expvals)."""
    if method not in METHODS:
        raise ValueError(f"unknown method {method!r}; choose one of {METHODS}")
    if program.final_rows is None or not program.ops:
        return "statevector"  # product states only: neither method builds a 2^n state
    from qcxr.quantum import split  # split builds on this module's block contractions

    terms = split.split_terms(program)
    if method == "split" and terms > split.MAX_TERMS:
        raise ValueError(
            f"the split method would carry {terms} terms for this circuit (more than "
            f"{split.MAX_TERMS}: too deep for it); use method='statevector' or 'auto'"
        )
    if method == "auto":
        if terms > split.MAX_TERMS:
            return "statevector"
        cheaper = SPLIT_MARGIN * split.split_cost(program, block_size)
        return "split" if cheaper < split.statevector_cost(program, block_size) else "statevector"
    return method


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
    chunk_size: int | str | None = "auto",
    memory_budget: float | None = None,
    method: str = "auto",
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
        remat: rematerialise each layer in the backward pass (jax.checkpoint): less memory, more
            time.
        chunk_size: simulate the batch in sequential micro-batches of this size inside the step
            (each checkpointed, so backprop keeps one micro-batch's intermediates; chunks of one
            sample use the adjoint method instead). "auto" (the default, memory.choose_chunk_size):
            on a CPU the whole batch if its states fit the L2 cache, else one sample at a time; on
            accelerators the largest chunk that fits the budget. None: the whole batch at once.
        memory_budget: bytes the simulation may use (default: see memory.default_budget()).
        method: "statevector" (the 2^n state), "split" (an exact sum of products over a cut of
            the wires, see qcxr.quantum.split: for shallow circuits) or "auto" (the default: the
            split method where its estimated cost is well below the statevector's and it fits
            the memory budget). chunk_size and remat apply to the statevector only.

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
    if choose_method(program, method, block_size) == "split":
        from qcxr.quantum import split

        plan = split.plan_split(program)
        if method == "split":
            check_split_memory(a, plan, batch, dtype, memory_budget)
        # "auto" falls back to the statevector when the split method's memory does not fit.
        if method == "split" or fits_split_memory(a, plan, batch, dtype, memory_budget):
            return _simulate(a, program, weights, xf, block_size, remat, plan).reshape(*lead, n)
    if chunk_size == "auto":
        chunk_size = choose_chunk_size(
            a, program, batch, dtype, remat, memory_budget, block_size
        )
    chunk = batch if chunk_size is None else max(1, min(int(chunk_size), batch))
    lanes = 1
    if chunk == 1 and batch > 1:  # two samples side by side if their working states fit too
        lanes = choose_lanes(a, program, batch, dtype, remat, memory_budget, block_size)
    check_memory(a, program, batch, chunk, dtype, remat, memory_budget, block_size, lanes)
    sim = functools.partial(
        _simulate, a, program, weights, block_size=block_size, remat=remat
    )
    if chunk >= batch:
        out = sim(xf)
    elif chunk == 1:
        out = _map_samples(sim, xf, remat, lanes)
    else:
        num = -(-batch // chunk)
        pad = num * chunk - batch
        xs = jnp.pad(xf, ((0, pad), (0, 0))).reshape(num, chunk, n)
        # Each chunk is rematerialised in the backward pass, so backprop keeps one chunk's
        # intermediates.
        out = jax.lax.map(jax.checkpoint(sim), xs).reshape(num * chunk, n)[:batch]
    return out.reshape(*lead, n)


def _map_samples(sim, xf: jnp.ndarray, remat: bool, lanes: int) -> jnp.ndarray:
    """One sample at a time (the adjoint path), `lanes` independent samples per map step.

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
