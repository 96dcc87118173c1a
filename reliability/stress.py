"""Figures for the README "Reliability" section, on CPU.

(a) ``predict`` over a large stacked ``.npy`` (N, 42, 42, 3) float32
    (21,168 bytes a sample: default 10,000,000 samples = 212 GB, generated chunk by
    chunk in a temporary folder with bounded memory; see the disk note below): wall time, samples/s, peak RSS of the command
    (``resource.getrusage(RUSAGE_CHILDREN)`` and ``/proc/<pid>/status`` polled for
    the anonymous / file-backed split: a memory-mapped input would count in RSS
    for every page it touched), and a check of the scores against the fused
    module run in this process.
(b) Peak RSS of the fused module at batch 262,144 in each mode, each in a child
    process under an address-space limit (``--mem-limit-gb``); inputs are one random
    sample expanded with stride 0 (so that they cost nothing themselves).
(c) Concurrency (8 threads calling one module vs serial calls) and determinism
    (repeated calls, thread counts 1 and 2, a fresh process, batch composition).

Writes ``<out>/reliability_cpu.json`` and ``.md`` (device, versions, date, command).

    python reliability/stress.py                      # 10M samples if the disk holds 212 GB
    python reliability/stress.py --samples 2000000    # 42 GB of input, ~10 min on 2 cores
    python reliability/stress.py --samples 200000     # scaled down
    python reliability/stress.py --skip-predict       # only (b) and (c)

If the disk (``--workdir``, default a temporary folder) cannot hold the input and
still keep ``--disk-reserve-gb`` free (default 20: the machine may be shared),
the sample count is reduced to what fits (at least 2,000,000, else an error),
and the report says so.
"""
from __future__ import annotations

import argparse
import datetime as _dt
import hashlib
import json
import os
import platform
import resource
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Dict, List, Optional

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))
# The machine record and git state every benchmark record carries.
from common import cpu_description, git_state, machine_record  # noqa: E402

import meanspot_fused as mf  # noqa: E402
from meanspot_fused.network.fuse import MODES  # noqa: E402

SAMPLE_BYTES = 42 * 42 * 3 * 4
MIN_SAMPLES_IF_DISK_SHORT = 2_000_000
MODEL_CONFIG = dict(cbam="all", heads=("spot",))


# --------------------------------------------------------------------------- environment

def memory_total_gb() -> Optional[float]:
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemTotal:"):
                    return int(line.split()[1]) / 2**20
    except OSError:
        return None
    return None


def environment(args) -> dict:
    return {
        "device": f"cpu ({cpu_description()})",
        "machine": machine_record(),
        "memory_total_gb": memory_total_gb(),
        "torch_threads": torch.get_num_threads(),
        "versions": {"python": platform.python_version(), "torch": torch.__version__, "numpy": np.__version__,
                     "meanspot_fused": getattr(mf, "__version__", None), **{"git_" + k: v for k, v in
                                                                           git_state().items()}},
        "platform": platform.platform(),
        "date": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "command": " ".join([Path(sys.executable).name, *sys.argv]),
        "loadavg_at_start": list(os.getloadavg()) if hasattr(os, "getloadavg") else None,
    }


# --------------------------------------------------------------------------- model and inputs

def seeded_model(dtype=torch.float32, seed: int = 0) -> mf.MeanSpot:
    """MeanSpot with seeded random weights and BatchNorm statistics, in eval mode."""
    torch.manual_seed(seed)
    gen = torch.Generator().manual_seed(seed)
    model = mf.MeanSpot(**MODEL_CONFIG)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                n = m.num_features
                m.running_mean.copy_(torch.rand(n, generator=gen) * 2 - 1)
                m.running_var.copy_(torch.rand(n, generator=gen) * 1.8 + 0.2)
                m.weight.copy_(torch.rand(n, generator=gen) * 4 - 2)
                m.bias.copy_(torch.rand(n, generator=gen) * 2 - 1)
    return model.eval().to(dtype)


def seeded_inputs(n: int, dtype=torch.float32, seed: int = 0):
    gen = torch.Generator().manual_seed(seed)
    return tuple(torch.rand(n, 1, 42, 42, generator=gen, dtype=torch.float64).to(dtype) for _ in range(3))


