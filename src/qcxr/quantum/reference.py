"""PennyLane builds of circuits: the reference for cross-checks and `simulator=pennylane`.

Two builds. `circuit_qnode` turns any Circuit of the representation (circuit.py) into PennyLane
gates one for one, so every circuit a builder makes is checked against PennyLane with no
hand-written twin. `qnode` builds the ansatz library independently of the representation: the
paper's circuit gate by gate, `basic_entangler` and `strongly_entangling` from PennyLane's own
templates, so the reference does not share the engine's reading of them (and checks
`Ansatz.circuit()` itself).
"""

from __future__ import annotations

import functools

import jax.numpy as jnp
import pennylane as qml

from qcxr.quantum.representation.ansatz import Ansatz
from qcxr.quantum.representation.circuit import Circuit
from qcxr.quantum.representation.noise import noisy_gate_mask

#: simulator option -> (PennyLane device, differentiation method)
DEVICES = {
    "pennylane": ("default.qubit", "backprop"),
    "pennylane_lightning": ("lightning.qubit", "adjoint"),
}


def _encode(encoding: str, x, n: int):
    for w in range(n):
        if encoding == "h_ry":
            qml.Hadamard(wires=w)
            qml.RY(x[..., w], wires=w)
        elif encoding == "ry":
            qml.RY(x[..., w], wires=w)
        else:
            qml.RX(x[..., w], wires=w)


def _layers(ansatz: Ansatz, weights):
    n, wires = ansatz.num_qubits, list(range(ansatz.num_qubits))
    if ansatz.name == "basic_entangler":
        qml.BasicEntanglerLayers(weights, wires=wires, rotation=qml.RX)
        return
    if ansatz.name == "strongly_entangling":
        qml.StronglyEntanglingLayers(weights, wires=wires)
        return
    for layer in range(ansatz.num_layers):
        for w in range(n):
            qml.RY(weights[layer, w], wires=w)
        if ansatz.name == "ry_cnot_ring" and n > 1:
            for w in range(n):
                qml.CNOT(wires=[w, (w + 1) % n])


@functools.lru_cache(maxsize=64)
def qnode(ansatz: Ansatz, simulator: str = "pennylane", interface: str = "jax"):
    """A QNode computing <Z_i> on every wire of `ansatz`.

    Args:
        ansatz: the circuit description.
        simulator: "pennylane" (default.qubit, backprop: the paper's engine) or
            "pennylane_lightning" (lightning.qubit, adjoint).
        interface: "jax" (jit- and grad-able with JAX) or "autograd" (PennyLane's NumPy, float64,
            no compilation: the fast reference for tests).

    Returns:
        A function (weights f[*weight_shape], x f[B, n] or f[n]) -> f[B, n] or f[n].
    """
    if simulator not in DEVICES:
        raise ValueError(
            f"unknown PennyLane simulator {simulator!r}; choose one of {list(DEVICES)}"
        )
    name, diff = DEVICES[simulator]
    n = ansatz.num_qubits
    dev = qml.device(name, wires=n)

    @qml.qnode(dev, interface=interface, diff_method=diff)
    def circuit(weights, x):
        _encode(ansatz.encoding, x, n)
        _layers(ansatz, weights)
        return [qml.expval(qml.PauliZ(w)) for w in range(n)]

    def run(weights, x):
        out = jnp.stack(circuit(weights, x), axis=-1)
        return out.astype(jnp.result_type(x.dtype, weights.dtype))

    if interface == "autograd":
        from pennylane import numpy as pnp

        return lambda weights, x: pnp.stack(circuit(weights, x), axis=-1)
    return run


def expvals(ansatz: Ansatz, weights, x, simulator: str = "pennylane"):
    """<Z_i> through PennyLane; same contract as qcxr.quantum.expvals for an Ansatz.

    Args:
        ansatz: the circuit description.
        weights: f[*ansatz.weight_shape].
        x: f[..., n] encoding angles.
        simulator: see qnode().

    Returns:
        f[..., n] expectations.
    """
    lead = x.shape[:-1]
    flat = x.reshape(-1, ansatz.num_qubits)
    return qnode(ansatz, simulator)(weights, flat).reshape(*lead, ansatz.num_qubits)


#: representation gate -> PennyLane operation
_PL_GATES = {
    "h": qml.Hadamard,
    "x": qml.PauliX,
    "y": qml.PauliY,
    "z": qml.PauliZ,
    "s": qml.S,
    "sdg": lambda wires: qml.adjoint(qml.S(wires=wires)),
    "rx": qml.RX,
    "ry": qml.RY,
    "rz": qml.RZ,
    "rot": qml.Rot,
    "cnot": qml.CNOT,
    "cz": qml.CZ,
    "swap": qml.SWAP,
    "crx": qml.CRX,
    "cry": qml.CRY,
    "crz": qml.CRZ,
    "crot": qml.CRot,
}


