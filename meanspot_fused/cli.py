"""Command line: ``meanspot-fused COMMAND ...`` (also ``python -m meanspot_fused``).

``spot`` runs the whole pipeline (face videos to intervals); one subcommand
per stage besides: ``features`` (a face video's frames to MEAN's feature
file), ``predict`` (score feature files with a MEAN-Spot model) and
``evaluate`` (MEGC counts of spotted intervals against annotations). A
subcommand is one ``_<name>(sub)`` function that adds its parser and sets
``run`` (a function of the parsed arguments returning the exit code);
:data:`COMMANDS` lists them.

Exit codes, the same for every subcommand (meanspot_fused.errors): 0 done;
1 some inputs failed (the computation failed on valid input, or some of
`spot`'s videos failed); 2 bad usage or input (an option, argument or file;
the message on stderr names it); 3 a missing optional dependency; 4 a device
problem; 130 interrupted. The errors of the package carry their code
(MeanspotError.exit_code); :func:`main` maps them in one place. No output file
is left behind unless the run completed.
"""
from __future__ import annotations

import argparse
import signal
import sys
import threading
from typing import List, Optional

from .errors import (EXIT_CODES, EXIT_DEPENDENCY, EXIT_FAILED, EXIT_INTERRUPTED, EXIT_USAGE, DeviceError,
                     InputError, MeanspotError)

PROG = "meanspot-fused"

#: The exit-code table, as every ``--help`` ends.
EXIT_HELP = "exit codes (every subcommand):\n" + "\n".join(f"  {code:>3}  {text}" for code, text in EXIT_CODES.items())


class _HelpFormatter(argparse.HelpFormatter):
    """Wraps descriptions as argparse does; keeps text with line breaks (the exit-code table) as written."""

    def _fill_text(self, text, width, indent):
        return text if "\n" in text else super()._fill_text(text, width, indent)


def _add_parser(sub, name: str, **kwargs) -> argparse.ArgumentParser:
    """A subcommand parser whose --help ends with the exit-code table."""
    return sub.add_parser(name, epilog=EXIT_HELP, formatter_class=_HelpFormatter, **kwargs)


def _add_remap_option(p: argparse.ArgumentParser) -> None:
    """--remap: the OpenCV line whose TV-L1 flow the features reproduce."""
    p.add_argument("--remap", choices=("opencv4", "opencv4.14", "opencv5"), default="opencv4",
                   help="OpenCV whose DualTVL1 flow the features reproduce bit for bit: opencv4 (default: 4.0 to "
                        "4.13; MEAN pinned 4.5.1 and its published weights were trained on such features), "
                        "opencv4.14 (the 4.14 wheel on an FMA CPU) or opencv5 (5.x); they differ in the bicubic "
                        "remap each warp uses")


def _predict(sub) -> None:
    p = _add_parser(
        sub, "predict", help="score a features file with a Keras or PyTorch MEAN-Spot model",
        description="Score every sample of FEATURES with the model in FILE and write SCORES. FILE: a Keras "
                    "file (TF 2.x .h5/.hdf5 weights or model, Keras 3 .keras, .h5 or .weights.h5) or a "
                    "PyTorch checkpoint of meanspot_fused.save_model. FEATURES: .npz with arrays u, v, "
                    "os, each (N, 1, 42, 42) or (N, 42, 42, 1), or one array x of MEAN's stacked (N, 42, 42, 3) "
                    "(channels u, v, os). SCORES: .npy (one head) or .npz (arrays spot and/or recog).")
    p.add_argument("--model", required=True, metavar="FILE", help="Keras file or PyTorch MeanSpot checkpoint")
    p.add_argument("--input", required=True, metavar="FEATURES", help=".npz (or stacked .npy) of input maps")
    p.add_argument("--output", required=True, metavar="SCORES", help=".npy or .npz to write")
    p.add_argument("--device", default="cpu", help="cpu or cuda (default: cpu)")
    p.add_argument("--batch-size", type=int, default=1024, metavar="N", help="samples per batch (default: 1024)")
    p.add_argument("--dtype", default="float32", choices=("float32", "float64", "float16", "bfloat16"),
                   help="compute precision (default: float32)")
    p.add_argument("--no-fuse", dest="fuse", action="store_false",
                   help="run the pure-PyTorch reference instead of the fused ops")
    p.add_argument("--head", choices=("spot", "recog"), help="write only this head (default: all of the model's)")
    p.add_argument("--quiet", action="store_true", help="no progress bar or summary")
    p.set_defaults(run=_run_predict)


