"""MEAN's evaluation of a LOSO run: per-fold spotting, pooled counts, analysis on TPs, STRS (TRAINING.md section 8).

A fold's inputs are, per video of its test subject, the spot scores (n - k,)
of its spotting samples (sample ``i`` = frame pair ``(i, i + k)``) and, for
the analysis, the recognition head's outputs (n - k, C) on the same samples.
Ground-truth intervals are 0-based inclusive frames, compared with sample
indices directly (U:46). :class:`MeanEvaluation` accumulates every fold and
pools TP/FP/FN over all of them (T:159-160): F1 comes from the pooled counts,
not from a mean of per-fold F1s.
"""
from __future__ import annotations

import dataclasses
import io
import math
from typing import Any, Dict, List, Mapping, Optional, Sequence

import numpy as np

from ..errors import InputError
from ..spotting.evaluation import _prf, mean_pred_match
from ..spotting.intervals import find_intervals, recognise
from .annotations import GroundTruth
from .labels import RECOGNITION_CLASSES

__all__ = ["MULTIPLE_PEAKS", "AP_THRESHOLDS", "spot_video", "analysis_metrics", "FoldResult", "MeanEvaluation",
           "summary_markdown"]

#: Datasets spotted with every peak above the threshold (find_peaks, distance k_p); the
#: others take the single highest (P:33-36, U:36-44).
MULTIPLE_PEAKS = ("CASME_sq", "SAMMLV")

#: The IoU thresholds of MEAN's COCO AP@[.5:.95] (T:200).
AP_THRESHOLDS = tuple(float(t) for t in np.round(np.arange(0.5, 1.0, 0.05), 2))


def spot_video(scores, k_p: int, multiple: bool, p: float = 0.55, *, no_peak_dummy: bool = True) -> np.ndarray:
    """MEAN's spotting of one video (U:27-44): int64 (M, 3) rows ``(onset, offset, apex)``.

    Smoothing over ``2 k_p``, Moilanen's threshold with ``p``, peaks by
    find_peaks(height, distance=k_p) (``multiple``) or the first argmax;
    each peak gives ``[peak - k_p, peak + k_p]``, unclipped. Bug 9d: a video
    without a peak gets MEAN's dummy ``(0, 0, 0)``, matched like any
    prediction (so usually a FP); ``no_peak_dummy=False`` (the fix) gives
    no interval there.
    """
    return find_intervals(scores, k_p, p, multiple, mean_dummy=no_peak_dummy)


def _nan_to_zero(values: List[float]) -> List[float]:
    return [0.0 if math.isnan(x) else x for x in values]


def _mean(values: List[float]) -> float:
    """np.mean as MEAN uses it: NaN for an empty list."""
    return float(np.mean(values)) if values else float("nan")


def _ratio(num: int, den: int) -> float:
    """``num / den`` with NumPy's integer semantics (0/0 is NaN, not an error), as MEAN's numpy counts give."""
    return num / den if den else float("nan")


