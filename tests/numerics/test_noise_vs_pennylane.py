"""The density_matrix method against PennyLane default.mixed, for every noise channel.

Reference: reference.noisy_qnode, default.mixed with every channel queued literally after its gate
(PennyLane's qml.DepolarizingChannel, BitFlip, PhaseFlip, AmplitudeDamping, PhaseDamping; readout
error as a BitFlip on each measured wire before the measurement), float64, backprop (autograd
interface). Ours: expvals(..., method="density_matrix") in float64, which uses the exact shortcuts
(per-wire product state until the first CNOT, the Clifford tail's Pauli noise and readout as
factors) the reference does not. Tolerance: 1e-10 absolute on values and on gradients w.r.t.
weights and inputs (a random read-out of the outputs), fresh random weights and inputs.

Coverage (sparse, to stay fast): every channel, alone and combined, at 2-8 qubits, the paper's
ansatz plus the complex ones (basic_entangler: RX; strongly_entangling: Rot), noisy and ideal
encoding. The fast loop runs three cases that cover every channel; the rest (4-8 qubits) are slow
(compilation and default.mixed's backprop take seconds each).
"""

import jax
import jax.numpy as jnp
import numpy as np
import pennylane as qml
import pytest
from pennylane import numpy as pnp

from qcxr.quantum import expvals, make_ansatz, make_noise, reference

TOL = 1e-10

_FAST = [
    # (ansatz, qubits, layers, noise, noisy_encoding): every channel appears in the fast loop
    ("ry_cnot_ring", 2, 2, {"depolarizing": 0.05, "readout": 0.03}, True),
    ("basic_entangler", 3, 2, {"bit_flip": 0.07, "amplitude_damping": 0.05}, True),
    ("strongly_entangling", 3, 2, {"phase_flip": 0.05, "phase_damping": 0.1}, False),
]
_SLOW = [
    ("ry_cnot_ring", 3, 2, {"amplitude_damping": 0.08}, True),
    ("ry_cnot_ring", 4, 2, {"phase_flip": 0.1}, False),
    ("ry_cnot_ring", 4, 2, {"phase_damping": 0.06}, True),
    ("ry_cnot_ring", 5, 1, {"readout": 0.03}, True),
    ("ry_cnot_ring", 5, 2, {"bit_flip": 0.04}, True),
    ("ry_cnot_ring", 6, 1, {"depolarizing": 0.02, "readout": 0.01}, False),
    ("ry_cnot_ring", 7, 1, {"bit_flip": 0.02, "amplitude_damping": 0.03}, True),
    ("ry_cnot_ring", 8, 1, {"depolarizing": 0.01, "phase_damping": 0.02, "readout": 0.02}, True),
]
CASES = _FAST + [pytest.param(*c, marks=pytest.mark.slow) for c in _SLOW]


def _reference(circuit, model, w, x, c):
    f = reference.noisy_qnode(circuit, model)

    def loss(w, x, c):
        return pnp.sum(f(w, x) * c)

    vals, gws, gxs = [], [], []
    for xi, ci in zip(x, c, strict=True):
        wp, xp = pnp.array(w, requires_grad=True), pnp.array(xi, requires_grad=True)
        vals.append(np.asarray(f(wp, xp)))
        gw, gx = qml.grad(loss, argnums=[0, 1])(wp, xp, ci)
        gws.append(np.asarray(gw))
        gxs.append(np.asarray(gx))
    return np.stack(vals), np.sum(gws, axis=0), np.stack(gxs)


@pytest.mark.parametrize("name,n,layers,noise,noisy_encoding", CASES)
def test_density_matrix_matches_default_mixed(name, n, layers, noise, noisy_encoding):
    a = make_ansatz(name, n, layers)
    rng = np.random.default_rng(n * 10 + layers)
    w = rng.normal(0.0, 2.0, size=a.weight_shape)
    x = rng.uniform(-np.pi / 2, np.pi / 2, size=(2, n))
    c = rng.normal(size=(2, n))
    model = make_noise(noise, noisy_encoding)
    ref_val, ref_gw, ref_gx = _reference(a.circuit(), model, w.reshape(-1), x, c)
    with jax.enable_x64(True):
        wj, xj, cj = (jnp.asarray(v, jnp.float64) for v in (w, x, c))

        def f(w, x):
            return expvals(
                a, w, x, noise=noise, noisy_encoding=noisy_encoding, method="density_matrix"
            )

        def loss(w, x):
            v = f(w, x)
            return jnp.sum(v * cj), v

        (_, val), (gw, gx) = jax.jit(jax.value_and_grad(loss, (0, 1), has_aux=True))(wj, xj)
        val = np.asarray(val)
    np.testing.assert_allclose(val, ref_val, atol=TOL, rtol=0)
    np.testing.assert_allclose(np.asarray(gw).reshape(-1), ref_gw, atol=TOL, rtol=0)
    np.testing.assert_allclose(np.asarray(gx), ref_gx, atol=TOL, rtol=0)
    # the noise does something (the check is not vacuous)
    with jax.enable_x64(True):
        ideal = np.asarray(expvals(a, wj, xj))
    assert np.abs(val - ideal).max() > 1e-4
