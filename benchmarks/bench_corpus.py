"""Corpus throughput: `spot` over a directory of videos with each engine, on this machine.

A synthetic corpus of ``--videos`` 128x128 face videos of ``--frames`` frames
(.npy stacks: no decoding or face detection, so the rows compare the engines,
not the input layer), MEAN's published CASME_sq spot model when
``../shared/keras_cases`` is there, else a random one, k 3. Each engine runs
the whole corpus into a fresh folder (``--force``): local with 1 worker (all
threads in this process), local with 2 workers (1 thread each), Ray Data
with 2 actors (1 thread each) on a local Ray started here. Reported: wall
seconds, videos/hour and frame pairs/s, and whether every engine wrote the
same intervals and scores.
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


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--videos", type=int, default=4, help="videos in the corpus (default 4)")
    ap.add_argument("--frames", type=int, default=400, help="frames per video (default 400)")
    ap.add_argument("--engines", default="local-1,local-2,ray-2", help="engine-workers list (default all three)")
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
                   "--workers", workers, *threads]
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
    text = "\n".join(lines) + "\n"
    print(text)
    save_results(args.out, "corpus_", "cpu", dict(date=date, command=command, videos=args.videos,
                                                  frames=args.frames, model=model_note, rows=rows,
                                                  same_outputs=same), text)
    return 0 if same else 1


if __name__ == "__main__":
    sys.exit(main())