def analysis_metrics(gt_labels: Sequence[int], pred_labels: Sequence[int], n_classes: int, *,
                     uar_nan_to_zero: bool = False) -> Dict[str, Any]:
    """MEAN's recognition_evaluation (U:166-216) on (ground truth, prediction) label pairs.

    Per class ``c`` (one-vs-rest): sklearn's confusion matrix of the binary
    vectors; a class whose two vectors hold a single value between them
    (no GT and no prediction of it, or every pair being ``(c, c)``) gives a
    1x1 matrix that MEAN skips. Otherwise F1_c = 2TP/(2TP+FP+FN), recall_c,
    precision_c (NaN for 0/0). Precision and recall lists have NaN -> 0;
    ``precision``/``recall`` are their means, ``f1`` = 2PR/(P+R) (the
    "analysis F1" of STRS; NaN when P+R = 0), ``uf1`` = mean F1_c. Bug 9i:
    ``uar`` = mean recall_c WITHOUT the NaN cleaning, so a class predicted
    but absent from the GT makes it NaN; ``uar_nan_to_zero=True`` (the fix)
    cleans it like the recall list (then ``uar == recall``). With no
    evaluable class every value is NaN, as MEAN's means of empty lists.
    """
    gt = np.asarray(gt_labels, dtype=np.int64).reshape(-1)
    pred = np.asarray(pred_labels, dtype=np.int64).reshape(-1)
    if gt.shape != pred.shape:
        raise InputError(f"gt_labels and pred_labels must pair up, got {gt.size} and {pred.size} labels")
    per_class: Dict[int, Dict[str, float]] = {}
    for c in range(n_classes):
        g, q = gt == c, pred == c
        if np.unique(np.concatenate((g, q))).size < 2:
            continue
        tp, fp = int(np.sum(g & q)), int(np.sum(~g & q))
        fn, tn = int(np.sum(g & ~q)), int(np.sum(~g & ~q))
        per_class[c] = {"tp": tp, "fp": fp, "fn": fn, "tn": tn, "f1": 2 * tp / (2 * tp + fp + fn),
                        "recall": _ratio(tp, tp + fn), "precision": _ratio(tp, tp + fp)}
    precision = _mean(_nan_to_zero([t["precision"] for t in per_class.values()]))
    recall = _mean(_nan_to_zero([t["recall"] for t in per_class.values()]))
    recalls = [t["recall"] for t in per_class.values()]
    uar = _mean(_nan_to_zero(recalls) if uar_nan_to_zero else recalls)
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else float("nan")
    return {"n": int(gt.size), "precision": precision, "recall": recall, "f1": f1,
            "uf1": _mean([t["f1"] for t in per_class.values()]), "uar": uar, "per_class": per_class}


@dataclasses.dataclass
class FoldResult:
    """One fold's spotting and what it adds to the analysis.

    ``intervals[key]``: (M, 3) rows (onset, offset, apex) spotted in video
    ``key``; ``matches[key]``: (M,) the ground-truth expression each matched
    or -1 (FP). ``pred_labels`` / ``gt_tp_labels``: MEAN's pred_list and
    gt_tp_list entries of this fold (gt -1 for a FP); with bug 9c they may
    differ in length.
    """
    fold: int
    subject: str
    k_p: int
    tp: int
    fp: int
    fn: int
    intervals: Dict[str, np.ndarray]
    matches: Dict[str, np.ndarray]
    analysed: bool
    pred_labels: List[int]
    gt_tp_labels: List[int]


