"""From one video's per-frame scores to expression intervals (MEAN's spotting).

MEAN's ``training_utils.spotting`` (PIPELINE.md section 4), in NumPy only:

* :func:`smooth`, :func:`moilanen_threshold`, :func:`find_intervals`: the
  spotting of one video, identical to MEAN's code path on the same scores;
  :func:`spot_scores` returns the smoothed curve and threshold with the
  intervals, for callers that need all three (the ``spot`` pipeline).
* :func:`recognise`: the class of each spotted interval for spot_recog models.
* :func:`k_p_from_ground_truth`: MEAN's ``k_p`` from a dataset's annotations.

Frame indices are 0-based positions in the score curve. Intervals are
inclusive: ``(onset, offset)`` covers ``offset - onset + 1`` frames.
"""
from __future__ import annotations

import dataclasses

import numpy as np

__all__ = ["DATASET_K", "smooth", "k_p_from_ground_truth", "moilanen_threshold", "find_intervals", "spot_scores",
           "SpottedCurve", "recognise"]


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


@dataclasses.dataclass(frozen=True)
class SpottedCurve:
    """What :func:`spot_scores` finds in one video's scores.

    smoothed: :func:`smooth` of the scores (at least as long as them);
    threshold: :func:`moilanen_threshold` of ``smoothed``; intervals: int64
    (M, 3) rows ``(onset, offset, apex)``, see :func:`find_intervals`.
    """
    smoothed: np.ndarray
    threshold: float
    intervals: np.ndarray


def spot_scores(scores, k_p: int, p: float = 0.55, multiple: bool = True, *,
                clip: bool = False, mean_dummy: bool = False) -> SpottedCurve:
    """Spot expression intervals in one video's per-frame scores (MEAN's method).

    1. ``smoothed = smooth(scores, k_p)``;
    2. ``threshold = moilanen_threshold(smoothed, p)``;
    3. with ``multiple``: the peaks of ``scipy.signal.find_peaks(smoothed,
       height=threshold, distance=k_p)``; otherwise the single first argmax;
    4. each peak gives ``(peak - k_p, peak + k_p, peak)``.

    Returns the smoothed curve and the threshold with the intervals, each
    computed once (callers that plot the curve or report the apex scores need
    them; recomputing them would smooth the scores twice). The intervals are
    an int64 array (M, 3) of rows ``(onset, offset, apex)``, in increasing
    apex order. As in MEAN, onset and offset are not clipped: the onset can be
    negative and the offset past the last frame (MEAN's published predictions
    contain such intervals, and the MEGC IoU is computed on them as they are).
    ``clip=True`` clips all three columns to ``[0, T - 1]``, ``T =
    len(scores)``, for users who index frames with them.

    When no peak reaches the threshold (a constant curve has none), there are
    no intervals. MEAN instead inserts a dummy interval ``(0, 0, 0)``, which
    its evaluation counts as a false positive; ``mean_dummy=True`` reproduces
    that.
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
    return SpottedCurve(smoothed, threshold, out.astype(np.int64))


def find_intervals(scores, k_p: int, p: float = 0.55, multiple: bool = True, *,
                   clip: bool = False, mean_dummy: bool = False) -> np.ndarray:
    """The intervals of :func:`spot_scores` alone: int64 (M, 3) rows ``(onset, offset, apex)``.

    Same arguments and rules as :func:`spot_scores`: MEAN's smoothing over
    ``2 * k_p`` frames, Moilanen's threshold with fraction ``p``, peaks at
    least ``k_p`` apart (or the single highest without ``multiple``), each
    peak giving ``(peak - k_p, peak + k_p, peak)``, unclipped unless ``clip``,
    and no interval (or MEAN's dummy ``(0, 0, 0)`` with ``mean_dummy``) when
    no peak reaches the threshold.
    """
    return spot_scores(scores, k_p, p, multiple, clip=clip, mean_dummy=mean_dummy).intervals


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
