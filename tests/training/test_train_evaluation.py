"""MEAN's evaluation of a LOSO run (meanspot_fused.training.evaluation, and MEAN's matching rule in
meanspot_fused.spotting.evaluation) against TRAINING.md section 8, bugs 9c, 9d, 9i and the reference numbers.

Scores are built from single-sample spikes: smoothing over 2 k_p turns a spike at s into a plateau whose
midpoint is s, so each spike gives the interval [s - k_p, s + k_p] and a ground truth [c - k_p, c + k_p]
is hit with IoU 1 by a spike at c."""
import json
import math

import numpy as np
import pytest

from meanspot_fused.errors import InputError
from meanspot_fused.spotting.evaluation import evaluate, mean_pred_match, megc_counts
from meanspot_fused.training.annotations import Expression, GroundTruth, Video
from meanspot_fused.training.evaluation import MeanEvaluation, analysis_metrics, spot_video, summary_markdown

K_P = 2
CLASSES = ("negative", "positive", "surprise")


def test_mean_matching_differs_from_megc():
    # P0 = [4, 12] overlaps G0 = [0, 10] (IoU 7/13) and G1 = [4, 13] (IoU 0.9); P1 = [8, 14] overlaps
    # G0 (0.2) and G1 (6/11). MEGC: G0 takes P0, G1 takes P1: 2 TPs. MEAN: P0 checks only its best GT,
    # G1, and takes it; P1's best GT is G1 again, already matched: FP.
    pred, gt = np.array([[4, 12], [8, 14]]), np.array([[0, 10], [4, 13]])
    assert megc_counts(pred, gt) == (2, 0, 0)
    assert megc_counts(pred, gt, matching="mean") == (1, 1, 1)
    assert mean_pred_match(pred, gt).tolist() == [1, -1]
    res = evaluate({"v": pred}, {"v": gt}, matching="mean")
    assert (res.tp, res.fp, res.fn) == (1, 1, 1)
    assert (evaluate({"v": pred}, {"v": gt}).tp) == 2
    with pytest.raises(ValueError, match="matching"):
        megc_counts(pred, gt, matching="coco")


def test_mean_matching_order_and_ties():
    # [3, 11] has IoU 7/12 with both [0, 9] and [5, 14]: np.argsort(iou)[::-1] picks the later GT.
    gt = np.array([[0, 9], [5, 14]])
    assert mean_pred_match([[3, 11]], gt).tolist() == [1]
    # Temporal order: the first prediction takes the GT; an identical later one is a FP.
    assert mean_pred_match([[0, 9], [0, 9]], gt).tolist() == [0, -1]
    # IoU exactly 0.5 counts (>=); no GT: FP.
    assert mean_pred_match([[0, 1]], [[0, 0]]).tolist() == [0]
    assert mean_pred_match([[0, 1]], np.zeros((0, 2))).tolist() == [-1]


def spikes(n, positions):
    s = np.zeros(n)
    s[list(positions)] = 1.0
    return s


def test_spot_video_peaks_dummy_and_single():
    assert spot_video(spikes(60, [10, 30]), K_P, True).tolist() == [[8, 12, 10], [28, 32, 30]]
    # Other datasets: one peak only, the FIRST argmax (the plateau 9..12 of the spike at 10 starts at 9).
    assert spot_video(spikes(60, [10, 30]), K_P, False).tolist() == [[7, 11, 9]]
    # Bug 9d: no peak (a flat curve) gives MEAN's dummy [0, 0]; the fix gives nothing.
    assert spot_video(np.zeros(30), K_P, True).tolist() == [[0, 0, 0]]
    assert spot_video(np.zeros(30), K_P, True, no_peak_dummy=False).shape == (0, 3)


def expr(center, emotion):
    return Expression(center - K_P, center, center + K_P, emotion)


