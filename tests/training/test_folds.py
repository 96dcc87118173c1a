"""LOSO folds and negative downsampling (meanspot_fused.training.folds) against TRAINING.md sections 3, 4
and bugs 9b, 9e: hand-computed cases and MEAN's own code (train_evaluate.py T:49-84) run on the same lists."""
import random

import numpy as np
import pytest

from meanspot_fused.errors import InputError
from meanspot_fused.training.annotations import Expression, GroundTruth, Video
from meanspot_fused.training.folds import (downsample_folds, mean_downsample, plan_folds, recognition_folds,
                                           spot_folds)
from meanspot_fused.training.labels import SpotSamples, dataset_k_p, recognition_samples, spot_samples


def samples(counts, labels=None):
    """SpotSamples of one video per subject s0, s1, ... with ``counts`` samples each."""
    starts = np.concatenate(([0], np.cumsum(counts)))
    n = int(starts[-1])
    return SpotSamples(tuple(f"s{i}/v" for i in range(len(counts))), tuple(f"s{i}" for i in range(len(counts))),
                       starts, np.zeros(n, np.float32) if labels is None else np.asarray(labels, np.float32),
                       np.repeat(np.arange(len(counts)), counts))


def test_spot_folds_leave_one_subject_out():
    folds = spot_folds(samples([2, 3, 1]))
    assert [(f.fold, f.subject) for f in folds] == [(0, "s0"), (1, "s1"), (2, "s2")]
    assert [f.test_index.tolist() for f in folds] == [[0, 1], [2, 3, 4], [5]]
    assert [f.train_index.tolist() for f in folds] == [[2, 3, 4, 5], [0, 1, 5], [0, 1, 2, 3, 4]]


def mean_recognition_lists(groups):
    """T:49-58 as written, with LeaveOneGroupOut's splits in ascending group order."""
    recog_subject_uni = np.unique(groups)
    train_lists, test_lists = [], []
    for subject_index, g in enumerate(recog_subject_uni):
        train_index, test_index = np.flatnonzero(groups != g), np.flatnonzero(groups == g)
        if subject_index not in recog_subject_uni:
            train_lists.append(np.array([]))
            test_lists.append(np.array([]))
        train_lists.append(train_index)
        test_lists.append(test_index)
    return train_lists, test_lists


def test_recognition_folds_reproduce_casme_sq_weights():
    # Bug 9b, CAS(ME)^2: 14 folds, recognition samples for s2, s5, s6, s7, s10, s11, s12, s13, s14 only
    # (0-based 1, 4, 5, 6, 9, ..., 13), two samples each.
    subjects = [f"s{i}" for i in range(1, 15)]
    with_samples = [1, 4, 5, 6, 9, 10, 11, 12, 13]
    groups = np.repeat(with_samples, 2)
    folds = recognition_folds(groups, subjects)
    # The published weights: untrained heads for exactly s1, s4, s6, s11, s13.
    assert [f.subject for f in folds if not f.trains] == ["s1", "s4", "s6", "s11", "s13"]
    owner = {f.subject: subjects[int(groups[f.test_index[0]])] for f in folds if f.trains}
    # s3, s5, s8, s9, s10, s12 use another subject's split ...
    assert sorted((s for s, o in owner.items() if s != o), key=lambda s: int(s[1:])) == \
        ["s3", "s5", "s8", "s9", "s10", "s12"]
    # ... and s5, s10, s12 are recognised by a head trained on their own samples (leakage).
    leaked = [f.subject for f in folds if f.trains and subjects.index(f.subject) in groups[f.train_index]]
    assert leaked == ["s5", "s10", "s12"]
    # Same lists as MEAN's code.
    train_lists, test_lists = mean_recognition_lists(groups)
    assert [f.train_index.tolist() for f in folds] == [t.tolist() for t in train_lists]
    assert [f.test_index.tolist() for f in folds] == [t.tolist() for t in test_lists]


def test_recognition_folds_by_subject_fix():
    subjects = [f"s{i}" for i in range(1, 15)]
    groups = np.repeat([1, 4, 5, 6, 9, 10, 11, 12, 13], 2)
    for f in recognition_folds(groups, subjects, by_subject=True):
        assert f.fold not in groups[f.train_index]
        assert np.all(groups[f.test_index] == f.fold)
        assert f.trains


