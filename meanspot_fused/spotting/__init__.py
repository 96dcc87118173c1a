"""The spotting stage: per-frame scores -> expression intervals, and their MEGC evaluation.

* :mod:`.intervals`: :func:`smooth`, :func:`moilanen_threshold`,
  :func:`find_intervals` / :func:`spot_scores`, :func:`recognise`,
  :func:`k_p_from_ground_truth` (MEAN's spotting of one video).
* :mod:`.evaluation`: :func:`iou`, :func:`megc_counts`, :func:`evaluate`
  (MEGC's TP/FP/FN, precision, recall, F1; recognition F1 and STRS).

The CSV files (ground truth in, intervals out) are in
:mod:`meanspot_fused.io.intervals`; their names stay importable from here,
where they were before the split.
"""
from .evaluation import Evaluation, VideoCounts, evaluate, iou, megc_counts
from .intervals import (DATASET_K, SpottedCurve, find_intervals, k_p_from_ground_truth, moilanen_threshold,
                        recognise, smooth, spot_scores)

# Loaded on first use: io.intervals imports this package's interval checks, so an
# eager import here would find io.intervals half-initialised whenever it is the
# module imported first.
_IO_NAMES = ("Annotations", "AnnotationError", "read_annotations", "write_intervals_csv")


def __getattr__(name):
    if name in _IO_NAMES:
        from ..io import intervals as interval_files
        value = getattr(interval_files, name)
        globals()[name] = value
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__():
    return sorted(set(globals()) | set(_IO_NAMES))


__all__ = [
    "DATASET_K", "smooth", "k_p_from_ground_truth", "moilanen_threshold", "find_intervals", "spot_scores",
    "SpottedCurve", "recognise", "iou", "megc_counts", "evaluate", "Evaluation", "VideoCounts", "Annotations",
    "AnnotationError", "read_annotations", "write_intervals_csv",
]