def one_hot_probs(n, labels_at):
    """(n, 3) recognition outputs: class 0 everywhere, ``{sample: class}`` elsewhere."""
    probs = np.tile([0.5, 0.3, 0.2], (n, 1))
    for i, c in labels_at.items():
        probs[i] = np.roll([0.5, 0.3, 0.2], c)
    return probs


def reference_run():
    """CAS(ME)^2's published counts: 17 TP, 206 FP, 40 FN over 57 GTs, 7 TPs analysed.

    s1: 30 GTs, 7 hit, 60 FP spikes, analysed; s2: 27 GTs, 10 hit, 146 FP spikes, no recognition head.
    The 7 analysed pairs (gt, pred) have the confusion matrix [[1, 0, 0], [0, 1, 1], [2, 0, 2]].
    """
    pairs = [(0, 0), (1, 1), (1, 2), (2, 0), (2, 0), (2, 2), (2, 2)]
    videos, scores, probs = [], {}, {}
    for subject, n_gt, hits, n_fp in (("s1", 30, 7, 60), ("s2", 27, 10, 146)):
        centers = [10 + 10 * j for j in range(n_gt + n_fp)]
        emotions = [CLASSES[pairs[j][0]] if subject == "s1" else "others" for j in range(hits)]
        emotions += ["negative"] * (n_gt - hits)
        video = Video(subject, "v", tuple(expr(c, e) for c, e in zip(centers[:n_gt], emotions)))
        videos.append(video)
        n = centers[-1] + 20
        scores[video.key] = spikes(n, centers[:hits] + centers[n_gt:])
        window = {}
        if subject == "s1":
            for j in range(hits):  # the K_P samples before each hit's peak vote for its predicted class
                window.update({centers[j] - d: pairs[j][1] for d in range(1, K_P + 1)})
        probs[video.key] = one_hot_probs(n, window)
    return GroundTruth("CASME_sq", tuple(videos)), scores, probs


def test_pooled_counts_reproduce_casme_sq_reference():
    gt, scores, probs = reference_run()
    ev = MeanEvaluation(gt)
    ev.add_fold(0, K_P, scores, probs)
    ev.add_fold(1, K_P, scores, None)
    c = ev.counts()
    assert (c["tp"], c["fp"], c["fn"]) == (17, 206, 40)
    assert c["f1"] == pytest.approx(34 / 280) and round(c["f1"], 4) == 0.1214
    # Pooled, not the mean of per-fold F1s (14/97 and 20/183).
    per_fold = [r["f1"] for r in ev.to_dict()["folds"]]
    assert per_fold == pytest.approx([14 / 97, 20 / 183])
    assert abs(np.mean(per_fold) - c["f1"]) > 1e-3
    a = ev.analysis()
    assert a["n"] == 7
    assert (round(a["precision"], 4), round(a["recall"], 4), round(a["f1"], 4), round(a["uf1"], 4)) == \
        (0.6667, 0.6667, 0.6667, 0.5794)
    d = ev.to_dict()
    assert d["strs"] == pytest.approx(34 / 280 * 2 / 3)  # README: 0.1214 x 0.6667 = 0.0809
    assert [r["analysis_tps"] for r in d["folds"]] == [7, 0] and [r["analysed"] for r in d["folds"]] == [True, False]
    json.dumps(d, allow_nan=False)
    assert "| CASME_sq | 17 | 206 | 40 |" in summary_markdown([ev])
    md = ev.to_markdown()
    assert "| **all** | | | 2 | **17** | **206** | **40** |" in md and "| 1 | s2 | 2 | 1 | 10 | 146 | 17 |" in md


