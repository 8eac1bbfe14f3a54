"""`python -m qcxr.bench heads --scale`: the scale table (statevector, split, mps per qubit count)
and the MPS largest-n search (double until a limit is hit, then bisect), run for real on tiny sizes.
"""

import json

from qcxr.bench import heads


def test_scale_table_rows_and_largest_n_search(tmp_path):
    out = tmp_path / "scale.json"
    # A memory cap of 5,000 bytes (batch 2, 1 layer): the engine's estimates put the MPS method at
    # 3,136 bytes at 4 qubits, 4,704 at 6 and 6,272 at 8, so the search doubles 4 -> 8 (over the
    # cap: skipped, not run), bisects to 6 (runs), and 6 is the largest n within the limits.
    args = ["--scale", "--scale-qubits", "4", "--scale-max-qubits", "64", "--scale-bisect", "1"]
    args += ["--scale-mem-gb", str(5000 / 2**30), "--batch", "2", "--layers", "1"]
    assert heads.main([*args, "--out", str(out)]) == 0
    saved = json.loads(out.read_text())
    results = saved["results"]
    got = [(r["qubits"], r["method"], "median_s" in r) for r in results]
    assert got == [
        (4, "statevector", True),
        (4, "split", True),
        (4, "mps", True),
        (8, "mps", False),
        (6, "mps", True),
    ]
    assert results[3]["skipped"].startswith("est.") and results[4]["largest_search"]
    assert all(r["peak_rss_mb"] > 0 for r in results if "median_s" in r)
    assert "| 8 |  |  |  |  | — (est." in saved["table"]
    assert saved["table"].endswith("per step: 6.")
