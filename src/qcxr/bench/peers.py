"""`python -m qcxr.bench heads --peers`: the paper's circuit on the fastest simulators we know of.

Workload, the same for every row: the paper's DQC circuit (section III-B: H + RY(x) angle encoding,
then `layers` layers of RY(theta) on every wire and the CNOT ring CNOT(0,1), ..., CNOT(n-1,0);
<Z> on every wire, see the ansatz library `ry_cnot_ring`), batch 32, and one step = the value and
the gradient of sum(c * <Z>) for a fixed random cotangent c f[B, n], with respect to the weights
f[L, n] AND the inputs f[B, n] (what backprop through the DQC head needs). Inputs are drawn once
from a seed: weights U[0, 2 pi), inputs U(-pi/2, pi/2) (the head's tanh * pi/2 range), c ~ N(0, 1).

Each row times one simulator's idiomatic fast path (PEERS: `path` says which); qcxr's rows run
`qcxr.quantum.expvals` under jax.jit(value_and_grad), one row per method given on the command line.
Before a peer is timed, its <Z> on the whole batch and its gradients (weights and inputs) are
checked against qcxr's on the same inputs (Z_ATOL, GRAD_RTOL); a mismatch is reported and that
peer is not timed. Where no qcxr method fits (40 qubits before the MPS method), peers run
unchecked and the table says so.

Every (simulator, qubits) runs in its own subprocess under a wall-clock limit and a resident-memory
cap (the parent polls the child's RSS and kills it past the cap), so a crash, timeout or
out-of-memory is a row of the table, never fatal and never dropped. A peer whose package is missing
or fails to import is reported as "not installed: <error>". Peers are the optional extra
`pip install -e .[peers]`.
"""

from __future__ import annotations

import argparse
import importlib
import json
import logging
import math
import os
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from qcxr.bench.proc import spawn

log = logging.getLogger("qcxr.bench.peers")

#: Largest |Delta <Z>| accepted against qcxr (float32 on both sides at most, 2^24 amplitudes).
Z_ATOL = 5e-4
#: Largest |Delta grad| accepted, relative to the largest gradient component (at least 1).
GRAD_RTOL = 5e-4
#: Above this many qubits only peers that do not hold a 2^n statevector are attempted.
STATEVECTOR_MAX_QUBITS = 34
OURS = "qcxr"


@dataclass(frozen=True)
class Problem:
    """One batch of the workload.

    Attributes:
        num_qubits: wires n (one per label in the DQC head).
        num_layers: ring layers L.
        weights: f64[L, n] circuit weights.
        x: f64[B, n] encoding angles.
        cot: f64[B, n] the fixed cotangent c of the loss sum(c * <Z>).
    """

    num_qubits: int
    num_layers: int
    weights: np.ndarray
    x: np.ndarray
    cot: np.ndarray


def make_problem(num_qubits: int, num_layers: int = 3, batch: int = 32, seed: int = 0) -> Problem:
    """Draw the workload's inputs (identical for every simulator given the same arguments).

    Args:
        num_qubits: wires n.
        num_layers: ring layers L.
        batch: samples B.
        seed: numpy seed.

    Returns:
        A Problem with weights f64[L, n], x f64[B, n], cot f64[B, n].
    """
    if num_qubits < 2 or num_layers < 1 or batch < 1:
        raise ValueError(
            f"need num_qubits >= 2, num_layers >= 1 and batch >= 1, got {num_qubits}, "
            f"{num_layers}, {batch}"
        )
    rng = np.random.default_rng(seed)
    weights = rng.uniform(0, 2 * np.pi, (num_layers, num_qubits))
    x = rng.uniform(-np.pi / 2, np.pi / 2, (batch, num_qubits))
    cot = rng.normal(size=(batch, num_qubits))
    return Problem(num_qubits, num_layers, weights, x, cot)


@dataclass
class Runner:
    """A simulator set up for one Problem.

    Attributes:
        forward: () -> f[B, n] numpy <Z>.
        step: () -> (loss, f[L, n] dloss/dweights, f[B, n] dloss/dx), numpy, computed to the end.
    """

    forward: object
    step: object


