"""Reliability on CPU: threads, determinism, huge batches, damaged files, interrupted runs.

* Concurrency: one fused module (each mode) called from 8 Python threads at once
  gives, bit for bit, what serial calls give.
* Determinism: bitwise identical outputs across repeated calls, across fresh
  processes and across torch thread counts 1 and 2 (measured identical: every
  sample is computed by one thread, and the ops-mode GEMM does not split its
  reduction over threads). Network mode is also bitwise independent of the
  batch a sample comes in; ops mode only to a few ulp (its Dense is an MKL GEMM
  whose result for a row depends on the row's place in its blocks), see
  test_batch_composition.
* Huge batches (``-m stress``, `make test-stress`): 262,144 samples in each mode equal smaller batches
  bit for bit, within a memory bound, in a child process under an address-space
  limit so that a regression fails the test instead of the machine.
* Files: damaged model files (truncated, bytes flipped, another architecture,
  not HDF5) and feature files (wrong shape or dtype, damaged, NaN) through
  ``load_keras`` and ``predict``: a clear error (exit 2) or, for NaN, a warning.
  Only what tests/io/test_keras.py and tests/cli/test_predict.py do not cover already.
* A ``predict`` killed mid-run (SIGKILL, SIGTERM, SIGINT) leaves the output path
  as it was (absent, or its old content).
"""
from __future__ import annotations

import hashlib
import json
import os
import random
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import torch

import meanspot_fused as mf

from helpers import as_tuple, random_inputs, random_model

TESTS = Path(__file__).resolve().parents[1]  # tests/: shared helpers
ROOT = TESTS.parent
sys.path.insert(0, str(TESTS))
import keras_files as kf  # noqa: E402

from meanspot_fused.cli import main  # noqa: E402
from meanspot_fused.io.keras import LAYOUTS, KerasFormatError, load_keras  # noqa: E402
from meanspot_fused.io.checkpoints import save_model  # noqa: E402

from meanspot_fused.network.fuse import MODES  # noqa: E402

DTYPES = (torch.float32, torch.float64)
MODEL_KW = dict(cbam="all", heads=("spot", "recog"), recog_classes=4, seed=11)


def _env():
    # Children import this module (test_reliability) and the shared helpers.
    here = str(Path(__file__).resolve().parent)
    return dict(os.environ, PYTHONPATH=os.pathsep.join(p for p in (str(ROOT), str(TESTS), here,
                                                                   os.environ.get("PYTHONPATH")) if p))


def _bits(t: torch.Tensor) -> torch.Tensor:
    return t.contiguous().view(torch.int64 if t.dtype == torch.float64 else torch.int32)


def _same_bits(a, b) -> bool:
    a, b = as_tuple(a), as_tuple(b)
    return len(a) == len(b) and all(x.shape == y.shape and torch.equal(_bits(x), _bits(y)) for x, y in zip(a, b))


def output_hash(outs) -> str:
    h = hashlib.sha256()
    for o in as_tuple(outs):
        h.update(str((tuple(o.shape), o.dtype)).encode())
        h.update(o.contiguous().numpy().tobytes())
    return h.hexdigest()


# ---------------------------------------------------------------------------------------------
# Concurrency
# ---------------------------------------------------------------------------------------------

THREADS, CALLS = 8, 4
CALL_BATCHES = (1, 5, 64, 17)  # per call; thread t shifts the list by t


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("mode", MODES)
def test_concurrent_calls_match_serial(mode, dtype):
    fused = mf.fuse(random_model(dtype=dtype, **MODEL_KW), mode=mode)
    inputs = [[random_inputs(CALL_BATCHES[(t + c) % CALLS], dtype=dtype, seed=100 * t + c) for c in range(CALLS)]
              for t in range(THREADS)]
    with torch.inference_mode():
        serial = [[fused(*x) for x in per_thread] for per_thread in inputs]
    results = [[None] * CALLS for _ in range(THREADS)]
    errors = []
    barrier = threading.Barrier(THREADS)

    def worker(t):
        try:
            barrier.wait(timeout=60)
            with torch.inference_mode():
                for c in range(CALLS):
                    results[t][c] = fused(*inputs[t][c])
        except BaseException as e:  # reported below, in the main thread
            errors.append((t, repr(e)))
    threads = [threading.Thread(target=worker, args=(t,)) for t in range(THREADS)]
    for th in threads:
        th.start()
    for th in threads:
        th.join(timeout=300)
    assert not any(th.is_alive() for th in threads), "a thread hangs"
    assert not errors, errors
    different = [(t, c) for t in range(THREADS) for c in range(CALLS) if not _same_bits(results[t][c], serial[t][c])]
    assert not different, f"concurrent calls (thread, call) {different} differ from serial calls"