def test_analysis_reference_numbers_by_hand():
    # [[1, 0, 0], [0, 1, 1], [2, 0, 2]]: precision (1/3, 1, 2/3), recall (1, 1/2, 1/2), F1 (1/2, 2/3, 4/7).
    gt, pred = [0, 1, 1, 2, 2, 2, 2], [0, 1, 2, 0, 0, 2, 2]
    a = analysis_metrics(gt, pred, 3)
    assert a["precision"] == pytest.approx(2 / 3) and a["recall"] == pytest.approx(2 / 3)
    assert a["f1"] == pytest.approx(2 / 3) and a["uf1"] == pytest.approx((1 / 2 + 2 / 3 + 4 / 7) / 3)
    assert a["uar"] == pytest.approx(2 / 3)
    assert a["per_class"][0] == {"tp": 1, "fp": 2, "fn": 0, "tn": 4, "f1": 0.5, "recall": 1.0, "precision": 1 / 3}


def test_analysis_uar_nan_bug_9i_and_skipped_classes():
    # Class 1 predicted but never in the GT: recall_1 = 0/0. Class 2 absent on both sides: skipped.
    a = analysis_metrics([0, 0], [0, 1], 3)
    assert sorted(a["per_class"]) == [0, 1]
    assert a["precision"] == pytest.approx(0.5) and a["recall"] == pytest.approx(0.25)
    assert a["f1"] == pytest.approx(1 / 3) and a["uf1"] == pytest.approx(1 / 3)
    assert math.isnan(a["uar"])  # MEAN: the UAR list is not NaN-cleaned
    assert analysis_metrics([0, 0], [0, 1], 3, uar_nan_to_zero=True)["uar"] == pytest.approx(0.25)
    # Every pair (0, 0): each class has one value on both sides, a 1x1 confusion matrix MEAN skips.
    a = analysis_metrics([0, 0], [0, 0], 3)
    assert a["per_class"] == {} and all(math.isnan(a[m]) for m in ("precision", "recall", "f1", "uf1", "uar"))
    # P = R = 0: MEAN's 2PR/(P+R) is NaN.
    assert math.isnan(analysis_metrics([0], [1], 3)["f1"])
    with pytest.raises(InputError, match="pair up"):
        analysis_metrics([0], [0, 1], 3)


def others_run():
    """Fold 0: TPs on GTs (negative, others, positive) predicted (0, 2, 1); fold 1: a TP (surprise) predicted 2."""
    centers = [10, 20, 30]
    v0 = Video("s1", "a", tuple(expr(c, e) for c, e in zip(centers, ["negative", "others", "positive"])))
    v1 = Video("s2", "b", (expr(10, "surprise"),))
    scores = {v0.key: spikes(50, centers), v1.key: spikes(50, [10])}
    probs = {v0.key: one_hot_probs(50, {8: 0, 9: 0, 18: 2, 19: 2, 28: 1, 29: 1}),
             v1.key: one_hot_probs(50, {8: 2, 9: 2})}
    return GroundTruth("CASME_sq", (v0, v1)), scores, probs


def test_others_label_shift_bug_9c():
    gt, scores, probs = others_run()
    ev = MeanEvaluation(gt)
    ev.add_fold(0, K_P, scores, probs)
    ev.add_fold(1, K_P, scores, probs)
    # MEAN: the 'others' TP's prediction (2) stays in pred_list, so every later pair is shifted.
    assert ev.folds[0].pred_labels == [0, 2, 1] and ev.folds[0].gt_tp_labels == [0, 1]
    assert ev.analysis_pairs() == ([0, 1, 2], [0, 2, 1])
    fixed = MeanEvaluation(gt, align_analysis_lists=True)
    fixed.add_fold(1, K_P, scores, probs)  # folds in any order: the lists join in fold order
    fixed.add_fold(0, K_P, scores, probs)
    assert fixed.analysis_pairs() == ([0, 1, 2], [0, 1, 2])
    assert fixed.analysis()["f1"] == pytest.approx(1.0)