def _ring_gates(n: int, layers: int):
    """The paper's gate order: (name, wires, angle source) with source ("x", i) or ("w", l, i)."""
    ops = []
    for i in range(n):
        ops.append(("h", (i,), None))
        ops.append(("ry", (i,), ("x", i)))
    for layer in range(layers):
        for i in range(n):
            ops.append(("ry", (i,), ("w", layer, i)))
        for i in range(n):
            ops.append(("cnot", (i, (i + 1) % n), None))
    return ops


def _np(*arrays):
    return tuple(np.asarray(a, dtype=np.float64) for a in arrays)


def _jax_runner(zs_batch, prob: Problem, dtype="float32") -> Runner:
    """Runner for a JAX function zs_batch(weights f[L,n], x f[B,n]) -> <Z> f[B,n] (jit, grad)."""
    import jax
    import jax.numpy as jnp

    w, x, c = (jnp.asarray(a, dtype) for a in (prob.weights, prob.x, prob.cot))
    fwd = jax.jit(zs_batch)
    vg = jax.jit(
        jax.value_and_grad(lambda w_, x_, c_: jnp.sum(c_ * zs_batch(w_, x_)), argnums=(0, 1))
    )

    def step():
        loss, (gw, gx) = jax.block_until_ready(vg(w, x, c))
        return _np(loss, gw, gx)

    return Runner(lambda: np.asarray(jax.block_until_ready(fwd(w, x)), np.float64), step)


def build_qcxr(prob: Problem, method: str = "auto", memory_budget: float | None = None) -> Runner:
    """qcxr.quantum.expvals, jitted value_and_grad (float32), by `method`."""
    from qcxr.quantum import Ansatz, expvals

    ansatz = Ansatz("ry_cnot_ring", prob.num_qubits, prob.num_layers)

    def zs(w, x):
        return expvals(ansatz, w, x, method=method, memory_budget=memory_budget)

    return _jax_runner(zs, prob)


def build_tensorcircuit(prob: Problem) -> Runner:
    """tensorcircuit-ng, JAX backend, complex64: K.vmap over samples of per-wire
    expectation_ps, inside K.jit(K.value_and_grad)."""
    import tensorcircuit as tc

    backend = tc.set_backend("jax")
    tc.set_dtype("complex64")
    n, ops = prob.num_qubits, _ring_gates(prob.num_qubits, prob.num_layers)

    def zs_one(w, x):
        c = tc.Circuit(n)
        for name, wires, src in ops:
            if name == "h":
                c.h(wires[0])
            elif name == "cnot":
                c.cnot(*wires)
            else:
                theta = x[src[1]] if src[0] == "x" else w[src[1], src[2]]
                c.ry(wires[0], theta=theta)
        return backend.stack([backend.real(c.expectation_ps(z=[i])) for i in range(n)])

    zs_batch = backend.vmap(zs_one, vectorized_argnums=1)
    return _jax_runner(zs_batch, prob)


def build_qujax(prob: Problem) -> Runner:
    """qujax: get_params_to_statetensor_func and one statetensor-to-expectation function per
    wire, jax.vmap over samples, jit(value_and_grad). qujax angles are in units of pi."""
    import jax
    import jax.numpy as jnp
    import qujax

    n, layers = prob.num_qubits, prob.num_layers
    gates, qubits, params = [], [], []
    for name, wires, src in _ring_gates(n, layers):
        gates.append({"h": "H", "ry": "Ry", "cnot": "CX"}[name])
        qubits.append(list(wires))
        # parameter vector: the n inputs, then the L*n weights in row-major order
        params.append([] if src is None else [src[1] if src[0] == "x" else n + src[1] * n + src[2]])
    to_state = qujax.get_params_to_statetensor_func(gates, qubits, params, n)
    to_z = [qujax.get_statetensor_to_expectation_func([["Z"]], [[i]], [1.0]) for i in range(n)]

    def zs_one(w, x):
        st = to_state(jnp.concatenate([x, w.reshape(-1)]) / jnp.pi)
        return jnp.stack([f(st) for f in to_z])

    return _jax_runner(jax.vmap(zs_one, in_axes=(None, 0)), prob)


