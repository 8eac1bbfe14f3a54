"""`python -m qcxr.bench qcnn`: a training step of the QCNN head, cut and uncut, ours vs PennyLane.

Protocol: random (not zero) 1280-dim features (MobileNetV2's width) and random class labels, batch
32, 7 classes (HAM10000); one step = forward and backward of the whole head (Dense(1280 -> 8) ->
QCNN probabilities of wires 3..7 -> Dense(32 -> 7)) under softmax cross-entropy, plus an Adam
update, jitted, for `cut=fragments` (the 9 fragment runs, batched) and `cut=exact` (the 8-qubit
circuit). PennyLane runs the paper's code path: the 9 fragment QNodes (built from the same
circuit representation) on `lightning.qubit` with differentiation method "best", as the paper's
TorchLayers (parameter shift: lightning's adjoint method does not take probabilities), one sample
at a time, recombined and differentiated through autograd (the gradient of the same loss w.r.t.
every head parameter; the Adam update, negligible, is not included). Compilation and warm-up are
excluded; the table gives the median and min/max of the timed steps and PennyLane's time over each
native row's.
"""

from __future__ import annotations

import argparse
import json
import logging
import time
from pathlib import Path

log = logging.getLogger("qcxr.bench.qcnn")

FEATURES = 1280
CLASSES = 7


def _data(batch: int, seed: int):
    import numpy as np

    rng = np.random.default_rng(seed)
    features = rng.normal(size=(batch, FEATURES)).astype(np.float32)
    labels = rng.integers(0, CLASSES, batch)
    return features, labels


def _time(step, repeats: int, warmup: int, time_limit: float) -> list[float]:
    for _ in range(warmup):
        step()
    times, deadline = [], time.perf_counter() + time_limit
    while len(times) < repeats and (not times or time.perf_counter() < deadline):
        t0 = time.perf_counter()
        step()
        times.append(time.perf_counter() - t0)
    return times


def _native(cut: str, args) -> dict:
    import jax
    import jax.numpy as jnp
    import optax

    from qcxr.models import qcnn_head

    features, labels = _data(args.batch, args.seed)
    features, labels = jnp.asarray(features), jnp.asarray(labels)
    head = qcnn_head(CLASSES, cut=cut)
    params = jax.jit(head.init)(jax.random.key(args.seed), features)
    opt = optax.adam(1e-3)
    state = opt.init(params)

    def loss_fn(p):
        logits = head.apply(p, features)
        return optax.softmax_cross_entropy_with_integer_labels(logits, labels).mean()

    @jax.jit
    def step(p, s):
        loss, grads = jax.value_and_grad(loss_fn)(p)
        updates, s = opt.update(grads, s, p)
        return optax.apply_updates(p, updates), s, loss

    holder = {"p": params, "s": state}

    def run():
        holder["p"], holder["s"], loss = step(holder["p"], holder["s"])
        jax.block_until_ready(loss)

    t0 = time.perf_counter()
    run()
    compile_s = time.perf_counter() - t0
    times = _time(run, args.repeats, args.warmup, args.time_limit)
    return {"name": f"native, cut={cut}", "compile_s": compile_s, "times": times}


def _pennylane(args) -> dict:
    import numpy as np
    import pennylane as qml
    from pennylane import numpy as pnp

    from qcxr.quantum import qcnn_cut, reference
    from qcxr.quantum.cutting.wirecut import back_circuits, front_circuits

    features, labels = _data(args.batch, args.seed)
    cut = qcnn_cut()
    sim = "pennylane_lightning"
    # diff_method "best", as the paper's TorchLayers: lightning's adjoint method does not take
    # probabilities, so PennyLane picks another (parameter shift).
    fronts = [reference.circuit_qnode(c, sim, "autograd", "best") for c in front_circuits(cut)]
    backs = [reference.circuit_qnode(c, sim, "autograd", "best") for c in back_circuits(cut)]
    rng = np.random.default_rng(args.seed)
    params = [
        pnp.array(rng.normal(0, 0.03, (FEATURES, 8)), requires_grad=True),
        pnp.array(np.zeros(8), requires_grad=True),
        pnp.array(rng.uniform(0, 1, 35), requires_grad=True),
        pnp.array(rng.normal(0, 0.2, (32, CLASSES)), requires_grad=True),
        pnp.array(np.zeros(CLASSES), requires_grad=True),
    ]

    def loss(w_pre, b_pre, w_q, w_post, b_post):
        total = 0.0
        for f, y in zip(features, labels, strict=True):  # the paper's loop over samples
            x = pnp.dot(f, w_pre) + b_pre
            z, xx, yy = (p[0] - p[1] for p in (q(w_q, x) for q in fronts))
            coef = [(1 + z) / 2, (1 - z) / 2, xx / 2, -xx / 2, yy / 2, -yy / 2]
            probs = sum(c * b(w_q, x) for c, b in zip(coef, backs, strict=True))
            logits = pnp.dot(probs, w_post) + b_post
            total = total - (logits[y] - pnp.log(pnp.sum(pnp.exp(logits))))
        return total / len(labels)

    grad = qml.grad(loss, argnums=[0, 1, 2, 3, 4])

    def run():
        grad(*params)

    t0 = time.perf_counter()
    run()
    first_s = time.perf_counter() - t0
    times = _time(run, args.pennylane_repeats, 0, args.time_limit)
    return {
        "name": "pennylane lightning.qubit, 9 fragment QNodes, loop over samples",
        "compile_s": first_s,
        "times": times,
    }


