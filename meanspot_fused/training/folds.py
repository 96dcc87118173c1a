"""Leave-one-subject-out folds and negative downsampling (TRAINING.md sections 3 and 4).

Fold ``f`` tests subject ``subjects[f]`` (natsort order, MEAN's
``final_subjects``). Spotting indices are positions in the concatenated
spotting samples (:class:`~meanspot_fused.training.labels.SpotSamples`);
recognition indices are positions in the list of
:func:`~meanspot_fused.training.labels.recognition_samples`. Every index
array is int64 and sorted ascending, as sklearn's LeaveOneGroupOut gives them.
"""
from __future__ import annotations

import dataclasses
import random
from typing import Dict, List, Mapping, Sequence

import numpy as np

from ..errors import InputError
from .annotations import GroundTruth
from .labels import RecognitionSample, SpotSamples, k_p_for_fold, recognition_samples, spot_samples

__all__ = ["SpotFold", "RecognitionFold", "spot_folds", "recognition_folds", "mean_downsample",
           "downsample_folds", "DOWNSAMPLING_MODES", "FoldPlan", "plan_folds"]

DOWNSAMPLING_MODES = ("mean", "numpy")


@dataclasses.dataclass(frozen=True)
class SpotFold:
    """Spotting fold ``fold``: test every sample of ``subject``, train on every other sample (T:50-52,65-66)."""
    fold: int
    subject: str
    train_index: np.ndarray
    test_index: np.ndarray


@dataclasses.dataclass(frozen=True)
class RecognitionFold:
    """The recognition split that spotting fold ``fold`` (test subject ``subject``) uses (T:53-58,67-70).

    ``train_index`` / ``test_index``: positions in the recognition samples.
    With MEAN's misalignment (bug 9b) they may belong to another subject's
    split. ``trains`` is False where the training split is empty: MEAN then
    trains no recognition head and leaves the fold's spotted intervals out of
    the analysis metrics (T:117,175).
    """
    fold: int
    subject: str
    train_index: np.ndarray
    test_index: np.ndarray

    @property
    def trains(self) -> bool:
        return self.train_index.size > 0


def _leave_one_group_out(groups: np.ndarray):
    """(group, train, test) per unique group in ascending order, as sklearn's LeaveOneGroupOut.split."""
    for g in np.unique(groups):
        yield int(g), np.flatnonzero(groups != g).astype(np.int64), np.flatnonzero(groups == g).astype(np.int64)


def spot_folds(samples: SpotSamples) -> List[SpotFold]:
    """One fold per subject, in subject order; the test set is not subsampled (section 3)."""
    folds = [SpotFold(g, samples.subjects[g], train, test) for g, train, test in _leave_one_group_out(samples.groups)]
    if len(folds) != len(samples.subjects):
        raise InputError(f"every subject needs spotting samples; got samples for {len(folds)} of "
                         f"{len(samples.subjects)} subjects")
    return folds


def recognition_folds(groups: Sequence[int], subjects: Sequence[str], *,
                      by_subject: bool = False) -> List[RecognitionFold]:
    """The recognition split of each spotting fold.

    ``groups``: the subject position of each recognition sample (MEAN's
    groupsLabel1, :attr:`RecognitionSample.group`); ``subjects``: every
    subject in fold order.

    Default, MEAN's T:53-58 (bug 9b): the LeaveOneGroupOut splits come in
    ascending group order, and before the split with ENUMERATE index ``i`` an
    empty pair is inserted when ``i`` (not the split's group) is a subject
    without recognition samples; spotting fold ``f`` then takes entry ``f``.
    Right only when at most one subject, not the last, lacks samples; where
    the list runs short MEAN crashes (IndexError), and this raises
    :class:`~meanspot_fused.errors.InputError` instead.

    ``by_subject=True`` (the fix): fold ``f`` trains on every other
    subject's samples and tests on subject ``f``'s own.
    """
    groups = np.asarray(groups, dtype=np.int64).reshape(-1)
    n = len(subjects)
    if groups.size and (groups.min() < 0 or groups.max() >= n):
        raise InputError(f"groups must be subject positions in [0, {n - 1}], got {groups.min()}..{groups.max()}")
    if by_subject:
        return [RecognitionFold(f, subjects[f], np.flatnonzero(groups != f).astype(np.int64),
                                np.flatnonzero(groups == f).astype(np.int64)) for f in range(n)]
    present = np.unique(groups)
    if present.size < 2:
        raise InputError(f"MEAN's recognition folds need samples of at least 2 subjects (LeaveOneGroupOut), "
                         f"got {present.size}; use by_subject=True")
    splits = []
    empty = np.zeros(0, dtype=np.int64)
    for i, (_, train, test) in enumerate(_leave_one_group_out(groups)):
        if i not in present:
            splits.append((empty, empty))
        splits.append((train, test))
    if len(splits) < n:
        raise InputError(f"MEAN's recognition folds (bug 9b) give {len(splits)} splits for {n} subjects: MEAN "
                         f"crashes at fold {len(splits)} (subject {subjects[len(splits)]}); subjects without "
                         f"recognition samples: {', '.join(subjects[g] for g in range(n) if g not in present)}; "
                         f"use by_subject=True")
    return [RecognitionFold(f, subjects[f], *splits[f]) for f in range(n)]