def test_recognition_folds_one_missing_subject_is_aligned():
    # SAMM-LV: only one subject, not the last, lacks samples: MEAN's folds are right (9b).
    subjects = ["a", "b", "c", "d"]
    groups = np.array([0, 0, 1, 3, 3])
    mean, fixed = recognition_folds(groups, subjects), recognition_folds(groups, subjects, by_subject=True)
    for f, g in zip(mean, fixed):
        assert f.test_index.tolist() == g.test_index.tolist()
        # MEAN trains no head for the subject without samples; the fix trains one on the others.
        assert f.train_index.tolist() == (g.train_index.tolist() if f.fold != 2 else [])


def test_recognition_folds_last_subject_missing_is_an_error():
    # MEAN's list is one split short: it crashes at the last fold (IndexError).
    with pytest.raises(InputError, match=r"crashes at fold 2 \(subject c\).*by_subject=True"):
        recognition_folds([0, 1, 1], ["a", "b", "c"])
    assert len(recognition_folds([0, 1, 1], ["a", "b", "c"], by_subject=True)) == 3
    with pytest.raises(InputError, match="at least 2 subjects"):
        recognition_folds([1, 1], ["a", "b"])


def mean_downsample_code(y_train, ratio):
    """T:75-84 as written, drawing from Python's global random."""
    unique, uni_count = np.unique(y_train, return_counts=True)
    rem_count = int(uni_count.min() * ratio)
    if rem_count <= len(y_train):
        rem_index = random.sample([index for index, i in enumerate(y_train) if i == 0], rem_count)
        rem_index += (index for index, i in enumerate(y_train) if i == 1)
    else:
        rem_count = int(uni_count.max() / ratio)
        rem_index = random.sample([index for index, i in enumerate(y_train) if i == 1], rem_count)
        rem_index += (index for index, i in enumerate(y_train) if i == 0)
    rem_index.sort()
    return rem_index


def labelled_subjects(rng, n_subjects=4):
    counts, labels = [], []
    for _ in range(n_subjects):
        n = int(rng.integers(40, 90))
        y = np.zeros(n)
        on = int(rng.integers(0, n - 6))
        y[on:on + int(rng.integers(2, 6))] = 1
        counts.append(n)
        labels.append(y)
    return samples(counts, np.concatenate(labels))


def test_mean_downsampling_reproduces_mean_draws_across_folds():
    s = labelled_subjects(np.random.default_rng(3))
    folds = spot_folds(s)
    got = downsample_folds(s.labels, folds)
    state = random.getstate()
    try:
        random.seed(1)  # T:15, once at import; the state then carries from fold to fold.
        expected = [f.train_index[mean_downsample_code([int(v) for v in s.labels[f.train_index]], 5)]
                    for f in folds]
    finally:
        random.setstate(state)
    assert [g.tolist() for g in got] == [e.tolist() for e in expected]
    for g in got:
        # Section 4: all positives and 5 negatives per positive.
        pos = int(s.labels[g].sum())
        assert len(g) == 6 * pos and np.all(np.diff(g) > 0)
    # Fold 1's draw depends on fold 0's: alone, from a fresh seed, it differs.
    alone = downsample_folds(s.labels, folds[1:])
    assert alone[0].tolist() != got[1].tolist()


def test_mean_downsampling_hand_counts():
    # 3 positives, 40 negatives: rem = 15 <= 43, so 15 negatives + 3 positives.
    y = np.array([0] * 20 + [1] * 3 + [0] * 20)
    kept = mean_downsample(y, random.Random(1))
    assert len(kept) == 18 and set(np.flatnonzero(y == 1)) <= set(kept.tolist())
    assert kept.tolist() == sorted(random.Random(1).sample([i for i in range(43) if y[i] == 0], 15) + [20, 21, 22])


def test_mean_downsampling_guard_bug_9e():
    # 10 positives, 45 negatives: rem = 50 <= 55 but > 45: random.sample raises in MEAN.
    y = np.array([1] * 10 + [0] * 45)
    with pytest.raises(InputError, match="bug 9e.*guard_counts_negatives=True"):
        mean_downsample(y, random.Random(1))
    with pytest.raises(ValueError):
        random.Random(1).sample(list(range(45)), 50)
    # The fix compares with the negatives: fewer than 5 per positive, keep them all.
    assert mean_downsample(y, random.Random(1), guard_counts_negatives=True).tolist() == list(range(55))
    # 10 positives, 30 negatives: rem = 50 > 40, MEAN's other branch keeps int(30 / 5) = 6 positives.
    y = np.array([1] * 10 + [0] * 30)
    kept = mean_downsample(y, random.Random(1))
    assert len(kept) == 36 and int(y[kept].sum()) == 6
    assert len(mean_downsample(y, random.Random(1), guard_counts_negatives=True)) == 40
    # Where MEAN does not crash and samples negatives, the fix makes the same call.
    y = np.array([0] * 30 + [1] * 2)
    assert np.array_equal(mean_downsample(y, random.Random(5)),
                          mean_downsample(y, random.Random(5), guard_counts_negatives=True))