def _shot_noise(args) -> list[dict]:
    """RMS error of the shot-sampled reconstruction vs the exact probabilities, per shot count.

    Against the same circuit run uncut on an 8-qubit device and sampled directly, with the same
    total shots (9 N) and with N shots.
    """
    import jax

    # float64 for the reference; restored afterwards, so the rest of a process (tests, the
    # float32 data pipeline) keeps JAX's default.
    previous = jax.config.jax_enable_x64
    jax.config.update("jax_enable_x64", True)
    try:
        return _shot_noise_x64(args)
    finally:
        jax.config.update("jax_enable_x64", previous)


def _shot_noise_x64(args) -> list[dict]:
    import jax
    import jax.numpy as jnp
    import numpy as np

    from qcxr.quantum import qcnn_probs

    key = jax.random.key(args.seed)
    kw, kx, key = jax.random.split(key, 3)
    w = jax.random.uniform(kw, (35,), jnp.float64)  # the paper's init, U[0, 1)
    x = jax.random.normal(kx, (args.batch, 8), jnp.float64)
    exact = qcnn_probs(w, x, "exact")
    out = []
    for shots in args.shot_noise:
        errs = {"fragments": [], "direct_same_total": [], "direct_same_per_run": []}
        for r in range(args.shot_repeats):
            k1, k2, k3 = jax.random.split(jax.random.fold_in(key, 1000 * shots + r), 3)
            est = qcnn_probs(w, x, "fragments", shots=shots, key=k1)
            errs["fragments"].append(np.asarray(est - exact))
            for name, k, n in (
                ("direct_same_total", k2, 9 * shots),
                ("direct_same_per_run", k3, shots),
            ):
                counts = jax.random.multinomial(k, n, exact, dtype=jnp.float64)
                errs[name].append(np.asarray(counts / n - exact))
        row = {"shots": shots}
        for name, e in errs.items():
            row[name] = float(np.sqrt(np.mean(np.square(e))))
        out.append(row)
    return out


def _row(r: dict, ref: float | None) -> str:
    import numpy as np

    t = np.asarray(r["times"]) * 1e3
    ratio = (
        f"{ref / np.median(t):,.0f}×" if ref is not None and r["name"].startswith("native") else ""
    )
    return (
        f"| {r['name']} | {np.median(t):,.3g} | {t.min():,.3g}–{t.max():,.3g} | {len(t)} | "
        f"{ratio} |"
    )


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark and log a Markdown table; write the raw timings as JSON."""
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    p = argparse.ArgumentParser(prog="python -m qcxr.bench qcnn", description=__doc__)
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--repeats", type=int, default=50, help="timed native steps per row")
    p.add_argument("--pennylane-repeats", type=int, default=3, help="timed PennyLane steps")
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--time-limit", type=float, default=60.0, help="seconds of timing per row")
    p.add_argument("--no-pennylane", action="store_true")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument(
        "--shot-noise",
        type=int,
        nargs="*",
        default=[],
        help="also measure the reconstruction error at these shots per fragment run",
    )
    p.add_argument("--shot-repeats", type=int, default=10)
    p.add_argument("--no-steps", action="store_true", help="skip the step timings")
    p.add_argument("--out", default="bench_results/qcnn.json")
    args = p.parse_args(argv)
    if args.batch < 1 or args.repeats < 1:
        p.error("--batch and --repeats must be positive")
    if any(n < 1 for n in args.shot_noise):
        p.error("--shot-noise takes positive shot counts")
    rows = []
    for cut in () if args.no_steps else ("fragments", "exact"):
        log.info("running native cut=%s ...", cut)
        rows.append(_native(cut, args))
    if not (args.no_pennylane or args.no_steps):
        log.info("running PennyLane (the paper's code path) ...")
        rows.append(_pennylane(args))
    import numpy as np

    ref = np.median(rows[-1]["times"]) * 1e3 if rows and not args.no_pennylane else None
    noise = _shot_noise(args) if args.shot_noise else []
    if noise:
        log.info(
            "\n".join(
                [
                    "| shots per fragment run (N) | RMS error, cut (9 runs of N) | RMS error, "
                    "uncut 8 qubits, 9N shots | RMS error, uncut, N shots |",
                    "|---:|---:|---:|---:|",
                    *(
                        f"| {r['shots']:,} | {r['fragments']:.2e} | {r['direct_same_total']:.2e}"
                        f" | {r['direct_same_per_run']:.2e} |"
                        for r in noise
                    ),
                ]
            )
        )
    lines = [
        f"| step (batch {args.batch}, 1280 features, 7 classes) | median ms | min–max ms | "
        "steps | PennyLane/this |",
        "|---|---:|---:|---:|---:|",
        *(_row(r, ref) for r in rows),
    ]
    if rows:
        log.info("\n".join(lines))
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"args": vars(args), "rows": rows, "shot_noise": noise}, indent=1))
    log.info("wrote %s", out)
    return 0
