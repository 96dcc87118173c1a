#!/usr/bin/env python
"""End to end, a face video to spotted intervals: `meanspot-fused spot` against MEAN's own pipeline.

One run, one machine, the same synthetic 128x128 face video (``--frames``
frames, brow and mouth movements injected, drift, noise, JPEG):

* ``meanspot_fused``  :func:`meanspot_fused.pipeline.spot_videos`, what the ``spot`` command runs:
                      frames streamed in chunks, TV-L1 features batched on all threads, the fused
                      network, MEAN's post-processing, the four output files written;
* ``MEAN``            MEAN's composition: ``preProcess`` pair by pair (OpenCV DualTVL1 on 2 threads,
                      cartToPolar, pandas strain, normalize, resize), the reference network (a
                      stand-in for Keras: the network is under 1% of the time either way),
                      ``scipy.signal.find_peaks`` spotting. OpenCV's features take about 0.1 s a pair,
                      so by default they run on the first ``--mean-pairs`` pairs and the rate is
                      extrapolated to the video (``--mean-pairs 0``: all of them); the network and
                      spotting run on the whole video.

Reported: frames per second end to end and per stage, the ratio, and on the
pairs MEAN computed the largest difference between the two pipelines' scores
(same model). The model is MEAN's published CASME_sq spot model when
``../shared/keras_cases`` is there, else a random MeanSpot (speed does not
depend on the weights). Results: --out DIR (JSON and Markdown with device,
versions, date and command).
"""
from __future__ import annotations

import argparse
import datetime
import json
import os
import resource
import shlex
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
sys.path.insert(0, str(HERE))
from bench import _git_state, cpu_description, device_description, save_results  # noqa: E402
from meanspot_fused.features import synthetic  # noqa: E402
from meanspot_fused.pipeline import SpotSettings, spot_videos  # noqa: E402

PUBLISHED = HERE.parent.parent / "shared" / "keras_cases" / "mean_weights" / "CASME_sq" / "spot" / "s1.hdf5"
K, K_P = 3, 6  # CAS(ME)^2: MEAN's k, and a k_p of its micro-expression lengths


def make_video(n: int, seed: int = 0) -> tuple:
    events = [(t, "brow" if i % 2 == 0 else "mouth", 8, 2.5) for i, t in enumerate(range(40, n - 20, 150))]
    return synthetic.face_video(n, events=events, drift=0.01, noise=1.0, jpeg_quality=90, seed=seed)


def model_file(workdir: str) -> tuple:
    if PUBLISHED.exists():
        return str(PUBLISHED), "MEAN's published CASME_sq spot model (s1.hdf5)"
    import meanspot_fused as mf
    torch.manual_seed(0)
    path = os.path.join(workdir, "random.pt")
    mf.save_model(mf.MeanSpot(cbam="none").eval(), path)
    return path, "a random MeanSpot (published weights not found)"


def run_ours(video: str, model: str, workdir: str, device: str, batch_size: int) -> dict:
    settings = SpotSettings(k=K, k_p=K_P, landmarks=os.path.join(workdir, "lm.npy"), device=device,
                            batch_size=batch_size)
    out = os.path.join(workdir, "out")
    t0 = time.perf_counter()
    (result,) = spot_videos([video], model, out, settings, overwrite=True, log=lambda msg: None)
    wall = time.perf_counter() - t0
    summary = json.loads(Path(out, result["video"], "summary.json").read_text())
    summary["wall_with_model_load"] = wall
    summary["scores"] = np.load(Path(out, result["video"], "scores.npy"))
    return summary


