"""Command line: ``meanspot-fused COMMAND ...`` (also ``python -m meanspot_fused``).

One subcommand per pipeline stage; today ``predict`` (score feature files with
a MEAN-Spot model). A subcommand is one ``_<name>(sub)`` function that adds its
parser and sets ``run`` (a function of the parsed arguments returning the exit
code); :data:`COMMANDS` lists them.

Exit codes: 0 done; 2 a bad option, model file, features file or array (the
message on stderr says which); 1 the model failed on valid inputs; 130 interrupted.
No output file is left behind unless the run completed.
"""
from __future__ import annotations

import argparse
import signal
import sys
import threading
from typing import List, Optional

PROG = "meanspot-fused"


def _predict(sub) -> None:
    p = sub.add_parser(
        "predict", help="score a features file with a Keras or PyTorch MEAN-Spot model",
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
        return 2
    except InferenceError as e:
        print(f"{PROG} predict: error: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(f"{PROG} predict: interrupted; no output written", file=sys.stderr)
        return 130
    if not args.quiet:
        rate = summary["samples"] / summary["seconds"] if summary["seconds"] > 0 else float("inf")
        print(f"{PROG} predict: wrote {', '.join(summary['heads'])} for {summary['samples']} samples to "
              f"{summary['output']} ({summary['seconds']:.2f} s, {rate:,.0f} samples/s, {summary['dtype']} on "
              f"{summary['device']}, {'fused' if summary['fused'] else 'reference'})", file=sys.stderr)
    return 0


#: The subcommands, in the order ``--help`` lists them.
COMMANDS = (_predict,)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=PROG, description="Fused MEAN-Spot (with CBAM) inference.")
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
        return 2
    # SIGTERM (a job scheduler's stop) cleans up like Ctrl-C: the partial
    # temporary output is removed and nothing is written at the output path.
    previous = None
    if threading.current_thread() is threading.main_thread():
        previous = signal.signal(signal.SIGTERM, _raise_interrupt)
    try:
        return args.run(args)
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)
