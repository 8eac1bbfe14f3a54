"""`python -m qcxr.bench heads --peers`: peer simulators agree with qcxr before they are timed,
failures are rows of the table, never fatal.

Tolerances (peers.Z_ATOL, peers.GRAD_RTOL): |Delta <Z>| <= 5e-4 and |Delta grad| <= 5e-4 of the
largest gradient component, float32 on our side; measured at 4 qubits: below 1e-6 for every peer.
CI installs no peer but PennyLane (default.qubit, lightning.qubit); the others skip with the
import error as the reason.
"""

import json

import numpy as np
import pytest

from qcxr.bench import peers
from qcxr.bench.__main__ import main

# Tracing quimb's tensor networks (cotengra path search per wire), tensorcircuit's and qujax's
# circuits takes 15-60 s even at 4 qubits on a 2-core CPU.
SLOW_PEERS = {"quimb", "tensorcircuit-ng", "qujax"}


def _reference(prob):
    run = peers.build_qcxr(prob)
    _, gw, gx = run.step()
    return {"z": run.forward(), "gw": gw, "gx": gx}


@pytest.fixture(scope="module")
def problem_and_ref():
    prob = peers.make_problem(4, num_layers=3, batch=2, seed=1)
    return prob, _reference(prob)


@pytest.mark.parametrize(
    "name",
    [pytest.param(n, marks=pytest.mark.slow) if n in SLOW_PEERS else n for n in peers.PEERS],
)
def test_peer_agrees_with_qcxr_at_4_qubits(name, problem_and_ref):
    err = peers.import_error(peers.PEERS[name].modules)
    if err:
        pytest.skip(f"{name} {err}")
    prob, ref = problem_and_ref
    run = peers.PEERS[name].build(prob)
    loss, gw, gx = run.step()
    check = peers.compare(ref, run.forward(), gw, gx)
    assert check["ok"], check
    assert check["z_err"] < 1e-5 and check["grad_err"] < 1e-5
    np.testing.assert_allclose(loss, np.sum(prob.cot * ref["z"]), atol=1e-5)


def test_compare_rejects_a_wrong_gradient(problem_and_ref):
    _, ref = problem_and_ref
    assert peers.compare(ref, ref["z"], ref["gw"], ref["gx"])["ok"]
    gw = ref["gw"].copy()
    gw[0, 0] += 1e-2 * max(1.0, np.abs(ref["gw"]).max())
    bad = peers.compare(ref, ref["z"], gw, ref["gx"])
    assert not bad["ok"] and bad["grad_err"] > peers.GRAD_RTOL
    assert not peers.compare(ref, ref["z"] + 1e-3, ref["gw"], ref["gx"])["ok"]


def test_missing_peer_is_reported_not_installed():
    assert peers.import_error(("numpy",)) is None
    err = peers.import_error(("numpy", "qcxr_no_such_simulator"))
    assert err.startswith("not installed: ModuleNotFoundError") and "qcxr_no_such_simulator" in err


def test_bad_workload_is_refused():
    with pytest.raises(ValueError, match="num_qubits >= 2"):
        peers.make_problem(1)


def test_crash_timeout_and_memory_cap_are_rows_not_fatal():
    cfg = {
        "qubits": 4,
        "layers": 1,
        "batch": 2,
        "seed": 0,
        "simulator": "default.qubit",
        "repeats": 1,
        "min_time": 0.0,
        "time_limit": 1.0,
        "mem_limit_gb": 6.0,
    }
    # Importing jax alone takes the child past 60 MB.
    oom = peers._spawn(cfg, timeout=60, mem_limit_gb=0.06)
    assert oom["error"].startswith("out of memory") and "median_s" not in oom
    slow = peers._spawn(cfg, timeout=0.3, mem_limit_gb=6.0)
    assert slow["error"] == "timed out after 0 s"
    crash = peers._spawn({**cfg, "simulator": "no-such-peer"}, timeout=60, mem_limit_gb=6.0)
    assert crash["error"].startswith("exit 1") and "no-such-peer" in crash["error"]


def test_table_marks_our_rows_ratios_and_failures():
    def row(sim, n, median, **kw):
        times = [median, 2 * median]
        return {"simulator": sim, "qubits": n, "times_s": times, "median_s": median,
                "min_s": median, "max_s": 2 * median, "peak_rss_mb": 100.0, **kw}  # fmt: skip

    results = [
        row("qcxr", 14, 0.004, method="auto", write_ref="r.npz"),
        row("qcxr", 14, 0.012, method="statevector", check={"z_err": 1e-7, "grad_err": 2e-7}),
        row("qulacs", 14, 0.4, check={"z_err": 3e-7, "grad_err": 4e-7, "ok": True}),
        {"simulator": "qujax", "qubits": 14, "error": "not installed: ModuleNotFoundError: x"},
        {"simulator": "qcxr", "method": "auto", "qubits": 40, "error": "does not fit: 16 TiB"},
        row("quimb", 40, 3.0),
    ]
    text = peers.table(results)
    lines = text.splitlines()
    assert len(lines) == 2 + len(results)
    assert "| 14 | **qcxr, auto** | 4 | 4–8 | 2 | reference | reference | 100 | 0.01× |" in text
    assert "| 14 | qulacs | 400 | 400–800 | 2 | 3.0e-07 | 4.0e-07 | 100 | 1× |" in text
    assert "not installed: ModuleNotFoundError: x |" in text
    assert "**qcxr, auto** | — |" in lines[6] and "does not fit" in lines[6]
    assert "unchecked" in lines[7]
    assert peers.verdict(results) == [
        "14 qubits: qcxr (auto) 4 ms vs fastest peer qulacs 400 ms: qcxr 100× faster",
        "40 qubits: no qcxr method ran",
    ]


@pytest.mark.slow
def test_heads_peers_one_invocation_writes_table_and_json(tmp_path):
    out = tmp_path / "peers.json"
    argv = ["heads", "--peers", "--qubits", "4", "--batch", "2", "--repeats", "2"]
    argv += ["--min-time", "0", "--peer-list", "default.qubit", "lightning.qubit"]
    assert main([*argv, "--json", str(out)]) == 0
    result = json.loads(out.read_text())
    rows = result["results"]
    assert [r["simulator"] for r in rows] == ["qcxr", "default.qubit", "lightning.qubit"]
    assert all(len(r["times_s"]) == 2 and r["median_s"] > 0 for r in rows)
    assert all(r["check"]["ok"] for r in rows[1:])
    assert "| 4 | **qcxr, auto** |" in result["table"]
    assert result["verdict"][0].startswith("4 qubits: qcxr (auto)")