def build_qulacs(prob: Problem) -> Runner:
    """qulacs (C++, complex128): a loop over samples; per sample a forward pass for the value and
    ParametricQuantumCircuit.backprop (reverse-mode through the circuit) for the gradient of
    <sum_i c_i Z_i> w.r.t. every parametric gate, encoding angles included. qulacs' RY(t) is
    exp(+i t Y / 2), so angles go in negated and gradients come back negated."""
    from qulacs import Observable, ParametricQuantumCircuit, QuantumState

    n, layers = prob.num_qubits, prob.num_layers
    circuit = ParametricQuantumCircuit(n)
    index = {}  # angle source -> parametric gate index
    for name, wires, src in _ring_gates(n, layers):
        if name == "h":
            circuit.add_H_gate(wires[0])
        elif name == "cnot":
            circuit.add_CNOT_gate(*wires)
        else:
            index[src] = circuit.get_parameter_count()
            circuit.add_parametric_RY_gate(wires[0], 0.0)
    x_idx = np.array([index[("x", i)] for i in range(n)])
    w_idx = np.array([[index[("w", k, i)] for i in range(n)] for k in range(layers)])
    z_obs = []
    for i in range(n):
        obs = Observable(n)
        obs.add_operator(1.0, f"Z {i}")
        z_obs.append(obs)
    cot_obs = []
    for cb in prob.cot:
        obs = Observable(n)
        for i in range(n):
            obs.add_operator(float(cb[i]), f"Z {i}")
        cot_obs.append(obs)

    def load(b: int):
        for i in range(n):
            circuit.set_parameter(int(x_idx[i]), -float(prob.x[b, i]))
        for k in range(layers):
            for i in range(n):
                circuit.set_parameter(int(w_idx[k, i]), -float(prob.weights[k, i]))

    def run_state():
        state = QuantumState(n)
        circuit.update_quantum_state(state)
        return state

    def forward():
        out = np.empty(prob.x.shape)
        for b in range(prob.x.shape[0]):
            load(b)
            state = run_state()
            out[b] = [o.get_expectation_value(state) for o in z_obs]
        return out

    def step():
        loss, gw, gx = 0.0, np.zeros(prob.weights.shape), np.empty(prob.x.shape)
        for b in range(prob.x.shape[0]):
            load(b)
            loss += cot_obs[b].get_expectation_value(run_state())
            g = -np.asarray(circuit.backprop(cot_obs[b]))
            gw += g[w_idx]
            gx[b] = g[x_idx]
        return loss, gw, gx

    return Runner(forward, step)


def build_quimb(prob: Problem) -> Runner:
    """quimb with the JAX backend: the circuit as a tensor network (qtn.Circuit; qtn.CircuitMPS
    above STATEVECTOR_MAX_QUBITS) built from traced angles, one local_expectation per wire
    (reverse-lightcone cancellation, cotengra contraction path), jax.vmap over samples,
    jit(value_and_grad)."""
    import jax
    import jax.numpy as jnp
    import quimb as qu
    import quimb.tensor as qtn

    n, ops = prob.num_qubits, _ring_gates(prob.num_qubits, prob.num_layers)
    mps = n > STATEVECTOR_MAX_QUBITS
    z = jnp.asarray(qu.pauli("Z"), jnp.complex64)

    def zs_one(w, x):
        # Gate splitting and MPS truncation test values (SVD cut-offs), which traced arrays
        # cannot: exact circuits keep gates whole, the MPS keeps every singular value up to the
        # ring's exact bond dimension 4^L.
        opts = {"dtype": "complex64", "to_backend": jnp.asarray, "convert_eager": True}
        if mps:
            circ = qtn.CircuitMPS(n, max_bond=4**prob.num_layers, cutoff=0.0, **opts)
        else:
            circ = qtn.Circuit(n, gate_contract=False, **opts)
        for name, wires, src in ops:
            if name == "ry":
                theta = x[src[1]] if src[0] == "x" else w[src[1], src[2]]
                circ.apply_gate("RY", theta, *wires)
            else:
                circ.apply_gate(name.upper(), *wires)
        if mps:
            psi = circ.psi
            # <psi| Z_i |psi> as an MPS overlap, one per wire.
            return jnp.stack([jnp.real(psi.H @ psi.gate(z, i)) for i in range(n)])
        # Simplifications that test values (diagonal / rank reduction) cannot run on traced
        # arrays; the light-cone reduction is structural and stays.
        return jnp.stack(
            [
                jnp.real(
                    circ.local_expectation(
                        z, i, simplify_sequence="", simplify_equalize_norms=False, backend="jax"
                    )
                )
                for i in range(n)
            ]
        )

    return _jax_runner(jax.vmap(zs_one, in_axes=(None, 0)), prob)


