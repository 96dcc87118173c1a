"""k, k_p, spotting pseudo-labels, recognition samples and labels (TRAINING.md sections 1 and 2).

Layouts: frames are 0-based; an interval ``(onset, offset)`` is inclusive.
Spotting sample ``i`` of an ``n``-frame video is the frame pair ``(i, i + k)``,
``i = 0 .. n - k - 1`` (``n - k`` samples, the rows of the video's feature
file). Sample indices and frame indices are compared directly, with no
shift (P:4-29, U:46).
"""
from __future__ import annotations

import dataclasses
from typing import List, Mapping, Optional, Sequence, Tuple

import numpy as np

from ..errors import InputError
from ..spotting.intervals import DATASET_K, k_p_from_ground_truth
from .annotations import GroundTruth, _check_dataset

__all__ = ["RECOGNITION_CLASSES", "dataset_k", "spot_sample_count", "dataset_k_p", "k_p_for_fold",
           "spot_pseudo_labels", "SpotSamples", "spot_samples", "RecognitionSample", "recognition_samples",
           "one_hot"]

#: Recognition classes per dataset, index = label (P:63-72; L:117-131).
RECOGNITION_CLASSES = {name: ('negative', 'positive', 'surprise') for name in DATASET_K}
RECOGNITION_CLASSES["CASME2"] = ('disgust', 'happiness', 'others', 'surprise', 'repression')


def dataset_k(dataset: str) -> int:
    """MEAN's pair distance k (L:100-114, fps x 0.1 s): CASME_sq 3, SAMMLV 20, CASME2 20, SMIC_HS 10, ..."""
    return DATASET_K[_check_dataset(dataset)]


def spot_sample_count(n_frames: int, k: int) -> int:
    """Spotting samples of an ``n_frames`` video: pairs ``(i, i + k)``, so ``n_frames - k`` (F:144-148)."""
    if n_frames <= k:
        raise InputError(f"a video needs more than k={k} frames to give a spotting sample, got {n_frames}")
    return int(n_frames) - int(k)


def dataset_k_p(gt: GroundTruth, exclude_subject: Optional[str] = None) -> int:
    """MEAN's k_p: ``int((mean(offset - onset) + 1) / 2)`` over every kept expression (L:134-143).

    ``exclude_subject`` leaves one subject's expressions out (the fix of bug
    9f, see :func:`k_p_for_fold`). MEAN's k_p would be 0 when the mean length
    is below 1 frame; this gives 1 then (a 0 box cannot smooth).
    """
    intervals = [(e.onset, e.offset) for e in gt.expressions(exclude_subject)]
    if not intervals:
        raise InputError(f"no kept expression to compute k_p from"
                         f"{' without subject ' + exclude_subject if exclude_subject else ''}")
    return k_p_from_ground_truth(np.array(intervals, dtype=np.int64))


def k_p_for_fold(gt: GroundTruth, test_subject: str, *, exclude_test_subject: bool = False) -> int:
    """The k_p a fold uses: the dataset's, test subject included, as MEAN (bug 9f);
    ``exclude_test_subject=True`` computes it from the training subjects only (the fix)."""
    if test_subject not in gt.subjects:
        raise InputError(f"test_subject {test_subject!r} is not a subject of the ground truth "
                         f"({', '.join(gt.subjects)})")
    return dataset_k_p(gt, test_subject if exclude_test_subject else None)


def spot_pseudo_labels(n_samples: int, intervals, k_p: int) -> np.ndarray:
    """MEAN's hard 0/1 spotting labels of one video (P:4-29), float32 (n_samples,).

    ``y[i] = 1`` iff the window ``[i, i + k_p - 1]`` overlaps some ``[onset,
    offset]`` (MEAN: IoU of ``arange(i, i + k_p)`` and ``arange(onset,
    offset + 1)`` > 0), i.e. ``onset - k_p + 1 <= i <= offset``.
    ``intervals``: (M, 2) rows (onset, offset) or (M, 3) rows (onset, apex,
    offset), 0-based inclusive; the first and last columns are used.
    """
    if isinstance(k_p, bool) or int(k_p) != k_p or k_p < 1:
        raise InputError(f"k_p must be an integer >= 1, got {k_p!r}")
    iv = np.asarray(intervals, dtype=np.int64)
    if iv.size == 0:
        iv = iv.reshape(0, 2)
    if iv.ndim != 2 or iv.shape[1] not in (2, 3):
        raise InputError(f"intervals must have shape (M, 2) or (M, 3), got {iv.shape}")
    y = np.zeros(int(n_samples), dtype=np.float32)
    for onset, offset in zip(iv[:, 0], iv[:, -1]):
        y[max(0, onset - int(k_p) + 1):max(0, offset + 1)] = 1.0
    return y


