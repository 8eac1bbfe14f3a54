"""`python -m qcxr.bench heads`: one training step of the classification head, native vs PennyLane.

Protocol: random (not zero) 2048-dim features and random labels, batch 32; one step = forward and
backward of the whole head (Dense -> tanh*pi/2 -> circuit -> Dense for DQC, Dense for CDL) under
mean BCE plus an Adam update, jitted. Compilation and warm-up steps are excluded; the table gives
the median and min/max of the timed steps, the peak resident memory of the process that ran the
configuration, and PennyLane's time over each native row's, measured in the same invocation.
Native rows are timed per engine method (`--methods`, default `auto` and `statevector`: the
statevector engine alone, and what `auto` picks, the split method for shallow circuits).

`--scale` gives the issue-14 scale table instead: qubits (8 ... 100) x method (statevector, split,
mps) -> step time, peak memory and compile time, each where its estimate fits 20 GB and its step
60 s, and the largest qubit count the MPS method reaches within both.

Each configuration runs in its own subprocess so that its peak memory is its own and a crash or an
out-of-memory kill is reported, not fatal. `--max-qubits` searches upward for the largest qubit
count whose batch-32 DQC step fits the memory budget and the time limit, with the method `auto`
picks there (the statevector processes the batch in chunks when needed).
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import os
import sys
import time
from pathlib import Path

from qcxr.bench.proc import peak_rss_mb, spawn

log = logging.getLogger("qcxr.bench.heads")

FEATURES = 2048


def _run_single(cfg: dict) -> dict:
    """Time one configuration in this process (the subprocess side)."""
    import jax
    import jax.numpy as jnp
    import numpy as np
    import optax

    from qcxr.models import cdl_head, dqc_head
    from qcxr.quantum import make_ansatz

    n, batch = cfg["qubits"], cfg["batch"]
    base_rss = peak_rss_mb()
    if cfg["head"] == "cdl":
        head = cdl_head(n)
    else:
        ansatz = make_ansatz(cfg["ansatz"], n, cfg["layers"])
        head = dqc_head(
            n,
            ansatz,
            simulator=cfg["simulator"],
            block_size=cfg["block_size"],
            remat=cfg["remat"],
            chunk_size=cfg["chunk_size"],
            method=cfg.get("method", "auto"),
        )
    kf, ky, kp = jax.random.split(jax.random.key(cfg["seed"]), 3)
    features = jax.random.normal(kf, (batch, FEATURES), jnp.float32)
    labels = jax.random.bernoulli(ky, 0.3, (batch, n)).astype(jnp.float32)
    params = jax.jit(head.init)(kp, features)
    opt = optax.adam(1e-4)
    state = opt.init(params)

    def loss_fn(p):
        return optax.sigmoid_binary_cross_entropy(head.apply(p, features), labels).mean()

    @jax.jit
    def step(p, s):
        loss, grads = jax.value_and_grad(loss_fn)(p)
        updates, s = opt.update(grads, s, p)
        return optax.apply_updates(p, updates), s, loss

    t0 = time.perf_counter()
    params, state, loss = step(params, state)
    jax.block_until_ready(loss)
    compile_s = time.perf_counter() - t0
    deadline = time.perf_counter() + cfg["time_limit"]
    for _ in range(cfg["warmup"]):  # warm-up also stops at the time limit (PennyLane at 19 qubits)
        if time.perf_counter() > deadline - cfg["time_limit"] / 2:
            break
        params, state, loss = step(params, state)
        jax.block_until_ready(loss)
    # At least `repeats` steps, and for fast steps at least `min_time` seconds of them (sub-ms
    # steps on a shared VM need hundreds of samples for a stable median), within the time limit.
    times, start = [], time.perf_counter()
    min_time = cfg.get("min_time", 0.0)

    def more() -> bool:
        if not times:
            return True
        if time.perf_counter() >= deadline:
            return False
        return len(times) < cfg["repeats"] or time.perf_counter() - start < min_time

    while more():
        t = time.perf_counter()
        params, state, loss = step(params, state)
        jax.block_until_ready(loss)
        times.append(time.perf_counter() - t)
    used = None
    if cfg["head"] == "dqc" and cfg["simulator"] == "native":
        from qcxr.quantum.dispatch.engine import resolve_method

        used = resolve_method(ansatz, batch, "float32", method=cfg.get("method", "auto"))
    return {
        **cfg,
        "method_used": used,
        "compile_s": compile_s,
        "times_s": times,
        "median_s": float(np.median(times)),
        "min_s": float(np.min(times)),
        "max_s": float(np.max(times)),
        "loss_finite": bool(np.isfinite(float(loss))),
        "peak_rss_mb": peak_rss_mb(),
        "base_rss_mb": base_rss,
        "truncated": len(times) < cfg["repeats"],
    }


def _spawn(cfg: dict, timeout: float) -> dict:
    return spawn("qcxr.bench.heads", cfg, timeout)


def _fmt_ms(s: float) -> str:
    ms = 1000 * s
    return f"{ms:.3g}" if ms < 100 else f"{ms:,.0f}"


def _label(r: dict) -> str:
    if r["head"] == "cdl":
        return "—"
    if r["simulator"] != "native":
        return r["simulator"]
    method = r.get("method", "auto")
    used = r.get("method_used")
    label = f"native, {method}" if method != "auto" or not used else f"native, auto: {used}"
    if r.get("max_qubits_search") and used == "statevector":
        label += f", chunks of {r['chunk_size']}"
    if r.get("max_qubits_search"):
        label += f" (est. {r.get('estimate_gib', 0):.1f} GiB)"
    return label


def _table(results: list[dict]) -> str:
    """Markdown table; native rows carry PennyLane's time over theirs (same qubits)."""
    rows = [
        "| head | qubits | simulator | median ms | min–max ms | steps | peak RSS MB "
        "| PennyLane/this |",
        "|---|---:|---|---:|---:|---:|---:|---:|",
    ]
    pennylane = {
        r["qubits"]: r["median_s"]
        for r in results
        if r.get("simulator") == "pennylane" and r["head"] == "dqc" and "median_s" in r
    }
    for r in results:
        head, sim = r["head"].upper(), _label(r)
        if "error" in r:
            rows.append(f"| {head} | {r['qubits']} | {sim} | — | — | — | — | {r['error']} |")
            continue
        ratio = ""
        if r["head"] == "dqc" and r["simulator"] == "native" and r["qubits"] in pennylane:
            ratio = f"{pennylane[r['qubits']] / r['median_s']:.0f}×"
        note = " (time limit)" if r.get("truncated") else ""
        rows.append(
            f"| {head} | {r['qubits']} | {sim} | {_fmt_ms(r['median_s'])} | "
            f"{_fmt_ms(r['min_s'])}–{_fmt_ms(r['max_s'])} | {len(r['times_s'])}{note} | "
            f"{r['peak_rss_mb']:,.0f} | {ratio} |"
        )
    return "\n".join(rows)


