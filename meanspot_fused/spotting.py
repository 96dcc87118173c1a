"""From per-frame scores to expression intervals, and their MEGC evaluation.

The last stage of MEAN's pipeline (``training_utils.spotting`` and
``recognition`` in MEAN's code; PIPELINE.md sections 4 and 5), in NumPy only:

* :func:`smooth`, :func:`moilanen_threshold`, :func:`find_intervals`: the
  spotting of one video, identical to MEAN's code path on the same scores.
* :func:`recognise`: the class of each spotted interval for spot_recog models.
* :func:`iou`, :func:`megc_counts`, :func:`evaluate`: the MEGC protocol
  (TP/FP/FN, precision, recall, F1) and MEAN's STRS metric.
* :func:`read_annotations`, :func:`write_intervals_csv`: the CSV files of the
  command line.

Frame indices are 0-based positions in the score curve. Intervals are
inclusive: ``(onset, offset)`` covers ``offset - onset + 1`` frames.
"""
from __future__ import annotations

import csv
import dataclasses
import io
import os
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple

import numpy as np

from .io.atomic import replace_atomically

__all__ = [
    "DATASET_K", "smooth", "k_p_from_ground_truth", "moilanen_threshold", "find_intervals", "recognise", "iou",
    "megc_counts", "evaluate",
    "Evaluation", "VideoCounts", "Annotations", "AnnotationError", "read_annotations",
    "write_intervals_csv",
]


#: MEAN's pair distance k per dataset: the features of frame pairs (i, i + k)
#: make the score of frame i (about 0.1 s of frames; PIPELINE.md section 2).
DATASET_K = {"CASME_sq": 3, "SAMMLV": 20, "CASME2": 20, "SMIC_HS": 10, "SMIC_VIS": 3, "SMIC_NIR": 3}


# --------------------------------------------------------------------------------------------
# Argument checks
# --------------------------------------------------------------------------------------------

def _check_k_p(k_p) -> int:
    # bool is an int subclass; k_p=True is almost certainly a mistake.
    if isinstance(k_p, (bool, np.bool_)) or not isinstance(k_p, (int, np.integer)) or k_p < 1:
        raise ValueError(f"k_p must be an integer >= 1 (half the expected expression length in "
                         f"frames), got {k_p!r}")
    return int(k_p)


def _check_scores(scores, name: str = "scores") -> np.ndarray:
    arr = np.asarray(scores)
    # MEAN's network outputs (T, 1) and its smooth() takes column 0; accept that shape too.
    if arr.ndim == 2 and arr.shape[1] == 1:
        arr = arr[:, 0]
    if arr.ndim != 1:
        raise ValueError(f"{name} must be a 1-D array of per-frame scores (or (T, 1)), "
                         f"got shape {arr.shape}")
    if arr.size == 0:
        raise ValueError(f"{name} must hold at least one score, got an empty array")
    if not np.issubdtype(arr.dtype, np.number) or np.issubdtype(arr.dtype, np.complexfloating):
        raise ValueError(f"{name} must be real numbers, got dtype {arr.dtype}")
    arr = arr.astype(np.float64)
    if not np.all(np.isfinite(arr)):
        bad = int(np.flatnonzero(~np.isfinite(arr))[0])
        raise ValueError(f"{name} must be finite, got {arr[bad]} at index {bad}")
    return arr


def _check_p(p) -> float:
    try:
        value = float(p)
    except (TypeError, ValueError):
        raise ValueError(f"p must be a number in [0, 1], got {p!r}") from None
    if not 0.0 <= value <= 1.0:
        raise ValueError(f"p must be in [0, 1] (0: threshold at the mean, 1: at the maximum), "
                         f"got {p!r}")
    return value


