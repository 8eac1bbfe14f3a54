"""The density_matrix method: the exact 4^n mixed state of a noisy circuit (noise.py's model).

Layer 3 of qcxr.quantum (a method). The state is rho shaped [B] + [2] * n (row bits) + [2] * n
(column bits), so a gate U on wires W followed by its channels is one einsum of
kernels.apply_gate: the superoperator (channels) @ kron(U, conj(U)) on the axes (W, n + W) (4x4
for a one-qubit gate, 16x16 for a two-qubit gate; every configured channel on a wire folded into
one superoperator). Until the first two-qubit gate every wire is a 2x2 density matrix of its own
(the encoding costs O(n), not O(4^n)). Readout error, and Pauli noise in the circuit's Clifford
tail (the paper's last CNOT ring), are exact rescalings of <Z_w> (noise.pauli_tail) and are
applied as such. The state stays real when every gate of the circuit is real (every channel's
superoperator is real).

Cost: per gate O(B 4^n) operations; memory 4^n x itemsize per sample and state (16 MiB per sample
at 10 qubits in float32 real), times the intermediates autodiff keeps (one per einsum). The batch
runs at once when that fits the memory budget, else one sample at a time (each sample
rematerialised in the backward pass); it fails before allocation with the estimate otherwise.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np

from qcxr.quantum.kernels.program import apply_gate
from qcxr.quantum.representation import gates
from qcxr.quantum.representation.circuit import Circuit
from qcxr.quantum.representation.noise import NoiseModel, noisy_gate_mask, pauli_tail, superoperator

#: Live temporaries beside the kept intermediates (einsum operands and outputs).
_WORKING = 3


def _angle_values(o, weights, x):
    vals = []
    for a in o.angles:
        if a.source == "weight":
            vals.append(weights[a.index])
        elif a.source == "input":
            vals.append(x[:, a.index])
        else:
            vals.append(jnp.asarray(a.value, x.dtype))
    return tuple(vals)


def wire_superoperator(model: NoiseModel, dtype):
    """Every gate channel of the model composed on one wire, as a [4, 4] matrix (None if none)."""
    chans = model.gate_channels
    if not chans:
        return None
    s = np.eye(4, dtype=np.complex128)
    for name, p in chans:
        s = superoperator(name, p) @ s
    if np.abs(s.imag).max() > 0:  # not reached for the channels of noise.py
        return jnp.asarray(s, _complex(dtype))
    return jnp.asarray(s.real, dtype)


def _pair(sup):
    """A one-wire superoperator on each of two wires, on (row bits, column bits) of both."""
    s = sup.reshape(2, 2, 2, 2)  # (row', col', row, col)
    return jnp.einsum("ACac,BDbd->ABCDabcd", s, s).reshape(16, 16)


def _complex(dtype):
    return jnp.complex128 if jnp.dtype(dtype) == jnp.float64 else jnp.complex64


def num_kept(circuit: Circuit, model: NoiseModel) -> int:
    """Full density matrices autodiff keeps for one sample (one per op from the first two-qubit
    gate on: each op and its channels are one einsum)."""
    first = next((i for i, o in enumerate(circuit.ops) if len(o.wires) > 1), len(circuit.ops))
    return 1 + len(circuit.ops) - first


def estimate_bytes(circuit: Circuit, model: NoiseModel, chunk: int, dtype) -> int:
    """Peak bytes of a forward + backward pass over `chunk` samples at once."""
    item = jnp.dtype(dtype).itemsize * (1 if circuit.is_real else 2)
    rho = 4**circuit.num_qubits * item
    return chunk * rho * (num_kept(circuit, model) + _WORKING)


def density_matrix(
    circuit: Circuit, model: NoiseModel, weights, x, noisy_until: int | None = None
) -> jnp.ndarray:
    """The mixed state a noisy circuit prepares (before readout error).

    Args:
        circuit: the Circuit (its measurement is not applied).
        model: the NoiseModel.
        weights: f[P] flat weights, P >= circuit.num_weights.
        x: f[B, I] input angles.
        noisy_until: ops from this index on get no gate channels (noise.pauli_tail's start, whose
            effect the caller applies as factors); default: every op is noisy.

    Returns:
        [B] + [2] * n + [2] * n: axis 1 + w the row bit and 1 + n + w the column bit of wire w;
        real when every gate is real.
    """
    n, b = circuit.num_qubits, x.shape[0]
    dtype = jnp.result_type(weights.dtype, x.dtype, jnp.float32)
    weights, x = weights.astype(dtype), x.astype(dtype)
    sup = wire_superoperator(model, dtype)
    mask = noisy_gate_mask(circuit, model)
    if noisy_until is not None:
        mask = tuple(m and i < noisy_until for i, m in enumerate(mask))
    e0 = jnp.zeros((2, 2), dtype).at[0, 0].set(1.0)
    wires = [jnp.broadcast_to(e0, (b, 2, 2)) for _ in range(n)]  # per-wire rho until entangled
    rho = None
    sup2 = None if sup is None else _pair(sup)
    for o, noisy in zip(circuit.ops, mask, strict=True):
        m = gates.matrix(o.gate, _angle_values(o, weights, x), dtype)
        k = len(o.wires)
        # The gate and its channels as one superoperator on (row bits, column bits) of its
        # wires: kron(U, conj(U)) then the channels, so each op is a single einsum.
        s = jnp.einsum("...ij,...kl->...ikjl", m, jnp.conj(m)).reshape(m.shape[:-2] + (4**k,) * 2)
        if noisy and sup is not None:
            s = (sup if k == 1 else sup2).astype(jnp.result_type(sup, s)) @ s
        if rho is None and k == 1:
            w = o.wires[0]
            r = wires[w]
            st = jnp.result_type(s, r)
            r = (s.astype(st) @ r.reshape(b, 4, 1).astype(st))[..., 0]
            wires[w] = r.reshape(b, 2, 2)
            continue
        if rho is None:
            rho = _product(wires)
        rho = apply_gate(rho, s, (*o.wires, *(n + w for w in o.wires)))
    return _product(wires) if rho is None else rho


def _product(wires: list) -> jnp.ndarray:
    """kron of per-wire [B, 2, 2] density matrices -> [B] + [2] * n + [2] * n."""
    n = len(wires)
    dtype = jnp.result_type(*wires)
    rho = wires[0].astype(dtype)
    for r in wires[1:]:
        k = rho.ndim - 1  # current row+col axes, rows first
        h = k // 2
        rho = jnp.einsum("b...,bij->b...ij", rho, r.astype(dtype))
        # move the new row axis after the existing rows
        perm = (0, *range(1, 1 + h), 1 + k, *range(1 + h, 1 + k), 2 + k)
        rho = jnp.transpose(rho, perm)
    return rho.reshape((rho.shape[0],) + (2,) * (2 * n))


def diagonal(rho: jnp.ndarray) -> jnp.ndarray:
    """Basis-state probabilities f[B, 2^n] (wire 0 the most significant bit) of rho."""
    b = rho.shape[0]
    d = int(math.isqrt(int(np.prod(rho.shape[1:]))))
    return jnp.real(jnp.diagonal(rho.reshape(b, d, d), axis1=1, axis2=2))


def z_from_probs(p: jnp.ndarray, n: int, wires) -> jnp.ndarray:
    """<Z_w> for each of `wires` from full basis probabilities f[B, 2^n] -> f[B, len(wires)]."""
    pt = p.reshape((p.shape[0],) + (2,) * n)
    out = []
    for w in wires:
        rest = tuple(1 + v for v in range(n) if v != w)
        pw = jnp.sum(pt, axis=rest)
        out.append(pw[:, 0] - pw[:, 1])
    return jnp.stack(out, -1)


def simulate(circuit: Circuit, model: NoiseModel, weights, x, chunk: int) -> jnp.ndarray:
    """<Z> on the measured wires of a noisy circuit, exactly.

    Args:
        circuit: a Circuit measuring <Z> (measurement.kind == "expval_z").
        model: the NoiseModel (readout error included).
        weights: f[P] flat weights.
        x: f[B, I] input angles.
        chunk: samples at once: B (the whole batch) or 1 (one sample at a time, each
            rematerialised in the backward pass).

    Returns:
        f[B, k] expectations, k = len(circuit.measurement.wires).
    """
    n = circuit.num_qubits
    wires = circuit.measurement.wires
    # Pauli noise in the Clifford tail and readout error: exact factors (noise.pauli_tail).
    start, factors = pauli_tail(circuit, model)

    def one(xb):
        p = diagonal(density_matrix(circuit, model, weights, xb, start))
        return z_from_probs(p, n, wires)

    if chunk >= x.shape[0]:
        z = one(x)
    else:
        z = jax.lax.map(jax.checkpoint(lambda xi: one(xi[None])[0]), x)
    return z * jnp.asarray(factors, z.dtype)


def probabilities(circuit: Circuit, model: NoiseModel, weights, x) -> jnp.ndarray:
    """Basis-state probabilities f[B, 2^n] of the noisy state (before readout error)."""
    return diagonal(density_matrix(circuit, model, weights, x))