def _max_qubits(args, base: dict) -> list[dict]:
    """Largest qubit count whose batch DQC step fits the budget (and the time limit), upward.

    Each count runs with the method `auto` picks there (the split method for shallow circuits);
    the search stops at the first count whose estimate exceeds the memory budget, whose run fails,
    or whose step takes longer than the time limit.
    """
    from qcxr.quantum import compile_ansatz, default_budget, make_ansatz
    from qcxr.quantum.dispatch.engine import choose_method
    from qcxr.quantum.dispatch.memory import choose_chunk_size, estimate_bytes
    from qcxr.quantum.methods import split

    budget = default_budget()
    found = []
    for n in range(args.max_qubits_from, args.max_qubits_to + 1):
        ansatz = make_ansatz(args.ansatz, n, args.layers)
        prog = compile_ansatz(ansatz)
        method = choose_method(prog, args.methods[0], args.block_size)
        chunk = None
        if method == "split":
            need = split.split_bytes(prog, args.batch, 4)
        else:
            chunk = choose_chunk_size(ansatz, prog, args.batch, "float32", args.remat, budget)
            need = estimate_bytes(ansatz, prog, chunk, "float32", args.remat, args.block_size)
        if need > budget:
            log.info(
                "%d qubits (%s): %.1f GiB > budget %.1f GiB: stop",
                n,
                method,
                need / 2**30,
                budget / 2**30,
            )
            break
        log.info("%d qubits: %s, estimate %.1f GiB", n, method, need / 2**30)
        cfg = {
            **base,
            "head": "dqc",
            "qubits": n,
            "simulator": "native",
            "chunk_size": chunk,
            "method": args.methods[0],
            "repeats": max(1, min(args.repeats, 3)),
            "warmup": 0,
            "max_qubits_search": True,
        }
        res = _spawn(cfg, timeout=args.time_limit * 4 + 600)
        res["estimate_gib"] = need / 2**30
        found.append(res)
        log.info("%s", json.dumps({k: v for k, v in res.items() if k != "times_s"}))
        if "error" in res or res.get("median_s", 0) > args.time_limit:
            break
    return found


