"""MEGC evaluation of spotted intervals, and MEAN's STRS metric.

MEAN's ``recognition`` evaluation (PIPELINE.md section 5), in NumPy only:

* :func:`iou`, :func:`megc_counts`: the MEGC protocol for one video (an
  interval matches a ground truth at IoU >= 0.5, each side at most once).
* :func:`evaluate`: TP/FP/FN summed over videos, precision, recall and F1,
  and with labels the recognition F1/UF1 on the matched pairs and STRS
  (:class:`Evaluation`, with :class:`VideoCounts` per video).

Intervals are inclusive ``(onset, offset)`` frame indices, as
:mod:`meanspot_fused.spotting.intervals` returns them.
"""
from __future__ import annotations

import dataclasses
import io
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple

import numpy as np

from .intervals import _check_intervals

__all__ = ["iou", "megc_counts", "mean_pred_match", "MATCHING_RULES", "evaluate", "Evaluation", "VideoCounts"]


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


def mean_pred_match(pred, gt, iou_threshold: float = 0.5, policy: str = "greedy") -> np.ndarray:
    """MEAN's matching: for each prediction, the ground-truth row it matches, or -1.

    TRAINING.md section 8 (MEAN's mean_average_precision utils, confidence
    sort removed): predictions are taken in their row order and look at the
    ground truths from the highest IoU down (ties in the order of
    ``np.argsort(iou)[::-1]``, as MEAN). ``policy="greedy"`` (what MEAN's
    TP/FP/FN use): only the highest-IoU ground truth is checked; TP iff its
    IoU is at least the threshold and it is still unmatched, else FP. Unlike
    the MEGC rule of :func:`megc_counts`, a prediction whose best ground
    truth is taken is a FP even when it overlaps another one enough.
    ``policy="soft"`` (MEAN's AP@[.5:.95]): the first still unmatched ground
    truth at or above the threshold in that order. Returns int64 (len(pred),).
    """
    thr = _check_iou_threshold(iou_threshold)
    if policy not in ("greedy", "soft"):
        raise ValueError(f"policy must be 'greedy' or 'soft', got {policy!r}")
    p = _check_intervals(pred, "pred")
    g = _check_intervals(gt, "gt")
    return np.array([m for _, m in _match_mean(p, g, thr, policy == "soft")], dtype=np.int64)


def _match_mean(pred: np.ndarray, gt: np.ndarray, iou_threshold: float, soft: bool = False
                ) -> List[Tuple[int, int]]:
    """(pred row, gt row or -1) for every prediction, in row order (see :func:`mean_pred_match`)."""
    matched = set()
    out = []
    for q in range(len(pred)):
        best = -1
        if len(gt):
            ious = np.array([iou(pred[q, :2], gt[g, :2]) for g in range(len(gt))], dtype=np.float64)
            for g in np.argsort(ious)[::-1][:len(gt) if soft else 1]:
                if ious[g] < iou_threshold:
                    break
                if int(g) not in matched:
                    best = int(g)
                    matched.add(best)
                    break
        out.append((q, best))
    return out


MATCHING_RULES = ("megc", "mean")


def _pairs(pred: np.ndarray, gt: np.ndarray, iou_threshold: float, matching: str) -> List[Tuple[int, int]]:
    """Matched (pred row, gt row) pairs under ``matching`` ('megc': :func:`_match`, 'mean': MEAN's rule)."""
    if matching == "megc":
        return _match(pred, gt, iou_threshold)
    if matching == "mean":
        return [(q, g) for q, g in _match_mean(pred, gt, iou_threshold) if g >= 0]
    raise ValueError(f"matching must be one of {', '.join(MATCHING_RULES)}, got {matching!r}")


def _check_iou_threshold(iou_threshold) -> float:
    value = float(iou_threshold)
    if not 0.0 < value <= 1.0:
        raise ValueError(f"iou_threshold must be in (0, 1], got {iou_threshold!r}")
    return value


def megc_counts(pred, gt, iou_threshold: float = 0.5, matching: str = "megc") -> Tuple[int, int, int]:
    """(TP, FP, FN) of one video under the MEGC protocol.

    ``pred``, ``gt``: (M, 2) or (M, 3) rows ``(onset, offset[, apex])``,
    inclusive; the apex column is ignored. TP = ground truths matched (see
    :func:`_match`: IoU >= ``iou_threshold``, each side at most once),
    FP = predictions - TP, FN = ground truths - TP. ``matching="mean"``
    counts with MEAN's rule instead (:func:`mean_pred_match`).
    """
    thr = _check_iou_threshold(iou_threshold)
    p = _check_intervals(pred, "pred")
    g = _check_intervals(gt, "gt")
    tp = len(_pairs(p, g, thr, matching))
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
             gt_labels: Optional[Mapping[str, Sequence]] = None, matching: str = "megc") -> Evaluation:
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
    ``matching``: "megc" (default, see :func:`_match`) or "mean" (MEAN's
    rule, :func:`mean_pred_match`).
    """
    thr = _check_iou_threshold(iou_threshold)
    if (pred_labels is None) != (gt_labels is None):
        raise ValueError("pred_labels and gt_labels must be given together (recognition needs both)")
    videos = list(gt_by_video) + [v for v in pred_by_video if v not in gt_by_video]
    per_video, label_pairs = [], []
    for video in videos:
        p = _check_intervals(pred_by_video.get(video, ()), f"pred_by_video[{video!r}]")
        g = _check_intervals(gt_by_video.get(video, ()), f"gt_by_video[{video!r}]")
        pairs = _pairs(p, g, thr, matching)
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
