"""Smoke test of benchmarks/bench.py: it runs end to end, checks correctness and writes its results.

torch.compile is left out (its warm-up alone takes tens of seconds on 2 cores).
"""
import importlib.util
import json
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
BENCH = ROOT / "benchmarks" / "bench.py"
TOL = 1e-4


def _load_bench():
    spec = importlib.util.spec_from_file_location("meanspot_bench", BENCH)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_flops_per_sample_matches_performance_md():
    bench = _load_bench()
    parts = bench.flops_breakdown(dict(cbam="all", heads=("spot",)))
    # Multiply-adds from the table in shared/design/PERFORMANCE.md, times 2.
    assert parts["branch_conv"] == 2 * 617_400
    assert parts["head_conv"] == 2 * 548_800
    assert parts["cbam_spatial_conv"] == 2 * 537_824
    assert bench.flops_per_sample(dict(cbam="all", heads=("spot",))) == pytest.approx(3.4e6, rel=0.01)
    assert bench.flops_per_sample(dict(cbam="none", heads=("spot",))) == pytest.approx(2.33e6, rel=0.01)
    both = bench.flops_per_sample(dict(cbam="all", heads=("spot", "recog")))
    assert both > bench.flops_per_sample(dict(cbam="all", heads=("spot",))) + 2 * 548_800


def test_bench_quick_runs_and_records_correct_fused_numbers(tmp_path):
    cmd = [sys.executable, str(BENCH), "--device", "cpu", "--quick", "--batches", "1,2", "--min-time", "0.05",
           "--peers", "eager,onnx,fused", "--out", str(tmp_path)]
    start = time.perf_counter()
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=120)
    elapsed = time.perf_counter() - start
    assert proc.returncode == 0, f"bench.py failed ({proc.returncode}):\n{proc.stdout[-4000:]}\n{proc.stderr[-4000:]}"
    assert elapsed < 60, f"smoke benchmark took {elapsed:.0f} s"

    jsons = list(tmp_path.glob("cpu_*.json"))
    assert len(jsons) == 1, jsons
    assert jsons[0].with_suffix(".md").exists()
    assert (tmp_path / "latest_cpu.md").read_text() == jsons[0].with_suffix(".md").read_text()
    report = json.loads(jsons[0].read_text())

    meta = report["meta"]
    for key in ("device", "torch", "numpy", "python", "date", "command", "threads"):
        assert meta[key], key
    assert report["batches"] == [1, 2]
    assert report["fused_correctness_failed"] is False

    results = report["results"]
    fused = [r for r in results if r["kind"] == "fused"]
    modes = {r["mode"] for r in fused}
    assert modes and modes == set(meta["modes"])
    assert {(r["batch"], r["mode"]) for r in fused} == {(b, m) for b in (1, 2) for m in modes}
    for r in fused:
        assert r["status"] == "ok", r
        assert r["samples_per_s"] > 0 and r["time_s"] > 0 and r["gflops"] > 0
    for r in results:  # every checked column, peers included
        assert r["max_abs_diff"] is not None and r["max_abs_diff"] < TOL, r
    assert any(r["impl"] == "eager" for r in results)
    assert any(s["vs"] == "eager" for s in report["speedups"])
    assert "| batch |" in proc.stdout


def test_training_benchmarks_run_and_record(tmp_path):
    """bench_train.py and bench_train_loso.py on tiny sizes: they run and write their records."""
    for script, args, prefix in (
            ("bench_train.py", ["--samples", "64", "--epochs", "1", "--repeats", "1", "--cbam", "none"], "train_cpu_"),
            ("bench_train_loso.py", ["--subjects", "3", "--videos", "3", "--mes", "4", "--frames", "200",
                                     "--folds", "1"], "train_loso_cpu_")):
        proc = subprocess.run([sys.executable, str(BENCH.parent / script), *args, "--out", str(tmp_path)], cwd=ROOT,
                              capture_output=True, text=True, timeout=300)
        assert proc.returncode == 0, f"{script} failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
        records = list(tmp_path.glob(f"{prefix}*.json"))
        assert len(records) == 1, records
        report = json.loads(records[0].read_text())
        assert report["machine"] and report["command"]
    loso = json.loads(next(tmp_path.glob("train_loso_cpu_*.json")).read_text())
    assert len(loso["folds"]) == 1 and loso["loso_minutes"] > 0