#: Qubit counts of `--scale` (the issue 14 scale table).
SCALE_QUBITS = (8, 14, 19, 24, 30, 40, 60, 100)
SCALE_METHODS = ("statevector", "split", "mps")


def _estimate_gib(method: str, n: int, args) -> float:
    """The engine's own memory estimate of a batch DQC step by one method (GiB)."""
    from qcxr.quantum import compile_ansatz, make_ansatz
    from qcxr.quantum.dispatch.memory import choose_chunk_size, estimate_bytes, mps_memory
    from qcxr.quantum.methods import mps, split

    ansatz = make_ansatz(args.ansatz, n, args.layers)
    prog = compile_ansatz(ansatz)
    budget = args.scale_mem_gb * 2**30
    if method == "split":
        if n > 60 or split.split_terms(prog) > split.MAX_TERMS:
            return math.inf
        return split.split_bytes(prog, args.batch, 4) / 2**30
    if method == "mps":
        return mps_memory(ansatz, mps.plan_mps(prog), args.batch, "float32")[0] / 2**30
    if n > 40:
        return math.inf
    chunk = choose_chunk_size(ansatz, prog, args.batch, "float32", args.remat, budget)
    return estimate_bytes(ansatz, prog, chunk, "float32", args.remat, args.block_size) / 2**30


def _scale(args, base: dict) -> list[dict]:
    """Step time and peak memory per method over qubit counts, where each fits the limits.

    A method runs at a qubit count if its memory estimate fits `--scale-mem-gb` and it did not
    exceed the time limit at a smaller count; then the MPS method searches upward (doubling from
    the last count) for the largest n within both limits.
    """
    out, stopped = [], set()

    def one(method: str, n: int) -> dict:
        gib = _estimate_gib(method, n, args)
        if method in stopped or gib > args.scale_mem_gb:
            why = "over the time limit below" if method in stopped else f"est. {gib:,.1f} GiB"
            if math.isinf(gib):
                why = "not for this many qubits"  # statevector > 40, split > 60: no estimate
            return {"qubits": n, "method": method, "skipped": why}
        cfg = {
            **base,
            "head": "dqc",
            "qubits": n,
            "simulator": "native",
            "method": method,
            "repeats": max(1, min(args.repeats, 5)),
            "warmup": 1,
            "time_limit": args.scale_time_limit,
            "min_time": 0.0,
        }
        log.info("scale: %d qubits, %s (est. %.2f GiB) ...", n, method, gib)
        res = _spawn(cfg, timeout=args.scale_time_limit * 4 + 300)
        res["estimate_gib"] = gib
        if "error" in res or res.get("median_s", 0) > args.scale_time_limit:
            stopped.add(method)
        return res

    for n in args.scale_qubits:
        for method in SCALE_METHODS:
            out.append(one(method, n))

    def passed(r: dict) -> bool:
        return "median_s" in r and r["median_s"] <= args.scale_time_limit

    # The largest n for mps: double from the last count until a run fails a limit, then bisect.
    good = max((r["qubits"] for r in out if r["method"] == "mps" and passed(r)), default=None)
    bad = None
    n = max(args.scale_qubits)
    while good is not None and bad is None and n < args.scale_max_qubits:
        n = min(2 * n, args.scale_max_qubits)
        res = one("mps", n)
        res["largest_search"] = True
        out.append(res)
        if passed(res):
            good = n
        else:
            bad = n
    stopped.discard("mps")
    for _ in range(args.scale_bisect if bad is not None else 0):
        n = (good + bad) // 2
        if n in (good, bad):
            break
        res = one("mps", n)
        res["largest_search"] = True
        out.append(res)
        good, bad = (n, bad) if passed(res) else (good, n)
        stopped.discard("mps")
    if good is not None:
        log.info(
            "scale: mps reaches %d qubits within the limits%s",
            good,
            f" (not {bad})" if bad is not None else " (the search's end)",
        )
    return out