def apply_circuit_ops(circuit: Circuit, weights, x) -> None:
    """Queue a circuit's ops as PennyLane operations (inside a QNode).

    Args:
        circuit: the Circuit.
        weights: f[P] flat weights.
        x: f[I] or f[B, I] inputs (PennyLane broadcasts a leading batch axis).
    """
    for o in circuit.ops:
        angles = []
        for a in o.angles:
            if a.source == "weight":
                angles.append(weights[a.index])
            elif a.source == "input":
                angles.append(x[..., a.index])
            else:
                angles.append(a.value)
        wires = list(o.wires) if len(o.wires) > 1 else o.wires[0]
        _PL_GATES[o.gate](*angles, wires=wires)


def measure_circuit(circuit: Circuit):
    """The PennyLane measurement of a circuit (inside a QNode)."""
    m = circuit.measurement
    if m.kind == "probs":
        return qml.probs(wires=list(m.wires))
    return [qml.expval(qml.PauliZ(w)) for w in m.wires]


@functools.lru_cache(maxsize=128)
def circuit_qnode(
    circuit: Circuit,
    simulator: str = "pennylane",
    interface: str = "autograd",
    diff_method: str | None = None,
):
    """A QNode running a Circuit of the representation, gate for gate.

    Args:
        circuit: the Circuit.
        simulator: a key of DEVICES.
        interface: "autograd" (PennyLane's NumPy, float64: the fast reference for tests) or
            "jax".
        diff_method: PennyLane's differentiation method (default: the simulator's in DEVICES;
            "best" lets PennyLane choose, e.g. for probabilities on lightning.qubit, whose
            adjoint method takes expectation values only).

    Returns:
        A function (weights f[P], x f[I]) -> f[output_size] (probabilities, or <Z> per wire).
    """
    if simulator not in DEVICES:
        raise ValueError(
            f"unknown PennyLane simulator {simulator!r}; choose one of {list(DEVICES)}"
        )
    name, diff = DEVICES[simulator]
    diff = diff if diff_method is None else diff_method
    dev = qml.device(name, wires=circuit.num_qubits)

    @qml.qnode(dev, interface=interface, diff_method=diff)
    def qnode_fn(weights, x):
        apply_circuit_ops(circuit, weights, x)
        return measure_circuit(circuit)

    if circuit.measurement.kind == "probs":
        return qnode_fn
    if interface == "autograd":
        from pennylane import numpy as pnp

        return lambda weights, x: pnp.stack(qnode_fn(weights, x), axis=-1)
    return lambda weights, x: jnp.stack(qnode_fn(weights, x), axis=-1)


#: noise.py channel -> PennyLane channel (one wire, one parameter).
_PL_CHANNELS = {
    "depolarizing": qml.DepolarizingChannel,
    "bit_flip": qml.BitFlip,
    "phase_flip": qml.PhaseFlip,
    "amplitude_damping": qml.AmplitudeDamping,
    "phase_damping": qml.PhaseDamping,
}


@functools.lru_cache(maxsize=128)
def noisy_qnode(circuit: Circuit, model, interface: str = "autograd"):
    """A default.mixed QNode running a Circuit with a noise model, channel by channel.

    Independent of the engine's methods: every channel is queued literally after its gate (no
    shortcut), each configured gate channel in noise.GATE_CHANNELS order on every wire of the
    gate; readout error is its definition, a qml.BitFlip(p) on each measured wire just before the
    measurement (default.mixed's own `readout_prob` fails on expectation values in PennyLane
    0.45: its measure.py iterates over the float).

    Args:
        circuit: a Circuit measuring <Z>.
        model: a noise.NoiseModel.
        interface: "autograd" (float64, backprop) or "jax".

    Returns:
        A function (weights f[P], x f[I]) -> f[k] <Z> per measured wire.
    """
    if circuit.measurement.kind != "expval_z":
        raise ValueError("noisy_qnode takes circuits measuring <Z>")
    dev = qml.device("default.mixed", wires=circuit.num_qubits)
    mask = noisy_gate_mask(circuit, model)
    chans = model.gate_channels

    @qml.qnode(dev, interface=interface, diff_method="backprop")
    def qnode_fn(weights, x):
        for o, noisy in zip(circuit.ops, mask, strict=True):
            apply_circuit_ops(Circuit(circuit.num_qubits, (o,), circuit.measurement), weights, x)
            if noisy:
                for name, p in chans:
                    for w in o.wires:
                        _PL_CHANNELS[name](p, wires=w)
        if model.readout > 0:
            for w in circuit.measurement.wires:
                qml.BitFlip(model.readout, wires=w)
        return measure_circuit(circuit)

    if interface == "autograd":
        from pennylane import numpy as pnp

        return lambda weights, x: pnp.stack(qnode_fn(weights, x), axis=-1)
    return lambda weights, x: jnp.stack(qnode_fn(weights, x), axis=-1)