class MeanEvaluation:
    """Accumulates the folds of a LOSO run and reports MEAN's metrics (section 8).

    ``multiple``: every peak (default for CAS(ME)^2, SAMM-LV) or one argmax
    peak per video (the other datasets). Bug options, default MEAN:
    ``no_peak_dummy`` (9d, see :func:`spot_video`), ``align_analysis_lists``
    (9c: MEAN appends the predicted label of a TP whose GT emotion has no
    class, e.g. 'others', then fails on the GT label, so every later pair
    is shifted by one; the same happens to every interval of a video whose
    first expression starts past its last sample; True drops such an
    interval from both lists), ``uar_nan_to_zero``
    (9i, see :func:`analysis_metrics`). Matching is MEAN's
    (:func:`~meanspot_fused.spotting.evaluation.mean_pred_match`).
    """

    def __init__(self, gt: GroundTruth, *, p: float = 0.55, multiple: Optional[bool] = None,
                 iou_threshold: float = 0.5, no_peak_dummy: bool = True, align_analysis_lists: bool = False,
                 uar_nan_to_zero: bool = False):
        self.gt = gt
        self.p = p
        self.multiple = gt.dataset in MULTIPLE_PEAKS if multiple is None else bool(multiple)
        self.iou_threshold = iou_threshold
        self.no_peak_dummy = no_peak_dummy
        self.align_analysis_lists = align_analysis_lists
        self.uar_nan_to_zero = uar_nan_to_zero
        self.classes = RECOGNITION_CLASSES[gt.dataset]
        self.folds: Dict[int, FoldResult] = {}
        self._videos = {v.key: v for v in gt.videos}

    def add_fold(self, fold: int, k_p: int, scores: Mapping[str, Any],
                 recog_probs: Optional[Mapping[str, Any]] = None) -> FoldResult:
        """Spot fold ``fold``'s test videos and record its counts and analysis pairs.

        ``scores["<subject>/<video>"]``: (n - k,) or (n - k, 1) spot scores of
        every video of the fold's subject. ``recog_probs``: the same keys,
        (n - k, C) recognition outputs; None when the fold trained no
        recognition head (MEAN then leaves its intervals out of the
        analysis, T:175). Folds may come in any order; MEAN's lists are
        joined in fold order.
        """
        subjects = self.gt.subjects
        if not 0 <= fold < len(subjects):
            raise InputError(f"fold must be in [0, {len(subjects) - 1}] (one per subject), got {fold}")
        if fold in self.folds:
            raise InputError(f"fold {fold} (subject {subjects[fold]}) was already added")
        subject = subjects[fold]
        videos = self.gt.subject_videos(subject)
        result = FoldResult(fold, subject, int(k_p), 0, 0, 0, {}, {}, recog_probs is not None, [], [])
        for video in videos:
            if video.key not in scores:
                raise InputError(f"scores has no entry for video {video.key} of fold {fold}")
            s = np.asarray(scores[video.key])
            pred = spot_video(s, k_p, self.multiple, self.p, no_peak_dummy=self.no_peak_dummy)
            truth = video.intervals()[:, [0, 2]]
            match = mean_pred_match(pred[:, :2], truth, self.iou_threshold)
            tp = int(np.sum(match >= 0))
            result.tp += tp
            result.fp += len(pred) - tp
            result.fn += len(truth) - tp
            result.intervals[video.key] = pred
            result.matches[video.key] = match
            if recog_probs is not None:
                self._analyse(result, video, np.asarray(recog_probs[video.key]) if video.key in recog_probs
                              else None, pred, match, k_p)
        self.folds[fold] = result
        return result

    def _analyse(self, result: FoldResult, video, probs, pred, match, k_p) -> None:
        """MEAN's recognition() for one video (U:118-164): pred_list and gt_tp_list entries."""
        if probs is None:
            raise InputError(f"recog_probs has no entry for video {video.key} of fold {result.fold}")
        if probs.ndim != 2 or probs.shape[1] != len(self.classes):
            raise InputError(f"recog_probs[{video.key!r}] must have shape (samples, {len(self.classes)}), "
                             f"got {probs.shape}")
        # U:146 reads the sample at the video's first GT onset after the prediction is recorded: a
        # video whose first expression starts past its last sample fails there for every interval.
        first_onset_fails = video.expressions[0].onset >= probs.shape[0]
        for (onset, offset, apex), g in zip(pred, match):
            peak = max(0, int(apex))
            if peak >= probs.shape[0]:
                # MEAN indexes the peak's sample first (U:132) and drops the interval on the IndexError.
                continue
            label = int(recognise(probs, np.array([[onset, offset, peak]]), k_p, ties="first")[0])
            emotion = video.expressions[g].emotion if g >= 0 else None
            if first_onset_fails or (g >= 0 and emotion not in self.classes):
                # MEAN's handler (U:153-155) has recorded the prediction but not its GT (bug 9c).
                if not self.align_analysis_lists:
                    result.pred_labels.append(label)
                continue
            result.pred_labels.append(label)
            result.gt_tp_labels.append(self.classes.index(emotion) if g >= 0 else -1)

    # ----------------------------------------------------------------------------------------
    # Pooled results
    # ----------------------------------------------------------------------------------------

    def counts(self) -> Dict[str, float]:
        """Pooled spotting TP, FP, FN and precision, recall, F1 from them (T:159-160, 189-199)."""
        tp = sum(f.tp for f in self.folds.values())
        fp = sum(f.fp for f in self.folds.values())
        fn = sum(f.fn for f in self.folds.values())
        precision, recall, f1 = _prf(tp, fp, fn)
        return {"tp": tp, "fp": fp, "fn": fn, "precision": precision, "recall": recall, "f1": f1}

    def _spotted(self):
        """(fold result, video, intervals) of every spotted video, folds in order (MEAN's metric_final order)."""
        return [(self.folds[f], self._videos[key], pred) for f in sorted(self.folds)
                for key, pred in self.folds[f].intervals.items()]

    def average_precision(self, iou_thresholds: Sequence[float] = AP_THRESHOLDS) -> float:
        """MEAN's COCO AP@[.5:.95] (T:200; Q:33-67, Q2:129-182), 'soft' matching.

        Per threshold: every prediction of every video, in order (no
        confidence sort), is a TP or FP under
        :func:`~meanspot_fused.spotting.evaluation.mean_pred_match`'s soft
        policy; precision and recall are cumulated over that order (recall
        over every ground truth), AP is VOC's all-points area; the result
        is the float32 mean over the thresholds, as MEAN stores it.
        """
        spotted = self._spotted()
        n_gt = sum(len(video.expressions) for _, video, _ in spotted)
        aps = []
        for t in iou_thresholds:
            hits = np.concatenate([mean_pred_match(pred[:, :2], video.intervals()[:, [0, 2]], t, "soft") >= 0
                                   for _, video, pred in spotted] or [np.zeros(0, bool)]).astype(np.float64)
            tp, fp = np.cumsum(hits), np.cumsum(1.0 - hits)
            recall = np.concatenate(([0.0], tp / max(float(n_gt), 1.0), [1.0]))
            precision = np.concatenate(([0.0], tp / np.maximum(tp + fp, np.finfo(np.float64).eps), [0.0]))
            for i in range(precision.size - 1, 0, -1):
                precision[i - 1] = max(precision[i - 1], precision[i])
            ids = np.flatnonzero(recall[1:] != recall[:-1])
            aps.append(np.sum((recall[ids + 1] - recall[ids]) * precision[ids + 1]))
        return float(np.array(aps, dtype=np.float32).reshape(-1, 1).mean(axis=1).mean(axis=0))

    def apex_scores(self) -> Dict[str, float]:
        """MEAN's ASR and MAE (U:219-231) from the FIRST interval and FIRST ground truth of each video.

        The predicted apex is that interval's onset + k_p (MEAN's dummy [0, 0]
        thus has apex k_p); ASR counts ``onset < apex < offset`` of the
        ground truth (strict), MAE averages ``|apex - GT apex|``. Videos
        without an interval (possible only without the dummy) are left out,
        where MEAN would fail.
        """
        hits, errors = [], []
        for result, video, pred in self._spotted():
            if len(pred) == 0:
                continue
            apex, first = int(pred[0, 0]) + result.k_p, video.expressions[0]
            hits.append(first.onset < apex < first.offset)
            errors.append(abs(apex - first.apex))
        return {"asr": _mean([float(h) for h in hits]), "mae": _mean([float(e) for e in errors])}

    def analysis_pairs(self):
        """(gt labels, predicted labels) of the TPs, as MEAN pairs its two lists (T:213-218)."""
        pred_list = [x for f in sorted(self.folds) for x in self.folds[f].pred_labels]
        gt_list = [x for f in sorted(self.folds) for x in self.folds[f].gt_tp_labels]
        keep = [i for i, g in enumerate(gt_list) if g != -1]
        return [gt_list[i] for i in keep], [pred_list[i] for i in keep]

    def analysis(self) -> Dict[str, Any]:
        """:func:`analysis_metrics` of :meth:`analysis_pairs`."""
        gt, pred = self.analysis_pairs()
        return analysis_metrics(gt, pred, len(self.classes), uar_nan_to_zero=self.uar_nan_to_zero)

    def to_dict(self) -> Dict[str, Any]:
        """JSON-ready results: settings, pooled spotting, analysis, STRS, and one row per fold (NaN -> None)."""
        spot = self.counts()
        analysis = self.analysis()
        per_class = {self.classes[c]: v for c, v in analysis.pop("per_class").items()}
        folds = []
        for f in sorted(self.folds):
            r = self.folds[f]
            precision, recall, f1 = _prf(r.tp, r.fp, r.fn)
            folds.append({"fold": f, "subject": r.subject, "k_p": r.k_p, "videos": len(r.intervals),
                          "tp": r.tp, "fp": r.fp, "fn": r.fn, "precision": precision, "recall": recall, "f1": f1,
                          "analysed": r.analysed, "analysis_tps": sum(1 for g in r.gt_tp_labels if g != -1)})
        spot = dict(spot, ap_50_95=self.average_precision(), **self.apex_scores())
        out = {"dataset": self.gt.dataset, "p": self.p, "multiple": self.multiple,
               "iou_threshold": self.iou_threshold,
               "options": {"no_peak_dummy": self.no_peak_dummy, "align_analysis_lists": self.align_analysis_lists,
                           "uar_nan_to_zero": self.uar_nan_to_zero},
               "spotting": spot, "analysis": dict(analysis, per_class=per_class),
               "strs": spot["f1"] * analysis["f1"], "folds": folds}
        return _json_ready(out)

    def to_markdown(self) -> str:
        """The results table: one row per fold (subject), then the pooled dataset row and the analysis."""
        d = self.to_dict()
        out = io.StringIO()
        out.write(f"### {d['dataset']}\n\n")
        out.write("| fold | subject | k_p | videos | TP | FP | FN | precision | recall | F1 | analysis TPs |\n")
        out.write("|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n")
        for r in d["folds"]:
            out.write(f"| {r['fold']} | {r['subject']} | {r['k_p']} | {r['videos']} | {r['tp']} | {r['fp']} | "
                      f"{r['fn']} | {r['precision']:.4f} | {r['recall']:.4f} | {r['f1']:.4f} | "
                      f"{r['analysis_tps'] if r['analysed'] else '-'} |\n")
        s = d["spotting"]
        out.write(f"| **all** | | | {sum(r['videos'] for r in d['folds'])} | **{s['tp']}** | **{s['fp']}** | "
                  f"**{s['fn']}** | **{s['precision']:.4f}** | **{s['recall']:.4f}** | **{s['f1']:.4f}** | "
                  f"{d['analysis']['n']} |\n\n")
        out.write(f"AP@[.5:.95] {_fmt(s['ap_50_95'])}, ASR {_fmt(s['asr'])}, MAE {_fmt(s['mae'])}\n\n")
        a = d["analysis"]
        out.write("| analysis TPs | precision | recall | F1 | UF1 | UAR | STRS |\n"
                  "|---:|---:|---:|---:|---:|---:|---:|\n")
        out.write(f"| {a['n']} | {_fmt(a['precision'])} | {_fmt(a['recall'])} | {_fmt(a['f1'])} | "
                  f"{_fmt(a['uf1'])} | {_fmt(a['uar'])} | {_fmt(d['strs'])} |\n")
        return out.getvalue()


