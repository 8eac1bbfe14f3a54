"""Exact wire cutting of one wire between two fragments (Peng et al., PRL 125, 150504, 2020).

A circuit that passes one wire from a front part to a back part can be run as two smaller
fragments. Write the cut wire's reduced state as rho = (I + <X> X + <Y> Y + <Z> Z) / 2 and expand
it in six Pauli eigenstates:

    rho = (1 + <Z>)/2 |0><0| + (1 - <Z>)/2 |1><1| + <X>/2 (|+><+| - |-><-|)
          + <Y>/2 (|+i><+i| - |-i><-i|).

The back part is linear in its input state, so the back's output distribution is the same
combination of the back fragment run from each of the six preparations: p = sum_j c_j B_j with
c = ((1 + <Z>)/2, (1 - <Z>)/2, <X>/2, -<X>/2, <Y>/2, -<Y>/2). The front fragment is measured on
the cut wire in Z, X and Y (three runs); the back fragment runs six times: nine fragment runs,
exact. The front's other wires are discarded, which is exactly the marginal the back sees, so the
result equals the back wires' marginal of the joined circuit (`joined_circuit`).

The Y pairing matters: |+i> goes with +<Y>/2. (The published code of arXiv 2501.06225 pairs
RX(pi/2)|0> = |-i> with +<Y>/2; its answers are right only because its cut wire is used as a
control and measured in Z, where the Y terms cancel.)

Fragments read the same flat weight vector and the same inputs as the joined circuit (angles are
indices), so each angle is one parameter however many fragment runs use it.
"""

from __future__ import annotations

from dataclasses import dataclass

import jax
import jax.numpy as jnp

from qcxr.quantum.kernels.program import apply_gate
from qcxr.quantum.methods.statevector import circuit_state, measure_state
from qcxr.quantum.representation import gates
from qcxr.quantum.representation.circuit import Circuit, Measurement, Op, op, probs

#: Preparations of the back fragment's wire 0 from |0>, with their coefficient's Pauli and sign.
PREPARATIONS: tuple[tuple[str, tuple[str, ...], str, float], ...] = (
    ("0", (), "z", +1.0),
    ("1", ("x",), "z", -1.0),
    ("+", ("h",), "x", +1.0),
    ("-", ("x", "h"), "x", -1.0),
    ("+i", ("h", "s"), "y", +1.0),  # S H |0> = (|0> + i|1>)/sqrt2
    ("-i", ("x", "h", "s"), "y", -1.0),  # S H |1> = (|0> - i|1>)/sqrt2
)
#: Measurement bases of the front fragment's cut wire: the rotation to the Z basis.
BASES: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("z", ()),
    ("x", ("h",)),
    ("y", ("sdg", "h")),  # H S^dagger maps |+i> to |0> and |-i> to |1>
)


@dataclass(frozen=True)
class WireCut:
    """Two fragments joined by one wire.

    Attributes:
        front: the front fragment (its measurement is ignored).
        cut_wire: the front wire that is carried over.
        back: the back fragment; its wire 0 receives the cut wire, its measurement (probabilities)
            is the result.
    """

    front: Circuit
    cut_wire: int
    back: Circuit

    def __post_init__(self):
        if not 0 <= self.cut_wire < self.front.num_qubits:
            raise ValueError(
                f"cut_wire {self.cut_wire} is not a wire of the {self.front.num_qubits}-qubit "
                "front fragment"
            )
        if self.back.measurement.kind != "probs":
            raise ValueError("the back fragment of a wire cut must measure probabilities")

    @property
    def num_weights(self) -> int:
        """Length of the shared flat weight vector."""
        return max(self.front.num_weights, self.back.num_weights)

    @property
    def output_size(self) -> int:
        """Probabilities per sample (the back fragment's)."""
        return self.back.output_size


def front_circuits(cut: WireCut) -> tuple[Circuit, ...]:
    """The three front fragment runs: the cut wire rotated to Z, X, Y basis and measured.

    Returns:
        Circuits in BASES order, each measuring probs([cut_wire]).
    """
    w = cut.cut_wire
    return tuple(
        cut.front.with_ops(after=tuple(op(g, w) for g in rot), measurement=probs([w]))
        for _, rot in BASES
    )


def back_circuits(cut: WireCut) -> tuple[Circuit, ...]:
    """The six back fragment runs: wire 0 prepared in each Pauli eigenstate (PREPARATIONS order)."""
    return tuple(
        cut.back.with_ops(before=tuple(op(g, 0) for g in prep)) for _, prep, _, _ in PREPARATIONS
    )


def joined_circuit(cut: WireCut) -> Circuit:
    """The uncut circuit the fragments reconstruct.

    Front wires keep their numbers; back wire 0 becomes the cut wire and back wire k >= 1 becomes
    front.num_qubits + k - 1. The measurement is the back's, on the mapped wires.

    Returns:
        A Circuit on front.num_qubits + back.num_qubits - 1 wires.
    """
    nf = cut.front.num_qubits

    def wire(k: int) -> int:
        return cut.cut_wire if k == 0 else nf + k - 1

    back_ops = tuple(Op(o.gate, tuple(wire(k) for k in o.wires), o.angles) for o in cut.back.ops)
    m = cut.back.measurement
    return Circuit(
        nf + cut.back.num_qubits - 1,
        (*cut.front.ops, *back_ops),
        Measurement(m.kind, tuple(wire(k) for k in m.wires)),
    )


