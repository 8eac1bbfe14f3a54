"""Noise models on the circuit representation: single-wire channels after gates, readout error.

Representation layer of qcxr.quantum (rank 1, beside ansatz.py): a `NoiseModel` is data, like a
Circuit; the methods (density.py, trajectories.py, shots.py) turn a circuit plus a model into a
function of (weights, inputs).

Channels, exactly PennyLane's definitions (Kraus operators K_k, rho -> sum_k K_k rho K_k^dagger):
    depolarizing(p)       qml.DepolarizingChannel: sqrt(1-p) I, sqrt(p/3) (X, Y, Z)
    bit_flip(p)           qml.BitFlip:             sqrt(1-p) I, sqrt(p) X
    phase_flip(p)         qml.PhaseFlip:           sqrt(1-p) I, sqrt(p) Z
    amplitude_damping(g)  qml.AmplitudeDamping:    [[1, 0], [0, sqrt(1-g)]], [[0, sqrt(g)], [0, 0]]
    phase_damping(l)      qml.PhaseDamping:        [[1, 0], [0, sqrt(1-l)]], [[0, 0], [0, sqrt(l)]]
    readout(p)            each measured bit flips with probability p (symmetric), independently.

Placement: after every gate, each configured channel on every wire the gate touches, in the order
of CHANNELS (a two-qubit gate gets the single-wire channel on each of its wires, as
qml.DepolarizingChannel per wire). With noisy_encoding=False the encoding gates (the leading gates
that read inputs or no angle at all, before the first trainable or two-qubit gate) stay ideal.
Readout error acts on the measurement only.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np

from qcxr.quantum.representation.circuit import Circuit

#: Gate channels in the order they are applied after a gate.
GATE_CHANNELS = ("depolarizing", "bit_flip", "phase_flip", "amplitude_damping", "phase_damping")
#: Every key a noise mapping may hold.
CHANNELS = (*GATE_CHANNELS, "readout")
#: Channels that are a mixture of Pauli unitaries (sampled exactly as such by trajectories).
PAULI_CHANNELS = frozenset({"depolarizing", "bit_flip", "phase_flip"})

_I = np.eye(2)
_X = np.array([[0.0, 1.0], [1.0, 0.0]])
_Y = np.array([[0.0, -1j], [1j, 0.0]])
_Z = np.array([[1.0, 0.0], [0.0, -1.0]])


@dataclass(frozen=True)
class NoiseModel:
    """Channel parameters, each in [0, 1]; 0 means the channel is off.

    Attributes:
        depolarizing, bit_flip, phase_flip, amplitude_damping, phase_damping: gate channels.
        readout: symmetric flip probability of each measured bit.
        noisy_encoding: whether the encoding gates are followed by the channels too.
    """

    depolarizing: float = 0.0
    bit_flip: float = 0.0
    phase_flip: float = 0.0
    amplitude_damping: float = 0.0
    phase_damping: float = 0.0
    readout: float = 0.0
    noisy_encoding: bool = True

    def __post_init__(self):
        for name in CHANNELS:
            v = getattr(self, name)
            if not (isinstance(v, int | float) and math.isfinite(v) and 0.0 <= v <= 1.0):
                raise ValueError(f"noise {name!r} must be a probability in [0, 1], got {v!r}")

    @property
    def gate_channels(self) -> tuple[tuple[str, float], ...]:
        """(name, parameter) of the gate channels that are on, in application order."""
        return tuple((c, float(getattr(self, c))) for c in GATE_CHANNELS if getattr(self, c) > 0)

    @property
    def items(self) -> tuple[tuple[str, float], ...]:
        """(name, parameter) of every channel that is on, readout included, in CHANNELS order."""
        return tuple((c, float(getattr(self, c))) for c in CHANNELS if getattr(self, c) > 0)

    @property
    def is_ideal(self) -> bool:
        """No channel is on (readout included)."""
        return not self.gate_channels and self.readout == 0

    @property
    def is_pauli(self) -> bool:
        """Every gate channel that is on is a Pauli mixture."""
        return all(c in PAULI_CHANNELS for c, _ in self.gate_channels)


def make_noise(noise: Mapping[str, float] | NoiseModel | None, noisy_encoding: bool = True):
    """A NoiseModel from a mapping channel -> parameter (None or {} gives the ideal model).

    Args:
        noise: e.g. {"depolarizing": 0.001, "readout": 0.01}; keys from CHANNELS; a value of
            None or 0 turns the channel off (all off: the ideal circuit, on the ideal fast paths).
        noisy_encoding: whether the encoding gates are noisy (ignored for a NoiseModel).

    Returns:
        The NoiseModel.
    """
    if isinstance(noise, NoiseModel):
        return noise
    noise = dict(noise or {})
    bad = sorted(set(noise) - set(CHANNELS))
    if bad:
        raise ValueError(f"unknown noise channel(s) {bad}; choose from {list(CHANNELS)}")
    vals = {}
    for k, v in noise.items():
        if v is None:  # a config key left null: the channel is off
            continue
        try:
            vals[k] = float(v)
        except (TypeError, ValueError):
            raise ValueError(f"noise {k!r} must be a number in [0, 1], got {v!r}") from None
    return NoiseModel(**vals, noisy_encoding=bool(noisy_encoding))


def kraus(channel: str, p: float) -> np.ndarray:
    """PennyLane's Kraus operators of a gate channel.

    Args:
        channel: a key of GATE_CHANNELS.
        p: its parameter in [0, 1].

    Returns:
        complex128[K, 2, 2].
    """
    if channel == "depolarizing":
        ops = [math.sqrt(1 - p) * _I] + [math.sqrt(p / 3) * m for m in (_X, _Y, _Z)]
    elif channel == "bit_flip":
        ops = [math.sqrt(1 - p) * _I, math.sqrt(p) * _X]
    elif channel == "phase_flip":
        ops = [math.sqrt(1 - p) * _I, math.sqrt(p) * _Z]
    elif channel == "amplitude_damping":
        ops = [np.diag([1.0, math.sqrt(1 - p)]), np.array([[0.0, math.sqrt(p)], [0.0, 0.0]])]
    elif channel == "phase_damping":
        ops = [np.diag([1.0, math.sqrt(1 - p)]), np.array([[0.0, 0.0], [0.0, math.sqrt(p)]])]
    else:
        raise ValueError(f"unknown gate channel {channel!r}; choose one of {GATE_CHANNELS}")
    return np.asarray(ops, np.complex128)


def branches(channel: str, p: float) -> tuple[np.ndarray, np.ndarray]:
    """A state-independent unravelling of a channel: branch probabilities q_k and operators
    A_k = K_k / sqrt(q_k), so that sum_k q_k A_k rho A_k^dagger = sum_k K_k rho K_k^dagger.

    Pauli channels: q_k are the Pauli probabilities and A_k the Paulis (unitary). Damping
    channels: q = (1 - g, g) and A_k = K_k / sqrt(q_k) (non-unitary, norms bounded by
    1 / sqrt(1 - g)). Branches with q_k = 0 get A_k = 0 (never drawn).

    Args:
        channel: a key of GATE_CHANNELS.
        p: its parameter.

    Returns:
        (f64[K] probabilities, complex128[K, 2, 2] operators).
    """
    ks = kraus(channel, p)
    if channel == "depolarizing":
        q = np.array([1 - p, p / 3, p / 3, p / 3])
    else:
        q = np.array([1 - p, p])
    scale = np.where(q > 0, 1.0 / np.sqrt(np.where(q > 0, q, 1.0)), 0.0)
    return q, ks * scale[:, None, None]


def superoperator(channel: str, p: float) -> np.ndarray:
    """The channel as a linear map on one wire's density-matrix pair (row bit, column bit).

    Args:
        channel: a key of GATE_CHANNELS.
        p: its parameter.

    Returns:
        complex128[4, 4] S with S[(a'b'), (ab)] = sum_k K[a', a] conj(K[b', b]) (real for every
        channel here).
    """
    ks = kraus(channel, p)
    return np.einsum("kac,kbd->abcd", ks, np.conj(ks)).reshape(4, 4)


def encoding_length(circuit: Circuit) -> int:
    """The number of leading encoding gates: single-qubit gates reading inputs or no angle, before
    the first gate with a trainable or constant angle or on two wires."""
    for i, o in enumerate(circuit.ops):
        if len(o.wires) > 1 or any(a.source != "input" for a in o.angles):
            return i
    return len(circuit.ops)


def noisy_gate_mask(circuit: Circuit, model: NoiseModel) -> tuple[bool, ...]:
    """Per op of the circuit, whether the gate channels follow it."""
    if not model.gate_channels:
        return (False,) * len(circuit.ops)
    skip = 0 if model.noisy_encoding else encoding_length(circuit)
    return tuple(i >= skip for i in range(len(circuit.ops)))


#: Gates that map Pauli errors to Pauli errors while permuting basis states (a "tail" made of
#: them lets Pauli errors be pushed to the measurement).
TAIL_GATES = frozenset({"cnot", "cz", "swap", "x", "y", "z"})


def tail_start(circuit: Circuit) -> int:
    """Index of the first op of the circuit's Clifford tail: the trailing ops in TAIL_GATES (for
    the paper's circuit, the last CNOT ring)."""
    i = len(circuit.ops)
    while i > 0 and circuit.ops[i - 1].gate in TAIL_GATES:
        i -= 1
    return i