# ---------------------------------------------------------------------------------------------
# Determinism
# ---------------------------------------------------------------------------------------------

DET_BATCHES = (1, 17, 1000)


def determinism_hashes(thread_counts) -> dict:
    """``{"threads/dtype/mode/batch": sha256 of the outputs}`` for a seeded model and seeded inputs.

    Run in this process and in fresh ones (``python -c``); ``thread_counts`` in the given order.
    """
    out = {}
    models = {dtype: random_model(dtype=dtype, **MODEL_KW) for dtype in DTYPES}
    for threads in thread_counts:
        torch.set_num_threads(threads)
        for dtype, model in models.items():
            for mode in MODES:
                fused = mf.fuse(model, mode=mode)
                for n in DET_BATCHES:
                    with torch.inference_mode():
                        out[f"{threads}/{str(dtype)[6:]}/{mode}/{n}"] = output_hash(
                            fused(*random_inputs(n, dtype=dtype, seed=n)))
    return out


def _fresh_process_hashes(order: str) -> dict:
    script = f"import json, test_reliability as r; print('HASHES', json.dumps(r.determinism_hashes([{order}])))"
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=_env(), timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    line = next(ln for ln in proc.stdout.splitlines() if ln.startswith("HASHES "))
    return json.loads(line[len("HASHES "):])


def _by_thread_count(hashes: dict) -> dict:
    """``{"dtype/mode/batch": {threads: hash}}``."""
    out = {}
    for key, h in hashes.items():
        threads, rest = key.split("/", 1)
        out.setdefault(rest, {})[int(threads)] = h
    return out


def test_repeated_calls_are_bitwise_identical():
    for dtype in DTYPES:
        model = random_model(dtype=dtype, **MODEL_KW)
        for mode in MODES:
            fused = mf.fuse(model, mode=mode)
            for n in DET_BATCHES:
                x = random_inputs(n, dtype=dtype, seed=n)
                with torch.inference_mode():
                    first = fused(*x)
                    assert all(_same_bits(fused(*x), first) for _ in range(3)), (dtype, mode, n)
                    # a freshly fused module from the same model: same bits too
                    assert _same_bits(mf.fuse(model, mode=mode)(*x), first), (dtype, mode, n)


def test_fresh_processes_and_thread_counts_agree():
    """Two fresh processes (thread counts 1 then 2, and 2 then 1) and this one give the same bits.

    Measured: outputs do not depend on the number of torch threads (each sample is
    computed by one thread from start to end, in network mode, and the per-op path's
    convs are per-sample too; its Dense GEMM does not split the sum over threads).
    """
    here = determinism_hashes([torch.get_num_threads()])
    a = _fresh_process_hashes("1, 2")
    b = _fresh_process_hashes("2, 1")
    torch.set_num_threads(int(os.environ.get("MEANSPOT_TEST_THREADS", torch.get_num_threads())))
    assert a == b, sorted(k for k in a if a[k] != b.get(k))
    by_threads = _by_thread_count(a)
    depends = {case: hs for case, hs in by_threads.items() if len(set(hs.values())) != 1}
    assert not depends, f"outputs depend on the torch thread count: {sorted(depends)}"
    for key, h in here.items():
        threads, case = key.split("/", 1)
        assert by_threads[case][int(threads)] == h, f"{key}: this process differs from a fresh one"


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_batch_composition(dtype):
    """A sample's outputs do not depend on the batch it comes in: bitwise in network mode; within a
    few ulp in ops mode, whose Dense is a BLAS GEMM (MKL) that treats the last rows of a block
    differently (measured: 300 samples vs 2 x 150 differ in 4 rows by 6e-9 in float32)."""
    model = random_model(dtype=dtype, **MODEL_KW)
    n = 300
    x = random_inputs(n, dtype=dtype, seed=5)
    ulps = dict(atol=1e-6, rtol=1e-6) if dtype == torch.float32 else dict(atol=1e-14, rtol=1e-14)
    for mode in MODES:
        fused = mf.fuse(model, mode=mode)
        with torch.inference_mode():
            full = as_tuple(fused(*x))
            for chunk in (1, 7, 20, 64, 150):
                parts = [as_tuple(fused(*(t[i:i + chunk] for t in x))) for i in range(0, n, chunk)]
                cat = tuple(torch.cat(p) for p in zip(*parts))
                if mode == "network":
                    assert _same_bits(cat, full), (mode, chunk)
                else:
                    for c, f in zip(cat, full):
                        torch.testing.assert_close(c, f, **ulps)


