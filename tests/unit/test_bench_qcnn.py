"""`python -m qcxr.bench qcnn`: one invocation times both cut modes and measures shot noise."""

import json

import jax
import pytest

from qcxr.bench.__main__ import main


@pytest.mark.slow
def test_bench_qcnn_rows_and_shot_noise(tmp_path):
    out = tmp_path / "qcnn.json"
    argv = [
        "qcnn",
        "--batch",
        "2",
        "--repeats",
        "2",
        "--warmup",
        "0",
        "--no-pennylane",
        "--shot-noise",
        "100",
        "10000",
        "--shot-repeats",
        "3",
        "--out",
        str(out),
    ]
    x64_before = jax.config.jax_enable_x64
    assert main(argv) == 0
    # The float64 shot-noise reference must not leak into the rest of the process.
    assert jax.config.jax_enable_x64 == x64_before
    result = json.loads(out.read_text())
    assert [r["name"] for r in result["rows"]] == ["native, cut=fragments", "native, cut=exact"]
    assert all(len(r["times"]) == 2 and min(r["times"]) > 0 for r in result["rows"])
    few, many = result["shot_noise"]
    assert (few["shots"], many["shots"]) == (100, 10_000)
    for key in ("fragments", "direct_same_total", "direct_same_per_run"):
        assert 3 < few[key] / many[key] < 30  # 1/sqrt(shots): 10x


def test_bench_qcnn_rejects_bad_shot_counts(tmp_path):
    with pytest.raises(SystemExit):
        main(["qcnn", "--no-steps", "--shot-noise", "0", "--out", str(tmp_path / "x.json")])