def test_first_onset_past_the_samples_shifts_too():
    # Fold 0's video: 40 samples, its first (only) expression at frames 45..49 (in the last k frames),
    # a FP spike at 10 labelled 1. MEAN records the label, then fails reading sample 45 (U:146): the
    # surprise TP of fold 1 (predicted 2) is paired with label 1.
    v0 = Video("s1", "a", (Expression(45, 47, 49, "negative"),))
    v1 = Video("s2", "b", (expr(10, "surprise"),))
    gt = GroundTruth("CASME_sq", (v0, v1))
    scores = {v0.key: spikes(40, [10]), v1.key: spikes(50, [10])}
    probs = {v0.key: one_hot_probs(40, {8: 1, 9: 1}), v1.key: one_hot_probs(50, {8: 2, 9: 2})}
    for align, expected in ((False, ([2], [1])), (True, ([2], [2]))):
        ev = MeanEvaluation(gt, align_analysis_lists=align)
        ev.add_fold(0, K_P, scores, probs)
        ev.add_fold(1, K_P, scores, probs)
        assert ev.analysis_pairs() == expected


def test_analysis_window_ties_first_seen():
    # Window [peak - k_p, peak) = samples 8, 9 with classes (2, 1): a tie, the first seen (2) wins,
    # not the smallest; the peak's own sample (10: class 1) is left out.
    v = Video("s1", "a", (expr(10, "surprise"),))
    gt = GroundTruth("CASME_sq", (v,))
    ev = MeanEvaluation(gt)
    ev.add_fold(0, K_P, {v.key: spikes(40, [10])}, {v.key: one_hot_probs(40, {8: 2, 9: 1, 10: 1})})
    assert ev.folds[0].pred_labels == [2]


def test_no_peak_dummy_bug_9d():
    v = Video("s1", "a", (expr(20, "negative"),))
    gt = GroundTruth("CASME_sq", (v,))
    flat = {v.key: np.zeros(40)}
    ev = MeanEvaluation(gt)
    ev.add_fold(0, K_P, flat)
    assert (ev.counts()["tp"], ev.counts()["fp"], ev.counts()["fn"]) == (0, 1, 1)
    fixed = MeanEvaluation(gt, no_peak_dummy=False)
    fixed.add_fold(0, K_P, flat)
    assert (fixed.counts()["tp"], fixed.counts()["fp"], fixed.counts()["fn"]) == (0, 0, 1)
    # The dummy [0, 0] is matched like any prediction: against a GT [0, 1] (IoU 0.5) it is a TP.
    v0 = Video("s1", "a", (Expression(0, 0, 1, "negative"),))
    ev = MeanEvaluation(GroundTruth("CASME_sq", (v0,)))
    ev.add_fold(0, K_P, {v0.key: np.zeros(40)})
    assert ev.counts()["tp"] == 1


def test_single_peak_datasets_and_errors():
    v = Video("1", "a", (expr(10, "disgust"),))
    gt = GroundTruth("CASME2", (v,))
    ev = MeanEvaluation(gt)
    assert not ev.multiple
    ev.add_fold(0, K_P, {v.key: spikes(60, [10, 40])})
    # One interval, [7, 11] (first argmax), a TP on [8, 12] with IoU 4/6; the second spike is ignored.
    assert ev.folds[0].intervals[v.key].tolist() == [[7, 11, 9]] and ev.counts()["tp"] == 1
    assert ev.counts()["fp"] == 0
    with pytest.raises(InputError, match="already added"):
        ev.add_fold(0, K_P, {v.key: spikes(60, [10])})
    with pytest.raises(InputError, match=r"fold must be in \[0, 0\]"):
        ev.add_fold(1, K_P, {})
    with pytest.raises(InputError, match="1/a"):
        MeanEvaluation(gt).add_fold(0, K_P, {})
    with pytest.raises(InputError, match=r"shape \(samples, 5\)"):
        MeanEvaluation(gt).add_fold(0, K_P, {v.key: spikes(60, [10])}, {v.key: np.zeros((60, 3))})


