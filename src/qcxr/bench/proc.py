"""One benchmark configuration in its own process: its peak memory is its own, and a crash, a
timeout or an out-of-memory kill becomes a row saying so instead of ending the benchmark.

The child is `python -m <module> --single <json cfg>` and prints its result as the last line of
stdout (a JSON object). The parent polls the child's resident memory (with its children) every
50 ms, kills it past the wall-clock limit or the memory cap, and never raises.
"""

from __future__ import annotations

import json
import resource
import subprocess
import sys
import tempfile
import time


def peak_rss_mb() -> float:
    """Peak resident memory of this process so far (MB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def spawn(module: str, cfg: dict, timeout: float, mem_limit_gb: float | None = None) -> dict:
    """Run one configuration in a fresh Python process; never raises.

    Args:
        module: the benchmark module whose `--single` runs one configuration.
        cfg: the configuration (JSON-serialisable).
        timeout: wall-clock seconds before the child is killed.
        mem_limit_gb: kill the child when its resident memory passes this (None: no cap).

    Returns:
        The child's result; or cfg with "error" (why it failed: "timed out after N s", "out of
        memory: ...", "exit CODE: last stderr lines", "killed by signal N (out of memory?)").
        "peak_rss_mb" is the child's own report when it gives one, else the polled peak.
    """
    import psutil

    cmd = [sys.executable, "-m", module, "--single", json.dumps(cfg)]
    with tempfile.TemporaryFile("w+") as out, tempfile.TemporaryFile("w+") as err:
        proc = subprocess.Popen(cmd, stdout=out, stderr=err, text=True)
        ps, peak, why, start = psutil.Process(proc.pid), 0.0, None, time.perf_counter()
        while proc.poll() is None:
            try:
                rss = sum(p.memory_info().rss for p in [ps, *ps.children(recursive=True)]) / 2**30
            except psutil.Error:
                rss = 0.0
            peak = max(peak, rss)
            if mem_limit_gb is not None and rss > mem_limit_gb:
                why = f"out of memory: RSS {rss:.1f} GB > cap {mem_limit_gb:g} GB"
            elif time.perf_counter() - start > timeout:
                why = f"timed out after {timeout:.0f} s"
            if why:
                proc.kill()
                proc.wait()
                return {**cfg, "error": why, "peak_rss_mb": 1024 * peak}
            time.sleep(0.05)
        out.seek(0)
        err.seek(0)
        lines = out.read().strip().splitlines()
        if proc.returncode != 0 or not lines:
            if proc.returncode < 0:
                error = f"killed by signal {-proc.returncode} (out of memory?)"
            else:
                tail = [ln for ln in err.read().strip().splitlines() if ln.strip()][-2:]
                error = f"exit {proc.returncode}: {' | '.join(tail)}"
            return {**cfg, "error": error, "peak_rss_mb": 1024 * peak}
    return {"peak_rss_mb": 1024 * peak, **json.loads(lines[-1])}
