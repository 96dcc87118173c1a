"""k, k_p, spotting pseudo-labels, recognition samples (meanspot_fused.training.labels) against TRAINING.md
sections 1 and 2, hand-computed cases and a line-by-line port of MEAN's prepare_training loop."""
import numpy as np
import pytest

from meanspot_fused.errors import InputError
from meanspot_fused.training.annotations import Expression, GroundTruth, Video
from meanspot_fused.training.labels import (RECOGNITION_CLASSES, dataset_k, dataset_k_p, k_p_for_fold, one_hot,
                                            recognition_samples, spot_pseudo_labels, spot_sample_count,
                                            spot_samples)


def mean_pseudo_labels(n_samples, intervals, k_p):
    """MEAN's spotting_pseudo_labeling for one video (P:14-22), as written there."""
    pseudo_y_each = [0] * n_samples
    samples_arr = [np.arange(me[0], me[-1] + 1) for me in intervals]
    for ground_truth_arr in samples_arr:
        for index in range(len(pseudo_y_each)):
            pseudo_arr = np.arange(index, index + k_p)
            if pseudo_y_each[index] < len(np.intersect1d(pseudo_arr, ground_truth_arr)) / len(
                    np.union1d(pseudo_arr, ground_truth_arr)):
                pseudo_y_each[index] = 1
    return pseudo_y_each


def video(subject, name, *intervals, emotions=None):
    emotions = emotions or ["negative"] * len(intervals)
    return Video(subject, name, tuple(Expression(on, apex, off, e) for (on, apex, off), e in zip(intervals, emotions)))


def test_pseudo_labels_edges():
    # Section 2: y_i = 1 iff on - k_p + 1 <= i <= off. ME [5, 8], k_p 3: samples 3..8.
    y = spot_pseudo_labels(20, [(5, 6, 8)], 3)
    assert y.dtype == np.float32
    assert np.flatnonzero(y).tolist() == [3, 4, 5, 6, 7, 8]
    # Window [2, 4] misses frame 5, window [9, 11] starts after the offset.
    assert y[2] == 0 and y[9] == 0
    # (onset, offset) rows work too, and the window uses k_p, not k: no -k shift.
    assert np.array_equal(spot_pseudo_labels(20, [(5, 8)], 3), y)


def test_pseudo_labels_at_video_ends_and_overlaps():
    # An ME at frame 0 and one running past the last sample (offset 11 >= 10 samples).
    y = spot_pseudo_labels(10, [(0, 0, 1), (8, 9, 11)], 4)
    assert y.tolist() == [1, 1, 0, 0, 0, 1, 1, 1, 1, 1]
    # A one-frame ME with k_p 1 labels exactly its frame.
    assert np.flatnonzero(spot_pseudo_labels(10, [(4, 4, 4)], 1)).tolist() == [4]
    # Two overlapping MEs give the union, still 0/1.
    y = spot_pseudo_labels(30, [(5, 6, 10), (8, 9, 15)], 2)
    assert set(np.unique(y)) == {0.0, 1.0} and np.flatnonzero(y).tolist() == list(range(4, 16))


def test_pseudo_labels_equal_mean_loop():
    rng = np.random.default_rng(0)
    for _ in range(60):
        n = int(rng.integers(5, 60))
        k_p = int(rng.integers(1, 8))
        intervals = []
        for _ in range(int(rng.integers(0, 4))):
            on = int(rng.integers(-1, n + 3))
            intervals.append((on, on, on + int(rng.integers(0, 12))))
        assert spot_pseudo_labels(n, intervals, k_p).tolist() == mean_pseudo_labels(n, intervals, k_p)


def test_pseudo_labels_reject_bad_k_p():
    with pytest.raises(InputError, match="k_p"):
        spot_pseudo_labels(10, [(1, 2, 3)], 0)