def _check_ratio(ratio) -> int:
    if isinstance(ratio, bool) or not isinstance(ratio, (int, np.integer)) or ratio < 1:
        raise InputError(f"ratio must be an integer >= 1 (negatives kept per positive), got {ratio!r}")
    return int(ratio)


def mean_downsample(y_train, rng: random.Random, ratio: int = 5, *,
                    guard_counts_negatives: bool = False) -> np.ndarray:
    """The positions in ``y_train`` one fold trains on, drawn as MEAN draws them (T:75-84).

    MEAN: ``rem = int(min(class counts) * ratio)``; if ``rem <= len(y_train)``
    keep ``rng.sample(negative positions, rem)`` and every positive, else
    ``int(max(class counts) / ratio)`` sampled positives and every negative;
    sorted. Bug 9e: the guard compares with ``len(y_train)``, not with the
    number of negatives, so ``random.sample`` raises when ``rem`` exceeds
    it; this raises :class:`~meanspot_fused.errors.InputError` there.
    ``guard_counts_negatives=True`` (the fix): ``rem = int(#positives *
    ratio)``; sample ``rem`` negatives if there are that many, else keep all.

    ``rng``: a ``random.Random`` whose state the caller carries from fold
    to fold (MEAN seeds Python's random once, T:15). Returns int64, sorted.
    """
    ratio = _check_ratio(ratio)
    y = np.asarray(y_train).reshape(-1)
    negatives = [int(i) for i in np.flatnonzero(y == 0)]
    positives = [int(i) for i in np.flatnonzero(y == 1)]
    if len(negatives) + len(positives) != y.size:
        raise InputError("y_train must hold 0/1 labels only")
    if not positives:
        raise InputError(f"the training fold has no positive sample among {y.size} (no expression in the "
                         f"training subjects' videos): nothing to learn")
    if guard_counts_negatives:
        rem = len(positives) * ratio
        kept = rng.sample(negatives, rem) + positives if rem <= len(negatives) else negatives + positives
    else:
        counts = np.unique(y, return_counts=True)[1]
        rem = int(counts.min() * ratio)
        if rem <= y.size:
            if rem > len(negatives):
                raise InputError(f"MEAN's downsampling (bug 9e) draws {rem} negatives from {len(negatives)} "
                                 f"({len(positives)} positives x ratio {ratio}): random.sample raises there; "
                                 f"use guard_counts_negatives=True")
            kept = rng.sample(negatives, rem) + positives
        else:
            rem = int(counts.max() / ratio)
            kept = rng.sample(positives, rem) + negatives
    return np.array(sorted(kept), dtype=np.int64)


def downsample_folds(labels, folds: Sequence[SpotFold], *, mode: str = "mean", ratio: int = 5, seed: int = 1,
                     guard_counts_negatives: bool = False) -> List[np.ndarray]:
    """The spotting samples each fold trains on (global indices, sorted), for every fold at once.

    ``labels``: the pseudo-labels of all samples; ``folds``: every fold, in
    order. ``mode="mean"``: one ``random.Random(seed)`` (MEAN: seed 1) draws
    fold after fold with :func:`mean_downsample`, so fold ``f``'s subset
    depends on the folds before it: computing all of them here keeps a
    resumed or partial run on MEAN's draws. ``mode="numpy"``: each fold
    draws alone from ``numpy.random.default_rng([seed, fold])`` with the
    fixed guard (``int(#pos * ratio)`` negatives, or all when fewer).
    """
    if mode not in DOWNSAMPLING_MODES:
        raise InputError(f"mode must be one of {', '.join(DOWNSAMPLING_MODES)}, got {mode!r}")
    ratio = _check_ratio(ratio)
    rng = random.Random(seed)
    return [_downsample_fold(np.asarray(labels).reshape(-1), fold, mode, rng, ratio, seed, guard_counts_negatives)
            for fold in folds]


