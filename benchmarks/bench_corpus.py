"""Corpus throughput: `spot` over a directory of videos with each engine, on this machine.

A synthetic corpus of ``--videos`` 128x128 face videos of ``--frames`` frames
(.npy stacks: no decoding or face detection, so the rows compare the engines,
not the input layer), MEAN's published CASME_sq spot model when
``../shared/keras_cases`` is there, else a random one, k 3. Each engine runs
the whole corpus into a fresh folder (``--force``): local with 1 worker (all
threads in this process), local with 2 workers (1 thread each), Ray Data
with 2 actors (1 thread each) on a local Ray started here. Reported: wall
seconds, videos/hour and frame pairs/s, and whether every engine wrote the
same intervals and scores. Then the corpus of issue #21 projected on paper
from the best measured rate: CAS(ME)^2 + SAMM-LV, 245 videos and about 1.5 M
frame pairs, on N such nodes (videos are independent, so the ideal is
total / (N x rate), bounded below by the longest video at one node's rate and
by the start-up measured here). ``--device cuda`` measures the same on a GPU
node (one actor or worker per GPU); no GPU was lent to this work, so the GPU
rows wait for that run.
"""
from __future__ import annotations

import argparse
import datetime
import os
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
from common import save_results  # noqa: E402
from meanspot_fused import save_model  # noqa: E402
from meanspot_fused.features import synthetic  # noqa: E402

KERAS_MODEL = HERE.parent.parent / "shared" / "keras_cases" / "mean_weights" / "CASME_sq" / "spot" / "s1.hdf5"


# Issue #21's corpus: CAS(ME)^2 (98 long videos) + SAMM-LV (147), about 1.5 M frame pairs in all.
CORPUS_VIDEOS = 98 + 147
CORPUS_PAIRS = 1.5e6


def projection(rows, device: str):
    """Markdown lines: the corpus on N nodes at the best rate measured here (pairs/s per node)."""
    best = max(rows, key=lambda r: r["pairs_per_s"])
    rate = best["pairs_per_s"]
    mean_video = CORPUS_PAIRS / CORPUS_VIDEOS
    lines = ["", f"## Projected on paper: CAS(ME)^2 + SAMM-LV ({CORPUS_VIDEOS} videos, {CORPUS_PAIRS / 1e6:.1f} M "
             f"frame pairs) on N {device} nodes like this one",
             "", f"Rate per node: {rate:,.1f} pairs/s ({best['engine']}, {best['workers']} worker(s)), measured "
             f"above. Ideal hours = pairs / (N x rate); a node spends {mean_video / rate / 60:.1f} min on a video "
             f"of the mean length ({mean_video:,.0f} pairs), and no N finishes before the longest video does.", "",
             "| nodes N | hours (ideal) | videos per node |", "|---|---|---|"]
    for n in (1, 2, 4, 8, 16, 32):
        lines.append(f"| {n} | {CORPUS_PAIRS / (n * rate) / 3600:.2f} | {CORPUS_VIDEOS / n:.0f} |")
    if device == "cpu":
        lines += ["", "GPU nodes: not measured (no GPU lent to this work); run this script with "
                      "`--device cuda` on a GPU node and the same table follows from its rate."]
    return lines


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--videos", type=int, default=4, help="videos in the corpus (default 4)")
    ap.add_argument("--frames", type=int, default=400, help="frames per video (default 400)")
    ap.add_argument("--engines", default="local-1,local-2,ray-2", help="engine-workers list (default all three)")
    ap.add_argument("--device", default="cpu", help="cpu or cuda (default cpu)")
    ap.add_argument("--out", default=str(HERE / "results"), help="folder for the JSON and Markdown results")
    args = ap.parse_args(argv)
    from meanspot_fused.cli import main as cli
    rows = []
    with tempfile.TemporaryDirectory() as work:
        work = Path(work)
        (work / "videos").mkdir()
        for i in range(args.videos):
            frames, _ = synthetic.face_video(args.frames, drift=0.02, seed=100 + i)
            np.save(work / "videos" / f"video{i}.npy", frames)
        np.save(work / "lm.npy", synthetic.face_landmarks())
        if KERAS_MODEL.is_file():
            model, model_note = str(KERAS_MODEL), "MEAN's published CASME_sq spot model"
        else:
            sys.path.insert(0, str(HERE.parent / "tests"))
            from helpers import random_model
            model, model_note = str(work / "spot.pt"), "a random MeanSpot"
            save_model(random_model(dtype=torch.float32, seed=1), model)
        outputs = {}
        for spec in args.engines.split(","):
            engine, workers = spec.split("-")
            out = work / f"out_{spec}"
            threads = ["--threads", "1"] if int(workers) > 1 else []
            cmd = ["spot", str(work / "videos"), "--model", model, "--k", "3", "--k-p", "6", "--landmarks",
                   str(work / "lm.npy"), "--out", str(out), "--quiet", "--force", "--engine", engine,
                   "--workers", workers, "--device", args.device, *threads]
            start = time.perf_counter()
            code = cli(cmd)
            seconds = time.perf_counter() - start
            if code != 0:
                print(f"bench_corpus: {spec} exited {code}", file=sys.stderr)
                return 1
            outputs[spec] = {v: ((out / v / "intervals.csv").read_bytes(), (out / v / "scores.npy").read_bytes())
                             for v in sorted(os.listdir(work / "videos"))
                             for v in [v[:-4]]}
            pairs = args.videos * (args.frames - 3)
            rows.append(dict(engine=engine, workers=int(workers), seconds=seconds,
                             videos_per_hour=args.videos * 3600 / seconds, pairs_per_s=pairs / seconds))
        first = next(iter(outputs.values()))
        same = all(o == first for o in outputs.values())
    date = datetime.datetime.now().isoformat(timespec="seconds")
    command = " ".join(map(shlex.quote, sys.argv))
    lines = [f"# Corpus throughput (cpu, {date})", "",
             f"{args.videos} synthetic 128x128 face videos of {args.frames} frames (.npy), k 3, {model_note}; "
             f"torch {torch.__version__}; every engine from a fresh output folder (the first run also pays "
             f"Ray's start); command: `{command}`", "",
             "| engine | workers / actors | seconds | videos/hour | frame pairs/s |", "|---|---|---|---|---|"]
    lines += [f"| {r['engine']} | {r['workers']} | {r['seconds']:.1f} | {r['videos_per_hour']:,.0f} | "
              f"{r['pairs_per_s']:,.1f} |" for r in rows]
    lines += ["", f"Same intervals.csv and scores.npy from every engine: {'yes' if same else 'NO'}."]
    lines += projection(rows, args.device)
    text = "\n".join(lines) + "\n"
    print(text)
    save_results(args.out, "corpus_", args.device, dict(date=date, command=command, videos=args.videos,
                                                  frames=args.frames, model=model_note, rows=rows,
                                                  same_outputs=same), text)
    return 0 if same else 1


if __name__ == "__main__":
    sys.exit(main())