def test_downsampling_fold_without_positives():
    s = samples([5, 10], np.concatenate((np.zeros(5), [0, 1] + [0] * 8)))
    with pytest.raises(InputError, match=r"fold 1 \(subject s1\).*no positive"):
        downsample_folds(s.labels, spot_folds(s))
    with pytest.raises(InputError, match=r"fold 1 \(subject s1\).*no positive"):
        downsample_folds(s.labels, spot_folds(s), mode="numpy")


def test_numpy_downsampling_is_per_fold():
    s = labelled_subjects(np.random.default_rng(4))
    folds = spot_folds(s)
    all_folds = downsample_folds(s.labels, folds, mode="numpy", seed=7)
    # Each fold draws alone: the same subset without the folds before it; another seed differs.
    assert downsample_folds(s.labels, folds[2:], mode="numpy", seed=7)[0].tolist() == all_folds[2].tolist()
    assert downsample_folds(s.labels, folds, mode="numpy", seed=8)[0].tolist() != all_folds[0].tolist()
    for f, kept in zip(folds, all_folds):
        assert set(kept.tolist()) <= set(f.train_index.tolist())
        pos = int(s.labels[kept].sum())
        assert pos == int(s.labels[f.train_index].sum()) and len(kept) == 6 * pos
    with pytest.raises(InputError, match="mode"):
        downsample_folds(s.labels, folds, mode="sklearn")


def three_subjects():
    # Lengths (off - on): s1 12 and 2 (an 'others' ME: no recognition sample), s2 1, s3 3.
    return GroundTruth("CASME_sq", (
        Video("s1", "a", (Expression(10, 14, 22, "negative"), Expression(40, 41, 42, "others"))),
        Video("s2", "a", (Expression(30, 30, 31, "positive"),)),
        Video("s3", "a", (Expression(5, 6, 8, "surprise"), Expression(50, 51, 53, "negative")))))


def test_plan_folds_is_mean_protocol():
    gt, counts = three_subjects(), {"s1/a": 200, "s2/a": 200, "s3/a": 200}
    plans = plan_folds(gt, counts)
    # int((mean(12, 2, 1, 3, 3) + 1) / 2) = int(2.7) = 2 for every fold (bug 9f: test subject included).
    assert [p.k_p for p in plans] == [2, 2, 2] == [dataset_k_p(gt)] * 3
    samples = spot_samples(gt, counts, 2)
    folds = spot_folds(samples)
    kept = downsample_folds(samples.labels, folds)
    recog = recognition_folds([r.group for r in recognition_samples(gt)], gt.subjects)
    for p, f, k, r in zip(plans, folds, kept, recog):
        assert (p.subject, p.test_index.tolist(), p.train_index.tolist()) == (f.subject, f.test_index.tolist(),
                                                                             k.tolist())
        assert np.array_equal(p.samples.labels, samples.labels)
        assert p.recognition_fold.train_index.tolist() == r.train_index.tolist()
    assert [len(p.recognition) for p in plans] == [4] * 3


def test_plan_folds_fixes():
    gt, counts = three_subjects(), {"s1/a": 200, "s2/a": 200, "s3/a": 200}
    plans = plan_folds(gt, counts, k_p_excludes_test_subject=True, recognition_by_subject=True,
                       downsampling="numpy", seed=3)
    # Without s1: int(((1 + 3 + 3) / 3 + 1) / 2) = int(1.67) = 1; without s2: int((20 / 4 + 1) / 2) = 3;
    # without s3: int((15 / 3 + 1) / 2) = 3.
    assert [p.k_p for p in plans] == [1, 3, 3]
    assert np.array_equal(plans[0].samples.labels, spot_samples(gt, counts, 1).labels)
    for p in plans:
        assert p.fold not in [p.recognition[i].group for i in p.recognition_fold.train_index]
        assert int(p.samples.labels[p.train_index].sum()) * 6 == len(p.train_index)
    with pytest.raises(InputError, match="downsampling must be"):
        plan_folds(gt, counts, downsampling="smote")