def _check_intervals(intervals, name: str) -> np.ndarray:
    """(M, >=2) integer array; columns 0 and 1 are (onset, offset), inclusive."""
    arr = np.asarray(intervals)
    if arr.size == 0:
        return np.zeros((0, 2), dtype=np.int64)
    if arr.ndim != 2 or arr.shape[1] < 2:
        raise ValueError(f"{name} must have shape (M, 2) or (M, 3) as rows (onset, offset[, apex]), "
                         f"got shape {arr.shape}")
    if np.issubdtype(arr.dtype, np.floating):
        if not np.all(np.isfinite(arr)) or not np.all(arr == np.round(arr)):
            raise ValueError(f"{name} must hold whole frame indices, got non-integer values")
    elif not np.issubdtype(arr.dtype, np.integer):
        raise ValueError(f"{name} must hold integer frame indices, got dtype {arr.dtype}")
    arr = arr.astype(np.int64)
    bad = np.flatnonzero(arr[:, 1] < arr[:, 0])
    if bad.size:
        i = int(bad[0])
        raise ValueError(f"{name} must have offset >= onset in every row, got row {i}: "
                         f"onset {arr[i, 0]}, offset {arr[i, 1]}")
    return arr


# --------------------------------------------------------------------------------------------
# Spotting
# --------------------------------------------------------------------------------------------

def smooth(scores, k_p: int) -> np.ndarray:
    """MEAN's score aggregation: a centred moving average over ``2 * k_p`` frames.

    Exactly ``np.convolve(scores, np.ones(2*k_p) / (2*k_p), mode="same")`` in
    float64. The box has an even length, so "centred" means numpy's choice for
    mode "same": for ``T >= 2*k_p`` the output at ``i`` averages input frames
    ``i - k_p .. i + k_p - 1`` (missing frames count as 0, which lowers both
    ends: a constant curve gets a peak in the middle). numpy's "same" returns ``max(T, 2*k_p)``
    samples, so when ``2*k_p > T`` the curve is longer than the scores; MEAN's
    spotting runs on that longer curve, and so does :func:`find_intervals`.
    """
    k_p = _check_k_p(k_p)
    s = _check_scores(scores)
    box = np.ones(2 * k_p) / (2 * k_p)
    return np.convolve(s, box, mode="same")


def k_p_from_ground_truth(intervals) -> int:
    """MEAN's ``k_p = int((N + 1) / 2)``, N the mean ``offset - onset`` of the intervals.

    ``intervals``: (M, 2+) rows (onset, offset) of a dataset's ground-truth
    expressions (all videos together; MEAN's load_label.cal_k_p). The result
    is at least 1, so that it is a valid ``k_p`` for very short expressions.
    """
    iv = _check_intervals(intervals, "intervals")
    if iv.shape[0] == 0:
        raise ValueError("intervals must hold at least one ground-truth interval to derive k_p")
    mean_length = float(np.sum(iv[:, 1] - iv[:, 0])) / iv.shape[0]
    return max(1, int((mean_length + 1) / 2))


def moilanen_threshold(smoothed, p: float = 0.55) -> float:
    """``mean + p * (max - mean)`` of the smoothed curve (Moilanen's technique).

    Evaluated in MEAN's order (mean computed once, then ``max - mean``) so the
    float64 value is bit-identical to MEAN's.
    """
    s = _check_scores(smoothed, "smoothed")
    p = _check_p(p)
    mean = s.mean()
    return float(mean + p * (s.max() - mean))