# ---------------------------------------------------------------------------------------------
# Huge batches (in a child process: peak RSS, and an address-space limit instead of an OOM)
# ---------------------------------------------------------------------------------------------

HUGE = 262_144
DISTINCT = 32_768
RSS_LIMIT_GB = 8.0
AS_LIMIT_GB = 11.0  # the child's address-space limit: allocation errors, not a machine out of memory


def _rss_gb() -> float:
    import resource
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # KiB on Linux


def huge_batch_child(mode: str, kind: str, n: int) -> dict:
    """Run in a fresh process: fused module of ``mode`` on ``n`` samples vs smaller batches, bitwise.

    ``kind="expanded"``: one random sample broadcast with stride 0 (inputs cost nothing);
    every output row must equal the rows of a smaller batch (4096) of the same sample.
    ``kind="distinct"``: ``n`` distinct random samples against chunks of 1000 (network mode) or
    4096 (ops mode: its GEMM is bitwise batch-independent only for batches aligned to its blocks;
    fuse's own chunks are 16384).
    """
    torch.set_num_threads(int(os.environ.get("MEANSPOT_TEST_THREADS", "2")))
    fused = mf.fuse(random_model(dtype=torch.float32, **MODEL_KW), mode=mode)
    report = {"mode": mode, "kind": kind, "n": n}
    with torch.inference_mode():
        if kind == "expanded":
            one = random_inputs(1, dtype=torch.float32, seed=1)
            big = [t.expand(n, 1, 42, 42) for t in one]
            small = as_tuple(fused(*(t.expand(4096, 1, 42, 42) for t in one)))
            report["rss_before_gb"] = _rss_gb()
            t0 = time.perf_counter()
            out = as_tuple(fused(*big))
            report["seconds"] = time.perf_counter() - t0
            report["rss_peak_gb"] = _rss_gb()
            report["equal"] = all(o.shape[0] == n and torch.equal(_bits(o).view(n // 4096, 4096, -1),
                                                                  _bits(s).expand(n // 4096, 4096, s.shape[1]))
                                  for o, s in zip(out, small))
        else:
            x = random_inputs(n, dtype=torch.float32, seed=2)
            report["rss_before_gb"] = _rss_gb()
            t0 = time.perf_counter()
            out = as_tuple(fused(*x))
            report["seconds"] = time.perf_counter() - t0
            report["rss_peak_gb"] = _rss_gb()
            step = 1000 if mode == "network" else 4096
            parts = [as_tuple(fused(*(t[i:i + step] for t in x))) for i in range(0, n, step)]
            report["equal"] = _same_bits(out, tuple(torch.cat(p) for p in zip(*parts)))
    return report


def _run_huge(mode: str, kind: str, n: int) -> dict:
    import resource

    def limit():
        lim = int(AS_LIMIT_GB * 2**30)
        resource.setrlimit(resource.RLIMIT_AS, (lim, lim))
    script = (f"import json, test_reliability as r; "
              f"print('REPORT', json.dumps(r.huge_batch_child({mode!r}, {kind!r}, {n})))")
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=_env(), timeout=900,
                          preexec_fn=limit)
    assert proc.returncode == 0, f"{mode} at {n} ({kind}) failed under a {AS_LIMIT_GB} GiB address-space " \
                                 f"limit:\n{proc.stderr[-3000:]}"
    line = next(ln for ln in proc.stdout.splitlines() if ln.startswith("REPORT "))
    return json.loads(line[len("REPORT "):])


@pytest.mark.stress
@pytest.mark.parametrize("kind,n", [("expanded", HUGE), ("distinct", DISTINCT)])
@pytest.mark.parametrize("mode", MODES)
def test_huge_batch(mode, kind, n):
    report = _run_huge(mode, kind, n)
    print(json.dumps(report))
    assert report["equal"], f"{mode} at batch {n} differs from smaller batches: {report}"
    assert report["rss_peak_gb"] <= RSS_LIMIT_GB, f"peak RSS {report['rss_peak_gb']:.2f} GiB: {report}"


# ---------------------------------------------------------------------------------------------
# Damaged model files
# ---------------------------------------------------------------------------------------------

def flip_bytes(data: bytes, rng: random.Random) -> bytes:
    """Random bytes of the middle half XOR-ed with random non-zero values (1 to 512 in a row)."""
    d = bytearray(data)
    start = rng.randrange(len(d) // 4, 3 * len(d) // 4)
    for i in range(start, min(start + rng.choice((1, 8, 64, 512)), len(d))):
        d[i] ^= rng.randrange(1, 256)
    return bytes(d)


#: Trials per layout: a sweep, plus trials found (with 150 per layout) to reach h5py attribute
#: decoding (UnicodeDecodeError) and dangling groups (TypeError) in the loader.
CORRUPT_TRIALS = {layout: list(range(8)) for layout in LAYOUTS}
for _layout, _extra in {"tf2-weights": [28], "tf2-model": [106], "keras3-h5": [51, 75],
                        "keras3-weights": [28, 31, 44]}.items():
    CORRUPT_TRIALS[_layout] += _extra


def corrupted_keras_outcomes(folder: str, trials=None) -> dict:
    """Load seeded corruptions of a file in each layout; ``{layout: {trial: outcome}}``.

    Outcome: ``"KerasFormatError"``, ``"loaded"`` (bytes of weight data changed: HDF5
    has no checksums, so nothing can tell) or ``"<OtherException>: message"``.
    """
    g = kf.meanspot_graph(kf.random_meanspot(11, cbam="all", heads=("spot", "recog")))
    out = {}
    for layout, indices in (trials or CORRUPT_TRIALS).items():
        path = kf.write(g, layout, Path(folder), stem=layout)
        data = path.read_bytes()
        out[layout] = {}
        for t in indices:
            path.write_bytes(flip_bytes(data, random.Random(f"{layout}/{t}")))
            try:
                load_keras(path)
                out[layout][t] = "loaded"
            except KerasFormatError:
                out[layout][t] = "KerasFormatError"
            except Exception as e:  # noqa: BLE001  (what the test looks for)
                out[layout][t] = f"{type(e).__name__}: {e}"[:300]
    return out


def test_corrupted_keras_files_raise_keras_format_error(tmp_path):
    """Bytes flipped in the middle of a Keras file: KerasFormatError or a model, never another
    exception (predict reports only KerasFormatError / PredictError / OSError as exit 2) and
    never a crash (so it runs in a child process)."""
    script = (f"import json, test_reliability as r; "
              f"print('OUTCOMES', json.dumps(r.corrupted_keras_outcomes({str(tmp_path)!r})))")
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=_env(), timeout=600)
    assert proc.returncode == 0, f"the loader crashed (exit {proc.returncode}):\n{proc.stderr[-3000:]}"
    line = next(ln for ln in proc.stdout.splitlines() if ln.startswith("OUTCOMES "))
    outcomes = json.loads(line[len("OUTCOMES "):])
    print(json.dumps(outcomes))
    assert all(o == "KerasFormatError" for o in outcomes["keras3-zip"].values())  # zip CRCs catch every flip
    bad = {layout: [(t, o) for t, o in v.items() if o not in ("KerasFormatError", "loaded")]
           for layout, v in outcomes.items()}
    bad = {k: v for k, v in bad.items() if v}
    assert not bad, f"damaged Keras files raised other exceptions than KerasFormatError (trial, error): {bad}"


@pytest.fixture(scope="module")
def small_model():
    return kf.random_meanspot(1, cbam="all", heads=("spot",))


@pytest.fixture
def features(tmp_path):
    path = tmp_path / "features.npy"
    np.save(path, np.random.default_rng(0).random((5, 42, 42, 3), dtype=np.float32))
    return path


def _damaged_model(folder: Path, case: str, model) -> Path:
    if case.endswith(".pt"):
        path = folder / "model.pt"
        save_model(model, path)
    else:
        layout = {"keras3-zip": "keras3-zip", "tf2-model": "tf2-model", "keras3-weights": "keras3-weights",
                  "wrong-architecture": "keras3-h5"}.get(case.split()[-1], "keras3-h5")
        g = kf.meanspot_graph(model)
        if case == "wrong-architecture":
            g.remove(g.of_class("BatchNormalization")[0].name)
        path = kf.write(g, layout, folder)
    data = path.read_bytes()
    if case.startswith("truncated"):
        path.write_bytes(data[:len(data) // 2])
    elif case.startswith("corrupted"):
        d = bytearray(data)
        mid = len(d) // 2
        d[mid:mid + 32] = bytes(b ^ 0x5A for b in d[mid:mid + 32])
        path.write_bytes(bytes(d))
    return path


MODEL_CASES = {
    "truncated keras3-zip": "damaged or truncated zip",
    "truncated tf2-model": "truncated",
    "truncated keras3-weights": "truncated",
    "wrong-architecture": "BatchNormalization",
    "truncated .pt": "truncated zip",
    # torch.load does not check the zip CRCs: without a check of its own, predict would
    # score with the damaged weights and exit 0.
    "corrupted .pt": "model.pt",
}


@pytest.mark.parametrize("case", MODEL_CASES)
def test_predict_rejects_damaged_model_files(tmp_path, features, small_model, capsys, case):
    model_path = _damaged_model(tmp_path, case, small_model)
    out = tmp_path / "scores.npy"
    before = set(os.listdir(tmp_path))
    rc = main(["predict", "--model", str(model_path), "--input", str(features), "--output", str(out), "--quiet"])
    err = capsys.readouterr().err
    assert rc == 2, f"exit {rc}: {err[-2000:]}"
    assert "error:" in err and MODEL_CASES[case] in err, err
    assert set(os.listdir(tmp_path)) == before


def test_predict_reports_corrupted_keras_files_cleanly(tmp_path, features, capsys):
    """predict over flipped-byte Keras files: exit 0 (undetectable: weight bytes) or 2 with a message,
    never a traceback (exit 1)."""
    g = kf.meanspot_graph(kf.random_meanspot(11, cbam="all", heads=("spot", "recog")))
    # Trials known to reach h5py attribute decoding and dangling groups (see CORRUPT_TRIALS), and two
    # that load (flipped weight bytes).
    cases = [("tf2-weights", 28), ("tf2-model", 106), ("keras3-h5", 51), ("keras3-weights", 28),
             ("tf2-model", 0), ("keras3-h5", 0)]
    for layout, trial in cases:
        path = kf.write(g, layout, tmp_path, stem=f"{layout}-{trial}")
        path.write_bytes(flip_bytes(path.read_bytes(), random.Random(f"{layout}/{trial}")))
        try:
            rc = main(["predict", "--model", str(path), "--input", str(features), "--output",
                       str(tmp_path / "scores.npz"), "--quiet"])
        except Exception as e:  # noqa: BLE001
            pytest.fail(f"{layout} trial {trial}: predict raised {type(e).__name__}: {e} (the command would exit 1 "
                        "with a traceback)")
        err = capsys.readouterr().err
        assert rc in (0, 2), f"{layout} trial {trial}: exit {rc}\n{err[-2000:]}"
        assert rc == 0 or "error:" in err


# ---------------------------------------------------------------------------------------------
# Damaged or unusable feature files
# ---------------------------------------------------------------------------------------------

@pytest.fixture
def model_file(tmp_path, small_model):
    path = tmp_path / "model.pt"
    save_model(small_model, path)
    return path


def _maps(n=40):
    x = np.random.default_rng(1).random((n, 42, 42, 3), dtype=np.float32)
    return x, [x[..., c][:, None] for c in range(3)]


def _write_bad_features(folder: Path, case: str) -> Path:
    x, (u, v, o) = _maps()
    npz, npy = folder / "features.npz", folder / "features.npy"
    if case == "strings":
        np.savez(npz, u=u.astype(str), v=v, os=o)
    elif case == "complex":
        np.savez(npz, u=u, v=v.astype(np.complex64), os=o)
    elif case == "objects":
        np.savez(npz, u=u, v=v, os=np.array([None] * len(o), dtype=object))
    elif case == "datetimes":
        np.savez(npz, u=u, v=v, os=np.zeros(o.shape, "datetime64[s]"))
    elif case == "stacked strings":
        np.save(npy, x[:2].astype(str))
    elif case == "stacked complex":
        np.save(npy, x.astype(np.complex128))
    elif case == "stacked bool":
        np.save(npy, x > 0.5)
    elif case == "scalar":
        np.save(npy, np.float32(1))
    elif case == "1-D":
        np.save(npy, np.zeros(42 * 42 * 3, np.float32))
    elif case == "stacked 4 channels":
        np.save(npy, np.zeros((2, 42, 42, 4), np.float32))
    elif case == "u of 5-D":
        np.savez(npz, u=u[:, None], v=v, os=o)
    elif case == "truncated .npy":
        np.save(npy, x)
        npy.write_bytes(npy.read_bytes()[:npy.stat().st_size // 2])
    elif case == "truncated .npz":
        np.savez(npz, u=u, v=v, os=o)
        npz.write_bytes(npz.read_bytes()[:npz.stat().st_size // 2])
    elif case == "corrupted .npz":
        np.savez(npz, u=u, v=v, os=o)
        npz.write_bytes(flip_bytes(npz.read_bytes(), random.Random(0)))
    elif case == "corrupted compressed .npz":
        np.savez_compressed(npz, u=u, v=v, os=o)
        d = bytearray(npz.read_bytes())
        third = len(d) // 3
        d[third:third + 64] = bytes(b ^ 0xFF for b in d[third:third + 64])
        npz.write_bytes(bytes(d))
    else:
        raise AssertionError(case)
    return npy if npy.exists() else npz


FEATURE_CASES = {
    "strings": "dtype <U", "complex": "dtype complex64", "objects": "dtype object", "datetimes": "dtype datetime64",
    "stacked strings": "dtype <U", "stacked complex": "dtype complex128", "stacked bool": "dtype bool",
    "scalar": "has shape ()", "1-D": "has shape (5292,)", "stacked 4 channels": "has shape (2, 42, 42, 4)",
    "u of 5-D": "has shape (40, 1, 1, 42, 42)", "truncated .npy": "features.npy",
    "truncated .npz": "features.npz", "corrupted .npz": "features.npz", "corrupted compressed .npz": "features.npz",
}


@pytest.mark.parametrize("case", FEATURE_CASES)
def test_predict_rejects_bad_feature_files(tmp_path, model_file, capsys, case):
    features = _write_bad_features(tmp_path, case)
    out = tmp_path / "scores.npy"
    out.write_bytes(b"previous result")
    before = set(os.listdir(tmp_path))
    try:
        rc = main(["predict", "--model", str(model_file), "--input", str(features), "--output", str(out),
                   "--quiet", "--batch-size", "16"])
    except Exception as e:  # noqa: BLE001
        pytest.fail(f"predict raised {type(e).__name__}: {e} (the command would exit 1 with a traceback)")
    err = capsys.readouterr().err
    assert rc == 2, f"exit {rc}: {err[-2000:]}"
    assert "error:" in err and FEATURE_CASES[case] in err, err
    assert set(os.listdir(tmp_path)) == before and out.read_bytes() == b"previous result"


@pytest.mark.parametrize("fused", [True, False], ids=["fused", "reference"])
def test_predict_non_finite_inputs_warn_and_stay_in_their_samples(tmp_path, model_file, capsys, fused):
    """NaN and inf (u/v/os layout, later batches): one warning naming the first such sample; the other
    samples' scores are those of a clean run, bit for bit."""
    _, (u, v, o) = _maps()
    clean_in, dirty_in = tmp_path / "clean.npz", tmp_path / "dirty.npz"
    np.savez(clean_in, u=u, v=v, os=o)
    v2, o2 = v.copy(), o.copy()
    v2[33, 0, 7, 9] = np.nan  # the first non-finite sample, in v, in the third batch of 16
    o2[35, 0, 0, 0] = np.inf
    u2 = u.copy()
    u2[37, 0, 41, 41] = -np.inf
    np.savez(dirty_in, u=u2, v=v2, os=o2)
    flags = ["--quiet", "--batch-size", "16"] + ([] if fused else ["--no-fuse"])
    assert main(["predict", "--model", str(model_file), "--input", str(clean_in), "--output",
                 str(tmp_path / "clean.npy"), *flags]) == 0
    assert main(["predict", "--model", str(model_file), "--input", str(dirty_in), "--output",
                 str(tmp_path / "dirty.npy"), *flags]) == 0
    err = capsys.readouterr().err
    assert err.count("warning:") == 1, err
    clean, dirty = np.load(tmp_path / "clean.npy"), np.load(tmp_path / "dirty.npy")
    keep = [i for i in range(len(clean)) if i not in (33, 35, 37)]
    assert np.array_equal(clean[keep].view(np.int32), dirty[keep].view(np.int32))
    assert not np.isfinite(dirty[[33, 35]]).any()
    assert "first in sample 33" in err, f"the warning names another sample than the first: {err}"


# ---------------------------------------------------------------------------------------------
# predict interrupted mid-run
# ---------------------------------------------------------------------------------------------

INTERRUPT_SAMPLES = 16000  # ~340 MB; the reference path takes well over 2 s over it on 2 cores


@pytest.fixture(scope="module")
def big_run(tmp_path_factory):
    folder = tmp_path_factory.mktemp("interrupt")
    features = folder / "features.npy"
    arr = np.lib.format.open_memmap(features, mode="w+", dtype=np.float32, shape=(INTERRUPT_SAMPLES, 42, 42, 3))
    rng = np.random.default_rng(3)
    for i in range(0, INTERRUPT_SAMPLES, 1000):
        arr[i:i + 1000] = rng.random((min(1000, INTERRUPT_SAMPLES - i), 42, 42, 3), dtype=np.float32)
    arr.flush()
    del arr
    model = folder / "model.pt"
    save_model(kf.random_meanspot(1, cbam="all", heads=("spot",)), model)
    return folder, model, features


def _default_sigint():
    # A shell without job control starts background jobs with SIGINT ignored,
    # and a child inherits that (Python then installs no KeyboardInterrupt
    # handler, rightly: the user asked for SIGINT to be ignored). This test
    # is about Ctrl-C, so the child gets SIGINT's default disposition.
    signal.signal(signal.SIGINT, signal.SIG_DFL)


@pytest.mark.parametrize("sig,previous", [(signal.SIGKILL, False), (signal.SIGTERM, True), (signal.SIGINT, True)],
                         ids=["SIGKILL-new", "SIGTERM-existing", "SIGINT-existing"])
def test_interrupted_predict_leaves_no_partial_output(tmp_path, big_run, sig, previous):
    folder, model, features = big_run
    out = tmp_path / "scores.npy"
    if previous:
        out.write_bytes(b"previous result")
    proc = subprocess.Popen([sys.executable, "-m", "meanspot_fused", "predict", "--model", str(model), "--input",
                             str(features), "--output", str(out), "--batch-size", "64", "--no-fuse", "--quiet"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=_env(),
                            preexec_fn=_default_sigint)
    try:
        deadline = time.monotonic() + 120
        # wait until the scores are being written (the temporary file beside the output exists) ...
        while not any(p.name.startswith(".scores.npy.") for p in tmp_path.iterdir()):
            assert proc.poll() is None, f"predict ended early: {proc.communicate()}"
            assert time.monotonic() < deadline, "predict did not start writing"
            time.sleep(0.05)
        time.sleep(0.5)  # ... and some batches are in it
        assert proc.poll() is None, "predict finished before the signal: make the input larger"
        proc.send_signal(sig)
        _, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    if previous:
        assert out.read_bytes() == b"previous result"
    else:
        assert not out.exists()
    leftovers = sorted(p.name for p in tmp_path.iterdir() if p.name != "scores.npy")
    if sig in (signal.SIGINT, signal.SIGTERM):
        # Ctrl-C and SIGTERM both run the cleanup: exit 130, temporary file removed.
        assert proc.returncode == 130 and "interrupted" in err, (proc.returncode, err[-2000:])
        assert not leftovers, leftovers
    else:
        assert proc.returncode == -sig
        # A killed process cannot clean up: its hidden temporary file stays, named after the output.
        assert all(name.startswith(".scores.npy.") and name.endswith(".tmp") for name in leftovers), leftovers
