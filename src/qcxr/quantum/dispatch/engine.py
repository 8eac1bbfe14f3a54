"""The dispatcher: `expvals` runs a circuit by the method that suits it.

dispatch/ is the top folder of qcxr.quantum: representation -> kernels -> methods -> cutting ->
dispatch (tests/test_imports.py enforces the order). How a call simulates is one SimOptions value
(options.py); `resolve_method` here is the one place a method is chosen.

A library ansatz (or a Circuit that equals one's build, see ansatz.match_library) runs on the fast
paths: the statevector engine (kernels.py lists what makes it fast) or the split method (split.py:
the state as a short sum of products across a cut of the wires, exact, for shallow circuits),
or the MPS method (mps.py: an exact matrix product state, linear in the number of qubits, for the
large circuits neither of the others can hold), whichever is cheaper and fits the memory budget by
default. Any other Circuit runs on the general statevector path (statevector.run_circuit). Noise,
finite shots and the noisy methods (density_matrix, trajectories) go to noisy.py.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp

from qcxr.quantum.dispatch import noisy
from qcxr.quantum.dispatch.memory import (
    check_memory,
    check_mps_memory,
    check_split_memory,
    choose_chunk_size,
    choose_lanes,
    default_budget,
    estimate_bytes,
    fits_split_memory,
    mps_memory,
    state_itemsize,
)
from qcxr.quantum.dispatch.options import METHODS, SimOptions
from qcxr.quantum.kernels.program import Program, compile_ansatz, folded_vectors, layer_mats
from qcxr.quantum.methods import density, mps, split, statevector
from qcxr.quantum.methods import trajectories as traj
from qcxr.quantum.representation.ansatz import ANSATZE, Ansatz, match_library
from qcxr.quantum.representation.circuit import Circuit

__all__ = ["METHODS", "SimOptions", "expvals", "method_bytes", "resolve_method", "run"]
#: "auto" takes the split method when its estimated cost is this many times below the
#: statevector's. Measured on the 2-core CPU (batch 32, head-step gradient), statevector / split
#: time against this cost ratio: 3 layers at 10 / 12 / 14 / 16 qubits: 0.65 / 1.6 / 3.0 / 9.7
#: (cost ratio 0.81 / 1.8 / 3.4 / 7.3); 4 layers at 16 / 19 qubits: 1.2 / 1.6 (1.1 / 2.5).
SPLIT_MARGIN = 1.5
#: "auto" takes the MPS method when its estimated cost (mps.mps_cost) times this is below the
#: others' (with their margins). Its contractions are small batched GEMMs (chi = 16), slower per
#: multiply-add than the statevector's and split's large ones. Measured on the 2-core CPU (batch
#: 32, head step, 3-layer ring, machine shared, indicative; unrolled MPS, docs/quantum.md): 14
#: qubits mps 22 ms vs split 6 ms (cost ratio split x SPLIT_MARGIN / mps 0.5); 19 qubits mps 35 ms
#: vs split 87 ms (ratio 3.0); 24: 50 vs 390 ms: crossover between 16 and 19 qubits (ratio 1.1-3.0).
MPS_MARGIN = 2.5


def choose_method(program: Program, method: str, block_size: int = 5) -> str:
    """The method expvals runs by estimated cost alone: "statevector", "split" or "mps".

    The memory budget is not consulted here (see resolve_method, which expvals follows).
    """
    if method not in METHODS:
        raise ValueError(f"unknown method {method!r}; choose one of {METHODS}")
    if program.final_rows is None or not program.ops:
        return "statevector"  # product states only: no method builds an entangled state
    terms = split.split_terms(program)
    if method == "split" and terms > split.MAX_TERMS:
        raise ValueError(
            f"the split method would carry {terms} terms for this circuit (more than "
            f"{split.MAX_TERMS}: too deep for it); use method='statevector', 'mps' or 'auto'"
        )
    if method == "auto":
        return _ranked(program, block_size)[0]
    return method


def _ranked(program: Program, block_size: int, max_bond: int | None = None) -> list[str]:
    """The methods for a program with entanglers, cheapest (with the margins) first."""
    costs = {"statevector": split.statevector_cost(program, block_size)}
    # The split method holds 2^(n/2) amplitudes per term: beyond 60 qubits never (and its
    # uint64 mask tables end at 64).
    if program.num_qubits <= 60 and split.split_terms(program) <= split.MAX_TERMS:
        costs["split"] = split.split_cost(program, block_size) * SPLIT_MARGIN
    costs["mps"] = mps.mps_cost(mps.plan_mps(program), max_bond) * MPS_MARGIN
    return sorted(costs, key=costs.get)


def _options(options: SimOptions | None, keys: dict) -> SimOptions:
    """The SimOptions of a call: `options`, or one built from flat keys (SimOptions.from_keys)."""
    if options is None:
        return SimOptions.from_keys(**keys)
    if not isinstance(options, SimOptions):
        raise TypeError(
            f"options must be a SimOptions, got {options!r}; pass the method as method=..."
        )
    if keys:
        raise TypeError(f"pass either options or the keys {sorted(keys)}, not both")
    return options


def resolve_method(
    ansatz: Ansatz, batch: int, dtype="float32", options: SimOptions | None = None, **keys
) -> str:
    """The method expvals runs for this ansatz and batch: "statevector", "split" or "mps"; with
    noise or shots, "density_matrix", "trajectories" or "statevector" (noisy.choose_method). The
    one place a method is chosen.

    "auto" takes the cheapest by estimated cost (choose_method's margins) among those whose memory
    estimate fits the budget (the statevector counted with its chunking); an explicit method is
    returned as is (expvals raises MemoryBudgetError for it if it does not fit).

    Args:
        ansatz: the library ansatz.
        batch: samples per call.
        dtype: float dtype of the computation.
        options: the SimOptions; or, instead, its flat keys (SimOptions.from_keys: method,
            memory_budget, block_size, remat, max_bond, noise, noisy_encoding, trajectories,
            shots).

    Returns:
        The method name.
    """
    o = _options(options, keys)
    if o.noisy:
        budget = default_budget() if o.memory_budget is None else float(o.memory_budget)
        circuit = ansatz.circuit()
        return noisy.choose_method(circuit, o.noise, o.method, batch, dtype, o.trajectories, budget)
    program = compile_ansatz(ansatz)
    chosen = choose_method(program, o.method, o.block_size)
    if o.method != "auto" or program.final_rows is None or not program.ops:
        return chosen
    ranked = _ranked(program, o.block_size, o.max_bond)
    for m in ranked:
        if _fits(ansatz, program, m, batch, dtype, o):
            return m
    return ranked[0]  # nothing fits: expvals raises for it


def method_bytes(
    ansatz: Ansatz, batch: int, dtype="float32", options: SimOptions | None = None, **keys
) -> tuple[str, int]:
    """The method expvals runs (`resolve_method`) and its memory estimate: the one memory model,
    which the guard checks and a SLURM job requests (qcxr.run.job_mem_gb).

    Args: as `resolve_method`.

    Returns:
        (method name, estimated peak bytes of one forward + backward pass of the batch, with the
        chunking that method would choose within the budget).
    """
    o = _options(options, keys)
    chosen = resolve_method(ansatz, batch, dtype, o)
    budget = default_budget() if o.memory_budget is None else float(o.memory_budget)
    if chosen in ("density_matrix", "trajectories"):
        circuit, model = ansatz.circuit(), o.noise
        if chosen == "density_matrix":
            chunk = noisy.density_chunk(circuit, model, batch, dtype, budget) or 1
            return chosen, density.estimate_bytes(circuit, model, chunk, dtype)
        t = o.trajectories
        layered = o.shots is None and traj.layered_applies(circuit, model)
        group = noisy.trajectory_chunk(circuit, t, batch, dtype, budget, layered) or "state"
        size = {"all": t * batch, "batch": batch, "state": 1}[group]
        return chosen, traj.estimate_bytes(circuit, size, dtype, circuit.is_real, layered)
    program = compile_ansatz(ansatz)
    if chosen == "split":
        return chosen, split.split_bytes(program, batch, state_itemsize(ansatz.is_real, dtype))
    if chosen == "mps":
        plan = mps.plan_mps(program)
        return chosen, mps_memory(ansatz, plan, batch, dtype, o.max_bond, budget)[0]
    chunk = choose_chunk_size(ansatz, program, batch, dtype, o.remat, budget, o.block_size)
    return chosen, estimate_bytes(ansatz, program, chunk, dtype, o.remat, o.block_size, batch)


def _fits(a, program, method, batch, dtype, o: SimOptions) -> bool:
    budget = o.memory_budget
    if method == "split":
        return fits_split_memory(a, program, batch, dtype, budget)
    if method == "mps":
        return mps_memory(a, mps.plan_mps(program), batch, dtype, o.max_bond, budget)[1]
    chunk = choose_chunk_size(a, program, batch, dtype, o.remat, budget, o.block_size)
    need = estimate_bytes(a, program, chunk, dtype, o.remat, o.block_size, batch)
    return need <= (default_budget() if budget is None else float(budget))


def resolve_ansatz(ansatz: Ansatz | str, weights: jnp.ndarray, num_qubits: int) -> Ansatz:
    """Accept an Ansatz or a library name (then layers come from the weights' first axis)."""
    if isinstance(ansatz, Ansatz):
        if ansatz.num_qubits != num_qubits:
            raise ValueError(
                f"ansatz {ansatz.name!r} has {ansatz.num_qubits} qubits but x has {num_qubits} "
                "features on its last axis; they must match"
            )
        return ansatz
    if ansatz not in ANSATZE:
        raise ValueError(f"unknown ansatz {ansatz!r}; choose one of {sorted(ANSATZE)}")
    return Ansatz(ansatz, num_qubits, int(weights.shape[0]))


def expvals(
    ansatz: Ansatz | Circuit | str,
    weights: jnp.ndarray,
    x: jnp.ndarray,
    options: SimOptions | None = None,
    *,
    key: jax.Array | None = None,
    return_discarded: bool = False,
    **keys,
) -> jnp.ndarray:
    """<Z_i> on every qubit of an ansatz (or measured wire of a circuit) for a batch of features.

    Pure, jit- and grad-able in `weights` and `x`. The memory guard runs at trace time, before any
    allocation, from static shapes.

    Args:
        ansatz: an Ansatz, a library name (`conf/ansatz/` ids; layers from weights.shape[0]), or
            a Circuit measuring <Z>. A Circuit equal to a library ansatz's build (match_library)
            runs on the fast paths below with its flat weights reshaped; any other runs on the
            general statevector path (statevector.run_circuit; the options below do not apply).
        weights: f[layers, qubits] (or the ansatz's weight_shape, e.g. [layers, qubits, 3] for Rot).
        x: f[..., qubits] encoding angles, already scaled.
        options: the SimOptions (options.py); or, instead, its fields as keywords (`noise` may be
            a mapping, with `noisy_encoding`; SimOptions.from_keys):
            method: "statevector" (the 2^n state), "split" (an exact sum of products over a
                cut of the wires, methods/split.py: for shallow circuits), "mps" (an exact
                matrix product state, methods/mps.py: linear in the qubits, for shallow circuits
                on many qubits) or "auto" (the default: the cheapest by estimated cost that fits
                the memory budget, resolve_method); "density_matrix" and "trajectories": the
                noisy methods (noisy.py).
            block_size: wires per Kronecker block in rotation layers (a speed knob; 5 was best
                on a 2-core CPU at 19 qubits).
            remat: rematerialise each layer in the backward pass (jax.checkpoint): less memory,
                more time (statevector).
            chunk_size: simulate the batch in sequential micro-batches of this size inside the
                step (each checkpointed; chunks of one sample use the adjoint method). "auto"
                (memory.choose_chunk_size): on a CPU the whole batch if its states fit the L2
                cache, else one sample at a time; on accelerators the largest chunk that fits.
                None: the whole batch at once (statevector).
            max_bond: the MPS method's bond limit (None: exact). Below the circuit's exact bond
                (mps.plan_mps(...).exact_bond) the state is truncated by SVD after each CNOT
                network.
            noise: None (ideal), a NoiseModel, or channel -> parameter, e.g. {"depolarizing":
                1e-3, "readout": 0.01}: "depolarizing", "bit_flip", "phase_flip",
                "amplitude_damping", "phase_damping" (PennyLane's definitions, after every gate
                on each wire it touches) and "readout" (symmetric flip of each measured bit).
            trajectories: T per sample for method="trajectories" (default 64).
            shots: None (exact) or N bitstrings per sample; gradients by the parameter-shift
                rule with shots (unbiased; methods/shots.py).
            memory_budget: bytes the simulation may use (default memory.default_budget()).
            With noise, shots or a noisy method the call goes to noisy.py: "auto" then means the
            density matrix (exact, 4^n) for small n that fits the memory budget, else
            trajectories (Monte Carlo wavefunction, unbiased values and gradients); block_size,
            remat and chunk_size do not apply there.
        key: PRNG key for trajectories and shots; None: the fixed jax.random.PRNGKey(0).
            Training passes a fresh key per step.
        return_discarded: also return the MPS truncation's discarded weight.

    Returns:
        f[..., qubits] expectations, the dtype of the promoted inputs; with return_discarded, the
        pair (expectations, f[...] discarded weight per sample: the discarded squared Schmidt
        values summed over bonds and networks, zero for exact methods).
    """
    o = _options(options, keys)
    if o.noisy:
        return noisy.expvals(ansatz, weights, x, o, key=key)
    x = jnp.asarray(x)
    weights = jnp.asarray(weights)
    n = x.shape[-1]
    if isinstance(ansatz, Circuit):
        if return_discarded or o.max_bond is not None:
            raise ValueError("max_bond and return_discarded apply to library ansatze only")
        return _expvals_circuit(ansatz, weights, x, o)
    a = resolve_ansatz(ansatz, weights, n)
    if tuple(weights.shape) != a.weight_shape:
        raise ValueError(
            f"weights of shape {tuple(weights.shape)} do not fit ansatz {a.name!r} with "
            f"{a.num_qubits} qubits and {a.num_layers} layers: expected {a.weight_shape}"
        )
    dtype = jnp.result_type(weights.dtype, x.dtype, jnp.float32)
    weights, x = weights.astype(dtype), x.astype(dtype)
    lead = x.shape[:-1]
    xf = x.reshape(-1, n)
    batch = xf.shape[0]
    program = compile_ansatz(a)
    chosen = resolve_method(a, batch, dtype, o)
    block_size, remat, max_bond, memory_budget = o.block_size, o.remat, o.max_bond, o.memory_budget
    chunk_size = o.chunk_size
    lost = jnp.zeros(lead, x.real.dtype)
    if chosen == "mps" and program.final_rows is not None and program.ops:
        plan = mps.plan_mps(program)
        check_mps_memory(a, plan, batch, dtype, max_bond, memory_budget)
        vec = folded_vectors(a, program, weights, xf)
        out, lost = mps.simulate(plan, functools.partial(layer_mats, a, weights), vec, max_bond)
        out = out.reshape(*lead, n)
        return (out, lost.reshape(lead)) if return_discarded else out
    if chosen == "split":
        check_split_memory(a, program, batch, dtype, memory_budget)  # before the tables
        plan = split.plan_split(program)
        out = _run(a, program, weights, xf, block_size, remat, plan).reshape(*lead, n)
        return (out, lost) if return_discarded else out
    if chunk_size == "auto":
        chunk_size = choose_chunk_size(a, program, batch, dtype, remat, memory_budget, block_size)
    chunk = batch if chunk_size is None else max(1, min(int(chunk_size), batch))
    lanes = 1
    if chunk == 1 and batch > 1:  # two samples side by side if their working states fit too
        lanes = choose_lanes(a, program, batch, dtype, remat, memory_budget, block_size)
    check_memory(a, program, batch, chunk, dtype, remat, memory_budget, block_size, lanes)
    sim = functools.partial(_run, a, program, weights, block_size=block_size, remat=remat)
    if chunk >= batch:
        out = sim(xf)
    elif chunk == 1:
        out = statevector.map_samples(sim, xf, remat, lanes)
    else:
        num = -(-batch // chunk)
        pad = num * chunk - batch
        xs = jnp.pad(xf, ((0, pad), (0, 0))).reshape(num, chunk, n)
        # Each chunk is rematerialised in the backward pass, so backprop keeps one chunk's
        # intermediates.
        out = jax.lax.map(jax.checkpoint(sim), xs).reshape(num * chunk, n)[:batch]
    out = out.reshape(*lead, n)
    return (out, lost) if return_discarded else out


def _run(a: Ansatz, program: Program, weights, xf, block_size: int, remat: bool, plan=None):
    """<Z> for a flat batch xf [B, n]: product states, the split method (given a plan) or the
    statevector."""
    vec = folded_vectors(a, program, weights, xf)
    if program.final_rows is None:  # no entangler: <Z> from the product state
        p = jnp.abs(vec) ** 2
        return p[..., 0] - p[..., 1]
    if plan is not None:
        return split.simulate(plan, functools.partial(layer_mats, a, weights), vec, block_size)
    return statevector.simulate(a, program, weights, vec, block_size, remat)


def _expvals_circuit(circuit: Circuit, weights, x, o: SimOptions):
    if circuit.measurement.kind != "expval_z":
        raise ValueError(
            f"expvals needs a circuit measuring <Z>, got a {circuit.measurement.kind!r} "
            "measurement; use qcxr.quantum.run for any measurement"
        )
    a = match_library(circuit)
    if a is not None and x.shape[-1] == a.num_qubits and weights.size == a.num_params:
        return expvals(a, weights.reshape(a.weight_shape), x, o)
    return run(circuit, weights, x, method=o.method)


#: Methods `run` takes for a general circuit.
CIRCUIT_METHODS = ("auto", "statevector")


def run(circuit: Circuit, weights: jnp.ndarray, x: jnp.ndarray, *, method: str = "auto"):
    """The measurement of any circuit for a batch of inputs (the general entry point).

    Library-shaped circuits measured in <Z> go through `expvals` (fast paths); every other circuit
    runs on the general statevector path (statevector.run_circuit).

    Args:
        circuit: the Circuit.
        weights: f[P] flat weights, P >= circuit.num_weights.
        x: f[..., I] inputs, I >= circuit.num_inputs.
        method: "auto" or "statevector" (the only method for a general circuit).

    Returns:
        f[..., circuit.output_size], the promoted dtype of weights and x.
    """
    if method not in CIRCUIT_METHODS:
        raise ValueError(
            f"method {method!r} does not run a general circuit; choose one of {CIRCUIT_METHODS}"
        )
    x, weights = jnp.asarray(x), jnp.asarray(weights).reshape(-1)
    if weights.shape[0] < circuit.num_weights or x.shape[-1] < circuit.num_inputs:
        raise ValueError(
            f"the circuit reads {circuit.num_weights} weights and {circuit.num_inputs} inputs per "
            f"sample, got {weights.shape[0]} weights and x of shape {tuple(x.shape)}"
        )
    lead = x.shape[:-1]
    out = statevector.run_circuit(circuit, weights, x.reshape(-1, x.shape[-1]))
    return out.reshape(*lead, circuit.output_size)