@dataclasses.dataclass(frozen=True)
class SpotSamples:
    """Every spotting sample of a dataset, concatenated in MEAN's order (P:74-76, P:102-111).

    Video ``j`` (``gt.videos[j]``, key ``video_keys[j]``) owns samples
    ``starts[j] .. starts[j + 1] - 1``; its local sample ``i`` is the frame
    pair ``(i, i + k)``. ``labels`` (N,) float32 pseudo-labels for the given
    k_p; ``groups`` (N,) int64, the position of the sample's subject in
    ``subjects`` (MEAN's groupsLabel, the LOSO groups).
    """
    video_keys: Tuple[str, ...]
    subjects: Tuple[str, ...]
    starts: np.ndarray
    labels: np.ndarray
    groups: np.ndarray

    def video_slice(self, j: int) -> slice:
        return slice(int(self.starts[j]), int(self.starts[j + 1]))


def spot_samples(gt: GroundTruth, sample_counts: Mapping[str, int], k_p: int) -> SpotSamples:
    """Labels and groups of every spotting sample; ``sample_counts["<subject>/<video>"]`` = ``n - k``."""
    missing = [v.key for v in gt.videos if v.key not in sample_counts]
    if missing:
        raise InputError(f"sample_counts has no entry for video(s) {', '.join(missing[:5])}"
                         f"{' ...' if len(missing) > 5 else ''} (a feature file per annotated video is needed)")
    subjects = gt.subjects
    counts = [int(sample_counts[v.key]) for v in gt.videos]
    starts = np.concatenate(([0], np.cumsum(counts))).astype(np.int64)
    labels = [spot_pseudo_labels(n, v.intervals(), k_p) for v, n in zip(gt.videos, counts)]
    groups = [np.full(n, subjects.index(v.subject), dtype=np.int64) for v, n in zip(gt.videos, counts)]
    return SpotSamples(tuple(v.key for v in gt.videos), tuple(subjects), starts,
                       np.concatenate(labels) if labels else np.zeros(0, np.float32),
                       np.concatenate(groups) if groups else np.zeros(0, np.int64))


@dataclasses.dataclass(frozen=True)
class RecognitionSample:
    """One recognition training sample: features of frames (onset, apex) of one expression (F:76-101).

    ``video``: index into ``gt.videos``; ``expression``: index into its
    expressions; ``group``: position of its subject in ``gt.subjects``;
    ``label``: index into :data:`RECOGNITION_CLASSES` of the dataset.
    ``onset`` is also the spotting sample MEAN monitors (X1, P:55-56).
    """
    video: int
    expression: int
    group: int
    onset: int
    apex: int
    label: int


def recognition_samples(gt: GroundTruth) -> List[RecognitionSample]:
    """MEAN's recognition samples and labels (P:31-80), in its order (subject, video, expression).

    CAS(ME)^2 and SAMM-LV keep negative, positive, surprise (0, 1, 2); their
    'others' expressions stay in the spotting ground truth and get no
    sample. CASME II keeps its five classes (disgust 0, happiness 1, others
    2, surprise 3, repression 4); SMIC negative, positive, surprise.
    """
    classes = RECOGNITION_CLASSES[gt.dataset]
    subjects = gt.subjects
    out = []
    for j, video in enumerate(gt.videos):
        for i, e in enumerate(video.expressions):
            if e.emotion is None:
                # MEAN's lists fell out of step (bug 9g) and it crashes here (IndexError, P:54).
                raise InputError(f"video {video.key}, expression {i} ({e.row.where() if e.row else 'no row'}) "
                                 f"has no emotion paired with it (MEAN's positional pairing, bug 9g); "
                                 f"use emotion_pairing='row'")
            if e.emotion in classes:
                out.append(RecognitionSample(j, i, subjects.index(video.subject), e.onset, e.apex,
                                             classes.index(e.emotion)))
    return out


def one_hot(labels: Sequence[int], n_classes: int) -> np.ndarray:
    """float32 (N, n_classes) one-hot rows (Keras to_categorical, P:78).

    Keras infers the width as ``max(label) + 1``; the width here is explicit,
    so a dataset whose recognition samples lack the last class still matches
    the head's ``n_classes`` outputs.
    """
    y = np.asarray(labels, dtype=np.int64)
    if y.size and (y.min() < 0 or y.max() >= n_classes):
        raise InputError(f"labels must lie in [0, {n_classes - 1}], got values {y.min()}..{y.max()}")
    out = np.zeros((y.size, n_classes), dtype=np.float32)
    out[np.arange(y.size), y] = 1.0
    return out