def _run_predict(args: argparse.Namespace) -> int:
    # Imported here so that `--help` answers without loading torch.
    from .io.errors import KerasFormatError
    from .predict import InferenceError, PredictError, predict_file

    def warn(msg: str) -> None:
        print(f"{PROG} predict: warning: {msg}", file=sys.stderr)
    try:
        summary = predict_file(args.model, args.input, args.output, device=args.device,
                               batch_size=args.batch_size, dtype=args.dtype, fuse=args.fuse,
                               heads=None if args.head is None else (args.head,), progress=not args.quiet,
                               warn=warn)
    except (PredictError, KerasFormatError, OSError) as e:
        print(f"{PROG} predict: error: {e}", file=sys.stderr)
        return EXIT_USAGE
    except InferenceError as e:
        print(f"{PROG} predict: error: {e}", file=sys.stderr)
        return EXIT_FAILED
    if not args.quiet:
        rate = summary["samples"] / summary["seconds"] if summary["seconds"] > 0 else float("inf")
        print(f"{PROG} predict: wrote {', '.join(summary['heads'])} for {summary['samples']} samples to "
              f"{summary['output']} ({summary['seconds']:.2f} s, {rate:,.0f} samples/s, {summary['dtype']} on "
              f"{summary['device']}, {'fused' if summary['fused'] else 'reference'})", file=sys.stderr)
    return 0


def _error(command: str, msg: str) -> int:
    """Print a command's error on stderr; the exit code of bad input (2)."""
    print(f"{PROG} {command}: error: {msg}", file=sys.stderr)
    return EXIT_USAGE


def _features(sub) -> None:
    from .spotting import DATASET_K  # NumPy only: --help does not load torch

    p = _add_parser(
        sub, "features", help="compute MEAN's features of face videos (TV-L1 flow, strain, eye and mouth ROIs)",
        description="Compute MEAN's (u, v, os) features of every frame pair (i, i + K). Of videos: for each "
                    "INPUT (as `spot` takes them: a video file, an image folder, a .npy stack, or a folder, glob "
                    "or list file of those), crop the face as `spot` does and write OUT/<input name>/"
                    "features.npz (arrays u, v, os, each (T - K, 1, 42, 42) float32: what `predict` and `train` "
                    "read; k, frames, remap, landmarks) and summary.json, on this machine (--workers) or on Ray "
                    "(--engine ray); a folder up to date is skipped, OUT/manifest.jsonl gets a line per video. "
                    "Of one stack of crops: --frames FRAMES.npy ((T, H, W) uint8 face crops, MEAN: 128 x 128 "
                    "grayscale) with --landmarks and --output OUT.npz.")
    p.add_argument("inputs", nargs="*", metavar="INPUT",
                   help="video file, image folder or .npy stack; or a folder of those, a glob pattern (quoted), "
                        "or a list file (.txt, .list, .lst: one input per line); not with --frames")
    p.add_argument("--frames", metavar="FRAMES.npy", help="(T, H, W) uint8 face crops, instead of INPUTs")
    p.add_argument("--output", metavar="OUT.npz", help=".npz to write (with --frames)")
    p.add_argument("--annotations", metavar="CSV",
                   help="training annotations (see `train`): also compute each kept expression's (onset, apex) "
                        "pair, MEAN's recognition input (needs --dataset: MEAN's rules)")
    p.add_argument("--subject", metavar="S", help="with --annotations: only this subject's rows (video names that "
                                                  "repeat across subjects)")
    _add_video_options(p, DATASET_K)
    p.set_defaults(run=_run_features)