def _pennylane(prob: Problem, simulator: str) -> Runner:
    import jax

    from qcxr.quantum import Ansatz, reference

    qnode = reference.qnode(Ansatz("ry_cnot_ring", prob.num_qubits, prob.num_layers), simulator)
    return _jax_runner(qnode, prob, "float64" if jax.config.jax_enable_x64 else "float32")


def build_lightning(prob: Problem) -> Runner:
    """PennyLane lightning.qubit (C++, complex128), diff_method="adjoint", JAX interface: a loop
    over samples of one jit(value_and_grad) (a host callback inside jit). Broadcasting the batch
    into one call was slower by far (at 8 qubits: over 280 s per step against 11 s, on a loaded
    2-core CPU): the adjoint Jacobian w.r.t. the broadcast inputs grows with the batch squared."""
    import jax
    import jax.numpy as jnp

    from qcxr.quantum import Ansatz, reference

    ansatz = Ansatz("ry_cnot_ring", prob.num_qubits, prob.num_layers)
    qnode = reference.qnode(ansatz, "pennylane_lightning")
    w, x, c = (jnp.asarray(a, jnp.float32) for a in (prob.weights, prob.x, prob.cot))
    fwd = jax.jit(qnode)
    vg = jax.jit(jax.value_and_grad(lambda w_, x_, c_: jnp.sum(c_ * qnode(w_, x_)), argnums=(0, 1)))

    def forward():
        return np.stack([np.asarray(fwd(w, x[b]), np.float64) for b in range(x.shape[0])])

    def step():
        outs = jax.block_until_ready([vg(w, x[b], c[b]) for b in range(x.shape[0])])
        loss = sum(float(v) for v, _ in outs)
        gw = np.sum([np.asarray(g[0], np.float64) for _, g in outs], axis=0)
        return loss, gw, np.stack([np.asarray(g[1], np.float64) for _, g in outs])

    return Runner(forward, step)


def build_default_qubit(prob: Problem) -> Runner:
    """PennyLane default.qubit, JAX interface, diff_method="backprop", the batch broadcast,
    jit(value_and_grad): the paper's engine on its fast path."""
    return _pennylane(prob, "pennylane")


@dataclass(frozen=True)
class Peer:
    """A simulator of the comparison.

    Attributes:
        build: Problem -> Runner.
        modules: import names it needs (reported "not installed" when one fails to import).
        max_qubits: the largest n it is attempted at (a 2^n statevector, or its TN contraction).
        path: what is timed, for the table's notes.
    """

    build: object
    modules: tuple[str, ...]
    max_qubits: int
    path: str


