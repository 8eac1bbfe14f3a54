"""Kernels of the native engine: the compiled layered form and the operations on states, pure JAX.

Layer 2 of qcxr.quantum (representation -> kernels -> methods -> dispatcher): these functions know
states, GF(2) maps and gate matrices, never a simulation method. The methods (statevector.py,
split.py) are built from them.

What makes them fast (docs/design.md, "Quantum simulation is ours"):
- The angle encoding and every rotation layer before the first entangler are single-qubit gates on
  |0...0>, so the state after them is a product state, built directly from per-wire 2-vectors.
- A rotation layer is applied a few qubits at a time as a small Kronecker block (2^k x 2^k)
  contracted into the state. Each contraction takes the block's qubits from the back of the state
  and puts them at the front (`bkr,jk->brj` is a plain matmul layout for XLA), so after a whole
  layer the qubit order is back where it started and the batch axis has moved from first to last:
  a layer turns a batch-major state [B, 2^n] into a batch-minor one [2^n, B], and the next
  permutation's gather turns it back (the layout change rides on the gather's memory pass). Only a
  rotation layer that directly follows another one transposes its batch-minor input.
- A CNOT network is a permutation of basis indices (a linear map over GF(2)): one gather, whose
  gradient is the inverse gather (a custom VJP, instead of JAX's default scatter-add).
- CNOT networks at the end of the circuit (and any CZ) are never applied: their effect on <Z_i> is a
  parity of basis bits, folded into +-1 sign tables, so every <Z_i> comes from one pass over
  |amplitude|^2 (two small matmuls over a (hi, lo) split of the index).
- A circuit of real gates (H, RY, CNOT) keeps a real state: half the memory and arithmetic.

Wire 0 is the most significant bit of a basis index. States alternate between batch-major
[B, 2^n] and batch-minor [2^n, B] (each function states which it takes and returns).

Also here: `apply_gate`, one 1- or 2-qubit gate on a state reshaped to [B] + [2] * n (the general
statevector path for circuits of any shape).
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass

import jax
import jax.numpy as jnp
import numpy as np

from qcxr.quantum.representation import gates
from qcxr.quantum.representation.ansatz import Ansatz, encoding_vectors

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


def gf2_apply(index: jnp.ndarray, rows: tuple[int, ...], n: int) -> jnp.ndarray:
    """Apply a GF(2) map to basis indices (uint32 array)."""
    out = jnp.zeros_like(index)
    for j, mask in enumerate(rows):
        bit = jax.lax.population_count(index & jnp.uint32(mask)) & jnp.uint32(1)
        out = out | (bit << jnp.uint32(n - 1 - j))
    return out


def inverse_rows(rows: tuple[int, ...], n: int) -> tuple[int, ...]:
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


def precision() -> jax.lax.Precision:
    """Matmul precision: full float32/64 everywhere.

    On the CPU, DEFAULT already computes in the operands' precision (checked: identical results to
    HIGHEST) and lets XLA pick its faster kernels; on GPUs and TPUs DEFAULT may round float32
    operands to TF32 or bfloat16, so HIGHEST is requested there.
    """
    return jax.lax.Precision.DEFAULT if jax.default_backend() == "cpu" else _HIGHEST


def dot(a: jnp.ndarray, b: jnp.ndarray, ca: int, cb: int) -> jnp.ndarray:
    """2-D dot contracting a's axis ca with b's axis cb; output (a's free axis, b's free axis)."""
    return jax.lax.dot_general(a, b, (((ca,), (cb,)), ((), ())), precision=precision())


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
        idx = gf2_apply(index, inverse_rows(rows, n), n).astype(jnp.int32)
        inv_idx = gf2_apply(index, rows, n).astype(jnp.int32)
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

    return apply(inverse_rows(rows, n)), apply(rows)


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
    return dot(m, s, 1, 1)


def _to_front_fwd(s, m):
    return _to_front(s, m), (s, m)


def _to_front_bwd(res, g):
    s, m = res
    return dot(g, m, 0, 0), dot(g, s, 1, 0)


_to_front.defvjp(_to_front_fwd, _to_front_bwd)


@jax.custom_vjp
def _to_back(s: jnp.ndarray, m: jnp.ndarray) -> jnp.ndarray:
    """[K, R] -> [R, J]: the mirror of _to_front, contracting the leading k wires (a batch-minor
    state's major axis) and moving them to the back."""
    return dot(s, m, 0, 1)


def _to_back_fwd(s, m):
    return _to_back(s, m), (s, m)


def _to_back_bwd(res, g):
    s, m = res
    return dot(m, g, 0, 1), dot(g, s, 0, 1)


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
    A batch-minor input (a layer right after another, with no permutation between) is transposed
    first: that one transpose is materialised.

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
    return blocks_to_front(state.astype(dtype), kron, blocks).reshape(-1, b), "minor"


def blocks_to_front(state, kron, blocks):
    """Contract each Kronecker block with the state's trailing wires, moving them to the front.

    Returns the flat amplitudes; after all blocks the wire order is restored (the batch axis of a
    batch-major input ends up last).
    """
    s = state.reshape(-1)
    for m, k in reversed(list(zip(kron, blocks, strict=True))):
        s = _to_front(s.reshape(-1, 2**k), m).reshape(-1)
    return s


def blocks_to_back(state, kron, blocks):
    """The mirror of blocks_to_front: each block contracted from the front, moved to the back.

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
    return _outer(half_product(vectors[:, :h]), half_product(vectors[:, h:])).reshape(b, -1)


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
    g_hi = jnp.einsum("bhl,bl->bh", g, lo, precision=precision())
    g_lo = jnp.einsum("bhl,bh->bl", g, hi, precision=precision())
    return g_hi, g_lo


_outer.defvjp(_outer_fwd, _outer_bwd)


def half_product(vectors: jnp.ndarray) -> jnp.ndarray:
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
        t = dot(p.reshape(2**hi, 2**lo), s_lo, 1, 0)  # [hi, n]
        return jnp.sum(t * s_hi, axis=0)[None]
    if layout == "minor":
        b = p.shape[1]
        t = jax.lax.dot_general(
            p.reshape(2**hi, 2**lo, b), s_lo, (((1,), (0,)), ((), ())), precision=precision()
        )  # [hi, B, n]
        return jnp.einsum("hbj,hj->bj", t, s_hi)
    b = p.shape[0]
    t = jax.lax.dot_general(
        p.reshape(b, 2**hi, 2**lo), s_lo, (((2,), (0,)), ((), ())), precision=precision()
    )  # [B, hi, n]
    return jnp.einsum("bhj,hj->bj", t, s_hi)


def layer_mats(ansatz: Ansatz, weights: jnp.ndarray, layer: int) -> jnp.ndarray:
    """Gate matrices of one rotation layer of a library ansatz.

    Args:
        ansatz: the ansatz (its rotation gate).
        weights: f[*ansatz.weight_shape].
        layer: 0-based layer index.

    Returns:
        [n, 2, 2] matrices, one per wire.
    """
    return gates.matrices(ansatz.rotation, weights[layer])


def folded_vectors(ansatz: Ansatz, program: Program, weights, x) -> jnp.ndarray:
    """Per-wire single-qubit states after the encoding and the layers folded into the product state.

    Args:
        ansatz: the library ansatz.
        program: compile_ansatz(ansatz).
        weights: f[*ansatz.weight_shape].
        x: f[B, n] encoding angles.

    Returns:
        [B, n, 2] amplitudes (real for real gates, else complex).
    """
    vec = encoding_vectors(ansatz.encoding, x)  # [B, n, 2]
    for layer in program.folded:
        m = layer_mats(ansatz, weights, layer)
        vec = jnp.einsum(
            "nij,bnj->bni", m, vec.astype(jnp.result_type(m, vec)), precision=precision()
        )
    return vec


_LETTERS = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVW"


def apply_gate(state: jnp.ndarray, m: jnp.ndarray, wires: tuple[int, ...]) -> jnp.ndarray:
    """Apply a 1- or 2-qubit gate to a batch of states shaped [B] + [2] * n.

    One einsum over the gate's wire axes; the other axes are untouched, so nothing is transposed
    by hand (XLA picks the contraction layout).

    Args:
        state: [B, 2, ..., 2] amplitudes, axis 1 + w for wire w.
        m: [2^k, 2^k] (the same gate for every sample) or [B, 2^k, 2^k] (a gate per sample, e.g.
            an input-angle rotation), k = len(wires), the first wire the most significant.
        wires: the k wires, distinct.

    Returns:
        The new state, same shape; dtype promoted with the gate's.
    """
    n, k = state.ndim - 1, len(wires)
    if n + 2 * k + 1 > len(_LETTERS):
        raise ValueError(f"apply_gate supports up to {len(_LETTERS) - 5} wires, got {n}")
    old = _LETTERS[:n]
    new = _LETTERS[n : n + k]
    out = list(old)
    for w, c in zip(wires, new, strict=True):
        out[w] = c
    gate_in = "".join(old[w] for w in wires)
    batch = "Z" if m.ndim == 3 else ""
    mk = m.reshape(m.shape[:-2] + (2,) * (2 * k))
    spec = f"{batch}{new}{gate_in},Z{old}->Z{''.join(out)}"
    dtype = jnp.result_type(state.dtype, m.dtype)
    return jnp.einsum(spec, mk.astype(dtype), state.astype(dtype), precision=precision())


def wire_probs(state: jnp.ndarray, wires: tuple[int, ...]) -> jnp.ndarray:
    """Probabilities of the outcomes of `wires` for a batch of states shaped [B] + [2] * n.

    Args:
        state: [B, 2, ..., 2] amplitudes.
        wires: measured wires, the first the most significant bit of the outcome index.

    Returns:
        f[B, 2^len(wires)].
    """
    n = state.ndim - 1
    p = jnp.real(state * jnp.conj(state)) if jnp.iscomplexobj(state) else state * state
    rest = tuple(1 + w for w in range(n) if w not in wires)
    p = jnp.sum(p, axis=rest)  # remaining axes: the measured wires in increasing order
    order = sorted(wires)
    p = jnp.transpose(p, (0, *(1 + order.index(w) for w in wires)))
    return p.reshape(p.shape[0], -1)