def _add_video_options(p: argparse.ArgumentParser, dataset_k) -> None:
    """The options of a run over videos, shared by ``spot`` and ``features``: what to read, how to crop, where
    to write, and the engine."""
    presets = ", ".join(f"{name} {k}" for name, k in dataset_k.items())
    p.add_argument("--k", type=int, metavar="K", help="pair distance in frames (default: the --dataset preset)")
    p.add_argument("--dataset", choices=tuple(dataset_k), help=f"preset MEAN's k ({presets})")
    p.add_argument("--out", metavar="DIR", help="output folder (one subfolder per input)")
    p.add_argument("--landmarks", metavar="FILE",
                   help="(68, 2) dlib-ordered (x, y) landmarks of the first 128x128 crop (.npy or .txt), for "
                        "every input")
    p.add_argument("--landmark-model", metavar="PATH",
                   help="dlib's shape_predictor_68_face_landmarks.dat, used without --landmarks (default: the one "
                        "the faces extra installs; needs dlib: pip install \"meanspot_fused[faces]\")")
    p.add_argument("--face-box", metavar="X,Y,W,H", help="face box for every input instead of detection")
    p.add_argument("--cascade", metavar="XML", help="OpenCV Haar cascade file for face detection without dlib")
    p.add_argument("--no-jpeg", dest="jpeg", action="store_false",
                   help="skip MEAN's JPEG round trip of the crops (MEAN's models were trained with it)")
    p.add_argument("--device", default="cpu", help="cpu or cuda (default: cpu)")
    p.add_argument("--batch-size", type=int, default=256, metavar="N", help="pairs per batch (default 256)")
    _add_remap_option(p)
    p.add_argument("--chunk", type=int, default=1024, metavar="F",
                   help="frames read at a time; bounds memory (default 1024)")
    p.add_argument("--force", "--overwrite", dest="force", action="store_true",
                   help="recompute videos whose output folder is up to date (--overwrite: its old name)")
    p.add_argument("--engine", choices=("local", "ray"), default="local",
                   help="local (default): this machine, --workers processes; ray: Ray Data, --workers actors on "
                        "the cluster of --ray-address or RAY_ADDRESS, else a local Ray (pip install "
                        "\"meanspot_fused[ray]\")")
    p.add_argument("--ray-address", metavar="ADDR", help="Ray cluster to join (default: RAY_ADDRESS, else local)")
    p.add_argument("--workers", type=int, default=1, metavar="N",
                   help="worker processes (Ray: actors), a video each at a time (default 1: this process; "
                        "Ray: 1 actor)")
    p.add_argument("--threads", type=int, metavar="T",
                   help="torch and OpenCV threads per worker (default: the CPUs shared among the workers)")
    p.add_argument("--retries", type=int, default=2, metavar="R",
                   help="extra attempts for a video whose worker process died (default 2)")
    p.add_argument("--quiet", action="store_true", help="no progress bars or messages")


def _pair_distance(args: argparse.Namespace, command: str) -> Optional[int]:
    """--k, else the --dataset preset's (a note when both are given and differ); None when neither is."""
    from .spotting import DATASET_K
    k = args.k
    if k is None:
        return None if args.dataset is None else DATASET_K[args.dataset]
    if args.dataset is not None and k != DATASET_K[args.dataset]:
        print(f"{PROG} {command}: note: --k {k} replaces the --dataset {args.dataset} preset "
              f"{DATASET_K[args.dataset]}", file=sys.stderr)
    return k


