"""PennyLane builds of the ansatz library: the reference for cross-checks and `simulator=pennylane`.

The paper's circuit is built gate by gate; `basic_entangler` and `strongly_entangling` use
PennyLane's own templates, so the reference does not share the engine's reading of them.
"""

from __future__ import annotations

import functools

import jax.numpy as jnp
import pennylane as qml

from qcxr.quantum.ansatz import Ansatz

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
