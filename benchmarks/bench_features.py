#!/usr/bin/env python
"""Throughput of the feature stage (frame pairs -> flow -> MEAN features) against OpenCV.

One run measures, on the same 128x128 synthetic face pairs and the same machine:

* ``opencv-1t`` / ``opencv-2t``  cv2.optflow.DualTVL1 pair by pair, cv2.setNumThreads(1 or 2);
* ``opencv-procs``               the same in one process per core (multiprocessing, 1 OpenCV
                                 thread each): the best a user can assemble from OpenCV;
* ``mean-preprocess``            MEAN's whole preProcess (OpenCV flow + cartToPolar + pandas strain
                                 + normalize + resize) pair by pair, 2 OpenCV threads;
* ``tvl1_flow`` / ``mean_features``  meanspot_fused on all threads (``torch.get_num_threads()``), at
                                 each batch size; on CUDA too when a GPU is present (``--device cuda``).

Accuracy is printed beside speed: mean and 99th-percentile endpoint error of
our flow against OpenCV's on the same pairs, and the mean/max absolute
difference of our features against MEAN's preProcess. The work is counted from
the iterations the op reports: FLOP per pair = pixel-iterations x FLOP per
pixel-iteration (counted from csrc/tvl1_math.h) + warps and medians; the CPU
floor is that over PERFORMANCE.md's 2-core peak. Results: --out DIR (JSON and
Markdown with device, versions, date and command).
"""
from __future__ import annotations

import argparse
import datetime
import multiprocessing as mp
import os
import platform
import shlex
import sys
import time
from pathlib import Path

import numpy as np
import torch

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
sys.path.insert(0, str(HERE))
from bench import save_results  # noqa: E402
from meanspot_fused.features import mean_features, synthetic, tvl1_flow  # noqa: E402
from meanspot_fused.features import reference as R  # noqa: E402

# Floating-point operations per pixel and inner iteration, counted in
# csrc/tvl1_math.h: threshold step 9 (+2 in the fi branch), divergence 6,
# primal update 4, squared update 5, forward gradients 4, two dual steps 2 x 9.
FLOP_PER_PIXEL_ITERATION = 48
# Per pixel and warping: 3 bicubic samples of 16 taps (2 FLOP each) + weights and gradient terms.
FLOP_PER_PIXEL_WARP = 3 * 2 * 20 + 40
# Per pixel and outer iteration: two 5x5 medians (about 2 x 150 min/max).
OPS_PER_PIXEL_MEDIAN = 300
CPU_PEAK_GFLOPS_2CORES = 225.0  # PERFORMANCE.md: register-only AVX-512 FMA loop, fp32, 2 cores