def _run_videos(args: argparse.Namespace, command: str, settings, model) -> int:
    """A run over videos with either engine (``model`` None: features only); exit 0, 1 (some videos failed)
    or 2 (all failed, or bad input: nothing written)."""
    from .engine import expand_inputs, run_corpus
    log = (lambda msg: None) if args.quiet else (lambda msg: print(f"{PROG} {command}: {msg}", file=sys.stderr))
    try:
        inputs = expand_inputs(args.inputs)
        if args.engine == "ray":
            from .engine.ray import run_ray
            results = run_ray(inputs, model, args.out, settings, actors=args.workers, threads=args.threads,
                              force=args.force, retries=args.retries, address=args.ray_address,
                              dataset=args.dataset, progress=not args.quiet, log=log)
        else:
            results = run_corpus(inputs, model, args.out, settings, workers=args.workers,
                                 threads=args.threads, force=args.force, retries=args.retries,
                                 progress=not args.quiet, dataset=args.dataset, log=log)
    except InputError as e:  # SpotError, FramesError: an input, option or file the run cannot use
        return _error(command, str(e))
    except OSError as e:  # the output folder or a file in it cannot be written
        return _error(command, f"cannot write under --out {args.out!r}: {e}")
    failed = [r for r in results if r["status"] == "failed"]
    for r in failed:
        print(f"{PROG} {command}: error: {r['video']}: {r['error']}", file=sys.stderr)
    # A video fails only on its own input (SpotError: unreadable, no face, k
    # too large, ...). All of them failed: bad input, nothing written (2); some
    # failed while the others were written or skipped (1).
    if not failed:
        return 0
    return EXIT_USAGE if len(failed) == len(results) else EXIT_FAILED


def _run_features(args: argparse.Namespace) -> int:
    def fail(msg: str) -> int:
        return _error("features", msg)
    if (args.frames is None) == (not args.inputs):
        return fail("give either INPUT videos with --out DIR, or --frames FRAMES.npy with --landmarks and "
                    "--output OUT.npz")
    k = _pair_distance(args, "features")
    if k is None:
        return fail("give the pair distance --k K, or --dataset to use MEAN's k of a dataset")
    if args.frames is not None:
        for name in ("landmarks", "output"):
            if getattr(args, name) is None:
                return fail(f"--frames needs --{name}")
        return _features_of_frames(args, k)
    if args.output is not None or args.out is None:
        return fail("INPUT videos are written to --out DIR (one folder per video); --output OUT.npz goes with "
                    "--frames")
    from .io.frames import parse_face_box
    from .pipeline import SpotSettings
    if args.subject is not None and args.annotations is None:
        return fail("--subject goes with --annotations")
    if args.annotations is not None and args.dataset is None:
        return fail("--annotations needs --dataset (MEAN's rules of that dataset choose the expressions)")
    try:
        pairs = None
        if args.annotations is not None:
            from .training.run import recognition_pairs
            pairs = recognition_pairs(args.annotations, args.dataset, args.subject)
        settings = SpotSettings(
            k=k, k_p=None, face_box=parse_face_box(args.face_box) if args.face_box else None,
            cascade=args.cascade, landmarks=args.landmarks, landmark_model=args.landmark_model,
            jpeg_roundtrip=args.jpeg, device=args.device, batch_size=args.batch_size, chunk=args.chunk,
            remap=args.remap, save_features=True, pairs=pairs)
    except InputError as e:
        return fail(str(e))
    return _run_videos(args, "features", settings, None)


