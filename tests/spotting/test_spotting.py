"""The spotting stage (meanspot_fused.spotting: intervals, evaluation) against MEAN's code path and
hand-checked cases. Its CSV files (meanspot_fused.io.intervals) are tested in test_io_intervals.py."""
import json
import os
import subprocess
import sys
from collections import Counter

import numpy as np
import pytest

from meanspot_fused import spotting
from meanspot_fused.spotting import evaluation as spotting_evaluation
from meanspot_fused.spotting import intervals as spotting_intervals

from helpers import ROOT, mean_spotting
from meanspot_fused.spotting.evaluation import evaluate, iou, megc_counts
from meanspot_fused.spotting.intervals import (find_intervals, k_p_from_ground_truth, moilanen_threshold, recognise,
                                               smooth, spot_scores)

scipy_signal = pytest.importorskip("scipy.signal")


def random_curve(rng, length):
    """Score curves of the kinds a network gives, plus the awkward ones.

    Quantised values make plateaus and equal peak heights (ties in the
    distance rule) common rather than vanishingly rare.
    """
    kind = rng.integers(6)
    if kind == 0:
        return rng.random(length)
    if kind == 1:
        return np.round(rng.random(length) * 4) / 4
    if kind == 2:
        return np.repeat(rng.integers(0, 3, size=length // 3 + 1), 3)[:length].astype(np.float64)
    if kind == 3:
        t = np.arange(length)
        bumps = sum(np.exp(-0.5 * ((t - c) / w) ** 2) for c, w in
                    zip(rng.integers(0, length, 4), rng.uniform(1, 8, 4)))
        return bumps + 0.05 * rng.random(length)
    if kind == 4:
        return np.full(length, rng.random())
    return rng.integers(0, 2, size=length).astype(np.float32)


def test_find_peaks_matches_scipy_on_random_curves():
    rng = np.random.default_rng(0)
    checked = 0
    for _ in range(4000):
        x = random_curve(rng, int(rng.integers(1, 120))).astype(np.float64)
        height = float(rng.choice([-np.inf, x.mean(), np.quantile(x, 0.7), x.max()]))
        distance = int(rng.integers(1, 15))
        expected, _ = scipy_signal.find_peaks(x, height=height, distance=distance)
        got = spotting_intervals._find_peaks(x, height, distance)
        np.testing.assert_array_equal(got, expected)
        checked += expected.size > 1
    assert checked > 500  # many cases where the distance rule had something to do


@pytest.mark.parametrize("multiple", [True, False])
def test_find_intervals_matches_mean(multiple):
    rng = np.random.default_rng(1 + multiple)
    empty = 0
    for _ in range(1500):
        length = int(rng.integers(1, 200))
        scores = random_curve(rng, length)
        k_p = int(rng.integers(1, 40))  # often larger than the curve
        p = float(rng.choice([0.0, 0.55, rng.random(), 1.0]))
        expected, smoothed, threshold = mean_spotting(scores, k_p, p, multiple)
        np.testing.assert_array_equal(find_intervals(scores, k_p, p, multiple, mean_dummy=True), expected)
        np.testing.assert_array_equal(smooth(scores, k_p), smoothed)
        assert moilanen_threshold(smoothed, p) == threshold
        plain = find_intervals(scores, k_p, p, multiple)
        assert plain.dtype == np.int64 and plain.shape[1] == 3
        if plain.shape[0] == 0:
            empty += 1
            np.testing.assert_array_equal(expected, [[0, 0, 0]])
        else:
            np.testing.assert_array_equal(plain, expected)
    if multiple:
        assert empty > 20  # zero, monotonic and short curves have no peak


def test_spot_scores_returns_the_curve_and_threshold_it_spotted_on():
    rng = np.random.default_rng(7)
    for _ in range(300):
        scores = random_curve(rng, int(rng.integers(1, 120)))
        k_p, p, multiple = int(rng.integers(1, 20)), float(rng.random()), bool(rng.integers(2))
        got = spot_scores(scores, k_p, p, multiple, mean_dummy=True)
        np.testing.assert_array_equal(got.smoothed, smooth(scores, k_p))
        assert got.threshold == moilanen_threshold(got.smoothed, p)
        np.testing.assert_array_equal(got.intervals, find_intervals(scores, k_p, p, multiple, mean_dummy=True))


def test_spot_scores_smooths_once(monkeypatch):
    """The curve, threshold and intervals all come from one smoothing (the spot pipeline used to smooth twice)."""
    calls = []
    real = spotting_intervals.smooth
    monkeypatch.setattr(spotting_intervals, "smooth", lambda *a: calls.append(a) or real(*a))
    scores = np.zeros(40)
    scores[[10, 30]] = 1.0
    got = spot_scores(scores, 3)
    assert len(calls) == 1 and len(got.intervals) == 2


def test_find_intervals_hand_checked():
    scores = np.zeros(30)
    scores[10] = 1.0
    scores[22] = 1.0
    # k_p = 2: box of 4, smoothed[i] averages frames i-2 .. i+1, so each spike
    # makes a plateau on i = 9..12 (resp. 21..24), peak at its midpoint (9 + 12) // 2.
    out = find_intervals(scores, 2)
    np.testing.assert_array_equal(out, [[8, 12, 10], [20, 24, 22]])
    # Single mode takes the first maximum: the plateau's first frame, 9.
    np.testing.assert_array_equal(find_intervals(scores, 2, multiple=False), [[7, 11, 9]])


def test_find_intervals_without_peak():
    for scores in (np.zeros(50), np.ones(1), np.ones(2)):
        assert find_intervals(scores, 3).shape == (0, 3)
        np.testing.assert_array_equal(find_intervals(scores, 3, mean_dummy=True), [[0, 0, 0]])


def test_find_intervals_constant_curve_peaks_in_the_middle():
    # The zero padding of np.convolve lowers both ends of a constant curve, so
    # MEAN finds one peak: smoothed[i] (frames i-3 .. i+2) is full on the
    # plateau 3..47, midpoint 25.
    np.testing.assert_array_equal(find_intervals(np.full(50, 0.3), 3), [[22, 28, 25]])


def test_find_intervals_clip():
    # k_p 3: smoothed[i] = sum of frames i-3 .. i+2 / 6 = 1/6, 2/6, 2/6, 2/6, 2/6, 1/6, 0...:
    # plateau 1..4, peak at 2, interval (-1, 5): MEAN does not clip.
    scores = np.zeros(12)
    scores[[1, 3]] = 1.0
    raw = find_intervals(scores, 3)
    np.testing.assert_array_equal(raw, [[-1, 5, 2]])
    clipped = find_intervals(scores, 3, clip=True)
    np.testing.assert_array_equal(clipped, [[0, 5, 2]])
    np.testing.assert_array_equal(find_intervals(scores[:5], 3, clip=True), [[0, 4, 2]])


def test_k_p_from_ground_truth():
    # MEAN's cal_k_p: lengths offset - onset = 10, 20, 31 -> N = 61 / 3 -> int((N + 1) / 2) = 10.
    assert k_p_from_ground_truth([[0, 10], [5, 25], [100, 131]]) == 10
    assert k_p_from_ground_truth([[3, 3]]) == 1  # int(0.5) = 0, raised to the smallest valid k_p
    with pytest.raises(ValueError, match="at least one ground-truth interval"):
        k_p_from_ground_truth(np.zeros((0, 2)))


def test_smooth_longer_than_scores_when_box_is_longer():
    # numpy's mode "same" returns max(T, 2 k_p) samples: documented, MEAN's curve.
    assert smooth(np.ones(3), 4).shape == (8,)
    assert smooth(np.ones(10), 4).shape == (10,)
    np.testing.assert_array_equal(smooth(np.arange(5.0)[:, None], 1),
                                  np.convolve(np.arange(5.0), [0.5, 0.5], mode="same"))


@pytest.mark.parametrize("call, message", [
    (lambda: find_intervals(np.ones(5), 0), "k_p must be an integer >= 1"),
    (lambda: find_intervals(np.ones(5), 2.0), "k_p must be an integer >= 1"),
    (lambda: find_intervals(np.ones((5, 2)), 2), "scores must be a 1-D array"),
    (lambda: find_intervals(np.array([1.0, np.nan]), 2), "scores must be finite, got nan at index 1"),
    (lambda: find_intervals(np.zeros(0), 2), "at least one score"),
    (lambda: find_intervals(np.ones(5), 2, p=1.5), r"p must be in \[0, 1\]"),
    (lambda: megc_counts([[5, 3]], [[0, 1]]), "pred must have offset >= onset in every row, got row 0"),
    (lambda: megc_counts([[0, 1]], [[0, 1, 2, 3]][0]), r"gt must have shape \(M, 2\)"),
    (lambda: megc_counts([[0.5, 1]], [[0, 1]]), "whole frame indices"),
    (lambda: megc_counts([[0, 1]], [[0, 1]], iou_threshold=0), "iou_threshold must be in"),
    (lambda: recognise(np.ones(5), [[0, 1, 1]], 2), r"recog_probs must have shape \(T, C\)"),
    (lambda: recognise(np.ones((5, 2)), [[0, 1]], 2), r"intervals must have shape \(M, 3\)"),
    (lambda: recognise(np.ones((5, 2)), [[0, 1, 1]], 2, ties="last"), "ties must be"),
])
def test_argument_errors(call, message):
    with pytest.raises(ValueError, match=message):
        call()


# --------------------------------------------------------------------------------------------
# MEGC counts: hand-checked cases
# --------------------------------------------------------------------------------------------

def test_iou_inclusive_lengths():
    assert iou((0, 9), (5, 14)) == 5 / 15
    assert iou((0, 0), (0, 0)) == 1.0
    assert iou((0, 3), (4, 7)) == 0.0
    assert iou((0, 3), (3, 3)) == 1 / 4


def test_megc_counts_iou_exactly_half_is_a_match():
    # gt 0..9 (10 frames), pred 0..4 (5 frames): inter 5, union 10 -> 0.5 -> TP.
    assert megc_counts([[0, 4]], [[0, 9]]) == (1, 0, 0)
    # pred 0..3: inter 4, union 10 -> 0.4 -> FP and FN.
    assert megc_counts([[0, 3]], [[0, 9]]) == (0, 1, 1)
    # inter 5, union 11 (pred -1..4 reaches one frame further out): 0.4545 < 0.5.
    assert megc_counts([[-1, 4]], [[0, 9]]) == (0, 1, 1)


def test_megc_counts_two_predictions_on_one_gt():
    # Both predictions overlap the gt with IoU >= 0.5; only one is matched.
    assert megc_counts([[0, 9], [1, 10]], [[0, 9]]) == (1, 1, 0)


def test_megc_counts_one_prediction_on_two_gts():
    # pred 0..19 has IoU 0.5 with gt 0..9 and with gt 10..19; it matches the
    # first gt in onset order, the second one stays unmatched.
    assert megc_counts([[0, 19]], [[10, 19], [0, 9]]) == (1, 0, 1)


def test_megc_counts_first_prediction_in_onset_order():
    # gt A 0..9 can take pred 0..9 or 2..11; it takes the earlier one (0..9),
    # leaving 2..11 for gt B 3..12 (IoU 9/11): two matches. Input order does not matter.
    preds = [[2, 11], [0, 9]]
    gts = [[3, 12], [0, 9]]
    assert megc_counts(preds, gts) == (2, 0, 0)
    # Greedy by onset, not optimal: gt 0..9 takes pred 0..9 first, though it
    # was the only prediction gt 1..10 could use. TP 1 (an optimal matching has 1 too here).
    assert megc_counts([[0, 9]], [[0, 9], [1, 10]]) == (1, 0, 1)


def test_megc_counts_empty_sides():
    assert megc_counts(np.zeros((0, 2)), [[0, 9], [20, 29]]) == (0, 0, 2)
    assert megc_counts([[0, 9]], np.zeros((0, 3))) == (0, 1, 0)
    assert megc_counts([], []) == (0, 0, 0)


def test_megc_counts_accepts_find_intervals_rows():
    assert megc_counts([[0, 10, 5]], [[0, 10, 4]]) == (1, 0, 0)


# --------------------------------------------------------------------------------------------
# evaluate and STRS: a small example checked by hand
# --------------------------------------------------------------------------------------------

def test_evaluate_counts_and_f1():
    gt = {"a": [[0, 9], [50, 59]], "b": [[10, 19]]}
    pred = {"a": [[0, 9], [30, 39]], "b": [[10, 20]], "c": [[5, 6]]}
    result = evaluate(pred, gt)
    # a: 1 TP, 1 FP, 1 FN; b: IoU 10/11 -> 1 TP; c (no gt): 1 FP.
    assert [(v.video, v.tp, v.fp, v.fn) for v in result.per_video] == [
        ("a", 1, 1, 1), ("b", 1, 0, 0), ("c", 0, 1, 0)]
    assert (result.tp, result.fp, result.fn) == (2, 2, 1)
    assert result.precision == 0.5
    assert result.recall == 2 / 3
    assert result.f1 == pytest.approx(2 * 0.5 * (2 / 3) / (0.5 + 2 / 3))
    assert result.recognition_f1 is None and result.strs is None
    json.dumps(result.to_dict())
    assert "total" in str(result) and "F1 0.5714" in str(result)


def test_evaluate_nothing_predicted_is_zero_not_nan():
    result = evaluate({}, {"a": [[0, 9]]})
    assert (result.tp, result.fp, result.fn) == (0, 0, 1)
    assert (result.precision, result.recall, result.f1) == (0.0, 0.0, 0.0)


def test_evaluate_strs():
    gt = {"v1": [[0, 9], [20, 29], [40, 49]], "v2": [[0, 9], [30, 39]]}
    pred = {"v1": [[0, 9], [20, 29], [40, 49], [70, 79]], "v2": [[0, 9], [60, 69]]}
    gt_labels = {"v1": ["pos", "neg", "pos"], "v2": ["sur", "neg"]}
    pred_labels = {"v1": ["pos", "pos", "pos", "neg"], "v2": ["sur", "pos"]}
    result = evaluate(pred, gt, pred_labels=pred_labels, gt_labels=gt_labels)
    # Spotting: TP 4 (v1: 3, v2: 1), FP 2, FN 1 -> P 2/3, R 4/5, F1 8/11.
    assert (result.tp, result.fp, result.fn) == (4, 2, 1)
    assert result.f1 == pytest.approx(8 / 11)
    # TP pairs (pred, true): (pos,pos) (pos,neg) (pos,pos) (sur,sur).
    # neg: tp 0, fp 0, fn 1 -> P 0, R 0, F1 0
    # pos: tp 2, fp 1, fn 0 -> P 2/3, R 1, F1 4/5
    # sur: tp 1, fp 0, fn 0 -> P 1, R 1, F1 1
    macro_p, macro_r = (2 / 3 + 1) / 3, 2 / 3
    expected_f1 = 2 * macro_p * macro_r / (macro_p + macro_r)
    assert result.recognition_f1 == pytest.approx(expected_f1)
    assert result.recognition_uf1 == pytest.approx((0 + 0.8 + 1) / 3)
    assert result.strs == pytest.approx(8 / 11 * expected_f1)
    assert result.recognition_per_class["pos"]["fp"] == 1
    json.dumps(result.to_dict())
    assert "STRS" in str(result)


def test_evaluate_label_errors():
    with pytest.raises(ValueError, match="must be given together"):
        evaluate({"a": [[0, 1]]}, {"a": [[0, 1]]}, pred_labels={"a": [0]})
    with pytest.raises(ValueError, match=r"pred_labels\['a'\] must have one label per predicted interval"):
        evaluate({"a": [[0, 1]]}, {"a": [[0, 1]]}, pred_labels={"a": []}, gt_labels={"a": [0]})


# --------------------------------------------------------------------------------------------
# recognise
# --------------------------------------------------------------------------------------------

def mean_case2(pred_emotion, pred_peak, k_p):
    """MEAN's "Case 2" for one prediction (training_utils.recognition)."""
    pred_peak = max(0, pred_peak)
    window = list(np.argmax(pred_emotion[max(0, pred_peak - k_p):max(1, pred_peak)], axis=-1))
    return Counter(window).most_common(1)[0][0]


def one_hot(classes, n_classes=3):
    return np.eye(n_classes)[np.asarray(classes)]


def test_recognise_window_is_the_k_p_frames_before_the_apex():
    frames = one_hot([0, 0, 1, 1, 1, 2, 2, 2, 2, 1])
    # apex 5, k_p 3: frames 2, 3, 4 -> class 1 (the apex frame 5 is excluded).
    assert recognise(frames, [[2, 8, 5]], 3).tolist() == [1]
    # apex 9, k_p 4: frames 5..8 -> class 2.
    assert recognise(frames, [[5, 13, 9]], 4).tolist() == [2]
    # apex 0: frame 0 (MEAN's max(1, peak)).
    assert recognise(frames, [[-3, 3, 0]], 3).tolist() == [0]
    # apex 12, k_p 4: frames 8..11 clipped to 8, 9 -> classes 2, 1 tie.
    assert recognise(frames, [[8, 16, 12]], 4).tolist() == [1]
    assert recognise(frames, [[8, 16, 12]], 4, ties="first").tolist() == [2]
    # Window wholly past the end (frames 23, 24): the last frame.
    assert recognise(frames, [[20, 30, 25]], 2).tolist() == [1]


def test_recognise_ties():
    frames = one_hot([2, 2, 1, 1, 0])
    # apex 4, k_p 4: frames 0..3: classes 2, 2, 1, 1 tie.
    assert recognise(frames, [[0, 8, 4]], 4).tolist() == [1]
    assert recognise(frames, [[0, 8, 4]], 4, ties="first").tolist() == [2]


def test_recognise_matches_mean_case2_with_first_ties():
    rng = np.random.default_rng(5)
    for _ in range(500):
        n, c = int(rng.integers(1, 40)), int(rng.integers(1, 5))
        probs = rng.integers(0, 3, size=(n, c)).astype(np.float64)  # ties in argmax too
        k_p = int(rng.integers(1, 10))
        apex = int(rng.integers(0, n))
        expected = mean_case2(probs, apex, k_p)
        assert recognise(probs, [[apex - k_p, apex + k_p, apex]], k_p, ties="first")[0] == expected
        window = np.argmax(probs[max(0, apex - k_p):max(1, apex)], axis=1)
        assert recognise(probs, [[apex - k_p, apex + k_p, apex]], k_p)[0] == np.bincount(window).argmax()


# --------------------------------------------------------------------------------------------
# Plot
# --------------------------------------------------------------------------------------------

def test_plot_scores_writes_a_png(tmp_path):
    pytest.importorskip("matplotlib")
    from matplotlib.image import imread

    from meanspot_fused.io.plots import plot_scores

    scores = np.zeros(200)
    scores[[60, 61, 150]] = 1.0
    smoothed = smooth(scores, 4)
    intervals = find_intervals(scores, 4)
    path = tmp_path / "scores.png"
    plot_scores(path, smoothed, moilanen_threshold(smoothed), intervals, gt=[[55, 68]], title="v1")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    image = imread(path)
    assert image.shape[:2] == (400, 1500)  # figsize (15, 4) at 100 dpi
    # The light orange spans of the two intervals (9 of 200 frames each, about
    # 60 x 300 px) are drawn; without intervals only a few legend pixels match.
    light_orange = (image[..., 0] > 0.9) & (image[..., 2] < 0.8) & (image[..., 1] > 0.7)
    assert light_orange.sum() > 10000
    assert os.listdir(tmp_path) == ["scores.png"]
    with pytest.raises(ValueError, match=r"gt must have shape \(K, 2\)"):
        plot_scores(path, smoothed, 0.5, intervals, gt=[1, 2, 3])


def test_plot_axis_counts_pairs_not_frames():
    # The curve has one value per pair (i, i + k): its axis is the pair index
    # (it was labelled "Frame").
    pytest.importorskip("matplotlib")
    from meanspot_fused.io.plots import score_figure

    ax = score_figure(np.linspace(0, 1, 30), 0.5, [[3, 8, 5]]).axes[0]
    assert ax.get_xlabel() == "Pair index i (frames i and i + k)"
    assert ax.get_xlim()[1] == 29  # the last pair index


# --------------------------------------------------------------------------------------------
# The names of the module before the split (meanspot_fused/spotting.py)
# --------------------------------------------------------------------------------------------

OLD_NAMES = ["DATASET_K", "smooth", "k_p_from_ground_truth", "moilanen_threshold", "find_intervals", "recognise",
             "iou", "megc_counts", "evaluate", "Evaluation", "VideoCounts", "Annotations", "AnnotationError",
             "read_annotations", "write_intervals_csv"]


def test_old_names_are_the_split_modules_objects():
    from meanspot_fused.io import intervals as interval_files

    homes = {name: module for module in (spotting_intervals, spotting_evaluation, interval_files)
             for name in module.__all__}
    for name in OLD_NAMES:
        assert getattr(spotting, name) is getattr(homes[name], name), name
    assert set(OLD_NAMES) <= set(spotting.__all__) <= set(homes)
    namespace = {}
    exec("from meanspot_fused.spotting import *", namespace)
    assert set(spotting.__all__) <= set(namespace)
    with pytest.raises(AttributeError, match="no attribute 'nope'"):
        spotting.nope


@pytest.mark.parametrize("first", ["meanspot_fused.io.intervals", "meanspot_fused.spotting"])
def test_spotting_and_interval_files_import_in_either_order(first):
    # io.intervals uses spotting's interval checks and spotting re-exports io.intervals' names:
    # each must import cleanly when it is the first of the two a program loads.
    code = (f"import importlib; importlib.import_module({first!r}); "
            "from meanspot_fused.spotting import read_annotations, write_intervals_csv, find_intervals; "
            "from meanspot_fused.io.intervals import read_annotations as r; assert r is read_annotations")
    subprocess.run([sys.executable, "-c", code], check=True, cwd=str(ROOT))