def as_tuple(out):
    return out if isinstance(out, tuple) else (out,)


def bits(t: torch.Tensor) -> torch.Tensor:
    return t.contiguous().view(torch.int64 if t.dtype == torch.float64 else torch.int32)


def same_bits(a, b) -> bool:
    a, b = as_tuple(a), as_tuple(b)
    return len(a) == len(b) and all(x.shape == y.shape and torch.equal(bits(x), bits(y)) for x, y in zip(a, b))


def output_hash(outs) -> str:
    h = hashlib.sha256()
    for o in as_tuple(outs):
        h.update(o.contiguous().numpy().tobytes())
    return h.hexdigest()


# --------------------------------------------------------------------------- (a) predict at scale

def write_stacked_npy(path: Path, n: int, chunk: int = 8192, seed: int = 0) -> float:
    """A stacked (n, 42, 42, 3) float32 .npy written chunk by chunk (memory: one chunk); returns seconds."""
    t0 = time.perf_counter()
    rng = np.random.default_rng(seed)
    header = {"descr": np.lib.format.dtype_to_descr(np.dtype(np.float32)), "fortran_order": False,
              "shape": (n, 42, 42, 3)}
    with open(path, "wb") as f:
        np.lib.format.write_array_header_2_0(f, header)
        for start in range(0, n, chunk):
            k = min(chunk, n - start)
            f.write(rng.random((k, 42, 42, 3), dtype=np.float32).tobytes())
            if (start // chunk) % 64 == 0:
                print(f"\r  writing input: {start + k:,}/{n:,}", end="", file=sys.stderr, flush=True)
    print(file=sys.stderr)
    return time.perf_counter() - t0


def _proc_status(pid: int) -> Dict[str, int]:
    out = {}
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                key, _, rest = line.partition(":")
                if key in ("VmRSS", "VmHWM", "RssAnon", "RssFile", "RssShmem"):
                    out[key] = int(rest.split()[0])  # kB
    except (OSError, ValueError):
        pass
    return out


def run_predict(model: Path, features: Path, output: Path, batch_size: int, threads: int) -> dict:
    cmd = [sys.executable, "-m", "meanspot_fused", "predict", "--model", str(model), "--input", str(features),
           "--output", str(output), "--batch-size", str(batch_size)]
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH")) if p),
               OMP_NUM_THREADS=str(threads))
    peaks: Dict[str, int] = {}
    t0 = time.perf_counter()
    with open(output.with_suffix(".stderr.txt"), "w") as err:
        proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=err, env=env)
        while proc.poll() is None:
            for key, value in _proc_status(proc.pid).items():
                peaks[key] = max(peaks.get(key, 0), value)
            time.sleep(0.5)
    wall = time.perf_counter() - t0
    stderr = output.with_suffix(".stderr.txt").read_text()
    summary = next((ln for ln in stderr.splitlines()[::-1] if "wrote" in ln), "")
    return {"command": " ".join(cmd[1:]), "exit_code": proc.returncode, "wall_s": wall,
            "ru_maxrss_children_gb": resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 2**20,
            "polled_peak_gb": {k: v / 2**20 for k, v in peaks.items()}, "summary_line": summary,
            "stderr_tail": stderr[-1500:] if proc.returncode else None}


def check_scores(model_path: Path, features: Path, scores: Path, n: int, k: int = 2048) -> dict:
    """Scores of the first and last k samples against the fused module in this process (bitwise:
    network mode does not depend on the batch a sample is in)."""
    from meanspot_fused.io.checkpoints import load_model
    fused = mf.fuse(load_model(model_path))
    x = np.load(features, mmap_mode="r")
    s = np.load(scores, mmap_mode="r")
    ok = s.shape == (n, 1) and bool(np.isfinite(s[: min(n, 1_000_000)]).all())
    for start in (0, max(0, n - k)):
        block = np.ascontiguousarray(x[start:start + k])
        maps = [torch.from_numpy(np.ascontiguousarray(block[..., c][:, None])) for c in range(3)]
        with torch.inference_mode():
            expected = fused(*maps).numpy()
        ok = ok and np.array_equal(expected.view(np.int32), np.asarray(s[start:start + k]).view(np.int32))
    return {"shape": list(s.shape), "first_and_last_match_in_process_bitwise": bool(ok)}