def pairs(n: int, seed: int = 0):
    frames, _ = synthetic.face_video(n + 3, events=((n // 3, "brow", 6, 2.0), (2 * n // 3, "mouth", 6, 2.5)),
                                     drift=0.05, noise=1.0, jpeg_quality=90, seed=seed)
    return frames[:-3], frames[3:]


def _cv_worker(args):
    import cv2
    cv2.setNumThreads(1)
    a, b = args
    for i in range(len(a)):
        cv2.optflow.DualTVL1OpticalFlow_create().calc(a[i], b[i], None)
    return len(a)


def time_opencv(a, b, threads: int) -> float:
    import cv2
    cv2.setNumThreads(threads)
    t = time.perf_counter()
    for i in range(len(a)):
        cv2.optflow.DualTVL1OpticalFlow_create().calc(a[i], b[i], None)
    return len(a) / (time.perf_counter() - t)


def time_opencv_procs(a, b, procs: int) -> float:
    chunks = [(a[i::procs], b[i::procs]) for i in range(procs)]
    with mp.get_context("spawn").Pool(procs) as pool:  # fork is unsafe after OpenMP started
        pool.map(_cv_worker, [(x[:1], y[:1]) for x, y in chunks])  # warm the workers
        t = time.perf_counter()
        pool.map(_cv_worker, chunks)
        return len(a) / (time.perf_counter() - t)


def time_ours(fn, a, b, batch: int, device: str, min_time: float) -> float:
    def run():
        for s in range(0, len(a), batch):
            fn(a[s:s + batch], b[s:s + batch])
        if device == "cuda":
            torch.cuda.synchronize()
    if batch <= 64 or device == "cuda":
        run()  # warm-up (and CUDA context); a CPU batch of 1,024 pairs is its own warm-up
    reps, t0 = 0, time.perf_counter()
    while True:
        run()
        reps += 1
        if time.perf_counter() - t0 >= min_time:
            break
    return reps * len(a) / (time.perf_counter() - t0)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--batches", default="1,64,1024", help="batch sizes for our ops (default: 1,64,1024)")
    ap.add_argument("--pairs", type=int, default=64, help="distinct pairs (default 64; batches cycle over them)")
    ap.add_argument("--opencv-pairs", type=int, default=8, help="pairs timed for each OpenCV configuration")
    ap.add_argument("--device", default="cpu", choices=("cpu", "cuda"))
    ap.add_argument("--min-time", type=float, default=2.0, help="seconds per measurement of our ops")
    ap.add_argument("--out", default=str(HERE / "results"), help="folder for the JSON and Markdown results")
    args = ap.parse_args(argv)
    batches = [int(b) for b in args.batches.split(",")]
    threads = torch.get_num_threads()
    a, b = pairs(args.pairs)
    lm = synthetic.face_landmarks()
    device = args.device
    if device == "cuda" and not torch.cuda.is_available():
        print("bench_features: --device cuda but no GPU is visible", file=sys.stderr)
        return 2

    # Accuracy on the benchmark pairs, and the work our op did.
    import cv2
    cv2.setNumThreads(threads)
    m = min(args.opencv_pairs, len(a))
    flow, counts = tvl1_flow(a[:m], b[:m], return_iterations=True)
    cvflow = np.stack([np.moveaxis(cv2.optflow.DualTVL1OpticalFlow_create().calc(a[i], b[i], None), -1, 0)
                       for i in range(m)])
    epe = np.sqrt(((flow.numpy() - cvflow) ** 2).sum(axis=1))
    feats = mean_features(a[:m], b[:m], lm).numpy().transpose(0, 2, 3, 1)
    ref = np.stack([R.mean_preprocess(a[i], b[i], lm, flow=np.moveaxis(cvflow[i], 0, -1)) for i in range(m)])
    fdiff = np.abs(feats - ref)
    iters = counts[:, 0].double().mean().item()
    pixel_iters = counts[:, 1].double().mean().item()
    levels_px = float(sum(h * w for h, w in [(128, 128), (102, 102), (82, 82), (66, 66), (53, 53)]))
    flop = pixel_iters * FLOP_PER_PIXEL_ITERATION + 5 * levels_px * FLOP_PER_PIXEL_WARP
    median_ops = pixel_iters / 30 * OPS_PER_PIXEL_MEDIAN  # an outer iteration per (at most) 30 inner ones
    floor_pairs_s = CPU_PEAK_GFLOPS_2CORES * 1e9 / (flop + median_ops)

    rows = []
    rows.append(("opencv-1t", "-", time_opencv(a[:m], b[:m], 1)))
    rows.append(("opencv-2t", "-", time_opencv(a[:m], b[:m], 2)))
    procs = os.cpu_count() or 1
    rows.append((f"opencv-procs ({procs})", "-", time_opencv_procs(a[:2 * m], b[:2 * m], procs)))
    cv2.setNumThreads(2)
    t = time.perf_counter()
    for i in range(m):
        R.mean_preprocess(a[i], b[i], lm)
    rows.append(("mean-preprocess (2t)", "-", m / (time.perf_counter() - t)))
    best_cv = max(r[2] for r in rows[:3])
    dev_a, dev_b = torch.from_numpy(a).to(device), torch.from_numpy(b).to(device)
    for batch in batches:
        reps = -(-batch // len(a))
        xa, xb = dev_a.repeat(reps, 1, 1)[:batch], dev_b.repeat(reps, 1, 1)[:batch]
        rows.append((f"tvl1_flow ({device})", batch, time_ours(tvl1_flow, xa, xb, batch, device, args.min_time)))
        rows.append((f"mean_features ({device})", batch,
                     time_ours(lambda x, y: mean_features(x, y, lm), xa, xb, batch, device, args.min_time)))

    info = dict(date=datetime.datetime.now().isoformat(timespec="seconds"), command=" ".join(map(shlex.quote, sys.argv)),
                machine=platform.processor() or platform.machine(), cpu_count=os.cpu_count(), torch_threads=threads,
                torch=torch.__version__, opencv=cv2.__version__, numpy=np.__version__, python=platform.python_version(),
                device=torch.cuda.get_device_name() if device == "cuda" else "cpu",
                mean_inner_iterations=iters, mean_pixel_iterations=pixel_iters, flop_per_pair=flop,
                median_ops_per_pair=median_ops, cpu_floor_pairs_per_s=floor_pairs_s,
                flow_epe_mean=float(epe.mean()), flow_epe_p99=float(np.percentile(epe, 99)),
                features_absdiff_mean=float(fdiff.mean()), features_absdiff_max=float(fdiff.max()),
                rows=[dict(impl=r[0], batch=r[1], pairs_per_s=r[2], vs_best_opencv=r[2] / best_cv) for r in rows])
    lines = [f"# Feature stage benchmark ({info['device']}, {info['date']})", "",
             f"torch {info['torch']} ({threads} threads), OpenCV {info['opencv']}, NumPy {info['numpy']}, "
             f"Python {info['python']}, {info['cpu_count']} CPUs; command: `{info['command']}`", "",
             "| implementation | batch | pairs/s | vs best OpenCV |", "|---|---|---|---|"]
    lines += [f"| {r[0]} | {r[1]} | {r[2]:,.1f} | {r[2] / best_cv:.2f}x |" for r in rows]
    lines += ["", f"Work per 128x128 pair (our op): {iters:.0f} inner iterations, {pixel_iters / 1e6:.2f} M "
              f"pixel-iterations, about {flop / 1e6:.0f} MFLOP + {median_ops / 1e6:.0f} M median min/max; "
              f"CPU floor at {CPU_PEAK_GFLOPS_2CORES:.0f} GFLOP/s: {floor_pairs_s:,.0f} pairs/s.",
              f"Accuracy on the same pairs: flow endpoint error vs OpenCV mean {epe.mean():.4f} px, p99 "
              f"{np.percentile(epe, 99):.4f} px; features vs MEAN's preProcess (OpenCV flow) mean |diff| "
              f"{fdiff.mean():.4f}, max {fdiff.max():.4f}."]
    text = "\n".join(lines)
    print(text)
    save_results(args.out, "features_", device, info, text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
