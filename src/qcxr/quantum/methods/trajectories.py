"""The trajectories method: Monte Carlo wavefunction estimates of a noisy circuit's <Z>.

Layer 3 of qcxr.quantum (a method). Each of T trajectories runs the circuit on a pure state
(statevector kernels: kernels.apply_gate on [B] + [2] * n, the encoding on per-wire 2-vectors until
the first two-qubit gate), and after every noisy gate draws one branch of every channel on each of
its wires. The estimate is the mean over trajectories of <psi|Z_w|psi>.

Unravelling (noise.branches), state-independent and unbiased: branch k of a channel is drawn with
a fixed probability q_k and applies A_k = K_k / sqrt(q_k), so E[A rho A^dagger] = sum_k K_k rho
K_k^dagger exactly. Pauli channels (depolarizing, bit and phase flip): q_k are the Pauli
probabilities and A_k the Paulis, i.e. "sample the Pauli with its probability" (Y is applied as
-iY, a real matrix: a global phase, so real circuits keep a real state). Damping channels: q =
(1 - g, g), A_0 = diag(1, sqrt(1-g)) / sqrt(1-g), A_1 = K_1 / sqrt(g): the state is not
renormalised and <psi|Z|psi> of the unnormalised state is the unbiased term (its norm is 1 in
expectation), rather than drawing with probability ||K psi||^2 and renormalising, whose branch
probabilities depend on the parameters.
Because no draw depends on the parameters, the estimate is a differentiable function of the
weights and inputs for fixed draws, and its gradient (pathwise, by autodiff) is an unbiased
estimate of the exact gradient. Standard error ~ 1/sqrt(T). Pauli noise in the Clifford tail and
readout error are exact factors (noise.pauli_tail), not sampled.

Keys: one key per call; every (trajectory, sample, noise location) gets its own draw from it.

Cost: T x B statevector simulations, O(T B 2^n) per gate; the T x B states run in chunks (the
whole set, one trajectory of the batch, or one state at a time, each chunk rematerialised in the
backward pass) chosen from the memory budget.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from qcxr.quantum.kernels.program import (
    apply_gate,
    block_sizes,
    cnot_rows,
    identity_rows,
    permute,
    product_state,
    wire_probs,
    z_expectations,
)
from qcxr.quantum.representation import gates
from qcxr.quantum.representation.circuit import Circuit
from qcxr.quantum.representation.noise import NoiseModel, branches, noisy_gate_mask, pauli_tail

#: Live temporaries beside the kept states.
_WORKING = 3


def _real_phase(ops: np.ndarray) -> np.ndarray:
    """Each operator times the global phase that makes it real where one does (Y -> -iY)."""
    out = ops.copy()
    for k, m in enumerate(ops):
        if np.abs(m.real).max() == 0 and np.abs(m.imag).max() > 0:
            out[k] = -1j * m
    return out


def _tables(model: NoiseModel, real: bool):
    """Per gate channel: (log-probabilities f64[K], operators [K, 2, 2])."""
    out = []
    for name, p in model.gate_channels:
        q, a = branches(name, p)
        if real:
            a = _real_phase(a)
        with np.errstate(divide="ignore"):
            out.append((np.log(q), a.real if real else a))
    return out


def noise_sites(circuit: Circuit, model: NoiseModel, tail: bool = True) -> list[tuple[int, int]]:
    """(op index, wire) of every place the simulation draws gate-channel branches (without the
    Clifford tail's Pauli noise when `tail`: noise.pauli_tail applies it exactly)."""
    start = pauli_tail(circuit, model)[0] if tail else len(circuit.ops)
    mask = noisy_gate_mask(circuit, model)
    return [(i, w) for i, o in enumerate(circuit.ops) if mask[i] and i < start for w in o.wires]


def draw(
    circuit: Circuit,
    model: NoiseModel,
    key,
    shape: tuple[int, ...],
    dtype,
    real: bool,
    tail: bool = True,
):
    """Each noise site's drawn operator (every channel of the model composed, in order).

    Args:
        circuit, model: the noisy circuit.
        key: PRNG key.
        shape: leading shape of the draws, e.g. (T, B).
        dtype: float dtype; complex of its precision unless `real`.
        real: keep the operators real (a real circuit).
        tail: leave out the Clifford tail's Pauli noise (see noise_sites).

    Returns:
        dict (op index, wire) -> [*shape, 2, 2] operators.
    """
    sites = noise_sites(circuit, model, tail)
    tables = _tables(model, real)
    ct = dtype if real else (jnp.complex128 if jnp.dtype(dtype) == jnp.float64 else jnp.complex64)
    out = {}
    keys = jax.random.split(key, max(1, len(sites) * len(tables)))
    for s, site in enumerate(sites):
        m = None
        for c, (logq, ops) in enumerate(tables):
            idx = jax.random.categorical(keys[s * len(tables) + c], jnp.asarray(logq), shape=shape)
            a = jnp.asarray(ops, ct)[idx]
            m = a if m is None else jnp.einsum("...ij,...jk->...ik", a, m)
        out[site] = m
    return out


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


def trajectory_state(circuit: Circuit, weights, x, ops: dict) -> jnp.ndarray:
    """One pure state per sample, with the drawn noise operators after their gates.

    Args:
        circuit: the Circuit.
        weights: f[P] flat weights.
        x: f[B, I] input angles.
        ops: (op index, wire) -> [B, 2, 2] drawn operators (see draw).

    Returns:
        [B, 2, ..., 2] (unnormalised) amplitudes.
    """
    n, b = circuit.num_qubits, x.shape[0]
    dtype = jnp.result_type(weights.dtype, x.dtype, jnp.float32)
    vecs = [jnp.zeros((b, 2), dtype).at[:, 0].set(1.0) for _ in range(n)]
    state = None
    for i, o in enumerate(circuit.ops):
        m = gates.matrix(o.gate, _angle_values(o, weights, x), dtype)
        if len(o.wires) == 1:
            w = o.wires[0]
            if (i, w) in ops:
                m = ops[(i, w)] @ m
            if state is None:
                mb = jnp.broadcast_to(m, (b, 2, 2))
                vt = jnp.result_type(mb.dtype, vecs[w].dtype)
                vecs[w] = jnp.einsum("bij,bj->bi", mb.astype(vt), vecs[w].astype(vt))
            else:
                state = apply_gate(state, m, o.wires)
            continue
        if state is None:
            vt = jnp.result_type(*vecs)
            flat = product_state(jnp.stack([v.astype(vt) for v in vecs], 1))
            state = flat.reshape((b,) + (2,) * n)
        if any((i, w) in ops for w in o.wires):
            eye = jnp.broadcast_to(jnp.eye(2, dtype=dtype), (b, 2, 2))
            ka, kb = (ops.get((i, w), eye) for w in o.wires)
            m = jnp.einsum("bij,bkl->bikjl", ka, kb).reshape(b, 4, 4) @ m
        state = apply_gate(state, m, o.wires)
    if state is None:
        vt = jnp.result_type(*vecs)
        flat = product_state(jnp.stack([v.astype(vt) for v in vecs], 1))
        state = flat.reshape((b,) + (2,) * n)
    return state


def estimate_bytes(circuit: Circuit, chunk: int, dtype, real: bool, layered: bool = False) -> int:
    """Peak bytes of a forward + backward pass over `chunk` trajectory states at once (the general
    path keeps one state per gate after the first CNOT; the layered path one per Kronecker block
    and CNOT network)."""
    item = jnp.dtype(dtype).itemsize * (1 if real else 2)
    entangled = next((i for i, o in enumerate(circuit.ops) if len(o.wires) > 1), len(circuit.ops))
    if layered:
        ops = circuit.ops
        pairs = zip(ops[entangled:], ops[entangled + 1 :], strict=False)
        # layers of single-qubit gates on the full state: a CNOT followed by a one-qubit gate
        layers = sum(1 for a, b in pairs if len(a.wires) > 1 and len(b.wires) == 1)
        kept = layers * (len(block_sizes(circuit.num_qubits, 5)) + 2) + 3
    else:
        kept = len(circuit.ops) - entangled + 1
    return chunk * 2**circuit.num_qubits * item * (kept + _WORKING)


def simulate(
    circuit: Circuit,
    model: NoiseModel,
    weights,
    x,
    key,
    num_trajectories: int,
    chunk: str = "all",
) -> jnp.ndarray:
    """The trajectories estimate of <Z> on the measured wires.

    Args:
        circuit: a Circuit measuring <Z>.
        model: the NoiseModel.
        weights: f[P] flat weights.
        x: f[B, I] input angles.
        key: PRNG key (used once: every draw is derived from it).
        num_trajectories: T >= 1.
        chunk: "all" (the T x B states at once), "batch" (one trajectory of the batch at a time)
            or "state" (one state at a time); chunks are rematerialised in the backward pass.

    Returns:
        f[B, k] estimates (the mean over the T trajectories, exact factors applied).
    """
    b = x.shape[0]
    t = int(num_trajectories)
    dtype = jnp.result_type(weights.dtype, x.dtype, jnp.float32)
    real = circuit.is_real
    start, factors = pauli_tail(circuit, model)
    ops = draw(circuit, model, key, (t, b), dtype, real)
    wires = circuit.measurement.wires

    def z_of(xs, opsc):
        p = wire_probs(trajectory_state(circuit, weights, xs, opsc), wires)
        k = len(wires)
        bits = (np.arange(2**k)[:, None] >> np.arange(k - 1, -1, -1)[None, :]) & 1
        return p @ jnp.asarray(1.0 - 2.0 * bits, p.dtype)

    if not ops:  # nothing to draw: every trajectory is the same pure state
        return z_of(x, {}) * jnp.asarray(factors, dtype)
    if chunk == "all":
        flat = {s: m.reshape(t * b, 2, 2) for s, m in ops.items()}
        z = z_of(jnp.tile(x, (t, 1)), flat).reshape(t, b, -1)
    elif chunk == "batch":
        z = jax.lax.map(jax.checkpoint(lambda o: z_of(x, o)), ops)
    elif chunk == "state":
        xs = jnp.broadcast_to(x, (t,) + x.shape).reshape(t * b, 1, -1)
        flat = {s: m.reshape(t * b, 1, 2, 2) for s, m in ops.items()}
        z = jax.lax.map(jax.checkpoint(lambda a: z_of(a[0], a[1])), (xs, flat))
        z = z.reshape(t, b, -1)
    else:
        raise ValueError(f"unknown chunk {chunk!r}; choose all, batch or state")
    return jnp.mean(z, axis=0) * jnp.asarray(factors, z.dtype)


def probabilities(
    circuit: Circuit, model: NoiseModel, weights, x, key, num_trajectories: int
) -> jnp.ndarray:
    """The trajectories estimate of the basis-state distribution (for sampling shots).

    Every noise site is drawn (no tail shortcut: that one acts on <Z>, not on the distribution);
    the mean over trajectories of |psi|^2 is unbiased; it is renormalised to sum to one, which
    changes nothing for Pauli channels (unitary branches) and divides by the mean squared norm
    for damping channels.

    Args:
        circuit, model, weights, x, key, num_trajectories: as simulate.

    Returns:
        f[B, 2^n] probabilities (readout error not applied), one trajectory of the batch at a time.
    """
    b, t = x.shape[0], int(num_trajectories)
    dtype = jnp.result_type(weights.dtype, x.dtype, jnp.float32)
    ops = draw(circuit, model, key, (t, b), dtype, circuit.is_real, tail=False)
    every = tuple(range(circuit.num_qubits))

    def p_of(o):
        return wire_probs(trajectory_state(circuit, weights, x, o), every)

    if not ops:
        p = p_of({})
    else:
        p = jnp.mean(jax.lax.map(jax.checkpoint(p_of), ops), axis=0)
    return p / jnp.sum(p, axis=-1, keepdims=True)


#: Pauli channel branch -> (X bit, Z bit) of the drawn Pauli (Y = i X Z: both bits).
_PAULI_CODES = {
    "depolarizing": ((0, 0), (1, 0), (1, 1), (0, 1)),
    "bit_flip": ((0, 0), (1, 0)),
    "phase_flip": ((0, 0), (0, 1)),
}
#: X^x Z^z for code 2 x + z (real; X Z = -iY, a global phase away from Y).
_PAULI_MATS = np.array(
    [np.eye(2), [[1.0, 0.0], [0.0, -1.0]], [[0.0, 1.0], [1.0, 0.0]], [[0.0, -1.0], [1.0, 0.0]]]
)
#: Gates the layered path takes: single-qubit gates and CNOTs.
_LAYERED_TWO_QUBIT = frozenset({"cnot"})


def layered_applies(circuit: Circuit, model: NoiseModel) -> bool:
    """Whether simulate_layered runs this circuit: Pauli noise only, every two-qubit gate a CNOT,
    and every wire's errors absorbed by a later single-qubit gate or the exact tail (every wire
    has a single-qubit gate after each CNOT network but the last: the library's layered shape)."""
    if not model.is_pauli or not model.gate_channels:
        return False
    start = pauli_tail(circuit, model)[0]
    if any(len(o.wires) > 1 and o.gate not in _LAYERED_TWO_QUBIT for o in circuit.ops):
        return False
    # A CNOT before the tail leaves errors pending on its wires until a single-qubit gate.
    pending: set[int] = set()
    for o in circuit.ops[:start]:
        if len(o.wires) > 1:
            pending |= set(o.wires)
        else:
            pending.discard(o.wires[0])
    return not pending


def draw_codes(circuit: Circuit, model: NoiseModel, key, shape: tuple[int, ...]) -> dict:
    """Each noise site's drawn Pauli as a code 2 x + z (int32[*shape]), every channel composed."""
    sites = noise_sites(circuit, model)
    chans = model.gate_channels
    keys = jax.random.split(key, max(1, len(sites) * len(chans)))
    out = {}
    for s, site in enumerate(sites):
        code = jnp.zeros(shape, jnp.int32)
        for c, (name, p) in enumerate(chans):
            q, _ = branches(name, p)
            with np.errstate(divide="ignore"):
                logq = jnp.asarray(np.log(q))
            idx = jax.random.categorical(keys[s * len(chans) + c], logq, shape=shape)
            table = jnp.asarray([2 * xb + zb for xb, zb in _PAULI_CODES[name]], jnp.int32)
            code = code ^ table[idx]
        out[site] = code
    return out


def _apply_wire_mats(state, mats: list, n: int, block: int = 5):
    """Per-sample single-qubit matrices (None: identity) on a [B, 2^n] state, a Kronecker block
    of up to `block` wires per batched GEMM."""
    b = state.shape[0]
    start = 0
    for k in block_sizes(n, block):
        ms = mats[start : start + k]
        if any(m is not None for m in ms):
            eye = jnp.broadcast_to(jnp.eye(2, dtype=state.dtype), (b, 2, 2))
            kron = None
            for m in ms:
                m = eye if m is None else jnp.broadcast_to(m, (b, 2, 2))
                kron = (
                    m
                    if kron is None
                    else jnp.einsum("bij,bkl->bikjl", kron, m).reshape(
                        b, kron.shape[1] * 2, kron.shape[2] * 2
                    )
                )
            s = state.reshape(b, 2**start, 2**k, 2 ** (n - start - k))
            dtype = jnp.result_type(s, kron)
            s = jnp.einsum("bij,bpjq->bpiq", kron.astype(dtype), s.astype(dtype))
            state = s.reshape(b, -1)
        start += k
    return state


def layered_z(circuit: Circuit, weights, x, codes: dict) -> jnp.ndarray:
    """<Z> of one pure trajectory per sample on the fast path for Pauli noise (no tail factors).

    Pauli errors after CNOTs are pushed through the rest of the CNOT network (a Pauli string
    stays a Pauli string: X_c -> X_c X_t, Z_t -> Z_c Z_t) and folded, with the errors after
    single-qubit gates, into the next single-qubit matrices of their wires; so the 2^n state sees
    one batched Kronecker-block GEMM per layer of single-qubit gates and one gather
    (kernels.permute) per CNOT network, and the last network is folded into the measurement
    (kernels.z_expectations), as on the ideal statevector path.

    Args:
        circuit: a Circuit for which layered_applies holds.
        weights: f[P] flat weights.
        x: f[B, I] inputs.
        codes: site -> int32[B] drawn Pauli codes (draw_codes).

    Returns:
        f[B, n] expectations of <Z> on every wire (measured wires selected by the caller).
    """
    n, b = circuit.num_qubits, x.shape[0]
    dtype = jnp.result_type(weights.dtype, x.dtype, jnp.float32)
    paulis = jnp.asarray(_PAULI_MATS, dtype)
    xbits = [jnp.zeros((b,), jnp.int32) for _ in range(n)]  # pending Pauli string, X part
    zbits = [jnp.zeros((b,), jnp.int32) for _ in range(n)]
    vecs = [jnp.zeros((b, 2), dtype).at[:, 0].set(1.0) for _ in range(n)]
    mats: list = [None] * n  # single-qubit matrices waiting to be applied to the state
    rows = identity_rows(n)  # CNOT network waiting to be applied
    state = None
    for i, o in enumerate(circuit.ops):
        if len(o.wires) == 1:
            w = o.wires[0]
            m = gates.matrix(o.gate, _angle_values(o, weights, x), dtype)
            if state is not None and rows != identity_rows(n):
                state = permute(state, rows, n)
                rows = identity_rows(n)
            if state is not None:  # the pending Pauli before this gate
                p = paulis[2 * xbits[w] + zbits[w]]
                m = m @ p
                xbits[w] = zbits[w] = jnp.zeros((b,), jnp.int32)
            if (i, w) in codes:
                m = paulis[codes[(i, w)]] @ m
            if state is None:
                mb = jnp.broadcast_to(m, (b, 2, 2))
                vt = jnp.result_type(mb, vecs[w])
                vecs[w] = jnp.einsum("bij,bj->bi", mb.astype(vt), vecs[w].astype(vt))
            else:
                mats[w] = m if mats[w] is None else m @ mats[w]
            continue
        c, t = o.wires
        if state is None:
            vt = jnp.result_type(*vecs)
            state = product_state(jnp.stack([v.astype(vt) for v in vecs], 1))
        if any(m is not None for m in mats):
            state = _apply_wire_mats(state, mats, n)
            mats = [None] * n
        rows = cnot_rows(n, ((c, t),), rows)
        xbits[t] = xbits[t] ^ xbits[c]
        zbits[c] = zbits[c] ^ zbits[t]
        for w in (c, t):
            if (i, w) in codes:
                xbits[w] = xbits[w] ^ (codes[(i, w)] >> 1)
                zbits[w] = zbits[w] ^ (codes[(i, w)] & 1)
    if state is None:
        vt = jnp.result_type(*vecs)
        state = product_state(jnp.stack([v.astype(vt) for v in vecs], 1))
    if any(m is not None for m in mats):
        state = _apply_wire_mats(state, mats, n)
    return z_expectations(state, rows, n)


def simulate_layered(
    circuit: Circuit,
    model: NoiseModel,
    weights,
    x,
    key,
    num_trajectories: int,
    chunk: str = "all",
) -> jnp.ndarray:
    """The trajectories estimate on the fast path for Pauli noise (see layered_z); same contract
    and same estimator as simulate (the draws differ: they are Pauli codes here)."""
    b, t = x.shape[0], int(num_trajectories)
    _, factors = pauli_tail(circuit, model)
    codes = draw_codes(circuit, model, key, (t, b))
    wires = list(circuit.measurement.wires)

    def z_of(xs, cs):
        return layered_z(circuit, weights, xs, cs)[:, wires]

    if not codes:  # nothing to draw: every trajectory is the same pure state
        return z_of(x, {}) * jnp.asarray(factors, x.dtype)
    if chunk == "all":
        z = z_of(jnp.tile(x, (t, 1)), {s: c.reshape(t * b) for s, c in codes.items()})
        z = z.reshape(t, b, -1)
    elif chunk == "batch":
        z = jax.lax.map(jax.checkpoint(lambda cs: z_of(x, cs)), codes)
    elif chunk == "state":
        xs = jnp.broadcast_to(x, (t,) + x.shape).reshape(t * b, 1, -1)
        flat = {s: c.reshape(t * b, 1) for s, c in codes.items()}
        z = jax.lax.map(jax.checkpoint(lambda a: z_of(a[0], a[1])), (xs, flat))
        z = z.reshape(t, b, -1)
    else:
        raise ValueError(f"unknown chunk {chunk!r}; choose all, batch or state")
    return jnp.mean(z, axis=0) * jnp.asarray(factors, z.dtype)