def _features_of_frames(args: argparse.Namespace, k: int) -> int:
    """``features --frames``: one stack of crops to one .npz."""
    import time

    import numpy as np

    def fail(msg: str) -> int:
        return _error("features", msg)
    import torch

    from .features import video_features
    from .io.atomic import replace_atomically
    from .io.frames import FramesError, load_landmarks
    from .io.spot_outputs import write_features_npz
    if not args.output.endswith(".npz"):
        return fail(f"--output must name a .npz file, got {args.output!r}")
    if args.batch_size < 1:
        return fail(f"--batch-size must be >= 1, got {args.batch_size}")
    try:
        frames = np.load(args.frames, allow_pickle=False)
    except (OSError, ValueError) as e:
        return fail(f"cannot read --frames {args.frames!r} as a .npy array: {e}")
    if frames.dtype != np.uint8 or frames.ndim != 3:
        return fail(f"--frames must hold a (T, H, W) uint8 array, got {frames.dtype} of shape {frames.shape}")
    try:
        landmarks = load_landmarks(args.landmarks)
        device = torch.device(args.device)
        if device.type == "cuda" and not torch.cuda.is_available():
            raise DeviceError("--device cuda but no CUDA device is available")
        start = time.perf_counter()
        feats = video_features(torch.from_numpy(frames).to(device), k, landmarks, batch_size=args.batch_size,
                               progress=not args.quiet, remap=args.remap).cpu().numpy()
    except (FramesError, ValueError, TypeError) as e:  # a DeviceError (RuntimeError) goes to _run: exit 4
        return fail(str(e))
    seconds = time.perf_counter() - start

    try:
        replace_atomically(args.output, lambda tmp: write_features_npz(tmp, feats, k, len(frames), args.remap,
                                                                       landmarks))
    except OSError as e:
        return fail(f"cannot write --output {args.output!r}: {e}")
    if not args.quiet:
        print(f"{PROG} features: wrote {len(feats)} samples (pairs at distance {k}) to {args.output} "
              f"({seconds:.2f} s, {len(feats) / max(seconds, 1e-9):,.1f} pairs/s on {args.device})", file=sys.stderr)
    return 0


def _evaluate(sub) -> None:
    p = _add_parser(
        sub, "evaluate", help="MEGC counts, precision, recall and F1 of spotted intervals against annotations",
        description="Compare the intervals.csv of each video folder in PRED (PRED/<video>/intervals.csv, as "
                    "`spot` writes them) with ANNOTATIONS.csv (columns video, onset, offset[, apex][, emotion]; "
                    "0-based frames) by the MEGC protocol (IoU >= threshold) and print the table per video and "
                    "in total. When the annotations have an emotion column and every intervals.csv has one (spot "
                    "with a spot_recog model), also the recognition F1 on the matched intervals and STRS; the "
                    "labels are compared as text (name the classes with spot --classes as the annotations do).")
    p.add_argument("--pred", required=True, metavar="DIR", help="folder of <video>/intervals.csv")
    p.add_argument("--gt", required=True, metavar="ANNOTATIONS.csv", help="ground-truth intervals")
    p.add_argument("--iou", type=float, default=0.5, help="IoU threshold (default 0.5)")
    p.add_argument("--matching", choices=("megc", "mean"), default="megc",
                   help="megc (default): each ground truth takes the first unmatched prediction at IoU >= the "
                        "threshold; mean: MEAN's rule, each prediction in temporal order checked against its "
                        "highest-IoU ground truth only (train reports this one)")
    p.add_argument("--json", metavar="FILE", help="also write the result as JSON")
    p.set_defaults(run=_run_evaluate)


def _run_evaluate(args: argparse.Namespace) -> int:
    import csv
    import json
    import os

    import numpy as np

    from .io.atomic import replace_atomically
    from .spotting import AnnotationError, evaluate, read_annotations

    def fail(msg: str) -> int:
        return _error("evaluate", msg)
    if not os.path.isdir(args.pred):
        return fail(f"--pred must be a folder of <video>/intervals.csv, got {args.pred!r}")
    try:
        gt = read_annotations(args.gt)
    except (AnnotationError, OSError, ValueError) as e:
        return fail(str(e))
    pred, pred_labels = {}, {}
    for video in sorted(os.listdir(args.pred)):
        path = os.path.join(args.pred, video, "intervals.csv")
        if not os.path.isfile(path):
            continue
        try:
            with open(path, newline="", encoding="utf-8") as f:
                reader = csv.DictReader(f)
                rows = list(reader)
                if "emotion" in (reader.fieldnames or ()):
                    pred_labels[video] = [r["emotion"] for r in rows]
            pred[video] = np.array([[int(r["onset"]), int(r["offset"])] for r in rows], np.int64).reshape(-1, 2)
        except (OSError, KeyError, ValueError) as e:
            return fail(f"cannot read {path}: {e}")
    # Recognition (STRS) when every prediction file and the annotations carry emotion labels.
    labelled = gt.emotions is not None and len(pred_labels) == len(pred)
    try:
        result = evaluate(pred, gt.intervals, iou_threshold=args.iou, matching=args.matching,
                          pred_labels=pred_labels if labelled else None, gt_labels=gt.emotions if labelled else None)
    except ValueError as e:
        return fail(str(e))
    print(result)
    if args.json:
        def write(tmp: str) -> None:
            with open(tmp, "w", encoding="utf-8") as f:
                json.dump(result.to_dict(), f, indent=1)
        replace_atomically(args.json, write)
    return 0