def _local_maxima(x: np.ndarray) -> np.ndarray:
    """Indices of the local maxima of ``x``, with scipy.signal.find_peaks' rules.

    A maximum is a run of equal samples whose left and right neighbours are
    both strictly lower; the first and last samples are never maxima (a run
    touching either end has a missing neighbour). A flat run reports its
    midpoint ``(first + last) // 2``, rounding down as scipy does.
    """
    n = x.size
    if n < 3:
        return np.zeros(0, dtype=np.intp)
    # Split x into runs of equal values: run r covers starts[r] .. ends[r].
    change = np.flatnonzero(x[1:] != x[:-1]) + 1
    starts = np.concatenate(([0], change))
    ends = np.concatenate((change - 1, [n - 1]))
    values = x[starts]
    if values.size < 3:
        return np.zeros(0, dtype=np.intp)
    # Interior runs (1 .. R-2) are the only ones with two neighbours.
    inner = slice(1, values.size - 1)
    is_peak = (values[:-2] < values[inner]) & (values[2:] < values[inner])
    first, last = starts[inner][is_peak], ends[inner][is_peak]
    return ((first + last) // 2).astype(np.intp)


def _select_by_distance(peaks: np.ndarray, heights: np.ndarray, distance: int) -> np.ndarray:
    """Keep-mask that thins ``peaks`` (sorted) to at least ``distance`` apart.

    scipy's rule: visit peaks from the highest down and drop every
    still-kept neighbour closer than ``distance``. Visiting order comes from
    ``np.argsort(heights)`` read backwards, the very call scipy makes, so ties
    between equal heights resolve the same way (argsort's default sort is not
    stable; reproducing the call reproduces its order).
    """
    keep = np.ones(peaks.size, dtype=bool)
    order = np.argsort(heights)
    for j in order[::-1]:
        if not keep[j]:
            continue
        k = j - 1
        while k >= 0 and peaks[j] - peaks[k] < distance:
            keep[k] = False
            k -= 1
        k = j + 1
        while k < peaks.size and peaks[k] - peaks[j] < distance:
            keep[k] = False
            k += 1
    return keep


def _find_peaks(x: np.ndarray, height: float, distance: int) -> np.ndarray:
    """``scipy.signal.find_peaks(x, height=height, distance=distance)[0]``, in NumPy.

    Same conditions in the same order (local maxima, then height, then
    distance), so the result is identical; tests compare it with scipy on
    random curves with plateaus and ties. It keeps scipy out of the runtime
    dependencies.
    """
    peaks = _local_maxima(x)
    peaks = peaks[x[peaks] >= height]
    if distance > 1 and peaks.size > 1:
        peaks = peaks[_select_by_distance(peaks, x[peaks], distance)]
    return peaks


def find_intervals(scores, k_p: int, p: float = 0.55, multiple: bool = True, *,
                   clip: bool = False, mean_dummy: bool = False) -> np.ndarray:
    """Spot expression intervals in one video's per-frame scores (MEAN's method).

    1. ``smoothed = smooth(scores, k_p)``;
    2. ``threshold = moilanen_threshold(smoothed, p)``;
    3. with ``multiple``: the peaks of ``scipy.signal.find_peaks(smoothed,
       height=threshold, distance=k_p)``; otherwise the single first argmax;
    4. each peak gives ``(peak - k_p, peak + k_p, peak)``.

    Returns an int64 array (M, 3) of rows ``(onset, offset, apex)``, in
    increasing apex order. As in MEAN, onset and offset are not clipped: the
    onset can be negative and the offset past the last frame (MEAN's published
    predictions contain such intervals, and the MEGC IoU is computed on them
    as they are). ``clip=True`` clips all three columns to ``[0, T - 1]``,
    ``T = len(scores)``, for users who index frames with them.

    When no peak reaches the threshold (a constant curve has none), the result
    is empty. MEAN instead inserts a dummy interval ``(0, 0, 0)``, which its
    evaluation counts as a false positive; ``mean_dummy=True`` reproduces that.
    """
    k_p = _check_k_p(k_p)
    s = _check_scores(scores)
    p = _check_p(p)
    smoothed = smooth(s, k_p)
    threshold = moilanen_threshold(smoothed, p)
    if multiple:
        peaks = _find_peaks(smoothed, threshold, k_p).astype(np.int64)
    else:
        peaks = np.array([int(np.argmax(smoothed))], dtype=np.int64)
    out = np.stack([peaks - k_p, peaks + k_p, peaks], axis=1) if peaks.size else np.zeros((0, 3), np.int64)
    if peaks.size == 0 and mean_dummy:
        out = np.zeros((1, 3), dtype=np.int64)
    if clip:
        out = np.clip(out, 0, s.size - 1)
    return out.astype(np.int64)


def recognise(recog_probs, intervals, k_p: int, *, ties: str = "smallest") -> np.ndarray:
    """The class of each interval for spot_recog models (MEAN's "Case 2").

    For an interval with apex ``a``, the class is the most common per-frame
    argmax of ``recog_probs`` over frames ``[a - k_p, a)``, the ``k_p`` frames
    before the apex. The window is clipped to the frames that exist: it starts
    at ``max(0, a - k_p)`` and ends at ``min(a, T)``; an apex at 0 uses frame 0
    (MEAN's ``max(1, a)``), and a window lying wholly past the last frame uses
    the last frame (MEAN would skip the interval).

    ``ties="smallest"``: among equally common classes the smallest index wins
    (``np.bincount(...).argmax()``). ``ties="first"``: the class seen first
    in the window wins, which is what MEAN's ``Counter.most_common`` does.

    ``recog_probs``: (T, C) scores per frame (probabilities or logits; only
    their argmax is used). ``intervals``: (M, 3) rows ``(onset, offset, apex)``.
    Returns int64 (M,).
    """
    k_p = _check_k_p(k_p)
    if ties not in ("smallest", "first"):
        raise ValueError(f"ties must be 'smallest' or 'first', got {ties!r}")
    probs = np.asarray(recog_probs)
    if probs.ndim != 2 or probs.shape[0] < 1 or probs.shape[1] < 1:
        raise ValueError(f"recog_probs must have shape (T, C) with T, C >= 1, got {probs.shape}")
    if not np.all(np.isfinite(probs)):
        raise ValueError("recog_probs must be finite")
    iv = np.asarray(intervals)
    if iv.size == 0:
        return np.zeros(0, dtype=np.int64)
    if iv.ndim != 2 or iv.shape[1] != 3:
        raise ValueError(f"intervals must have shape (M, 3) as rows (onset, offset, apex), "
                         f"got shape {iv.shape}")
    n_frames, n_classes = probs.shape
    frame_class = np.argmax(probs, axis=1)
    out = np.empty(iv.shape[0], dtype=np.int64)
    for i, apex in enumerate(iv[:, 2].astype(np.int64)):
        start = min(max(apex - k_p, 0), n_frames - 1)
        stop = min(max(apex, start + 1), n_frames)
        window = frame_class[start:stop]
        counts = np.bincount(window, minlength=n_classes)
        if ties == "smallest":
            out[i] = int(counts.argmax())
        else:
            tied = counts == counts.max()
            # First position in the window of any tied class.
            out[i] = int(window[np.flatnonzero(tied[window])[0]])
    return out


# --------------------------------------------------------------------------------------------
# MEGC evaluation
# --------------------------------------------------------------------------------------------

def iou(a, b) -> float:
    """IoU of two inclusive intervals ``(onset, offset)``, MEGC's definition.

    ``inter = min(offsets) - max(onsets) + 1`` (0 when they do not overlap),
    ``union = len_a + len_b - inter`` with ``len = offset - onset + 1``.
    """
    inter = min(a[1], b[1]) - max(a[0], b[0]) + 1
    if inter <= 0:
        return 0.0
    union = (a[1] - a[0] + 1) + (b[1] - b[0] + 1) - inter
    return float(inter) / float(union)


def _match(pred: np.ndarray, gt: np.ndarray, iou_threshold: float) -> List[Tuple[int, int]]:
    """Matched (pred row, gt row) pairs of one video, in ground-truth onset order.

    Ground truths in onset order (ties by offset, then input order) each take
    the first not yet matched prediction, in the same order, whose IoU is at
    least the threshold. Each side is matched at most once.
    """
    pred_order = np.lexsort((pred[:, 1], pred[:, 0])) if len(pred) else np.zeros(0, np.intp)
    gt_order = np.lexsort((gt[:, 1], gt[:, 0])) if len(gt) else np.zeros(0, np.intp)
    taken = np.zeros(len(pred), dtype=bool)
    pairs = []
    for g in gt_order:
        for q in pred_order:
            if not taken[q] and iou(pred[q, :2], gt[g, :2]) >= iou_threshold:
                taken[q] = True
                pairs.append((int(q), int(g)))
                break
    return pairs


def _check_iou_threshold(iou_threshold) -> float:
    value = float(iou_threshold)
    if not 0.0 < value <= 1.0:
        raise ValueError(f"iou_threshold must be in (0, 1], got {iou_threshold!r}")
    return value


def megc_counts(pred, gt, iou_threshold: float = 0.5) -> Tuple[int, int, int]:
    """(TP, FP, FN) of one video under the MEGC protocol.

    ``pred``, ``gt``: (M, 2) or (M, 3) rows ``(onset, offset[, apex])``,
    inclusive; the apex column is ignored. TP = ground truths matched (see
    :func:`_match`: IoU >= ``iou_threshold``, each side at most once),
    FP = predictions - TP, FN = ground truths - TP.
    """
    thr = _check_iou_threshold(iou_threshold)
    p = _check_intervals(pred, "pred")
    g = _check_intervals(gt, "gt")
    tp = len(_match(p, g, thr))
    return tp, len(p) - tp, len(g) - tp


@dataclasses.dataclass
class VideoCounts:
    """Spotting counts of one video."""
    video: str
    tp: int
    fp: int
    fn: int


def _prf(tp: int, fp: int, fn: int) -> Tuple[float, float, float]:
    """Precision, recall, F1; each 0.0 where its denominator is 0."""
    precision = tp / (tp + fp) if tp + fp else 0.0
    recall = tp / (tp + fn) if tp + fn else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return precision, recall, f1


@dataclasses.dataclass
class Evaluation:
    """Result of :func:`evaluate`. ``to_dict()`` is JSON-ready; ``str()`` is a report.

    Recognition fields are None unless labels were given. Over the matched
    (TP) pairs, for each class ``c`` appearing in them (on either side),
    one-vs-rest precision and recall are computed (0 when undefined);
    ``recognition_f1`` is the harmonic mean of their class averages
    (macro precision, macro recall), the "F1-score analysis" that the STRS
    reference (github genbing99/STRS-Metric) multiplies into STRS;
    ``recognition_uf1`` is the plain mean of per-class F1 (UF1).
    ``strs = f1 * recognition_f1``. With no matched pair both are 0.
    """
    tp: int
    fp: int
    fn: int
    precision: float
    recall: float
    f1: float
    iou_threshold: float
    per_video: List[VideoCounts]
    recognition_f1: Optional[float] = None
    recognition_uf1: Optional[float] = None
    recognition_per_class: Optional[Dict[str, Dict[str, float]]] = None
    strs: Optional[float] = None

    def to_dict(self) -> Dict[str, Any]:
        return dataclasses.asdict(self)

    def __str__(self) -> str:
        out = io.StringIO()
        width = max([5] + [len(v.video) for v in self.per_video])
        out.write(f"{'video':<{width}}  {'TP':>5} {'FP':>5} {'FN':>5}\n")
        for v in self.per_video:
            out.write(f"{v.video:<{width}}  {v.tp:>5} {v.fp:>5} {v.fn:>5}\n")
        out.write(f"{'total':<{width}}  {self.tp:>5} {self.fp:>5} {self.fn:>5}\n")
        out.write(f"spotting (IoU >= {self.iou_threshold:g}): precision {self.precision:.4f}  "
                  f"recall {self.recall:.4f}  F1 {self.f1:.4f}\n")
        if self.recognition_f1 is not None:
            out.write(f"recognition on TP pairs: F1 {self.recognition_f1:.4f}  "
                      f"UF1 {self.recognition_uf1:.4f}\n")
            out.write(f"STRS {self.strs:.4f}\n")
        return out.getvalue()


def _recognition_scores(pairs: List[Tuple[Any, Any]]):
    """(macro F1, UF1, per-class table) of (predicted, true) label pairs."""
    if not pairs:
        return 0.0, 0.0, {}
    classes = sorted({str(x) for pair in pairs for x in pair})
    table = {}
    for c in classes:
        tp = sum(1 for pr, tr in pairs if str(pr) == c and str(tr) == c)
        fp = sum(1 for pr, tr in pairs if str(pr) == c and str(tr) != c)
        fn = sum(1 for pr, tr in pairs if str(pr) != c and str(tr) == c)
        precision, recall, f1 = _prf(tp, fp, fn)
        table[c] = {"tp": tp, "fp": fp, "fn": fn, "precision": precision, "recall": recall, "f1": f1}
    macro_p = float(np.mean([t["precision"] for t in table.values()]))
    macro_r = float(np.mean([t["recall"] for t in table.values()]))
    macro_f1 = 2 * macro_p * macro_r / (macro_p + macro_r) if macro_p + macro_r else 0.0
    uf1 = float(np.mean([t["f1"] for t in table.values()]))
    return macro_f1, uf1, table


def evaluate(pred_by_video: Mapping[str, Any], gt_by_video: Mapping[str, Any], iou_threshold: float = 0.5,
             pred_labels: Optional[Mapping[str, Sequence]] = None,
             gt_labels: Optional[Mapping[str, Sequence]] = None) -> Evaluation:
    """MEGC spotting scores over a set of videos, and STRS when labels are given.

    ``pred_by_video``, ``gt_by_video``: video name -> intervals (M, 2) or
    (M, 3). A video missing on one side has no intervals there (all its
    predictions are FP, or all its ground truths FN). Counts are summed over
    videos, then precision, recall and F1 come from the sums (0 where
    undefined). ``per_video`` lists the ground-truth videos in their order,
    then videos with predictions only.

    ``pred_labels``, ``gt_labels`` (both or neither): video name -> one label
    per interval, in the intervals' row order (ints or strings, compared as
    strings). See :class:`Evaluation` for the recognition scores and STRS.
    """
    thr = _check_iou_threshold(iou_threshold)
    if (pred_labels is None) != (gt_labels is None):
        raise ValueError("pred_labels and gt_labels must be given together (recognition needs both)")
    videos = list(gt_by_video) + [v for v in pred_by_video if v not in gt_by_video]
    per_video, label_pairs = [], []
    for video in videos:
        p = _check_intervals(pred_by_video.get(video, ()), f"pred_by_video[{video!r}]")
        g = _check_intervals(gt_by_video.get(video, ()), f"gt_by_video[{video!r}]")
        pairs = _match(p, g, thr)
        per_video.append(VideoCounts(str(video), len(pairs), len(p) - len(pairs), len(g) - len(pairs)))
        if pred_labels is not None:
            pl = list(pred_labels.get(video, ()))
            gl = list(gt_labels.get(video, ()))
            if len(pl) != len(p):
                raise ValueError(f"pred_labels[{video!r}] must have one label per predicted interval "
                                 f"({len(p)}), got {len(pl)}")
            if len(gl) != len(g):
                raise ValueError(f"gt_labels[{video!r}] must have one label per ground-truth interval "
                                 f"({len(g)}), got {len(gl)}")
            label_pairs.extend((pl[q], gl[t]) for q, t in pairs)
    tp = sum(v.tp for v in per_video)
    fp = sum(v.fp for v in per_video)
    fn = sum(v.fn for v in per_video)
    precision, recall, f1 = _prf(tp, fp, fn)
    result = Evaluation(tp, fp, fn, precision, recall, f1, thr, per_video)
    if pred_labels is not None:
        macro_f1, uf1, table = _recognition_scores(label_pairs)
        result.recognition_f1 = macro_f1
        result.recognition_uf1 = uf1
        result.recognition_per_class = table
        result.strs = f1 * macro_f1
    return result


# --------------------------------------------------------------------------------------------
# CSV files
# --------------------------------------------------------------------------------------------

class AnnotationError(ValueError):
    """A ground-truth CSV file that does not follow the documented format."""


@dataclasses.dataclass
class Annotations:
    """Ground truth read by :func:`read_annotations`, keyed by video name.

    ``intervals[video]``: int64 (M, 2) rows (onset, offset) in file order;
    ``apex`` / ``emotions``: per video, one entry per row, or None when the
    file has no such column.
    """
    intervals: Dict[str, np.ndarray]
    apex: Optional[Dict[str, np.ndarray]] = None
    emotions: Optional[Dict[str, List[str]]] = None


_REQUIRED = ("video", "onset", "offset")
_OPTIONAL = ("apex", "emotion", "subject")


def read_annotations(path) -> Annotations:
    """Read a ground-truth CSV: header ``video,onset,offset[,apex][,emotion]``.

    Columns may come in any order; names are matched case-insensitively after
    stripping spaces. onset/offset/apex are integer frame indices, 0-based
    like the score curve (the datasets number frames from 1; MEAN's
    load_label subtracts 1), with offset >= onset. An optional ``subject`` column
    (STRS-Metric's files) makes the key ``"<subject>/<video>"``, since video
    names repeat across subjects there. Any other column is an error, so that
    a misspelt name is not silently ignored.

    Raises :class:`AnnotationError` naming the file, line and column.
    """
    path = os.fspath(path)
    try:
        handle = open(path, newline="", encoding="utf-8-sig")
    except OSError as exc:
        raise AnnotationError(f"{path}: cannot open the annotation file ({exc.strerror})") from None
    with handle:
        reader = csv.reader(handle)
        try:
            header = next(reader)
        except StopIteration:
            raise AnnotationError(f"{path}: empty file; expected a header line "
                                  f"'video,onset,offset[,apex][,emotion]'") from None
        names = [h.strip().lower() for h in header]
        missing = [c for c in _REQUIRED if c not in names]
        if missing:
            raise AnnotationError(f"{path}, line 1: the header must name the columns video, onset, "
                                  f"offset; missing {', '.join(missing)} (header: {','.join(header)})")
        unknown = [h for h in names if h not in _REQUIRED + _OPTIONAL]
        if unknown:
            raise AnnotationError(f"{path}, line 1: unknown column(s) {', '.join(unknown)}; expected "
                                  f"video, onset, offset and optionally apex, emotion, subject")
        dup = sorted({h for h in names if names.count(h) > 1})
        if dup:
            raise AnnotationError(f"{path}, line 1: column(s) named twice: {', '.join(dup)}")
        col = {h: i for i, h in enumerate(names)}
        rows: Dict[str, List[Tuple[int, int, int, str]]] = {}
        for row in reader:
            line = reader.line_num
            if not row or all(not cell.strip() for cell in row):
                continue
            if len(row) != len(names):
                raise AnnotationError(f"{path}, line {line}: expected {len(names)} fields as in the "
                                      f"header, got {len(row)}")

            def integer(name: str) -> int:
                text = row[col[name]].strip()
                try:
                    return int(text)
                except ValueError:
                    raise AnnotationError(f"{path}, line {line}, column {name}: expected an integer "
                                          f"frame index, got {text!r}") from None

            video = row[col["video"]].strip()
            if not video:
                raise AnnotationError(f"{path}, line {line}, column video: empty video name")
            if "subject" in col:
                video = f"{row[col['subject']].strip()}/{video}"
            onset, offset = integer("onset"), integer("offset")
            if offset < onset:
                raise AnnotationError(f"{path}, line {line}, column offset: expected offset >= onset "
                                      f"({onset}), got {offset}")
            apex = integer("apex") if "apex" in col else -1
            emotion = row[col["emotion"]].strip() if "emotion" in col else ""
            rows.setdefault(video, []).append((onset, offset, apex, emotion))
    intervals = {v: np.array([r[:2] for r in rs], dtype=np.int64) for v, rs in rows.items()}
    apex = {v: np.array([r[2] for r in rs], dtype=np.int64) for v, rs in rows.items()} if "apex" in col else None
    emotions = {v: [r[3] for r in rs] for v, rs in rows.items()} if "emotion" in col else None
    return Annotations(intervals, apex, emotions)


def write_intervals_csv(path, intervals, scores, emotions: Optional[Sequence] = None) -> None:
    """Write one video's intervals as CSV: ``onset,offset,apex,score[,emotion]``.

    ``intervals``: (M, 3) rows (onset, offset, apex); ``scores``: M numbers
    (e.g. the smoothed score at each apex), written with full float
    precision (``repr``) so they read back bit-exactly; ``emotions``: M labels.
    The file is written to a temporary file in the same folder and moved into
    place with ``os.replace``, so a reader never sees a partial file.
    """
    path = os.fspath(path)
    iv = np.asarray(intervals)
    if iv.size == 0:
        iv = np.zeros((0, 3), dtype=np.int64)
    if iv.ndim != 2 or iv.shape[1] != 3:
        raise ValueError(f"intervals must have shape (M, 3) as rows (onset, offset, apex), got {iv.shape}")
    iv = _check_intervals(iv, "intervals")
    sc = np.asarray(scores, dtype=np.float64).reshape(-1)
    if sc.size != iv.shape[0]:
        raise ValueError(f"scores must have one value per interval ({iv.shape[0]}), got {sc.size}")
    if emotions is not None and len(emotions) != iv.shape[0]:
        raise ValueError(f"emotions must have one label per interval ({iv.shape[0]}), got {len(emotions)}")

    def write(tmp: str) -> None:
        with open(tmp, "w", newline="", encoding="utf-8") as handle:
            writer = csv.writer(handle, lineterminator="\n")
            writer.writerow(["onset", "offset", "apex", "score"] + (["emotion"] if emotions is not None else []))
            for i in range(iv.shape[0]):
                row = [int(iv[i, 0]), int(iv[i, 1]), int(iv[i, 2]), repr(float(sc[i]))]
                if emotions is not None:
                    row.append(str(emotions[i]))
                writer.writerow(row)
            handle.flush()
            os.fsync(handle.fileno())
    replace_atomically(path, write)