def _downsample_fold(labels: np.ndarray, fold: SpotFold, mode: str, rng: random.Random, ratio: int, seed: int,
                     guard_counts_negatives: bool) -> np.ndarray:
    """One fold of :func:`downsample_folds`: its kept training samples, global indices, sorted."""
    y_train = labels[fold.train_index]
    if mode == "mean":
        try:
            kept = mean_downsample(y_train, rng, ratio, guard_counts_negatives=guard_counts_negatives)
        except InputError as exc:
            raise InputError(f"fold {fold.fold} (subject {fold.subject}): {exc}") from None
    else:
        negatives, positives = np.flatnonzero(y_train == 0), np.flatnonzero(y_train == 1)
        if positives.size == 0:
            raise InputError(f"fold {fold.fold} (subject {fold.subject}): the training fold has no positive "
                             f"sample: nothing to learn")
        rem = positives.size * ratio
        if rem < negatives.size:
            negatives = np.random.default_rng([seed, fold.fold]).choice(negatives, rem, replace=False)
        kept = np.sort(np.concatenate((negatives, positives)))
    return fold.train_index[kept]


@dataclasses.dataclass(frozen=True)
class FoldPlan:
    """Everything fold ``fold`` trains and tests on, from :func:`plan_folds`.

    ``samples``: the spotting samples with the pseudo-labels of this fold's
    ``k_p``; ``train_index``: the downsampled training samples and
    ``test_index`` every sample of ``subject`` (global sample indices,
    sorted). ``recognition``: the dataset's recognition samples and
    ``recognition_fold`` the split of them this fold uses (its ``trains`` is
    False where MEAN trains no head and leaves the fold out of the analysis).
    """
    fold: int
    subject: str
    k_p: int
    samples: SpotSamples
    train_index: np.ndarray
    test_index: np.ndarray
    recognition: List[RecognitionSample]
    recognition_fold: RecognitionFold


def plan_folds(gt: GroundTruth, sample_counts: Mapping[str, int], *, k_p_excludes_test_subject: bool = False,
               recognition_by_subject: bool = False, downsampling: str = "mean", ratio: int = 5, seed: int = 1,
               guard_counts_negatives: bool = False) -> List[FoldPlan]:
    """MEAN's LOSO protocol for every fold at once (sections 1-4), with one option per bug.

    ``sample_counts["<subject>/<video>"]``: the video's spotting samples
    (``n_frames - k``). k_p: the dataset's (bug 9f) or, with
    ``k_p_excludes_test_subject``, the training subjects' (then each fold
    has its own pseudo-labels). Recognition splits: MEAN's misaligned ones
    (bug 9b) or by subject (``recognition_by_subject``). Downsampling: see
    :func:`downsample_folds` (``downsampling`` is its mode; the draws of
    mode "mean" carry from fold to fold, so all folds are planned together
    even when a run trains only some of them).
    """
    if downsampling not in DOWNSAMPLING_MODES:
        raise InputError(f"downsampling must be one of {', '.join(DOWNSAMPLING_MODES)}, got {downsampling!r}")
    ratio = _check_ratio(ratio)
    # The samples and folds of each distinct k_p (one for MEAN's protocol, a few with the 9f fix).
    by_k_p: Dict[int, tuple] = {}
    recognition = recognition_samples(gt)
    recog_folds = recognition_folds([r.group for r in recognition], gt.subjects, by_subject=recognition_by_subject)
    plans = []
    rng = random.Random(seed)
    for f, subject in enumerate(gt.subjects):
        k_p = k_p_for_fold(gt, subject, exclude_test_subject=k_p_excludes_test_subject)
        if k_p not in by_k_p:
            samples = spot_samples(gt, sample_counts, k_p)
            by_k_p[k_p] = samples, spot_folds(samples)
        samples, folds = by_k_p[k_p]
        fold = folds[f]
        train = _downsample_fold(samples.labels, fold, downsampling, rng, ratio, seed, guard_counts_negatives)
        plans.append(FoldPlan(f, subject, k_p, samples, train, fold.test_index, recognition, recog_folds[f]))
    return plans