def _spot(sub) -> None:
    from .spotting import DATASET_K  # NumPy only: --help does not load torch

    p = _add_parser(
        sub, "spot", help="spot micro-expression intervals in face videos (frames -> features -> network -> intervals)",
        description="For each INPUT (a video file, a folder of images in natural order, or a .npy stack "
                    "(T, H, W) or (T, H, W, 3) of uint8 frames): detect the face on the first frame, crop every "
                    "frame to it (128x128 gray; input already 128x128 is used as is), compute MEAN's features of "
                    "the pairs (i, i + K), score them with MODEL and spot intervals with MEAN's smoothing and peak "
                    "picking. Writes OUT/<input name>/: intervals.csv (onset, offset, apex, score[, emotion]; "
                    "0-based pair indices), scores.npy, scores.png and summary.json (and features.npz with "
                    "--save-features). A video whose folder was made with the same settings, model and input is "
                    "skipped unless --force; OUT/manifest.jsonl gets a line per finished video. Many videos: give "
                    "a folder of them, a glob or a list file, and --workers N to spread them over N processes.")
    p.add_argument("inputs", nargs="+", metavar="INPUT",
                   help="video file, image folder or .npy stack; or a folder of those, a glob pattern (quoted), "
                        "or a list file (.txt, .list, .lst: one input per line)")
    p.add_argument("--model", required=True, metavar="MODEL", help="Keras file or checkpoint with a spot head")
    p.add_argument("--k-p", dest="k_p", type=int, required=True, metavar="KP",
                   help="half the expected expression length in frames (MEAN: int((N + 1) / 2), N the mean "
                        "offset - onset of the dataset's expressions)")
    p.add_argument("--p", type=float, default=0.55, help="threshold fraction: mean + p (max - mean) (default 0.55)")
    p.add_argument("--single", action="store_true", help="spot only the highest peak per video")
    p.add_argument("--classes", metavar="NAMES", help="comma-separated names of the recognition classes")
    p.add_argument("--no-fuse", dest="fuse", action="store_false", help="run the reference network")
    p.add_argument("--save-features", action="store_true",
                   help="also write each video's features.npz (what `features` writes and `train` reads)")
    _add_video_options(p, DATASET_K)
    p.set_defaults(run=_run_spot)


def _run_spot(args: argparse.Namespace) -> int:
    def fail(msg: str) -> int:
        return _error("spot", msg)
    from .io.frames import parse_face_box
    from .pipeline import SpotSettings
    k = _pair_distance(args, "spot")
    if k is None:
        return fail("give the pair distance --k K, or --dataset to use MEAN's k of a dataset")
    if args.out is None:
        return fail("give the output folder --out DIR")
    try:
        box = parse_face_box(args.face_box) if args.face_box else None
        settings = SpotSettings(
            k=k, k_p=args.k_p, p=args.p, multiple=not args.single, face_box=box, cascade=args.cascade,
            landmarks=args.landmarks, landmark_model=args.landmark_model, jpeg_roundtrip=args.jpeg,
            device=args.device, batch_size=args.batch_size, chunk=args.chunk, fuse=args.fuse,
            classes=[c.strip() for c in args.classes.split(",")] if args.classes else None, remap=args.remap,
            save_features=args.save_features)
    except InputError as e:
        return fail(str(e))
    return _run_videos(args, "spot", settings, args.model)