#: Peer name -> Peer, in table order.
PEERS: dict[str, Peer] = {
    "tensorcircuit-ng": Peer(
        build_tensorcircuit,
        ("tensorcircuit",),
        STATEVECTOR_MAX_QUBITS,
        "JAX backend, complex64, vmap + jit(value_and_grad), expectation_ps per wire",
    ),
    "qujax": Peer(
        build_qujax,
        ("qujax",),
        STATEVECTOR_MAX_QUBITS,
        "JAX statetensor, float32, vmap + jit(value_and_grad)",
    ),
    "qulacs": Peer(
        build_qulacs,
        ("qulacs",),
        STATEVECTOR_MAX_QUBITS,
        "C++ complex128, loop over samples, forward + ParametricQuantumCircuit.backprop",
    ),
    "quimb": Peer(
        build_quimb,
        ("quimb", "quimb.tensor", "cotengra"),
        10**6,
        "tensor network (CircuitMPS above 34 qubits), JAX backend, local_expectation per wire, "
        "vmap + jit(value_and_grad)",
    ),
    "lightning.qubit": Peer(
        build_lightning,
        ("pennylane", "pennylane_lightning"),
        STATEVECTOR_MAX_QUBITS,
        'C++ complex128, diff_method="adjoint", JAX interface, jit, loop over samples',
    ),
    "default.qubit": Peer(
        build_default_qubit,
        ("pennylane",),
        STATEVECTOR_MAX_QUBITS,
        'JAX interface, diff_method="backprop", broadcast batch, jit(value_and_grad)',
    ),
}


def import_error(modules) -> str | None:
    """None if every module imports, else "not installed: <error>" (never raises)."""
    for name in modules:
        try:
            importlib.import_module(name)
        except Exception as e:  # noqa: BLE001 - any import failure is reported, not fatal
            return f"not installed: {type(e).__name__}: {e}".splitlines()[0]
    return None


def compare(ref: dict, z, gw, gx) -> dict:
    """Differences of a simulator's <Z> and gradients against the reference.

    Args:
        ref: {"z": f[B, n], "gw": f[L, n], "gx": f[B, n]} (qcxr's).
        z, gw, gx: the simulator's, same shapes.

    Returns:
        {"z_err": max |dZ|, "grad_err": max |dgrad| / max(1, max |grad|), "ok": within
        Z_ATOL and GRAD_RTOL}.
    """
    z_err = float(np.max(np.abs(np.asarray(z) - ref["z"])))
    g_ref = np.concatenate([ref["gw"].ravel(), ref["gx"].ravel()])
    g = np.concatenate([np.ravel(gw), np.ravel(gx)])
    if g.shape != g_ref.shape:
        raise ValueError(f"gradient sizes differ: {g.shape} vs reference {g_ref.shape}")
    grad_err = float(np.max(np.abs(g - g_ref)) / max(1.0, np.max(np.abs(g_ref))))
    ok = bool(np.isfinite(z_err) and np.isfinite(grad_err))
    return {
        "z_err": z_err,
        "grad_err": grad_err,
        "ok": ok and z_err <= Z_ATOL and grad_err <= GRAD_RTOL,
    }


def _run_single(cfg: dict) -> dict:
    """Check then time one (simulator, qubits) in this process (the subprocess side)."""
    name = cfg["simulator"]
    prob = make_problem(cfg["qubits"], cfg["layers"], cfg["batch"], cfg["seed"])
    if name == OURS:
        from qcxr.quantum import MemoryBudgetError

        try:
            runner = build_qcxr(prob, cfg["method"], cfg["mem_limit_gb"] * 2**30)
            t0 = time.perf_counter()
            loss, gw, gx = runner.step()
        except MemoryBudgetError as e:
            return {**cfg, "error": f"does not fit: {e}".splitlines()[0]}
        compile_s = time.perf_counter() - t0
        if cfg.get("write_ref"):
            np.savez(cfg["write_ref"], z=runner.forward(), gw=gw, gx=gx)
    else:
        err = import_error(PEERS[name].modules)
        if err:
            return {**cfg, "error": err}
        runner = PEERS[name].build(prob)
        t0 = time.perf_counter()
        loss, gw, gx = runner.step()
        compile_s = time.perf_counter() - t0
    check = None
    if cfg.get("ref") and Path(cfg["ref"]).exists():
        with np.load(cfg["ref"]) as f:
            ref = {k: f[k] for k in ("z", "gw", "gx")}
        check = compare(ref, runner.forward(), gw, gx)
        if not check["ok"]:
            return {
                **cfg,
                "check": check,
                "error": f"mismatch with qcxr: max |dZ| {check['z_err']:.2e} (tol {Z_ATOL}), "
                f"grad {check['grad_err']:.2e} (tol {GRAD_RTOL}); not timed",
            }
    if not math.isfinite(float(loss)):
        return {**cfg, "error": "loss not finite"}
    times, start = [], time.perf_counter()
    # At least `repeats` steps (and `min_time` seconds of them for fast steps), within the limit.
    while not times or (
        time.perf_counter() - start < cfg["time_limit"]
        and (len(times) < cfg["repeats"] or time.perf_counter() - start < cfg["min_time"])
    ):
        t = time.perf_counter()
        runner.step()
        times.append(time.perf_counter() - t)
    return {
        **cfg,
        "check": check,
        "compile_s": compile_s,
        "times_s": times,
        "median_s": float(np.median(times)),
        "min_s": float(np.min(times)),
        "max_s": float(np.max(times)),
    }