def _scale_table(results: list[dict], time_limit: float = 60.0, mem_gb: float = 20.0) -> str:
    """Markdown: one row per qubit count, median step ms and peak RSS MB per method; then the
    largest qubit count the MPS method reached within both limits."""

    def cell(r: dict | None) -> tuple[str, str]:
        if r is None:
            return "", ""
        if "skipped" in r:
            return f"— ({r['skipped']})", ""
        if "error" in r:
            return f"— ({r['error']})", ""
        ms = _fmt_ms(r["median_s"])
        if r["median_s"] > time_limit:
            ms += " (over the limit)"
        return ms, f"{r['peak_rss_mb']:,.0f}"

    by = {(r["qubits"], r["method"]): r for r in results}
    rows = [
        "| qubits | statevector ms | MB | split ms | MB | mps ms | MB | mps compile s |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for n in sorted({r["qubits"] for r in results}):
        cells = [c for m in SCALE_METHODS for c in cell(by.get((n, m)))]
        mps_r = by.get((n, "mps"), {})
        compile_s = f"{mps_r['compile_s']:.1f}" if "compile_s" in mps_r else ""
        rows.append(f"| {n} | " + " | ".join(cells) + f" | {compile_s} |")
    ok = [
        r["qubits"]
        for r in results
        if r["method"] == "mps" and "median_s" in r and r["median_s"] <= time_limit
    ]
    if ok:
        rows.append(
            f"\nLargest n run by mps within {mem_gb:g} GB and {time_limit:g} s per step: {max(ok)}."
        )
    return "\n".join(rows)


def main(argv: list[str] | None = None) -> int:
    """Run the head-step benchmark; print a markdown table, write JSON.

    With `--peers`, run qcxr.bench.peers instead (the circuit against peer simulators; its own
    options, see `python -m qcxr.bench heads --peers --help`).
    """
    argv = sys.argv[1:] if argv is None else list(argv)
    if "--peers" in argv:
        from qcxr.bench import peers

        return peers.main([a for a in argv if a != "--peers"])
    p = argparse.ArgumentParser(
        prog="python -m qcxr.bench heads",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--qubits", type=int, nargs="+", default=[8, 14, 19])
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--layers", type=int, default=3)
    p.add_argument("--ansatz", default="ry_cnot_ring")
    p.add_argument(
        "--simulators",
        nargs="+",
        default=["native", "pennylane"],
        choices=["native", "pennylane", "pennylane_lightning"],
    )
    p.add_argument(
        "--methods",
        nargs="+",
        default=["auto", "statevector"],
        choices=["auto", "statevector", "split", "mps"],
        help="native-engine methods to time (one row each; --max-qubits uses the first)",
    )
    p.add_argument("--repeats", type=int, default=20, help="timed steps per configuration")
    p.add_argument("--warmup", type=int, default=3, help="untimed steps after compilation")
    p.add_argument(
        "--min-time",
        type=float,
        default=2.0,
        help="keep timing fast configurations for at least this many seconds",
    )
    p.add_argument(
        "--time-limit",
        type=float,
        default=120.0,
        help="seconds of timed steps per configuration (at least one step runs)",
    )
    p.add_argument(
        "--pennylane-max-qubits", type=int, default=99, help="skip PennyLane above this many qubits"
    )
    p.add_argument("--block-size", type=int, default=5)
    p.add_argument("--remat", action="store_true")
    p.add_argument("--chunk-size", default="auto", help="int, auto, or none (whole batch)")
    p.add_argument("--no-cdl", action="store_true", help="skip the classical baseline")
    p.add_argument(
        "--max-qubits",
        action="store_true",
        help="also find the largest qubit count whose batch DQC step fits the budget",
    )
    p.add_argument("--max-qubits-from", type=int, default=20)
    p.add_argument(
        "--max-qubits-to", type=int, default=40, help="stop the search here at the latest"
    )
    p.add_argument(
        "--scale",
        action="store_true",
        help="only the scale table: statevector, split and mps over --scale-qubits (issue 14)",
    )
    p.add_argument("--scale-qubits", type=int, nargs="+", default=list(SCALE_QUBITS))
    p.add_argument("--scale-mem-gb", type=float, default=20.0)
    p.add_argument("--scale-time-limit", type=float, default=60.0)
    p.add_argument(
        "--scale-max-qubits", type=int, default=102400, help="end of the mps largest-n search"
    )
    p.add_argument(
        "--scale-bisect",
        type=int,
        default=2,
        help="bisection runs between the last count within the limits and the first beyond",
    )
    p.add_argument("--out", default="bench_results/heads.json")
    p.add_argument(
        "--peers",
        action="store_true",
        help="time the circuit against peer simulators instead (qcxr.bench.peers)",
    )
    p.add_argument("--single", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.single:
        sys.stdout.write(json.dumps(_run_single(json.loads(args.single))) + "\n")
        return 0
    logging.basicConfig(level=logging.INFO, format="%(message)s", force=True)
    chunk = args.chunk_size
    chunk = None if chunk.lower() in ("none", "null") else chunk if chunk == "auto" else int(chunk)
    base = {
        "batch": args.batch,
        "layers": args.layers,
        "ansatz": args.ansatz,
        "seed": 0,
        "block_size": args.block_size,
        "remat": args.remat,
        "chunk_size": chunk,
        "repeats": args.repeats,
        "warmup": args.warmup,
        "time_limit": args.time_limit,
        "min_time": args.min_time,
    }
    if args.scale:
        results = _scale(args, base)
        table = _scale_table(results, args.scale_time_limit, args.scale_mem_gb)
        sys.stdout.write(table + "\n")
        out = Path(args.out)
        out.parent.mkdir(parents=True, exist_ok=True)
        meta = {"cpu_count": os.cpu_count(), "time": time.strftime("%Y-%m-%d %H:%M:%S")}
        out.write_text(json.dumps({"meta": meta, "results": results, "table": table}, indent=1))
        log.info("wrote %s", out)
        return 0 if not any("error" in r for r in results) else 1
    configs = []
    for n in args.qubits:
        if not args.no_cdl:
            configs.append({**base, "head": "cdl", "qubits": n, "simulator": "native"})
        for sim in args.simulators:
            if sim != "native" and n > args.pennylane_max_qubits:
                continue
            for method in args.methods if sim == "native" else ["auto"]:
                configs.append(
                    {**base, "head": "dqc", "qubits": n, "simulator": sim, "method": method}
                )
    results = []
    for cfg in configs:
        log.info(
            "running %s, %d qubits, %s%s ...",
            cfg["head"],
            cfg["qubits"],
            cfg["simulator"],
            f" ({cfg['method']})" if cfg["head"] == "dqc" and cfg["simulator"] == "native" else "",
        )
        res = _spawn(cfg, timeout=args.time_limit * 3 + 900)
        log.info("  %s", res.get("error") or f"median {1000 * res['median_s']:.3g} ms")
        results.append(res)
    if args.max_qubits:
        results += _max_qubits(args, base)
    table = _table(results)
    sys.stdout.write(table + "\n")
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    meta = {"cpu_count": os.cpu_count(), "time": time.strftime("%Y-%m-%d %H:%M:%S")}
    out.write_text(json.dumps({"meta": meta, "results": results, "table": table}, indent=1))
    log.info("wrote %s", out)
    return 0 if all(math.isfinite(r.get("median_s", math.nan)) for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