def _train(sub) -> None:
    from .spotting import DATASET_K  # NumPy only: --help does not load torch
    from .training.run import FIXES

    fixes = "; ".join(f"{name} ({text})" for name, text in FIXES.items())
    p = _add_parser(
        sub, "train", help="train MEAN-Spot (with CBAM) by MEAN's leave-one-subject-out protocol and evaluate it",
        description="Train one model per held-out subject (LOSO) with MEAN's protocol (shared/design/TRAINING.md): "
                    "MEAN's annotation rules, pseudo-labels from k_p, negatives downsampled 1:5, 10 spot epochs "
                    "and 100 recognition epochs on the frozen trunk, Keras's init, losses and Adam. Each fold's "
                    "fused model spots its subject's videos; TP/FP/FN are pooled over the folds as MEAN reports "
                    "them (and the recognition analysis, STRS). ANNOTATIONS: CSV with columns subject, video, "
                    "onset, apex, offset, type, emotion (frame numbers 1-based as the datasets write them). "
                    "FEATURES_DIR: the output of `meanspot-fused features VIDEOS --out FEATURES_DIR --annotations "
                    "ANNOTATIONS --dataset D` (or of spot --save-features), one <video>/features.npz (or "
                    "<subject>/<video>/features.npz) per annotated video. Writes OUT/folds/<NN>_<subject>/ (the "
                    "fold's model as model.pt and Keras model.hdf5, trainer state, scores, plots) and "
                    "OUT/summary.json and summary.md; --resume continues an interrupted run.")
    p.add_argument("annotations", metavar="ANNOTATIONS", help="annotation CSV (see above)")
    p.add_argument("features_dir", metavar="FEATURES_DIR", help="folder of the videos' feature files")
    p.add_argument("--out", required=True, metavar="RUN_DIR", help="run folder")
    p.add_argument("--dataset", required=True, choices=tuple(DATASET_K),
                   help="MEAN's dataset rules: k, emotions and classes, peaks (CASME_sq, SAMMLV: every peak)")
    p.add_argument("--k", type=int, metavar="K", help="pair distance of the feature files (default: the dataset's)")
    p.add_argument("--cbam", default="none", choices=("none", "all", "branches", "merged"),
                   help="CBAM placement (default none: MEAN's network)")
    p.add_argument("--folds", metavar="SUBJECTS", help="comma-separated held-out subjects to run (default: all)")
    p.add_argument("--seed", type=int, default=0, help="init, shuffles and dropout (default 0)")
    p.add_argument("--spot-epochs", type=int, default=10, metavar="N", help="default 10 (MEAN)")
    p.add_argument("--recog-epochs", type=int, default=100, metavar="N", help="default 100 (MEAN)")
    p.add_argument("--batch-size", type=int, default=32, metavar="N", help="default 32 (MEAN)")
    p.add_argument("--ratio", type=int, default=5, metavar="R", help="negatives per positive (default 5, MEAN)")
    p.add_argument("--p", type=float, default=0.55, help="threshold fraction (default 0.55, MEAN)")
    p.add_argument("--downsampling", choices=("mean", "numpy"), default="mean",
                   help="mean (default): MEAN's draws (Python's random, seed 1, carried across folds); numpy: "
                        "seeded per fold by --seed")
    p.add_argument("--no-recognition", dest="recognition", action="store_false",
                   help="train the spot head only (no (onset, apex) pairs needed)")
    p.add_argument("--fix", action="append", default=[], metavar="BUG",
                   help=f"fix one of MEAN's bugs (repeatable; 'all' fixes every one); by default each is "
                        f"reproduced: {fixes}")
    p.add_argument("--resume", action="store_true", help="continue the run in RUN_DIR at its first unfinished fold")
    p.add_argument("--device", default="cpu", help="cpu or cuda (default: cpu)")
    p.add_argument("--threads", type=int, metavar="T", help="torch threads (default: torch's)")
    p.add_argument("--quiet", action="store_true", help="no progress messages")
    p.set_defaults(run=_run_train)


