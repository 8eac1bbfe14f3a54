"""Noisy and finite-shot simulation: the part of the dispatcher `expvals` hands noise and shots to.

Part of dispatch/: engine.py calls `expvals` here when noise, shots or a noisy method is asked
for (SimOptions.noisy). Methods:
    density_matrix  exact, 4^n per sample (density.py)
    trajectories    Monte Carlo wavefunction, T pure states per sample, unbiased (trajectories.py;
                    for Pauli noise on layered circuits such as the paper's, its fast path:
                    errors pushed through the CNOT networks into the rotation layers, so the
                    state sees Kronecker-block GEMMs and one gather per network)
    statevector     ideal circuits (or readout error only, an exact factor) with shots
Finite shots (shots.py) sample bitstrings from whichever method's distribution.

Exact shortcuts used (noise.pauli_tail): readout error multiplies <Z_w> by (1 - 2 p); Pauli noise
(depolarizing, bit and phase flip) after the last non-Clifford gate (the paper's last CNOT ring)
multiplies each <Z_w> by a product of (1 - 2 q) factors. Pauli noise elsewhere in the paper's
circuit has no such shortcut (X and Z errors do not commute with the RY layers).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from qcxr.quantum.dispatch.memory import MemoryBudgetError, default_budget
from qcxr.quantum.dispatch.options import DEFAULT_TRAJECTORIES, NOISY_METHODS, SimOptions
from qcxr.quantum.methods import density, statevector
from qcxr.quantum.methods import shots as shots_mod
from qcxr.quantum.methods import trajectories as traj
from qcxr.quantum.representation.ansatz import ANSATZE, Ansatz
from qcxr.quantum.representation.circuit import Circuit, probs
from qcxr.quantum.representation.noise import NoiseModel

__all__ = ["DEFAULT_TRAJECTORIES", "choose_method", "expvals"]
#: The key used when the caller passes key=None: jax.random.PRNGKey(DEFAULT_SEED). Fine for
#: evaluation; training should pass a fresh key per step.
DEFAULT_SEED = 0
#: "auto" with noise takes the density matrix while its cost (4^n per sample) is at most this
#: many times the trajectories' (T x 2^n), and it fits the memory budget: exact where affordable.
DENSITY_MARGIN = 4


def _circuit_and_weights(ansatz, weights, n: int) -> tuple[Circuit, jnp.ndarray]:
    if isinstance(ansatz, Circuit):
        if ansatz.measurement.kind != "expval_z":
            raise ValueError(
                f"expvals needs a circuit measuring <Z>, got a {ansatz.measurement.kind!r} "
                "measurement"
            )
        return ansatz, weights.reshape(-1)
    if isinstance(ansatz, str):
        if ansatz not in ANSATZE:
            raise ValueError(f"unknown ansatz {ansatz!r}; choose one of {sorted(ANSATZE)}")
        ansatz = Ansatz(ansatz, n, int(weights.shape[0]))
    if ansatz.num_qubits != n:
        raise ValueError(
            f"ansatz {ansatz.name!r} has {ansatz.num_qubits} qubits but x has {n} features on "
            "its last axis; they must match"
        )
    if tuple(weights.shape) != ansatz.weight_shape:
        raise ValueError(
            f"weights of shape {tuple(weights.shape)} do not fit ansatz {ansatz.name!r}: "
            f"expected {ansatz.weight_shape}"
        )
    return ansatz.circuit(), weights.reshape(-1)


def density_chunk(circuit: Circuit, model: NoiseModel, batch: int, dtype, budget) -> int | None:
    """Samples the density-matrix method runs at once (batch or 1), None if not even one fits."""
    for chunk in (batch, 1):
        if density.estimate_bytes(circuit, model, chunk, dtype) <= budget:
            return chunk
    return None


def trajectory_chunk(
    circuit: Circuit, t: int, batch: int, dtype, budget, layered: bool = False
) -> str | None:
    """How the trajectories method groups its T x B states ("all", "batch", "state"), or None."""
    real = circuit.is_real
    for chunk, size in (("all", t * batch), ("batch", batch), ("state", 1)):
        if traj.estimate_bytes(circuit, size, dtype, real, layered) <= budget:
            return chunk
    return None


def choose_method(circuit, model, method, batch, dtype, t, budget) -> str:
    """The method that runs: "density_matrix", "trajectories" or "statevector" (see expvals)."""
    if method not in (*NOISY_METHODS, "auto", "statevector"):
        raise ValueError(
            f"method {method!r} simulates ideal circuits without shots; with noise or shots "
            f"choose one of {('auto', *NOISY_METHODS)} (or 'statevector' for shots on an ideal "
            "circuit)"
        )
    if method == "statevector" and model.gate_channels:
        raise ValueError(
            "method 'statevector' cannot apply gate noise; use 'density_matrix', 'trajectories' "
            "or 'auto'"
        )
    if method != "auto":
        return method
    if not model.gate_channels:
        return "statevector"
    n = circuit.num_qubits
    cheap = 4**n <= DENSITY_MARGIN * t * 2**n
    if cheap and density_chunk(circuit, model, batch, dtype, budget) is not None:
        return "density_matrix"
    return "trajectories"


def expvals(
    ansatz: Ansatz | Circuit | str,
    weights: jnp.ndarray,
    x: jnp.ndarray,
    options: SimOptions,
    *,
    key: jax.Array | None = None,
) -> jnp.ndarray:
    """<Z_i> of a noisy circuit and/or from finite shots (engine.expvals hands such calls here).

    Args:
        ansatz: an Ansatz, a library name or a Circuit measuring <Z> (as engine.expvals).
        weights: f[*weight_shape] (f[P] flat for a Circuit).
        x: f[..., n] encoding angles (f[..., I] for a Circuit).
        options: the SimOptions; here its noise (NoiseModel), method, trajectories, shots and
            memory_budget apply. method: "density_matrix", "trajectories", "statevector" (ideal
            gates: shots and/or readout error) or "auto": without gate noise the statevector;
            with it the density matrix while 4^n <= DENSITY_MARGIN * T * 2^n and it fits the
            memory budget, else trajectories. shots: gradients by the parameter-shift rule
            (methods/shots.py).
        key: PRNG key for trajectories and shots; None means jax.random.PRNGKey(DEFAULT_SEED),
            the same every call. Pass a fresh key per training step.

    Returns:
        f[..., k] expectations (k measured wires), the promoted dtype of weights and x.
    """
    x, weights = jnp.asarray(x), jnp.asarray(weights)
    model, method, t, shots = options.noise, options.method, options.trajectories, options.shots
    memory_budget = options.memory_budget
    circuit, wflat = _circuit_and_weights(ansatz, weights, x.shape[-1])
    if isinstance(ansatz, Circuit) and (
        wflat.shape[0] < circuit.num_weights or x.shape[-1] < circuit.num_inputs
    ):
        raise ValueError(
            f"the circuit reads {circuit.num_weights} weights and {circuit.num_inputs} inputs, "
            f"got {wflat.shape[0]} weights and x of shape {tuple(x.shape)}"
        )
    dtype = jnp.result_type(weights.dtype, x.dtype, jnp.float32)
    wflat, x = wflat.astype(dtype), x.astype(dtype)
    lead = x.shape[:-1]
    xf = x.reshape(-1, x.shape[-1])
    batch = xf.shape[0]
    budget = default_budget() if memory_budget is None else float(memory_budget)
    key = jax.random.PRNGKey(DEFAULT_SEED) if key is None else key
    chosen = choose_method(circuit, model, method, batch, dtype, t, budget)
    k = len(circuit.measurement.wires)
    if chosen == "density_matrix":
        chunk = density_chunk(circuit, model, batch, dtype, budget)
        if chunk is None:
            need = density.estimate_bytes(circuit, model, 1, dtype)
            raise MemoryBudgetError(
                f"the density matrix of {circuit.num_qubits} qubits needs ~{need / 2**30:.2f} GiB "
                f"per sample (4^n states kept for backprop), over the budget of "
                f"{budget / 2**30:.2f} GiB; use method='trajectories', fewer qubits, or raise "
                "QCXR_MEMORY_BUDGET_GB"
            )
    elif chosen == "trajectories":
        layered = shots is None and traj.layered_applies(circuit, model)
        tchunk = trajectory_chunk(circuit, t, batch, dtype, budget, layered)
        if tchunk is None:
            need = traj.estimate_bytes(circuit, 1, dtype, circuit.is_real)
            raise MemoryBudgetError(
                f"one trajectory of {circuit.num_qubits} qubits needs ~{need / 2**30:.2f} GiB, "
                f"over the budget of {budget / 2**30:.2f} GiB; use fewer qubits or raise "
                "QCXR_MEMORY_BUDGET_GB"
            )
    if shots is not None:
        every = probs(range(circuit.num_qubits))
        if chosen == "density_matrix":

            def prob_fn(w, xs, _):
                return density.probabilities(circuit, model, w, xs)
        elif chosen == "trajectories":

            def prob_fn(w, xs, kk):
                return traj.probabilities(circuit, model, w, xs, kk, t)
        else:
            pc = circuit.with_ops(measurement=every)

            def prob_fn(w, xs, _):
                return statevector.run_circuit(pc, w, xs)

        out = shots_mod.shot_expvals(prob_fn, circuit, wflat, xf, key, int(shots), model.readout)
    elif chosen == "density_matrix":
        out = density.simulate(circuit, model, wflat, xf, chunk)
    elif chosen == "trajectories" and layered:  # Pauli noise: the fast layered path
        out = traj.simulate_layered(circuit, model, wflat, xf, key, t, tchunk)
    elif chosen == "trajectories":
        out = traj.simulate(circuit, model, wflat, xf, key, t, tchunk)
    else:  # ideal gates, readout error only: an exact factor
        out = statevector.run_circuit(circuit, wflat, xf) * (1.0 - 2.0 * model.readout)
    return out.reshape(*lead, k).astype(dtype)
