"""`python -m qcxr.bench noise`: the circuit's training step under noise, and PennyLane agreement.

Benchmark (default). Protocol: the paper's circuit (ry_cnot_ring, H + RY encoding, 3 layers),
batch 32, random weights and inputs, noise {"depolarizing": 1e-3} by default (`--noise` takes a
JSON mapping); one step = value and gradient (w.r.t. weights and inputs) of sum(<Z> * c) for a
random read-out c, jitted, with a fresh key per step (trajectories). Configurations: trajectories
with T = 16 and 64 at 8 / 14 / 19 qubits, the density matrix at 8 and 10, and PennyLane
default.mixed (backprop, autograd interface, one sample at a time: its batch-32 step is 32 of
them) at 8 and 10 qubits. Each runs in its own subprocess with a time limit (`--time-limit`); a
timeout or crash is reported, not fatal. The table gives compilation time, the median step time
(min/max over the timed steps), the peak resident memory of the subprocess, and PennyLane's time
over the native method's at the same qubit count. Memory budget of the native methods:
`--memory-gb` (default 4, so every process stays under 6 GB).

Agreement (`--agreement`): the PennyLane default.mixed agreement table of docs/quantum.md:
channel x qubits x max absolute error of the density_matrix method (float64) against
default.mixed, values and gradients, on 2 random samples per cell (p = 0.05 per channel; readout
0.05; noisy encoding; ry_cnot_ring, 2 layers).
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from pathlib import Path

from qcxr.bench.proc import peak_rss_mb, spawn

log = logging.getLogger("qcxr.bench.noise")


def _step_fn(cfg: dict):
    """(step(w, x, key) -> (loss, grads), w, x) for one configuration."""
    import jax
    import jax.numpy as jnp

    from qcxr.quantum import expvals, make_ansatz

    n, batch = cfg["qubits"], cfg["batch"]
    a = make_ansatz("ry_cnot_ring", n, cfg["layers"])
    kw, kx, kc = jax.random.split(jax.random.PRNGKey(cfg["seed"]), 3)
    w = a.init_weights(kw)
    x = jax.random.uniform(kx, (batch, n), jnp.float32, -1.5, 1.5)
    c = jax.random.normal(kc, (batch, n), jnp.float32)
    noise = cfg["noise"]

    def loss(w, x, key):
        v = expvals(
            a,
            w,
            x,
            noise=noise,
            method=cfg["method"],
            trajectories=cfg.get("trajectories"),
            key=key,
            memory_budget=cfg["memory_gb"] * 2**30,
        )
        return jnp.sum(v * c)

    return jax.jit(jax.value_and_grad(loss, (0, 1))), w, x


def _pennylane_step(cfg: dict):
    import numpy as np
    import pennylane as qml
    from pennylane import numpy as pnp

    from qcxr.quantum import make_ansatz, make_noise, reference

    n, batch = cfg["qubits"], cfg["batch"]
    a = make_ansatz("ry_cnot_ring", n, cfg["layers"])
    rng = np.random.default_rng(cfg["seed"])
    w = pnp.array(rng.normal(size=a.num_params), requires_grad=True)
    xs = rng.uniform(-1.5, 1.5, size=(batch, n))
    cs = rng.normal(size=(batch, n))
    f = reference.noisy_qnode(a.circuit(), make_noise(cfg["noise"]))

    def loss(w, x, c):
        return pnp.sum(f(w, x) * c)

    grad = qml.grad(loss, argnums=[0, 1])

    def step():
        out = 0.0
        for x, c in zip(xs, cs, strict=True):
            xp = pnp.array(x, requires_grad=True)
            out += float(loss(w, xp, c))
            grad(w, xp, c)
        return out

    return step


def _run_single(cfg: dict) -> dict:
    """Time one configuration in this process (the subprocess side)."""
    import numpy as np

    deadline = time.perf_counter() + cfg["time_limit"]
    if cfg["method"] == "pennylane":
        step = _pennylane_step(cfg)
        t0 = time.perf_counter()
        step()
        compile_s, times = 0.0, [time.perf_counter() - t0]
        while len(times) < cfg["repeats"] and time.perf_counter() + times[0] < deadline:
            t = time.perf_counter()
            step()
            times.append(time.perf_counter() - t)
    else:
        import jax

        step, w, x = _step_fn(cfg)
        keys = jax.random.split(jax.random.PRNGKey(cfg["seed"] + 1), cfg["repeats"] + 1)
        t0 = time.perf_counter()
        jax.block_until_ready(step(w, x, keys[0]))
        compile_s = time.perf_counter() - t0
        times = []
        for k in keys[1:]:
            if times and time.perf_counter() + times[-1] > deadline:
                break
            t = time.perf_counter()
            jax.block_until_ready(step(w, x, k))
            times.append(time.perf_counter() - t)
        if not times:
            times = [compile_s]
    return {
        **cfg,
        "compile_s": compile_s,
        "times_s": times,
        "median_s": float(np.median(times)),
        "min_s": float(np.min(times)),
        "max_s": float(np.max(times)),
        "peak_rss_mb": peak_rss_mb(),
    }


def _spawn(cfg: dict, timeout: float) -> dict:
    return spawn("qcxr.bench.noise", cfg, timeout)


def _fmt_s(s: float) -> str:
    return f"{s:.3g}" if s < 100 else f"{s:,.0f}"


def _label(r: dict) -> str:
    if r["method"] == "trajectories":
        return f"trajectories T={r['trajectories']}"
    if r["method"] == "pennylane":
        return "PennyLane default.mixed"
    return "density_matrix"


def _table(results: list[dict]) -> str:
    native = {
        r["qubits"]: r["median_s"]
        for r in results
        if r["method"] == "density_matrix" and "error" not in r
    }
    rows = [
        "| qubits | method | compile (s) | step median (s) | min / max (s) | peak RSS (MB) "
        "| PennyLane / density_matrix |",
        "|---:|---|---:|---:|---|---:|---:|",
    ]
    for r in results:
        if "error" in r:
            rows.append(f"| {r['qubits']} | {_label(r)} | — | {r['error']} | — | — | — |")
            continue
        ratio = "—"
        if r["method"] == "pennylane" and r["qubits"] in native:
            ratio = f"{r['median_s'] / native[r['qubits']]:,.0f}x"
        rows.append(
            f"| {r['qubits']} | {_label(r)} | {_fmt_s(r['compile_s'])} | {_fmt_s(r['median_s'])} "
            f"| {_fmt_s(r['min_s'])} / {_fmt_s(r['max_s'])} ({len(r['times_s'])} steps) "
            f"| {r['peak_rss_mb']:,.0f} | {ratio} |"
        )
    return "\n".join(rows)


def agreement(qubits=(2, 4, 6, 8), p: float = 0.05, seed: int = 0) -> list[dict]:
    """Max |ours - default.mixed| per channel and qubit count, values and gradients (float64).

    Args:
        qubits: qubit counts.
        p: every channel's parameter.
        seed: random weights, inputs and read-out.

    Returns:
        Rows {channel, qubits, value_err, grad_err}.
    """
    import numpy as np

    from qcxr.quantum import NOISE_CHANNELS, make_ansatz

    rows = []
    for n in qubits:
        a = make_ansatz("ry_cnot_ring", n, 2)
        rng = np.random.default_rng(seed + n)
        w = rng.normal(0.0, 2.0, size=a.weight_shape)
        x = rng.uniform(-np.pi / 2, np.pi / 2, size=(2, n))
        c = rng.normal(size=(2, n))
        for ch in NOISE_CHANNELS:
            value_err, grad_err = _agreement_cell(a, w, x, c, {ch: p})
            rows.append({"channel": ch, "qubits": n, "value_err": value_err, "grad_err": grad_err})
            log.info("%s", rows[-1])
    return rows


def _agreement_cell(a, w, x, c, noise) -> tuple[float, float]:
    """Max |ours - default.mixed| of the values and of the weight gradient of sum(<Z> * c)."""
    import jax
    import jax.numpy as jnp
    import numpy as np
    import pennylane as qml
    from pennylane import numpy as pnp

    from qcxr.quantum import expvals, make_noise, reference

    f = reference.noisy_qnode(a.circuit(), make_noise(noise))

    def ref_loss(w, x, c):
        return pnp.sum(f(w, x) * c)

    ref_v, ref_g = [], []
    for xi, ci in zip(x, c, strict=True):
        wp, xp = pnp.array(w.reshape(-1), requires_grad=True), pnp.array(xi, requires_grad=False)
        ref_v.append(np.asarray(f(wp, xp)))
        ref_g.append(np.asarray(qml.grad(ref_loss, argnums=0)(wp, xp, ci)))
    with jax.enable_x64(True):
        wj, xj, cj = (jnp.asarray(v, jnp.float64) for v in (w, x, c))

        def loss(w):
            v = expvals(a, w, xj, noise=noise, method="density_matrix")
            return jnp.sum(v * cj), v

        (_, v), g = jax.jit(jax.value_and_grad(loss, has_aux=True))(wj)
    value_err = float(np.abs(np.asarray(v) - np.stack(ref_v)).max())
    grad_err = float(np.abs(np.asarray(g).reshape(-1) - np.sum(ref_g, axis=0)).max())
    return value_err, grad_err


def _agreement_table(rows: list[dict]) -> str:
    qubits = sorted({r["qubits"] for r in rows})
    chans = list(dict.fromkeys(r["channel"] for r in rows))
    head = "| channel | " + " | ".join(f"{n} qubits: value / gradient" for n in qubits) + " |"
    out = [head, "|---|" + "---:|" * len(qubits)]
    for ch in chans:
        cells = []
        for n in qubits:
            r = next(r for r in rows if r["channel"] == ch and r["qubits"] == n)
            cells.append(f"{r['value_err']:.1e} / {r['grad_err']:.1e}")
        out.append(f"| {ch} | " + " | ".join(cells) + " |")
    return "\n".join(out)


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark (or the agreement table) and print Markdown to the log."""
    p = argparse.ArgumentParser(
        prog="python -m qcxr.bench noise",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--trajectory-qubits", type=int, nargs="+", default=[8, 14, 19])
    p.add_argument("--trajectories", type=int, nargs="+", default=[16, 64])
    p.add_argument("--density-qubits", type=int, nargs="+", default=[8, 10])
    p.add_argument("--pennylane-qubits", type=int, nargs="+", default=[8, 10])
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--layers", type=int, default=3)
    p.add_argument("--noise", default='{"depolarizing": 0.001}', help="JSON channel -> parameter")
    p.add_argument("--repeats", type=int, default=5, help="timed steps per configuration")
    p.add_argument("--time-limit", type=float, default=600.0, help="seconds per configuration")
    p.add_argument("--memory-gb", type=float, default=4.0)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--agreement", action="store_true", help="the default.mixed agreement table")
    p.add_argument("--agreement-qubits", type=int, nargs="+", default=[2, 4, 6, 8])
    p.add_argument("--out", default="bench_results/noise.json")
    p.add_argument("--single", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.single:
        sys.stdout.write(json.dumps(_run_single(json.loads(args.single))) + "\n")
        return 0
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    if args.agreement:
        rows = agreement(tuple(args.agreement_qubits), seed=args.seed)
        log.info("\n%s", _agreement_table(rows))
        return 0
    base = {
        "batch": args.batch,
        "layers": args.layers,
        "noise": json.loads(args.noise),
        "repeats": args.repeats,
        "time_limit": args.time_limit,
        "memory_gb": args.memory_gb,
        "seed": args.seed,
    }
    cfgs = [
        {**base, "qubits": n, "method": "trajectories", "trajectories": t}
        for n in args.trajectory_qubits
        for t in args.trajectories
    ]
    cfgs += [{**base, "qubits": n, "method": "density_matrix"} for n in args.density_qubits]
    cfgs += [{**base, "qubits": n, "method": "pennylane"} for n in args.pennylane_qubits]
    results = []
    for cfg in cfgs:
        r = _spawn(cfg, cfg["time_limit"] + 120)
        log.info("%s", {k: v for k, v in r.items() if k != "times_s"})
        results.append(r)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=1))
    log.info(
        "noise %s, batch %d, %d layers\n%s", base["noise"], args.batch, args.layers, _table(results)
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