def _run_train(args: argparse.Namespace) -> int:
    def fail(msg: str) -> int:
        return _error("train", msg)
    from .training.run import FIXES, TrainSettings, train_run
    fixes = list(FIXES) if "all" in args.fix else list(dict.fromkeys(args.fix))
    if args.threads is not None:
        if args.threads < 1:
            return fail(f"--threads must be >= 1, got {args.threads}")
        import torch
        torch.set_num_threads(args.threads)
    settings = TrainSettings(
        dataset=args.dataset, k=args.k, cbam=args.cbam,
        folds=[f.strip() for f in args.folds.split(",") if f.strip()] if args.folds else None, seed=args.seed,
        spot_epochs=args.spot_epochs, recog_epochs=args.recog_epochs, batch_size=args.batch_size, ratio=args.ratio,
        p=args.p, recognition=args.recognition, downsampling=args.downsampling, fixes=sorted(fixes))
    log = (lambda msg: None) if args.quiet else (lambda msg: print(f"{PROG} train: {msg}", file=sys.stderr))
    try:
        summary = train_run(args.annotations, args.features_dir, args.out, settings, resume=args.resume,
                            device=args.device, log=log)
    except InputError as e:  # FileError too: an annotation, feature file or option the run cannot use
        return fail(str(e))
    except OSError as e:
        return fail(f"cannot write under --out {args.out!r}: {e}")
    if not args.quiet:
        s = summary["results"]["spotting"]
        print(f"{PROG} train: {len(summary['folds_done'])} fold(s); spotting TP {s['tp']} FP {s['fp']} FN {s['fn']}, "
              f"F1 {s['f1']:.4f}; STRS {summary['results']['strs']}; {args.out}/summary.md", file=sys.stderr)
    return 0


#: The subcommands, in the order ``--help`` lists them.
COMMANDS = (_spot, _features, _predict, _evaluate, _train)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=PROG, description="Fused MEAN-Spot (with CBAM) inference.",
                                     epilog=EXIT_HELP, formatter_class=_HelpFormatter)
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for add in COMMANDS:
        add(sub)
    return parser


def _raise_interrupt(signum, frame):
    raise KeyboardInterrupt


def main(argv: Optional[List[str]] = None) -> int:
    """Run the command line with ``argv`` (default ``sys.argv[1:]``); return the exit code."""
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as e:  # argparse exits on --help (0) and on usage errors (2)
        return e.code if isinstance(e.code, int) else 2
    if args.command is None:
        parser.print_help(sys.stderr)
        return EXIT_USAGE
    # SIGTERM (a job scheduler's stop) cleans up like Ctrl-C: the partial
    # temporary output is removed and nothing is written at the output path.
    previous = None
    if threading.current_thread() is threading.main_thread():
        previous = signal.signal(signal.SIGTERM, _raise_interrupt)
    try:
        return _run(args)
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)


def _run(args: argparse.Namespace) -> int:
    """Run a subcommand, mapping what it raises to the exit-code table in this one place."""
    def report(msg: str) -> None:
        print(f"{PROG} {args.command}: {msg}", file=sys.stderr)
    try:
        return args.run(args)
    except KeyboardInterrupt:
        report("interrupted; no partial output is left behind")
        return EXIT_INTERRUPTED
    except MeanspotError as e:
        report(f"error: {e}")
        return e.exit_code
    except ImportError as e:  # an optional dependency imported without the package's message
        report(f"error: {e}")
        return EXIT_DEPENDENCY
    except RuntimeError as e:  # torch or a kernel failed on inputs the checks accepted
        report(f"error: the computation failed: {e}")
        return EXIT_FAILED
