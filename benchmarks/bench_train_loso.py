"""How long `meanspot-fused train` takes on a corpus of CAS(ME)^2's size, on this machine.

A synthetic corpus shaped like MEAN's CAS(ME)^2 training data (defaults:
22 subjects, 57 micro-expressions kept by MEAN's rules in 32 videos of 2,500
frames at k 3, expressions 15 frames long, so k_p 7; the frame count per video
is an assumption of this script, the other counts are MEAN's): feature files
of random maps (the time to train does not depend on the values) and an
annotation CSV. ``train_run`` runs MEAN's whole schedule (10 spot epochs, 100
recognition epochs, batch 32, 1:5 downsampling) on ``--folds`` of the 22
folds; the record gives the seconds per fold, split into gathering the maps,
training and the fused evaluation, and the whole LOSO run extrapolated from
the folds measured (every fold trains on nearly the same number of samples).
"""
from __future__ import annotations

import argparse
import csv
import datetime
import json
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
from meanspot_fused.training.run import TrainSettings, train_run  # noqa: E402


def make_corpus(root: Path, subjects: int, videos: int, mes: int, frames: int, length: int, seed: int = 0):
    """Feature folders <video>/features.npz and annotations.csv; every video keeps at least one expression."""
    rng = np.random.default_rng(seed)
    k = 3
    rows = []
    owner = [f"s{1 + i % subjects}" for i in range(videos)]
    per_video = np.bincount(np.concatenate([np.arange(videos), rng.integers(0, videos, mes - videos)]),
                            minlength=videos)
    for v in range(videos):
        name = f"{owner[v]}_v{v}"
        onsets = np.sort(rng.choice(np.arange(20, frames - length - 20, 3 * length), per_video[v], replace=False))
        pairs = []
        for onset in onsets:
            apex = onset + length // 2
            rows.append(dict(subject=owner[v], video=name, onset=onset + 1, apex=apex + 1, offset=onset + length,
                             type="micro-expression", emotion=("negative", "positive", "surprise")[len(rows) % 3]))
            pairs.append((onset, apex))
        folder = root / "features" / name
        folder.mkdir(parents=True)
        maps = rng.random((frames - k, 3, 42, 42), dtype=np.float32)
        pair_maps = rng.random((len(pairs), 3, 42, 42), dtype=np.float32)
        np.savez(folder / "features.npz", u=maps[:, 0:1], v=maps[:, 1:2], os=maps[:, 2:3], k=np.int64(k),
                 frames=np.int64(frames), remap=np.array("opencv4"), landmarks=np.zeros((68, 2), np.int64),
                 pairs=np.array(pairs, np.int64), pair_u=pair_maps[:, 0:1], pair_v=pair_maps[:, 1:2],
                 pair_os=pair_maps[:, 2:3])
    with open(root / "annotations.csv", "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--subjects", type=int, default=22)
    ap.add_argument("--videos", type=int, default=32, help="videos with at least one kept expression")
    ap.add_argument("--mes", type=int, default=57, help="micro-expressions kept by MEAN's rules")
    ap.add_argument("--frames", type=int, default=2500, help="frames per video (an assumption)")
    ap.add_argument("--length", type=int, default=15, help="frames per expression (offset - onset + 1)")
    ap.add_argument("--folds", type=int, default=3, help="folds to run (the first ones; default 3)")
    ap.add_argument("--cbam", default="none")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--out", default=str(HERE / "results"), help="folder for the JSON and Markdown results")
    args = ap.parse_args(argv)
    with tempfile.TemporaryDirectory() as work:
        work = Path(work)
        t0 = time.perf_counter()
        make_corpus(work, args.subjects, args.videos, args.mes, args.frames, args.length)
        made = time.perf_counter() - t0
        folds = [f"s{i + 1}" for i in range(args.folds)]
        messages = []

        def log(msg: str) -> None:
            messages.append((time.perf_counter(), msg))
        settings = TrainSettings(dataset="CASME_sq", cbam=args.cbam, folds=folds)
        start = time.perf_counter()
        summary = train_run(work / "annotations.csv", work / "features", work / "run", settings,
                            device=args.device, log=log)
        total = time.perf_counter() - start
        per_fold = [json.loads((p / "fold.json").read_text()) for p in sorted((work / "run" / "folds").iterdir())]
    gather = next(t for t, m in messages if m.startswith("fold 0 ")) - start
    fold_seconds = [f["seconds"] for f in per_fold]
    mean_fold = float(np.mean(fold_seconds))
    loso = gather + mean_fold * args.subjects
    samples = args.videos * (args.frames - 3)
    date = datetime.datetime.now().isoformat(timespec="seconds")
    command = " ".join(map(shlex.quote, sys.argv))
    lines = [f"# A LOSO training run of CAS(ME)^2's size ({args.device}, {date})", "",
             f"Synthetic corpus: {args.subjects} subjects, {args.mes} micro-expressions in {args.videos} videos of "
             f"{args.frames} frames ({samples:,} spotting samples, k 3, expressions {args.length} frames, k_p "
             f"{per_fold[0]['k_p']}), random maps (made in {made:.0f} s); MEAN's schedule (10 spot epochs, 100 "
             f"recognition epochs, batch 32, 1:5 downsampling), CBAM {args.cbam}; torch {torch.__version__}, "
             f"{torch.get_num_threads()} threads; command: `{command}`", "",
             "| fold | subject | training samples (positive) | recognition | seconds |", "|---|---|---|---|---|"]
    for f in per_fold:
        lines.append(f"| {f['fold']} | {f['subject']} | {f['train_samples']:,} ({f['train_positives']:,}) | "
                     f"{'yes' if f['recognition_trained'] else 'no'} | {f['seconds']:.1f} |")
    lines += ["", f"Gathering the {samples:,} maps into the run's cache: {gather:.1f} s. Mean fold (training and "
                  f"the fused evaluation of its subject): {mean_fold:.1f} s. Whole run of {args.folds} folds: "
                  f"{total:.1f} s.", "",
              f"**Whole LOSO run of {args.subjects} folds, extrapolated: {loso / 60:.1f} min** "
              f"(gathering + {args.subjects} x mean fold)."]
    text = "\n".join(lines) + "\n"
    print(text)
    save_results(args.out, "train_loso_", args.device,
                 dict(date=date, command=command, subjects=args.subjects, videos=args.videos, mes=args.mes,
                      frames=args.frames, length=args.length, folds=per_fold, gather_seconds=gather,
                      mean_fold_seconds=mean_fold, loso_minutes=loso / 60, total_seconds=total,
                      spotting=summary["results"]["spotting"]), text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