def run_mean(frames: np.ndarray, model: str, mean_pairs: int) -> dict:
    import cv2
    from scipy.signal import find_peaks

    from meanspot_fused.features import reference as R
    from meanspot_fused.io.checkpoints import load_model

    cv2.setNumThreads(2)
    lm = synthetic.face_landmarks()
    pairs = len(frames) - K
    m = pairs if mean_pairs <= 0 else min(mean_pairs, pairs)
    t0 = time.perf_counter()
    x = np.stack([R.mean_preprocess(frames[i], frames[i + K], lm) for i in range(m)])
    feature_s = (time.perf_counter() - t0) * pairs / m  # extrapolated to the whole video
    net = load_model(model)
    # The network on the whole video (features tiled from the computed ones: same work).
    full = np.resize(x, (pairs,) + x.shape[1:])
    t0 = time.perf_counter()
    with torch.no_grad():
        maps = [torch.from_numpy(np.ascontiguousarray(full[..., c:c + 1].transpose(0, 3, 1, 2))).float()
                for c in range(3)]
        scores = np.concatenate([net(*(mp[s:s + 1024] for mp in maps))[:, 0].numpy()
                                 for s in range(0, pairs, 1024)])
    network_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    box = np.ones(2 * K_P) / (2 * K_P)
    agg = np.convolve(scores.astype(np.float64), box, mode="same")
    threshold = agg.mean() + 0.55 * (agg.max() - agg.mean())
    find_peaks(agg, height=threshold, distance=K_P)
    spotting_s = time.perf_counter() - t0
    return dict(pairs_computed=m, seconds=dict(features=feature_s, network=network_s, spotting=spotting_s,
                                               total=feature_s + network_s + spotting_s),
                scores=scores[:m])


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--frames", type=int, default=3000, help="frames of the synthetic video (default 3000)")
    ap.add_argument("--mean-pairs", type=int, default=100,
                    help="pairs MEAN's OpenCV features are timed on (default 100; 0: the whole video)")
    ap.add_argument("--device", default="cpu", choices=("cpu", "cuda"))
    ap.add_argument("--batch-size", type=int, default=256, help="pairs per batch of ours (default 256)")
    ap.add_argument("--out", default=str(HERE / "results"), help="folder for the JSON and Markdown results")
    args = ap.parse_args(argv)
    if args.device == "cuda" and not torch.cuda.is_available():
        print("bench_pipeline: --device cuda but no GPU is visible", file=sys.stderr)
        return 2
    import cv2

    with tempfile.TemporaryDirectory() as workdir:
        frames, truth = make_video(args.frames)
        video = os.path.join(workdir, "video.npy")
        np.save(video, frames)
        np.save(os.path.join(workdir, "lm.npy"), synthetic.face_landmarks())
        model, model_desc = model_file(workdir)
        ours = run_ours(video, model, workdir, args.device, args.batch_size)
        rss_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        mean = run_mean(frames, model, args.mean_pairs)
    n = args.frames
    m = mean["pairs_computed"]
    score_diff = float(np.abs(ours["scores"][:m].astype(np.float64) - mean["scores"]).max())
    ours_fps = n / ours["seconds"]["total"]
    mean_fps = n / mean["seconds"]["total"]
    info = dict(date=datetime.datetime.now().isoformat(timespec="seconds"),
                command=" ".join(map(shlex.quote, [sys.argv[0]] + (argv if argv is not None else sys.argv[1:]))),
                device=device_description(torch.device(args.device)), cpu=cpu_description(),
                torch=torch.__version__, torch_threads=torch.get_num_threads(), opencv=cv2.__version__,
                numpy=np.__version__, git=_git_state(), model=model_desc, frames=n, k=K, k_p=K_P,
                mean_pairs_computed=m, ours_seconds=ours["seconds"], mean_seconds=mean["seconds"],
                ours_frames_per_s=ours_fps, mean_frames_per_s=mean_fps, speedup=ours_fps / mean_fps,
                ours_intervals=ours["intervals"], injected_events=len(truth), max_score_diff=score_diff,
                peak_rss_mb=rss_mb)
    so, sm = ours["seconds"], mean["seconds"]
    lines = [f"# Pipeline benchmark: face video to intervals ({args.device}, {info['date']})", "",
             f"{info['device']}; torch {info['torch']} ({info['torch_threads']} threads), OpenCV {info['opencv']}, "
             f"NumPy {info['numpy']}; command: `{info['command']}`", "",
             f"Synthetic {n}-frame 128x128 face video, k {K}, k_p {K_P}; model: {model_desc}.", "",
             "| pipeline | features s | network s | spotting s | read+crop+write s | total s | frames/s | vs MEAN |",
             "|---|---|---|---|---|---|---|---|",
             f"| meanspot_fused `spot` ({args.device}) | {so['features']:.2f} | {so['network']:.3f} | "
             f"{so['spotting']:.3f} | {so['read'] + so['crop'] + so['write']:.2f} | {so['total']:.2f} | "
             f"{ours_fps:,.1f} | {ours_fps / mean_fps:.1f}x |",
             f"| MEAN (OpenCV preProcess 2 threads, network, scipy) | {sm['features']:.1f} | {sm['network']:.3f} | "
             f"{sm['spotting']:.3f} | - | {sm['total']:.1f} | {mean_fps:,.2f} | 1.0x |", "",
             f"MEAN's features were timed on {m} of the {n - K} pairs and extrapolated"
             f"{'' if m == n - K else ' (the network and spotting ran on the whole video)'}. "
             f"Largest difference of the two pipelines' scores on those pairs: {score_diff:.3g}. "
             f"Ours found {ours['intervals']} interval(s) for {len(truth)} injected events; peak resident "
             f"memory of the process {rss_mb:,.0f} MB."]
    text = "\n".join(lines)
    print(text)
    save_results(args.out, "pipeline_", args.device, info, text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
