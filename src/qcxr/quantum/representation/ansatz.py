"""The ansatz library: circuit descriptions shared by the native engine and the PennyLane reference.

An ansatz is a frozen description, not code that runs: an angle encoding of the features, then
`num_layers` layers, each a rotation on every qubit followed by an entangling pattern of CNOTs.
`Ansatz.circuit()` builds it as a Circuit of the representation (circuit.py); `match_library`
recognises such a circuit again, so the engine's fast paths (kernels.compile_ansatz) apply to any
circuit of this shape. `reference.py` builds it from PennyLane's own gates or templates too, an
independent reading of the library for cross-checks.

Wires are numbered 0..n-1, wire 0 the most significant bit of a basis index (PennyLane's order).
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass

import jax
import jax.numpy as jnp

from qcxr.quantum.representation import gates
from qcxr.quantum.representation.circuit import Circuit, expval_z, inp, op, weight

#: name -> (rotation gate of the trainable layers, entangling pattern). Names are the ids of
#: `conf/ansatz/*.yaml`.
ANSATZE: dict[str, tuple[str, str]] = {
    # The paper's (section III-B): H + RY(x) encoding, then layers of RY(theta) and a CNOT ring
    # CNOT(0,1), CNOT(1,2), ..., CNOT(n-1,0).
    "ry_cnot_ring": ("ry", "ring"),
    # The same without CNOTs: the no-entanglement ablation.
    "ry_separable": ("ry", "none"),
    # PennyLane's BasicEntanglerLayers: RX layers + CNOT ring (one CNOT for 2 wires).
    "basic_entangler": ("rx", "basic"),
    # PennyLane's StronglyEntanglingLayers: Rot layers + CNOT(i, i+r) with r = (l mod (n-1)) + 1.
    "strongly_entangling": ("rot", "strong"),
}
#: Angle encodings: h_ry = H then RY(x) (the paper's), ry = RY(x), rx = RX(x).
ENCODINGS = ("h_ry", "ry", "rx")
#: Initialisations of the circuit weights: normal_2pi = N(0, (2 pi)^2) (the paper's code),
#: uniform_2pi = U[0, 2 pi) (the paper's first text), small = N(0, 0.01^2) (near identity).
INITS = ("normal_2pi", "uniform_2pi", "small")


@dataclass(frozen=True)
class Ansatz:
    """A layered variational circuit on `num_qubits` wires.

    Attributes:
        name: the library name (a key of ANSATZE).
        num_qubits: wires, one per feature (and per label in the DQC head).
        num_layers: trainable layers.
        init: weight initialisation, one of INITS.
        encoding: angle encoding of the features, one of ENCODINGS.
    """

    name: str
    num_qubits: int
    num_layers: int = 3
    init: str = "normal_2pi"
    encoding: str = "h_ry"

    def __post_init__(self):
        if self.name not in ANSATZE:
            raise ValueError(f"unknown ansatz {self.name!r}; choose one of {sorted(ANSATZE)}")
        if self.encoding not in ENCODINGS:
            raise ValueError(f"unknown encoding {self.encoding!r}; choose one of {ENCODINGS}")
        if self.init not in INITS:
            raise ValueError(f"unknown init {self.init!r}; choose one of {INITS}")
        if self.num_qubits < 1 or self.num_layers < 1:
            raise ValueError(
                f"ansatz needs num_qubits >= 1 and num_layers >= 1, got {self.num_qubits} "
                f"qubits and {self.num_layers} layers"
            )

    @property
    def rotation(self) -> str:
        """Gate kind of the trainable layers: "ry", "rx" or "rot"."""
        return ANSATZE[self.name][0]

    @property
    def weight_shape(self) -> tuple[int, ...]:
        """Shape of the trainable weights: (layers, qubits) or (layers, qubits, 3) for Rot."""
        p = gates.GATE_NUM_PARAMS[self.rotation]
        base = (self.num_layers, self.num_qubits)
        return base if p == 1 else (*base, p)

    @property
    def num_params(self) -> int:
        """Number of trainable circuit parameters."""
        return math.prod(self.weight_shape)

    @property
    def is_real(self) -> bool:
        """Whether every gate is real, so the state may stay real (half the memory and work)."""
        return self.rotation in gates.REAL_GATES and self.encoding in ("h_ry", "ry")

    def entangling_pairs(self, layer: int) -> tuple[tuple[int, int], ...]:
        """CNOTs (control, target) applied, in order, after the rotations of `layer` (0-based)."""
        n, pattern = self.num_qubits, ANSATZE[self.name][1]
        if pattern == "none" or n == 1:
            return ()
        if pattern == "basic" and n == 2:
            return ((0, 1),)
        if pattern == "strong":
            r = layer % (n - 1) + 1
            return tuple((i, (i + r) % n) for i in range(n))
        return tuple((i, (i + 1) % n) for i in range(n))

    def circuit(self) -> Circuit:
        """The ansatz as a Circuit: weights are read flat, in row-major order of weight_shape."""
        return _build_circuit(self)

    def init_weights(self, key: jax.Array, dtype=jnp.float32) -> jnp.ndarray:
        """Draw initial weights.

        Args:
            key: PRNG key.
            dtype: float dtype.

        Returns:
            f[*weight_shape].
        """
        shape = self.weight_shape
        if self.init == "normal_2pi":
            return 2 * jnp.pi * jax.random.normal(key, shape, dtype)
        if self.init == "uniform_2pi":
            return jax.random.uniform(key, shape, dtype, 0.0, 2 * jnp.pi)
        return 0.01 * jax.random.normal(key, shape, dtype)


def make_ansatz(
    name: str,
    num_qubits: int,
    num_layers: int = 3,
    init: str = "normal_2pi",
    encoding: str = "h_ry",
) -> Ansatz:
    """Build a library ansatz (the `_target_` of `conf/ansatz/*.yaml`).

    Args:
        name: a key of ANSATZE.
        num_qubits: wires.
        num_layers: trainable layers.
        init: one of INITS.
        encoding: one of ENCODINGS.

    Returns:
        The Ansatz description.
    """
    return Ansatz(name, int(num_qubits), int(num_layers), init, encoding)


_ENCODING_GATES = {"h_ry": ("h", "ry"), "ry": ("ry",), "rx": ("rx",)}


@functools.lru_cache(maxsize=256)
def _build_circuit(a: Ansatz) -> Circuit:
    n, p = a.num_qubits, gates.GATE_NUM_PARAMS[a.rotation]
    ops = []
    for w in range(n):
        for g in _ENCODING_GATES[a.encoding]:
            ops.append(op(g, w, angles=inp(w) if g != "h" else ()))
    for layer in range(a.num_layers):
        for w in range(n):
            base = (layer * n + w) * p
            ops.append(op(a.rotation, w, angles=tuple(weight(base + k) for k in range(p))))
        ops.extend(op("cnot", c, t) for c, t in a.entangling_pairs(layer))
    return Circuit(n, tuple(ops), expval_z(range(n)))


@functools.lru_cache(maxsize=256)
def match_library(circuit: Circuit) -> Ansatz | None:
    """The library ansatz whose circuit equals `circuit` exactly, or None.

    Equality is of the whole description (every gate, wire, angle index and the measurement), so
    a circuit gets the library's fast paths exactly when it is a library circuit.

    Args:
        circuit: any Circuit.

    Returns:
        The matching Ansatz (init "normal_2pi": initialisation is not part of a circuit) or None.
    """
    n, num_weights = circuit.num_qubits, circuit.num_weights
    for name in ANSATZE:
        p = gates.GATE_NUM_PARAMS[ANSATZE[name][0]]
        layers, rest = divmod(num_weights, n * p)
        if layers < 1 or rest:
            continue
        for encoding in ENCODINGS:
            candidate = Ansatz(name, n, layers, encoding=encoding)
            if _build_circuit(candidate) == circuit:
                return candidate
    return None


def encoding_vectors(encoding: str, x: jnp.ndarray) -> jnp.ndarray:
    """Single-qubit states of the angle encoding, one per wire.

    Args:
        encoding: one of ENCODINGS.
        x: f[..., n] angles (already scaled).

    Returns:
        [..., n, 2] amplitudes, real for h_ry and ry, complex for rx.
    """
    c, s = jnp.cos(x / 2), jnp.sin(x / 2)
    if encoding == "h_ry":
        # RY(x) H|0> = RY(x)|+> = ((c - s), (s + c)) / sqrt(2)
        r = 1.0 / jnp.sqrt(jnp.asarray(2.0, x.dtype))
        return jnp.stack([(c - s) * r, (s + c) * r], -1)
    if encoding == "ry":
        return jnp.stack([c, s], -1)
    if encoding == "rx":
        ct = jnp.complex128 if x.dtype == jnp.float64 else jnp.complex64
        return jnp.stack([c.astype(ct), (-1j * s).astype(ct)], -1)
    raise ValueError(f"unknown encoding {encoding!r}; choose one of {ENCODINGS}")
