"""Circuits as data: operations on wires and a measurement (the representation of qcxr.quantum).

A `Circuit` is a frozen description, not code that runs. Each `Op` names a gate, its wires and its
angles; an angle is a trainable weight (an index into a flat weight vector), an input (an index
into a sample's feature vector) or a constant. The measurement is <Z> on chosen wires or the
probabilities of a wire subset. The ansatz library (ansatz.py), the QCNN and its cut fragments
(qcnn.py, cutting.py) are builders of this one representation; the methods (statevector.py,
split.py) run it and reference.py builds the same circuit from PennyLane gates, so a new circuit is
checked against PennyLane with no hand-written twin.

Because angles are indices into one weight vector, circuits that share an index share the
parameter (weight tying: one parameter, gradients summed over every use).

Wires are numbered 0..n-1, wire 0 the most significant bit of a basis index (PennyLane's order).
Gate conventions are PennyLane's (see gates.py).
"""

from __future__ import annotations

from dataclasses import dataclass

#: gate name -> (wires, angles). Two-qubit gates list the control first.
GATES: dict[str, tuple[int, int]] = {
    "h": (1, 0),
    "x": (1, 0),
    "y": (1, 0),
    "z": (1, 0),
    "s": (1, 0),
    "sdg": (1, 0),
    "rx": (1, 1),
    "ry": (1, 1),
    "rz": (1, 1),
    "rot": (1, 3),
    "cnot": (2, 0),
    "cz": (2, 0),
    "swap": (2, 0),
    "crx": (2, 1),
    "cry": (2, 1),
    "crz": (2, 1),
    "crot": (2, 3),
}
#: Gates whose matrices are real for every angle: a circuit of only these keeps a real state.
REAL_GATES = frozenset({"h", "x", "z", "ry", "cnot", "cz", "swap", "cry"})
#: Angle sources.
SOURCES = ("weight", "input", "const")
#: Measurement kinds: <Z> per listed wire, or the 2^k probabilities of the listed wires (the first
#: listed wire the most significant bit of the outcome index).
MEASUREMENTS = ("expval_z", "probs")


@dataclass(frozen=True)
class Angle:
    """One gate angle: weights[index], x[..., index], or a constant value.

    Attributes:
        source: one of SOURCES.
        index: the weight or input index (unused for constants).
        value: the constant (unused otherwise).
    """

    source: str
    index: int = 0
    value: float = 0.0

    def __post_init__(self):
        if self.source not in SOURCES:
            raise ValueError(f"unknown angle source {self.source!r}; choose one of {SOURCES}")
        if self.index < 0:
            raise ValueError(f"angle index must be >= 0, got {self.index}")


def weight(index: int) -> Angle:
    """A trainable angle: the weight vector's entry `index`."""
    return Angle("weight", int(index))


def inp(index: int) -> Angle:
    """An input angle: the sample's feature `index`."""
    return Angle("input", int(index))


def const(value: float) -> Angle:
    """A fixed angle."""
    return Angle("const", 0, float(value))


@dataclass(frozen=True)
class Op:
    """One gate on wires.

    Attributes:
        gate: a key of GATES.
        wires: the wires it acts on (control first for two-qubit gates).
        angles: one Angle per gate angle (GATES[gate][1] of them).
    """

    gate: str
    wires: tuple[int, ...]
    angles: tuple[Angle, ...] = ()

    def __post_init__(self):
        if self.gate not in GATES:
            raise ValueError(f"unknown gate {self.gate!r}; choose one of {sorted(GATES)}")
        num_wires, num_angles = GATES[self.gate]
        if len(self.wires) != num_wires or len(set(self.wires)) != num_wires:
            raise ValueError(
                f"gate {self.gate!r} acts on {num_wires} distinct wire(s), got wires {self.wires}"
            )
        if len(self.angles) != num_angles:
            raise ValueError(
                f"gate {self.gate!r} takes {num_angles} angle(s), got {len(self.angles)}"
            )


def op(gate: str, *wires: int, angles: tuple[Angle, ...] | Angle = ()) -> Op:
    """Build an Op: `op("crz", 0, 1, angles=weight(3))`.

    Args:
        gate: a key of GATES.
        *wires: its wires, control first.
        angles: an Angle or a tuple of them.

    Returns:
        The Op.
    """
    if isinstance(angles, Angle):
        angles = (angles,)
    return Op(gate, tuple(int(w) for w in wires), tuple(angles))


@dataclass(frozen=True)
class Measurement:
    """What a circuit returns.

    Attributes:
        kind: one of MEASUREMENTS.
        wires: the measured wires, in output order.
    """

    kind: str
    wires: tuple[int, ...]

    def __post_init__(self):
        if self.kind not in MEASUREMENTS:
            raise ValueError(f"unknown measurement {self.kind!r}; choose one of {MEASUREMENTS}")
        if not self.wires or len(set(self.wires)) != len(self.wires):
            raise ValueError(f"a measurement needs distinct wires, got {self.wires}")


def expval_z(wires) -> Measurement:
    """<Z> on each of `wires`."""
    return Measurement("expval_z", tuple(int(w) for w in wires))


def probs(wires) -> Measurement:
    """Probabilities of the 2^k outcomes of `wires` (first wire most significant)."""
    return Measurement("probs", tuple(int(w) for w in wires))


@dataclass(frozen=True)
class Circuit:
    """Operations on `num_qubits` wires, applied in order to |0...0>, then a measurement.

    Attributes:
        num_qubits: wires.
        ops: the gates in order.
        measurement: what it returns.
    """

    num_qubits: int
    ops: tuple[Op, ...]
    measurement: Measurement

    def __post_init__(self):
        if self.num_qubits < 1:
            raise ValueError(f"a circuit needs num_qubits >= 1, got {self.num_qubits}")
        for i, o in enumerate(self.ops):
            bad = [w for w in o.wires if not 0 <= w < self.num_qubits]
            if bad:
                raise ValueError(
                    f"op {i} ({o.gate} on wires {o.wires}) uses wire(s) {bad} outside "
                    f"0..{self.num_qubits - 1}"
                )
        bad = [w for w in self.measurement.wires if not 0 <= w < self.num_qubits]
        if bad:
            raise ValueError(f"the measurement uses wire(s) {bad} outside 0..{self.num_qubits - 1}")

    def _max_index(self, source: str) -> int:
        return max((a.index for o in self.ops for a in o.angles if a.source == source), default=-1)

    @property
    def num_weights(self) -> int:
        """Length of the weight vector it reads (largest weight index + 1)."""
        return self._max_index("weight") + 1

    @property
    def num_inputs(self) -> int:
        """Features per sample it reads (largest input index + 1)."""
        return self._max_index("input") + 1

    @property
    def is_real(self) -> bool:
        """Whether every gate is real, so the state may stay real."""
        return all(o.gate in REAL_GATES for o in self.ops)

    @property
    def output_size(self) -> int:
        """Values per sample: one per measured wire (<Z>) or 2^k (probabilities)."""
        k = len(self.measurement.wires)
        return k if self.measurement.kind == "expval_z" else 2**k

    def with_ops(self, before=(), after=(), measurement: Measurement | None = None) -> Circuit:
        """A copy with ops prepended and appended, and optionally another measurement.

        Args:
            before: ops applied first.
            after: ops applied last.
            measurement: the new measurement (default: this one).

        Returns:
            The new Circuit.
        """
        return Circuit(
            self.num_qubits,
            (*before, *self.ops, *after),
            self.measurement if measurement is None else measurement,
        )