def summary_markdown(evaluations: Sequence[MeanEvaluation]) -> str:
    """One row per dataset: pooled spotting counts and F1, AP, analysis metrics, STRS."""
    out = io.StringIO()
    out.write("| dataset | TP | FP | FN | precision | recall | F1 | AP@[.5:.95] | analysis TPs | analysis F1 | UF1 "
              "| UAR | STRS |\n|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n")
    for ev in evaluations:
        d = ev.to_dict()
        s, a = d["spotting"], d["analysis"]
        out.write(f"| {d['dataset']} | {s['tp']} | {s['fp']} | {s['fn']} | {_fmt(s['precision'])} | "
                  f"{_fmt(s['recall'])} | {_fmt(s['f1'])} | {_fmt(s['ap_50_95'])} | {a['n']} | {_fmt(a['f1'])} | "
                  f"{_fmt(a['uf1'])} | {_fmt(a['uar'])} | {_fmt(d['strs'])} |\n")
    return out.getvalue()


def _fmt(x) -> str:
    return "NaN" if x is None else f"{x:.4f}"


def _json_ready(value):
    """Plain Python types, NaN as None (JSON has no NaN)."""
    if isinstance(value, dict):
        return {str(k): _json_ready(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_ready(v) for v in value]
    if isinstance(value, (float, np.floating)):
        return None if math.isnan(value) else float(value)
    if isinstance(value, (np.integer,)):
        return int(value)
    return value