def test_dataset_k_and_sample_count():
    # Section 1: k = fps x 0.1 s (L:100-114).
    assert {d: dataset_k(d) for d in RECOGNITION_CLASSES} == {
        "CASME_sq": 3, "SAMMLV": 20, "CASME2": 20, "SMIC_HS": 10, "SMIC_VIS": 3, "SMIC_NIR": 3}
    with pytest.raises(InputError, match="dataset"):
        dataset_k("CASME3")
    # n - k samples per video (pairs (i, i + k), i = 0 .. n - k - 1).
    assert spot_sample_count(100, 3) == 97
    with pytest.raises(InputError, match="more than k=20"):
        spot_sample_count(20, 20)


def two_subjects():
    # Subject s1: lengths (off - on) 10 and 3; subject s2: 1.
    return GroundTruth("CASME_sq", (video("s1", "0101", (0, 4, 10), (5, 6, 8)), video("s2", "0102", (20, 20, 21))))


def test_k_p_from_annotations():
    gt = two_subjects()
    # int((mean(10, 3, 1) + 1) / 2) = int((14/3 + 1) / 2) = int(2.83) = 2 (L:134-143).
    assert dataset_k_p(gt) == 2
    # Bug 9f: MEAN uses the test subject's annotations too.
    assert k_p_for_fold(gt, "s2") == 2 and k_p_for_fold(gt, "s1") == 2
    # The fix: without s2, int((6.5 + 1) / 2) = 3; without s1, int((1 + 1) / 2) = 1.
    assert k_p_for_fold(gt, "s2", exclude_test_subject=True) == 3
    assert k_p_for_fold(gt, "s1", exclude_test_subject=True) == 1
    with pytest.raises(InputError, match="s9"):
        k_p_for_fold(gt, "s9")


def test_spot_samples_layout():
    gt = two_subjects()
    s = spot_samples(gt, {"s1/0101": 15, "s2/0102": 25}, 2)
    assert s.video_keys == ("s1/0101", "s2/0102") and s.subjects == ("s1", "s2")
    assert s.starts.tolist() == [0, 15, 40]
    assert s.groups.tolist() == [0] * 15 + [1] * 25
    assert np.array_equal(s.labels[s.video_slice(1)], spot_pseudo_labels(25, [(20, 21)], 2))
    assert np.array_equal(s.labels[s.video_slice(0)], spot_pseudo_labels(15, [(0, 10), (5, 8)], 2))
    with pytest.raises(InputError, match="s2/0102"):
        spot_samples(gt, {"s1/0101": 15}, 2)


def test_recognition_samples_per_dataset():
    # CAS(ME)^2: negative 0, positive 1, surprise 2; 'others' stays in the GT but gets no sample.
    gt = GroundTruth("CASME_sq", (
        video("s1", "a", (0, 1, 2), (5, 6, 7), emotions=["others", "surprise"]),
        video("s2", "b", (3, 4, 5), (8, 9, 10), emotions=["positive", "negative"])))
    got = [(r.video, r.expression, r.group, r.onset, r.apex, r.label) for r in recognition_samples(gt)]
    assert got == [(0, 1, 0, 5, 6, 2), (1, 0, 1, 3, 4, 1), (1, 1, 1, 8, 9, 0)]
    # CASME II: disgust 0, happiness 1, others 2, surprise 3, repression 4.
    gt = GroundTruth("CASME2", (video("1", "a", *[(i, i, i) for i in range(5)],
                                      emotions=["repression", "others", "surprise", "happiness", "disgust"]),))
    assert [r.label for r in recognition_samples(gt)] == [4, 2, 3, 1, 0]


def test_recognition_sample_without_emotion_is_an_error():
    # Bug 9g with positional pairing: an interval left without an emotion, where MEAN crashes.
    gt = GroundTruth("SAMMLV", (video("006", "006_1", (0, 1, 2), emotions=[None]),))
    with pytest.raises(InputError, match="emotion_pairing='row'"):
        recognition_samples(gt)


def test_one_hot_width_is_explicit():
    y = one_hot([0, 2, 1], 3)
    assert y.tolist() == [[1, 0, 0], [0, 0, 1], [0, 1, 0]] and y.dtype == np.float32
    # Keras' to_categorical would give 2 columns here; the head has 3 outputs.
    assert one_hot([0, 1], 3).shape == (2, 3)
    with pytest.raises(InputError, match=r"\[0, 2\]"):
        one_hot([3], 3)