def _flip_prob(channel: str, p: float) -> float:
    """Probability that a Pauli channel's error flips a Z-basis bit (an X or Y error)."""
    return {"depolarizing": 2 * p / 3, "bit_flip": p, "phase_flip": 0.0}[channel]


def pauli_tail(circuit: Circuit, model: NoiseModel) -> tuple[int, np.ndarray]:
    """The exact shortcut for Pauli noise after the last non-Clifford gate (and readout error).

    A Pauli error in the Clifford tail (cnot, cz, swap, x, y, z) stays a Pauli string when pushed
    through the rest of the tail; its Z part commutes with the Z measurement and does nothing, its
    X part flips a fixed set of measured bits, independently of the state. So <Z_w> of the noisy
    circuit equals <Z_w> of the circuit without the tail's noise times prod (1 - 2 q), over the
    tail's error locations whose X part reaches wire w (q = that location's flip probability:
    2p/3 for depolarizing, p for bit flip, 0 for phase flip), times (1 - 2 p_readout). Exact, not
    an approximation; it applies when every gate channel of the model is a Pauli channel (damping
    does not commute with the tail). For the paper's circuit it removes the last CNOT ring's noise
    from the simulation. Noise before the tail has no such shortcut: X and Z errors do not commute
    with the RY layers (only Y errors do), so they change the state, not just a sign.

    Args:
        circuit: a Circuit measuring <Z>.
        model: the NoiseModel.

    Returns:
        (first op index whose gate channels the simulation must still apply, i.e. the tail start
        when the shortcut applies, else len(ops); f64[k] factors per measured wire, readout
        included).
    """
    wires = circuit.measurement.wires
    factors = np.full(len(wires), 1.0 - 2.0 * model.readout)
    n_ops = len(circuit.ops)
    if not model.gate_channels or not model.is_pauli:
        return n_ops, factors
    start = tail_start(circuit)
    mask = noisy_gate_mask(circuit, model)
    q = 1.0
    for name, p in model.gate_channels:
        q *= 1.0 - 2.0 * _flip_prob(name, p)
    for i in range(start, n_ops):
        if not mask[i]:
            continue
        for w in circuit.ops[i].wires:
            flips = np.zeros(circuit.num_qubits, bool)
            flips[w] = True
            for o in circuit.ops[i + 1 :]:
                if o.gate == "cnot":
                    c, t = o.wires
                    flips[t] ^= flips[c]
                elif o.gate == "swap":
                    a, b = o.wires
                    flips[a], flips[b] = flips[b], flips[a]
            for j, v in enumerate(wires):
                if flips[v]:
                    factors[j] *= q
    return start, factors