def test_soft_policy_checks_the_next_ground_truth():
    # P1 = [2, 11]'s best GT, [2, 12] (IoU 10/11), is taken by P0: greedy makes it a FP, soft goes on to
    # [0, 10] (IoU 9/12 >= 0.5) and takes it.
    pred, gt = [[2, 12], [2, 11]], [[0, 10], [2, 12]]
    assert mean_pred_match(pred, gt).tolist() == [1, -1]
    assert mean_pred_match(pred, gt, policy="soft").tolist() == [1, 0]
    with pytest.raises(ValueError, match="policy"):
        mean_pred_match(pred, gt, policy="coco")


def mean_ap(videos, n_gt, threshold):
    """MEAN's AP at one threshold (Q:45-67, 177-214; Q2:146-182), 'soft', on (pred, gt) interval lists."""
    tp, fp = [], []
    for pred, gt in videos:
        matched = []
        for p in pred:
            inter = np.array([max(min(p[1], g[1]) - max(p[0], g[0]) + 1., 0) for g in gt])
            iou = inter / (np.array([(p[1] - p[0] + 1.) + (g[1] - g[0] + 1.) for g in gt]) - inter)
            result = ('fp', -1)
            for idx in np.argsort(iou)[::-1]:
                if iou[idx] >= threshold:
                    if idx not in matched:
                        result = ('tp', idx)
                        break
                    continue
                break
            tp.append(result[0] == 'tp')
            fp.append(result[0] == 'fp')
            matched.append(result[1])
    tp, fp = np.cumsum(tp), np.cumsum(fp)
    recall = tp / max(float(n_gt), 1)
    precision = tp / np.maximum(tp + fp, np.finfo(np.float64).eps)
    precision = np.concatenate(([0.], precision, [0.]))
    recall = np.concatenate(([0.], recall, [1.]))
    for i in range(precision.size - 1, 0, -1):
        precision[i - 1] = np.maximum(precision[i - 1], precision[i])
    ids = np.where(recall[1:] != recall[:-1])[0]
    return np.sum((recall[ids + 1] - recall[ids]) * precision[ids + 1])


def test_average_precision_order_matters_and_equals_mean_code():
    # One GT hit exactly: TP then FP gives AP 1; FP first (no confidence sort) gives 0.5.
    for positions, expected in (([10, 30], 1.0), ([3, 20], 0.5)):
        v = Video("s1", "a", (expr(20 if expected == 0.5 else 10, "negative"),))
        ev = MeanEvaluation(GroundTruth("CASME_sq", (v,)))
        ev.add_fold(0, K_P, {v.key: spikes(60, positions)})
        assert ev.average_precision() == pytest.approx(expected)
    rng = np.random.default_rng(11)
    videos, scores = [], {}
    for j in range(6):
        centers = sorted(rng.choice(np.arange(6, 190, 9), size=6, replace=False).tolist())
        v = Video(f"s{j % 2}", f"v{j}", tuple(Expression(c - int(rng.integers(0, 5)), c, c + int(rng.integers(0, 5)),
                                                         "negative") for c in centers[:3]))
        videos.append(v)
        scores[v.key] = spikes(200, [c + int(rng.integers(-2, 3)) for c in centers[1:]])
    gt = GroundTruth("CASME_sq", tuple(sorted(videos, key=lambda v: v.subject)))
    ev = MeanEvaluation(gt)
    ev.add_fold(1, K_P, scores)
    ev.add_fold(0, K_P, scores)
    spotted = [(ev.folds[f].intervals[v.key][:, :2].tolist(), v.intervals()[:, [0, 2]].tolist())
               for f in (0, 1) for v in gt.subject_videos(gt.subjects[f])]
    aps = np.array([[mean_ap(spotted, 18, t)] for t in np.round(np.arange(0.5, 1.0, 0.05), 2)], dtype=np.float32)
    assert ev.average_precision() == float(aps.mean(axis=1).mean(axis=0))
    assert 0 < ev.average_precision() < 1