def predict_at_scale(args) -> dict:
    workdir = Path(args.workdir) if args.workdir else Path(tempfile.mkdtemp(prefix="meanspot_reliability_"))
    workdir.mkdir(parents=True, exist_ok=True)
    requested = args.samples
    free = shutil.disk_usage(workdir).free
    margin = int(args.disk_reserve_gb * 2**30)
    fits = max(0, (free - margin) // (SAMPLE_BYTES + 8))
    n = min(requested, fits)
    note = None
    if n < requested:
        if n < min(requested, MIN_SAMPLES_IF_DISK_SHORT):
            raise SystemExit(f"{workdir}: {free / 2**30:.1f} GiB free holds only {n:,} samples; need at least "
                             f"{min(requested, MIN_SAMPLES_IF_DISK_SHORT):,}")
        note = (f"disk-limited: {n:,} of the {requested:,} samples asked ({requested * SAMPLE_BYTES / 1e9:.0f} GB; "
                f"{free / 2**30:.1f} GiB free, {args.disk_reserve_gb:g} GiB kept free)")
        print(f"note: {note}", file=sys.stderr)
    features, model_path, scores = workdir / "features.npy", workdir / "model.pt", workdir / "scores.npy"
    from meanspot_fused.io.checkpoints import save_model
    save_model(seeded_model(), model_path)
    print(f"(a) writing {n:,} samples ({n * SAMPLE_BYTES / 1e9:.1f} GB) to {features}", file=sys.stderr)
    gen_s = write_stacked_npy(features, n)
    print(f"(a) predict over {n:,} samples, batch {args.batch_size}", file=sys.stderr)
    run = run_predict(model_path, features, scores, args.batch_size, args.threads)
    if note is None and n < 10_000_000:
        note = (f"{n:,} samples ({n * SAMPLE_BYTES / 1e9:.0f} GB of input); the 10,000,000 of the full figure "
                f"would need {10_000_000 * SAMPLE_BYTES / 1e9:.0f} GB of disk, {free / 2**30:.0f} GiB were free")
    result = {"samples": n, "samples_requested": requested, "note": note, "input_gb": n * SAMPLE_BYTES / 1e9,
              "input_write_s": gen_s, "batch_size": args.batch_size, "threads": args.threads, **run,
              "samples_per_s": n / run["wall_s"] if run["exit_code"] == 0 else None,
              "page_cache_note": "the input was written just before the run, so part of it was in the page cache "
                                 "(not dropped: shared machine)"}
    if run["exit_code"] == 0:
        result["check"] = check_scores(model_path, features, scores, n)
    if not args.keep:
        shutil.rmtree(workdir, ignore_errors=True)
    else:
        result["workdir"] = str(workdir)
    return result


# --------------------------------------------------------------------------- (b) huge batch, each mode

def huge_child(mode: str, n: int) -> dict:
    """In a child process: fused(mode) on n samples (one sample expanded with stride 0)."""
    fused = mf.fuse(seeded_model(), mode=mode)
    one = seeded_inputs(1, seed=1)
    big = [t.expand(n, 1, 42, 42) for t in one]
    with torch.inference_mode():
        small = as_tuple(fused(*(t.expand(4096, 1, 42, 42) for t in one)))
        before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
        t0 = time.perf_counter()
        out = as_tuple(fused(*big))
        seconds = time.perf_counter() - t0
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
    equal = all(torch.equal(bits(o).view(n // 4096, 4096, -1), bits(s).expand(n // 4096, 4096, s.shape[1]))
                for o, s in zip(out, small)) if n % 4096 == 0 else None
    return {"mode": mode, "batch": n, "inputs": "1 sample expanded (stride 0)", "seconds": seconds,
            "samples_per_s": n / seconds, "rss_before_call_gb": before, "rss_peak_gb": peak,
            "rss_added_by_call_gb": peak - before, "equals_batches_of_4096_bitwise": equal}


def huge_batches(args) -> List[dict]:
    results = []
    for mode in MODES:
        lim = int(args.mem_limit_gb * 2**30)

        def limit():
            resource.setrlimit(resource.RLIMIT_AS, (lim, lim))
        print(f"(b) {mode} mode at batch {args.huge:,}", file=sys.stderr)
        env = dict(os.environ, OMP_NUM_THREADS=str(args.threads))
        proc = subprocess.run([sys.executable, __file__, "--child-huge", mode, str(args.huge)], capture_output=True,
                              text=True, env=env, preexec_fn=limit, timeout=3600)
        line = next((ln for ln in proc.stdout.splitlines() if ln.startswith("CHILD ")), None)
        if proc.returncode != 0 or line is None:
            results.append({"mode": mode, "batch": args.huge, "error": f"exit {proc.returncode} under a "
                            f"{args.mem_limit_gb} GiB address-space limit", "stderr_tail": proc.stderr[-1500:]})
        else:
            results.append(json.loads(line[len("CHILD "):]))
    return results


# --------------------------------------------------------------------------- (c) concurrency and determinism

def concurrency(threads: int = 8, calls: int = 4) -> List[dict]:
    results = []
    batches = (1, 5, 64, 17)
    for dtype in (torch.float32, torch.float64):
        model = seeded_model(dtype)
        for mode in MODES:
            fused = mf.fuse(model, mode=mode)
            inputs = [[seeded_inputs(batches[(t + c) % len(batches)], dtype, seed=100 * t + c) for c in range(calls)]
                      for t in range(threads)]
            with torch.inference_mode():
                serial = [[fused(*x) for x in per] for per in inputs]
            got = [[None] * calls for _ in range(threads)]
            errors = []
            barrier = threading.Barrier(threads)

            def worker(t):
                try:
                    barrier.wait(timeout=60)
                    with torch.inference_mode():
                        for c in range(calls):
                            got[t][c] = fused(*inputs[t][c])
                except BaseException as e:  # noqa: BLE001
                    errors.append(repr(e))
            ths = [threading.Thread(target=worker, args=(t,)) for t in range(threads)]
            t0 = time.perf_counter()
            for th in ths:
                th.start()
            for th in ths:
                th.join(timeout=600)
            results.append({"dtype": str(dtype)[6:], "mode": mode, "threads": threads, "calls_per_thread": calls,
                            "errors": errors, "seconds": time.perf_counter() - t0,
                            "bitwise_equal_to_serial": not errors and all(
                                same_bits(got[t][c], serial[t][c]) for t in range(threads) for c in range(calls))})
    return results


def determinism_hashes(thread_counts, batches=(1, 17, 1000)) -> Dict[str, str]:
    out = {}
    for threads in thread_counts:
        torch.set_num_threads(threads)
        for dtype in (torch.float32, torch.float64):
            model = seeded_model(dtype)
            for mode in MODES:
                fused = mf.fuse(model, mode=mode)
                for n in batches:
                    with torch.inference_mode():
                        out[f"{threads}/{str(dtype)[6:]}/{mode}/{n}"] = output_hash(fused(*seeded_inputs(n, dtype, n)))
    return out


def determinism(args) -> dict:
    threads_before = torch.get_num_threads()
    here = determinism_hashes([1, 2])
    repeat = determinism_hashes([2, 1])
    torch.set_num_threads(threads_before)
    proc = subprocess.run([sys.executable, __file__, "--child-hashes"], capture_output=True, text=True, timeout=1800)
    line = next((ln for ln in proc.stdout.splitlines() if ln.startswith("CHILD ")), None)
    fresh = json.loads(line[len("CHILD "):]) if line else {}
    cases = sorted({k.split("/", 1)[1] for k in here})
    by_threads = {c: len({here[f"{t}/{c}"] for t in (1, 2)}) == 1 for c in cases}
    # batch composition: the same 300 samples in one call vs chunks
    comp = []
    for dtype in (torch.float32, torch.float64):
        model = seeded_model(dtype)
        x = seeded_inputs(300, dtype, seed=5)
        for mode in MODES:
            fused = mf.fuse(model, mode=mode)
            with torch.inference_mode():
                full = as_tuple(fused(*x))
                for chunk in (1, 7, 64, 150):
                    parts = [as_tuple(fused(*(t[i:i + chunk] for t in x))) for i in range(0, 300, chunk)]
                    cat = tuple(torch.cat(p) for p in zip(*parts))
                    comp.append({"dtype": str(dtype)[6:], "mode": mode, "chunk": chunk,
                                 "bitwise_equal": same_bits(cat, full),
                                 "max_abs_diff": max(float((a - b).abs().max()) for a, b in zip(cat, full))})
    return {"batches": [1, 17, 1000], "repeated_in_process_identical": here == repeat,
            "fresh_process_identical": bool(fresh) and fresh == here,
            "fresh_process_error": None if fresh else proc.stderr[-1500:],
            "thread_count_1_vs_2_identical": all(by_threads.values()),
            "thread_count_dependent_cases": [c for c, same in by_threads.items() if not same],
            "batch_composition": comp, "hashes_threads_2": {k: v[:16] for k, v in here.items() if k.startswith("2/")}}


# --------------------------------------------------------------------------- report

def _gb(x) -> str:
    return "-" if x is None else f"{x:.2f} GiB"


def markdown(report: dict) -> str:
    env = report["environment"]
    lines = ["# Reliability (CPU)", "", f"- device: {env['device']}, {env['memory_total_gb']:.0f} GiB RAM, "
             f"torch threads {env['torch_threads']}",
             f"- versions: python {env['versions']['python']}, torch {env['versions']['torch']}, numpy "
             f"{env['versions']['numpy']}, git {str(env['versions'].get('git_commit'))[:10]}"
             f"{' (dirty)' if env['versions'].get('git_dirty') else ''}",
             f"- date: {env['date']}", f"- command: `{env['command']}`",
             f"- load average (1, 5, 15 min) at start: {env.get('loadavg_at_start')}, at end: "
             f"{env.get('loadavg_at_end')} (a shared machine: figures are lower bounds)", ""]
    a = report.get("predict")
    if a:
        lines += ["## predict at scale", ""]
        if a.get("note"):
            lines += [f"**{a['note']}**", ""]
        pk = a.get("polled_peak_gb", {})
        lines += ["| samples | input | batch | exit | wall | samples/s | peak RSS (getrusage) | of which anon / file "
                  "(polled) | scores check |", "|---|---|---|---|---|---|---|---|---|",
                  f"| {a['samples']:,} | {a['input_gb']:.1f} GB .npy | {a['batch_size']} | {a['exit_code']} | "
                  f"{a['wall_s']:.0f} s | {a['samples_per_s'] or 0:,.0f} | {_gb(a['ru_maxrss_children_gb'])} | "
                  f"{_gb(pk.get('RssAnon'))} / {_gb(pk.get('RssFile'))} | "
                  f"{'ok' if a.get('check', {}).get('first_and_last_match_in_process_bitwise') else 'FAILED'} |", "",
                  f"Wall time includes the command's start (imports, model load); its own summary: "
                  f"`{a.get('summary_line', '').replace('meanspot-fused predict: ', '')}`.", "",
                  f"Input written in {a['input_write_s']:.0f} s; {a['page_cache_note']}. File-backed RSS is pages "
                  f"of mapped files (libraries; a memory-mapped input would add every page it touched).", ""]
    b = report.get("huge_batch")
    if b:
        lines += ["## Fused module at a huge batch", "", "| mode | batch | inputs | time | samples/s | RSS before | "
                  "peak RSS | added by the call | = batches of 4096 (bitwise) |", "|---|---|---|---|---|---|---|---|---|"]
        for r in b:
            if "error" in r:
                lines.append(f"| {r['mode']} | {r['batch']:,} | | | | | | {r['error']} | |")
            else:
                lines.append(f"| {r['mode']} | {r['batch']:,} | {r['inputs']} | {r['seconds']:.1f} s | "
                             f"{r['samples_per_s']:,.0f} | {_gb(r['rss_before_call_gb'])} | {_gb(r['rss_peak_gb'])} | "
                             f"{_gb(r['rss_added_by_call_gb'])} | {r['equals_batches_of_4096_bitwise']} |")
        lines.append("")
    c = report.get("concurrency")
    if c:
        lines += ["## Concurrency", "", "8 Python threads call one fused module at once (4 calls each, batches 1-64) "
                  "vs the same calls made serially.", "", "| dtype | mode | bitwise equal | errors |",
                  "|---|---|---|---|"]
        lines += [f"| {r['dtype']} | {r['mode']} | {r['bitwise_equal_to_serial']} | {len(r['errors'])} |" for r in c]
        lines.append("")
    d = report.get("determinism")
    if d:
        lines += ["## Determinism", "", f"Batches {d['batches']}, float32 and float64, both modes:", "",
                  f"- repeated in one process: {'identical' if d['repeated_in_process_identical'] else 'DIFFERENT'}",
                  f"- fresh process: {'identical' if d['fresh_process_identical'] else 'DIFFERENT'}",
                  f"- torch threads 1 vs 2: {'identical' if d['thread_count_1_vs_2_identical'] else 'DIFFERENT: ' + ', '.join(d['thread_count_dependent_cases'])}",
                  "", "Batch composition (300 samples in one call vs in chunks):", "",
                  "| dtype | mode | chunk | bitwise equal | max abs diff |", "|---|---|---|---|---|"]
        lines += [f"| {r['dtype']} | {r['mode']} | {r['chunk']} | {r['bitwise_equal']} | {r['max_abs_diff']:.2g} |"
                  for r in d["batch_composition"]]
        lines.append("")
    return "\n".join(lines)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--samples", type=int, default=10_000_000, help="samples for (a) (default 10,000,000)")
    p.add_argument("--batch-size", type=int, default=4096, help="predict --batch-size for (a) (default 4096)")
    p.add_argument("--huge", type=int, default=262_144, help="batch for (b) (default 262,144)")
    p.add_argument("--threads", type=int, default=torch.get_num_threads(), help="torch threads")
    p.add_argument("--mem-limit-gb", type=float, default=16.0, help="address-space limit of the (b) children")
    p.add_argument("--disk-reserve-gb", type=float, default=20.0,
                   help="disk space (a) leaves free; fewer samples when needed (default 20)")
    p.add_argument("--workdir", help="folder for the (a) input and scores (default: a new temporary folder)")
    p.add_argument("--keep", action="store_true", help="keep the (a) files")
    p.add_argument("--skip-predict", action="store_true", help="skip (a)")
    p.add_argument("--skip-huge", action="store_true", help="skip (b)")
    p.add_argument("--out", default=str(ROOT / "benchmarks" / "results"), help="results folder")
    p.add_argument("--child-huge", nargs=2, metavar=("MODE", "N"), help=argparse.SUPPRESS)
    p.add_argument("--child-hashes", action="store_true", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.child_huge:
        print("CHILD " + json.dumps(huge_child(args.child_huge[0], int(args.child_huge[1]))))
        return 0
    if args.child_hashes:
        print("CHILD " + json.dumps(determinism_hashes([2, 1])))
        return 0
    torch.set_num_threads(args.threads)
    report = {"environment": environment(args)}
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)

    def save():
        (out / "reliability_cpu.json").write_text(json.dumps(report, indent=2) + "\n")
        (out / "reliability_cpu.md").write_text(markdown(report) + "\n")
    # (a) first: RUSAGE_CHILDREN's ru_maxrss is the largest child so far.
    if not args.skip_predict:
        report["predict"] = predict_at_scale(args)
        save()
    if not args.skip_huge:
        report["huge_batch"] = huge_batches(args)
        save()
    print("(c) concurrency and determinism", file=sys.stderr)
    report["concurrency"] = concurrency()
    report["determinism"] = determinism(args)
    report["environment"]["loadavg_at_end"] = list(os.getloadavg())
    save()
    print(markdown(report))
    ok = all(r.get("bitwise_equal_to_serial") for r in report["concurrency"]) and \
        report["determinism"]["fresh_process_identical"] and \
        report.get("predict", {}).get("exit_code", 0) == 0
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