def coefficients(expectations: jnp.ndarray) -> jnp.ndarray:
    """Coefficients of the six preparations from the cut wire's <Z>, <X>, <Y>.

    Args:
        expectations: f[B, 3], columns in BASES order (Z, X, Y).

    Returns:
        f[B, 6] in PREPARATIONS order.
    """
    col = {b: expectations[:, i] for i, (b, _) in enumerate(BASES)}
    const = {"z": 0.5, "x": 0.0, "y": 0.0}
    return jnp.stack([const[p] + 0.5 * s * col[p] for _, _, p, s in PREPARATIONS], axis=1)


def _sample(key, p: jnp.ndarray, shots: int) -> jnp.ndarray:
    """Empirical frequencies of `shots` draws from each row of p [B, K]."""
    p = jnp.clip(p, 0.0, None)
    p = p / jnp.sum(p, axis=1, keepdims=True)
    counts = jax.random.multinomial(key, shots, p, dtype=p.dtype)
    return counts / shots


def cut_probs(
    cut: WireCut,
    weights: jnp.ndarray,
    x: jnp.ndarray,
    *,
    shots: int | None = None,
    key: jax.Array | None = None,
) -> jnp.ndarray:
    """The back fragment's probabilities, reconstructed from the nine fragment runs.

    Every fragment runs on the whole batch at once (no loop over samples): the three front runs
    share one front state before their basis rotations, and the six back runs are one batch of
    6 B with wire 0 prepared in each Pauli eigenstate. The fragment circuits themselves
    (front_circuits, back_circuits) are what PennyLane runs in the tests.

    Args:
        cut: the WireCut.
        weights: f[P] shared flat weights, P >= cut.num_weights.
        x: f[B, I] inputs (fragments read them by index).
        shots: None for exact fragment probabilities; N to replace each fragment run's
            distribution by the frequencies of N samples from it (what a device returns). With
            shots the result is not differentiable (frequencies are piecewise constant).
        key: PRNG key, required with shots (one independent stream per fragment run).

    Returns:
        f[B, cut.output_size]. Exact: equal to the joined circuit's marginal up to rounding. With
        shots: an unbiased estimate (it may leave [0, 1]; the coefficients are signed).
    """
    if shots is not None:
        if key is None:
            raise ValueError("cut_probs with shots needs a PRNG key (key=jax.random.key(...))")
        if int(shots) < 1:
            raise ValueError(f"shots must be a positive integer, got {shots}")
        keys = list(jax.random.split(key, len(BASES) + len(PREPARATIONS)))
    b = x.shape[0]
    # The three front runs share everything before their basis rotation: one front state, then
    # each rotation and measurement (the same numbers as three separate runs).
    front = circuit_state(cut.front, weights, x)
    expectations = []
    for c in front_circuits(cut):
        rotated = front
        for o in c.ops[len(cut.front.ops) :]:
            rotated = apply_gate(rotated, gates.matrix(o.gate, (), rotated.real.dtype), o.wires)
        p = measure_state(rotated, c.measurement)  # [B, 2]
        if shots is not None:
            p = _sample(keys.pop(), p, int(shots))
        expectations.append(p[:, 0] - p[:, 1])
    coef = coefficients(jnp.stack(expectations, axis=1))  # [B, 6]
    # The six back runs as one batch of 6 B: wire 0 starts in each preparation (its ops applied to
    # |0>), the other wires in |0>.
    dtype = front.real.dtype
    zero = jnp.array([1.0, 0.0], dtype)
    preps = []
    for _, ops, _, _ in PREPARATIONS:
        v = zero
        for g in ops:
            v = gates.matrix(g, (), dtype) @ v.astype(
                jnp.result_type(v, gates.matrix(g, (), dtype))
            )
        preps.append(v)
    ptype = jnp.result_type(*preps)
    initial = jnp.zeros((len(preps), b, cut.back.num_qubits, 2), ptype).at[..., 0].set(1.0)
    initial = initial.at[:, :, 0, :].set(jnp.stack([v.astype(ptype) for v in preps])[:, None, :])
    xs = jnp.broadcast_to(x, (len(preps), *x.shape)).reshape(-1, x.shape[1])
    state = circuit_state(cut.back, weights, xs, initial.reshape(-1, cut.back.num_qubits, 2))
    backs = measure_state(state, cut.back.measurement).reshape(len(preps), b, -1)
    out = 0.0
    for j in range(len(preps)):
        p = backs[j]
        if shots is not None:
            p = _sample(keys.pop(), p, int(shots))
        out = out + coef[:, j : j + 1] * p
    return out