def _spawn(cfg: dict, timeout: float, mem_limit_gb: float) -> dict:
    """Run one configuration in a fresh process under a wall-clock limit and an RSS cap (the
    polled peak RSS is the row's); never raises."""
    return spawn("qcxr.bench.peers", cfg, timeout, mem_limit_gb)


def _fmt_ms(s: float) -> str:
    ms = 1000 * s
    return f"{ms:.3g}" if ms < 100 else f"{ms:,.0f}"


def _name(r: dict) -> str:
    return f"**qcxr, {r['method']}**" if r["simulator"] == OURS else r["simulator"]


def fastest_peer(results: list[dict], qubits: int) -> dict | None:
    """The timed peer row (not qcxr) with the smallest median at `qubits`, or None."""
    rows = [
        r for r in results if r["qubits"] == qubits and r["simulator"] != OURS and "median_s" in r
    ]
    return min(rows, key=lambda r: r["median_s"]) if rows else None


def table(results: list[dict]) -> str:
    """Markdown table: median and min-max step time, check errors, peak RSS, time over the
    fastest peer's at the same qubit count (qcxr's rows in bold)."""
    rows = [
        "| qubits | simulator | median ms | min–max ms | steps | max \\|ΔZ\\| | grad err "
        "| peak RSS MB | × fastest peer |",
        "|---:|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in results:
        rss = f"{r['peak_rss_mb']:,.0f}" if r.get("peak_rss_mb") else "—"
        if "median_s" not in r:
            why = r["error"].replace("|", "/")  # a stderr tail must not split the cell
            rows.append(f"| {r['qubits']} | {_name(r)} | — | — | — | — | — | {rss} | {why} |")
            continue
        best = fastest_peer(results, r["qubits"])
        ratio = f"{r['median_s'] / best['median_s']:.3g}×" if best else "no peer timed"
        if r["median_s"] > r.get("time_limit", math.inf):
            ratio += f" (over the {r['time_limit']:g} s step budget)"
        chk = r.get("check")
        if r.get("write_ref"):
            z_err = g_err = "reference"
        elif chk is None:
            z_err = g_err = "unchecked"
        else:
            z_err, g_err = f"{chk['z_err']:.1e}", f"{chk['grad_err']:.1e}"
        rows.append(
            f"| {r['qubits']} | {_name(r)} | {_fmt_ms(r['median_s'])} | "
            f"{_fmt_ms(r['min_s'])}–{_fmt_ms(r['max_s'])} | {len(r['times_s'])} | {z_err} | "
            f"{g_err} | {rss} | {ratio} |"
        )
    return "\n".join(rows)


def verdict(results: list[dict]) -> list[str]:
    """One line per qubit count: qcxr's fastest method against the fastest peer."""
    lines = []
    for n in sorted({r["qubits"] for r in results}):
        ours = [
            r for r in results if r["qubits"] == n and r["simulator"] == OURS and "median_s" in r
        ]
        best = fastest_peer(results, n)
        if not ours:
            lines.append(f"{n} qubits: no qcxr method ran")
        elif not best:
            lines.append(f"{n} qubits: no peer ran (qcxr {_fmt_ms(ours[0]['median_s'])} ms)")
        else:
            o = min(ours, key=lambda r: r["median_s"])
            f = best["median_s"] / o["median_s"]
            lines.append(
                f"{n} qubits: qcxr ({o['method']}) {_fmt_ms(o['median_s'])} ms vs fastest peer "
                f"{best['simulator']} {_fmt_ms(best['median_s'])} ms: "
                + (f"qcxr {f:.3g}× faster" if f >= 1 else f"peer {1 / f:.3g}× faster")
            )
    return lines


def main(argv: list[str] | None = None) -> int:
    """Run the peer benchmark; write the Markdown table to stdout and JSON to --json."""
    from qcxr.quantum.dispatch.engine import METHODS

    p = argparse.ArgumentParser(
        prog="python -m qcxr.bench heads --peers",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--qubits", type=int, nargs="+", default=[8, 14, 19, 24, 40])
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--layers", type=int, default=3)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument(
        "--methods",
        nargs="+",
        default=["auto"],
        choices=[m for m in METHODS],
        help="qcxr methods to time (one row each); the first that runs is the check reference",
    )
    p.add_argument(
        "--peer-list",
        nargs="+",
        default=list(PEERS),
        choices=list(PEERS),
        help="peers to time (default: all)",
    )
    p.add_argument("--repeats", type=int, default=10, help="timed steps per row (at least)")
    p.add_argument(
        "--min-time", type=float, default=2.0, help="keep timing fast rows this many seconds"
    )
    p.add_argument(
        "--time-limit",
        type=float,
        default=60.0,
        help="seconds per step budget: a row's process is killed after 2x this + 60 s (setup, "
        "compilation, the check and the first steps)",
    )
    p.add_argument("--mem-limit", type=float, default=20.0, help="RSS cap per row in GB")
    p.add_argument("--json", default="bench_results/peers.json", help="write results here")
    p.add_argument("--single", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.single:
        sys.stdout.write(json.dumps(_run_single(json.loads(args.single))) + "\n")
        return 0
    logging.basicConfig(level=logging.INFO, format="%(message)s", force=True)
    base = {
        "batch": args.batch,
        "layers": args.layers,
        "seed": args.seed,
        "repeats": args.repeats,
        "min_time": args.min_time,
        "time_limit": args.time_limit,
        "mem_limit_gb": args.mem_limit,
    }
    timeout = 2 * args.time_limit + 60
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        for n in args.qubits:
            ref = None
            for method in args.methods:
                cfg = {**base, "qubits": n, "simulator": OURS, "method": method, "ref": ref}
                if ref is None:
                    cfg["write_ref"] = os.path.join(tmp, f"ref{n}.npz")
                results.append(_spawn(cfg, timeout, args.mem_limit))
                _log(results[-1])
                if ref is None and "median_s" in results[-1]:
                    ref = cfg["write_ref"]
            for name in args.peer_list:
                cfg = {**base, "qubits": n, "simulator": name, "ref": ref}
                if n > PEERS[name].max_qubits:
                    results.append(
                        {**cfg, "error": f"not attempted: a 2^{n}-amplitude statevector"}
                    )
                else:
                    results.append(_spawn(cfg, timeout, args.mem_limit))
                _log(results[-1])
    out_table = table(results)
    lines = verdict(results)
    sys.stdout.write(out_table + "\n\n" + "\n".join(lines) + "\n")
    out = Path(args.json)
    out.parent.mkdir(parents=True, exist_ok=True)
    meta = {
        "cpu_count": os.cpu_count(),
        "time": time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime()),
        "paths": {name: peer.path for name, peer in PEERS.items()},
        "z_atol": Z_ATOL,
        "grad_rtol": GRAD_RTOL,
        "args": {k: v for k, v in vars(args).items() if k != "single"},
    }
    out.write_text(
        json.dumps(
            {"meta": meta, "results": results, "table": out_table, "verdict": lines}, indent=1
        )
    )
    log.info("wrote %s", out)
    return 0


def _log(r: dict) -> None:
    what = r.get("error") or f"median {_fmt_ms(r['median_s'])} ms"
    log.info("%d qubits, %s: %s", r["qubits"], _name(r).strip("*"), what)


if __name__ == "__main__":
    sys.exit(main())