def test_apex_scores():
    # Video a: first interval [8, 12] -> apex 8 + k_p = 10 inside (8, 12), error 0. Video b: MEAN's dummy
    # [0, 0] -> apex k_p = 2, outside (18, 22), error |2 - 20| = 18.
    va, vb = Video("s1", "a", (expr(10, "negative"),)), Video("s1", "b", (expr(20, "negative"),))
    ev = MeanEvaluation(GroundTruth("CASME_sq", (va, vb)))
    ev.add_fold(0, K_P, {va.key: spikes(40, [10]), vb.key: np.zeros(40)})
    assert ev.apex_scores() == {"asr": 0.5, "mae": 9.0}
    d = ev.to_dict()
    assert d["spotting"]["asr"] == 0.5 and "AP@[.5:.95]" in ev.to_markdown()
    fixed = MeanEvaluation(GroundTruth("CASME_sq", (va, vb)), no_peak_dummy=False)
    fixed.add_fold(0, K_P, {va.key: spikes(40, [10]), vb.key: np.zeros(40)})
    assert fixed.apex_scores() == {"asr": 1.0, "mae": 0.0}


def test_protocol_end_to_end_with_a_perfect_network(tmp_path):
    # CSV (1-based frames) -> MEAN's rules -> plan_folds -> scores = the test samples' own pseudo-labels
    # -> MeanEvaluation. Every ME lasts 5 frames, so k_p = int((4 + 1) / 2) = 2 and the labels of an ME
    # [on, on + 4] are 1 on [on - 1, on + 4]: the smoothed plateau is centred on on + 2, the interval
    # [on, on + 4] is the GT itself. Every ME is found, nothing else.
    from meanspot_fused.training.annotations import apply_mean_rules, read_training_csv
    from meanspot_fused.training.folds import plan_folds
    from meanspot_fused.training.labels import dataset_k, spot_sample_count
    lines = ["subject,video,onset,apex,offset,type,emotion"]
    emotions = {"s1": "negative", "s2": "positive", "s10": "surprise"}
    for subject, emotion in emotions.items():
        for video, onsets in (("0101", [11, 51]), ("0102", [31])):
            lines += [f"{subject},{video},{on},{on + 2},{on + 4},micro-expression,{emotion}" for on in onsets]
    lines.append("s10,0103,5,6,9,macro-expression,negative")  # a video without an ME: removed
    path = tmp_path / "ann.csv"
    path.write_text("\n".join(lines) + "\n")
    gt = apply_mean_rules("CASME_sq", read_training_csv(path), {v: 100 for v in
                                                                ("s1/0101", "s1/0102", "s2/0101", "s2/0102",
                                                                 "s10/0101", "s10/0102")})
    assert gt.subjects == ["s1", "s2", "s10"] and len(gt.videos) == 6
    counts = {v.key: spot_sample_count(100, dataset_k("CASME_sq")) for v in gt.videos}
    plans = plan_folds(gt, counts)
    ev = MeanEvaluation(gt)
    for plan in plans:
        assert plan.k_p == 2
        keys = [k for k in plan.samples.video_keys if k.startswith(plan.subject + "/")]
        slices = {k: plan.samples.video_slice(plan.samples.video_keys.index(k)) for k in keys}
        # The test samples are exactly the subject's videos, in order.
        assert plan.test_index.tolist() == [i for k in keys for i in range(slices[k].start, slices[k].stop)]
        scores = {k: plan.samples.labels[sl] for k, sl in slices.items()}
        label = CLASSES.index(emotions[plan.subject])
        probs = {k: one_hot_probs(sl.stop - sl.start, {i: label for i in range(sl.stop - sl.start)})
                 for k, sl in slices.items()} if plan.recognition_fold.trains else None
        ev.add_fold(plan.fold, plan.k_p, scores, probs)
    c = ev.counts()
    assert (c["tp"], c["fp"], c["fn"], c["f1"]) == (9, 0, 0, 1.0)
    assert ev.analysis()["f1"] == 1.0 and ev.to_dict()["strs"] == 1.0
