"""A LOSO training run, MEAN's protocol end to end: what ``meanspot-fused train`` does.

    annotations --MEAN's rules--> ground truth --+--> pseudo-labels (k_p), LOSO folds, downsampling
    features/<video>/features.npz ---------------+--> per fold: spot phase, recognition phase (loop.Trainer)
                                                       --> fused model on the held-out subject --> MEAN's evaluation

:func:`train_run` reads the annotations (:mod:`.annotations`, MEAN's rules),
finds each kept video's feature file (what ``features`` and ``spot
--save-features`` write), builds the labels and folds (:mod:`.labels`,
:mod:`.folds`), and trains fold after fold (:class:`.loop.Trainer`). Each
fold's model scores its held-out subject's videos through the fused network
(:func:`meanspot_fused.fuse`), and :class:`.evaluation.MeanEvaluation` pools
the counts over the folds as MEAN reports them.

The run folder (``out``)::

    settings.json              the exact settings (checked on --resume)
    folds/<NN>_<subject>/      one per finished fold, renamed into place complete:
        model.pt, model.hdf5,  the fold's combined model (checkpoint; Keras save_weights, TF 2.x and
        model.weights.h5   Keras 3 layouts)
        trainer.pt             the trainer state after this fold (what later folds continue from)
        fold.json              counts, intervals per video, the epochs' losses and seconds
        scores/<video>.npz     spot scores (and recognition outputs) of each test video
        plots/<video>.png      its smoothed curve, threshold, spotted and true intervals
    summary.json, summary.md   pooled metrics so far, per subject and for the dataset; settings
    .cache/maps.npy            every spotting sample's maps, (N, 3, 42, 42) float32, memory-mapped

A fold folder exists only when complete. ``resume`` continues at the first
fold without one, from the trainer state of the last fold finished before it,
so a resumed run equals an uninterrupted one (bitwise on the CPU with the same
thread count; tested). The maps are gathered once into ``.cache`` (removed when
every fold is done) so that each fold reads only its samples.

MEAN's bugs (TRAINING.md section 9) are reproduced unless fixed by name
(:data:`FIXES`).
"""
from __future__ import annotations

import dataclasses
import json
import os
import shutil
import sys
import time
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch

from ..errors import FileError, InputError
from ..io.atomic import replace_atomically, write_folder_atomically
from ..network.reference import INPUT_SIZE, PLACEMENTS
from .annotations import DATASETS, GroundTruth, apply_mean_rules, read_training_csv
from .evaluation import MeanEvaluation
from .folds import DOWNSAMPLING_MODES, plan_folds
from .labels import RECOGNITION_CLASSES, dataset_k, one_hot, recognition_samples, spot_samples
from .loop import EpochReport, Samples, TrainConfig, Trainer

__all__ = ["FIXES", "TrainSettings", "Corpus", "load_corpus", "train_run", "find_features", "recognition_pairs"]

#: MEAN's bugs that a run can fix, by name (TRAINING.md section 9); each defaults to MEAN's behaviour.
FIXES = {
    "optimizer-per-fold": "9a: a fresh Adam per fold and phase (MEAN carries one across folds)",
    "recog-folds": "9b: recognition folds by subject (MEAN indexes them by position)",
    "others-shift": "9c: skip a TP matched to an 'others' expression in both analysis lists (MEAN shifts them)",
    "no-peak-dummy": "9d: no interval for a video without a peak (MEAN adds a dummy [0, 0], an FP)",
    "downsample-guard": "9e: draw at most the negatives there are (MEAN's guard counts every sample)",
    "k-p-train-only": "9f: k_p from the training subjects only (MEAN uses the test subject's too)",
    "emotion-pairing": "9g: each interval keeps its own emotion (MEAN pairs two lists by position)",
    "uar-nan": "9i: NaN recalls count as 0 in UAR, as in the recall list (MEAN's UAR becomes NaN)",
}

#: The file name of a video's features in a feature folder (io.spot_outputs.FEATURES_FILE).
_FEATURES = "features.npz"
_MAPS_PER_SAMPLE = 3 * INPUT_SIZE * INPUT_SIZE


@dataclasses.dataclass
class TrainSettings:
    """What a run is: the dataset's rules, the network, MEAN's schedule, the fixes; all of it in settings.json.

    dataset: MEAN's dataset name (its k, emotion rules, classes, peak rule);
    k: pair distance of the feature files (default: the dataset's); cbam:
    placement (``none`` is MEAN's network); folds: the held-out subjects to
    run (default every subject, in MEAN's order); seed: model init, shuffles
    and dropout (MEAN's downsampling draws use Python's ``random`` seeded
    with 1 as MEAN does, mode ``mean``); spot_epochs, recog_epochs,
    batch_size, ratio (negatives per positive), p (threshold fraction):
    MEAN's 10, 100, 32, 5, 0.55; recognition: train the recognition head;
    downsampling: ``mean`` (MEAN's draws) or ``numpy`` (seeded per fold);
    fixes: names from :data:`FIXES`.
    """
    dataset: str
    k: Optional[int] = None
    cbam: str = "none"
    folds: Optional[List[str]] = None
    seed: int = 0
    spot_epochs: int = 10
    recog_epochs: int = 100
    batch_size: int = 32
    ratio: int = 5
    p: float = 0.55
    recognition: bool = True
    downsampling: str = "mean"
    fixes: List[str] = dataclasses.field(default_factory=list)

    def check(self) -> None:
        if self.dataset not in DATASETS:
            raise InputError(f"dataset must be one of {', '.join(DATASETS)}, got {self.dataset!r}")
        if self.cbam not in PLACEMENTS:
            raise InputError(f"cbam must be one of {', '.join(PLACEMENTS)}, got {self.cbam!r}")
        if self.downsampling not in DOWNSAMPLING_MODES:
            raise InputError(f"downsampling must be one of {', '.join(DOWNSAMPLING_MODES)}, got "
                             f"{self.downsampling!r}")
        unknown = [f for f in self.fixes if f not in FIXES]
        if unknown:
            raise InputError(f"fixes: unknown name(s) {', '.join(map(repr, unknown))}; known: {', '.join(FIXES)}")
        for name in ("k", "ratio"):
            v = getattr(self, name)
            if v is not None and (isinstance(v, bool) or not isinstance(v, int) or v < 1):
                raise InputError(f"{name} must be an integer >= 1, got {v!r}")
        if not isinstance(self.p, (int, float)) or isinstance(self.p, bool) or not 0.0 <= float(self.p) <= 1.0:
            raise InputError(f"p must be a number in [0, 1], got {self.p!r}")
        self.config()  # epochs, batch size and seed

    def fixed(self, name: str) -> bool:
        return name in self.fixes

    def pair_distance(self) -> int:
        return self.k if self.k is not None else dataset_k(self.dataset)

    def config(self) -> TrainConfig:
        return TrainConfig(spot_epochs=self.spot_epochs, recog_epochs=self.recog_epochs,
                           batch_size=self.batch_size, fresh_optimizer_per_fold=self.fixed("optimizer-per-fold"),
                           seed=self.seed)

    def to_json(self) -> Dict[str, Any]:
        return dataclasses.asdict(self)


def find_features(features_dir: str, subject: str, video: str) -> Optional[str]:
    """The feature file of ``subject/video`` in ``features_dir``, or None.

    Looked up as ``<dir>/<subject>/<video>/features.npz``,
    ``<dir>/<video>/features.npz`` (a ``features``/``spot`` output folder of
    one subject, or of a corpus whose video names are unique),
    ``<dir>/<subject>/<video>.npz`` and ``<dir>/<video>.npz`` (``features
    --frames --output``), in that order.
    """
    for parts in ((subject, video, _FEATURES), (video, _FEATURES), (subject, video + ".npz"), (video + ".npz",)):
        path = os.path.join(features_dir, *parts)
        if os.path.isfile(path):
            return path
    return None


def recognition_pairs(annotations, dataset: str, subject: Optional[str] = None) -> Dict[str, List[Tuple[int, int]]]:
    """Video name -> the 0-based (onset, apex) frame pairs of its kept expressions (MEAN's recognition
    inputs, F:76-101): what ``features --annotations`` computes beside the (i, i + k) pairs, keyed by the
    name of the video's feature folder. Every expression kept by MEAN's rules gets its pair, whatever its
    class, so the file serves every emotion pairing (bug 9g) and class set. ``subject`` restricts the
    annotations to one subject (video names may repeat across subjects; a name that does raises
    :class:`InputError`)."""
    gt = apply_mean_rules(dataset, read_training_csv(annotations), emotion_pairing="row")
    out: Dict[str, List[Tuple[int, int]]] = {}
    owner: Dict[str, str] = {}
    for video in gt.videos:
        if subject is not None and video.subject != subject:
            continue
        if owner.setdefault(video.name, video.subject) != video.subject:
            raise InputError(f"annotations {os.fspath(annotations)!r}: video name {video.name!r} belongs to subjects "
                             f"{owner[video.name]} and {video.subject}; make each subject's features on its own "
                             f"(--subject)")
        for e in video.expressions:
            if (e.onset, e.apex) not in out.setdefault(video.name, []):
                out[video.name].append((e.onset, e.apex))
    return out


def _read_maps(path: str) -> Tuple[np.ndarray, Optional[np.ndarray], Optional[np.ndarray]]:
    """(maps (P, 3, 42, 42) float32, frame pairs (M, 2) or None, their maps (M, 3, 42, 42) or None) of a
    feature file whose header :func:`_read_frames` checked."""
    try:
        with np.load(path, allow_pickle=False) as z:
            maps = np.concatenate([z[n].reshape(-1, 1, INPUT_SIZE, INPUT_SIZE) for n in ("u", "v", "os")], axis=1)
            if "pairs" not in z.files:
                return maps.astype(np.float32, copy=False), None, None
            pairs = np.asarray(z["pairs"], dtype=np.int64).reshape(-1, 2)
            pair_maps = np.concatenate([z[f"pair_{n}"].reshape(-1, 1, INPUT_SIZE, INPUT_SIZE)
                                        for n in ("u", "v", "os")], axis=1)
    except (OSError, ValueError, KeyError) as e:
        raise FileError(f"features file {path!r}: not a readable feature file ({e})") from e
    if len(pair_maps) != len(pairs):
        raise FileError(f"features file {path!r}: {len(pairs)} frame pairs but {len(pair_maps)} pair maps")
    return maps.astype(np.float32, copy=False), pairs, pair_maps.astype(np.float32, copy=False)


@dataclasses.dataclass
class Corpus:
    """A dataset ready to train on: ground truth, samples, labels, folds and where the maps are.

    ``maps``: (N, 3, 42, 42) float32 (memory-mapped), the spotting samples in
    ``samples``' order; ``recog_maps``: (R, 3, 42, 42) the (onset, apex) pair
    of each recognition sample, in ``recog``'s order; ``files``: feature file
    per video key.
    """
    gt: GroundTruth
    k: int
    files: Dict[str, str]
    samples: Any
    maps: np.ndarray
    recog: List[Any]
    recog_maps: np.ndarray


def _fingerprint(files: Dict[str, str]) -> Dict[str, List[int]]:
    return {key: [os.stat(p).st_size, os.stat(p).st_mtime_ns] for key, p in files.items()}


def load_corpus(annotations, features_dir, settings: TrainSettings, cache_dir: str,
                log: Callable[[str], None] = lambda msg: None) -> Corpus:
    """Read the annotations with MEAN's rules, check each kept video's feature file, and gather the maps.

    Every problem is an :class:`~meanspot_fused.errors.InputError` or
    ``FileError`` naming the file, video or row: an annotated video without
    a feature file, an annotation outside its video, a feature file of the
    wrong shape or k, a recognition pair the file lacks.
    """
    k = settings.pair_distance()
    features_dir = os.fspath(features_dir)
    if not os.path.isdir(features_dir):
        raise InputError(f"FEATURES_DIR {features_dir!r} is not a folder")
    rows = read_training_csv(annotations)
    pairing = "row" if settings.fixed("emotion-pairing") else "mean"
    gt = apply_mean_rules(settings.dataset, rows, emotion_pairing=pairing)
    if not gt.videos:
        raise InputError(f"annotations {os.fspath(annotations)!r}: no micro-expression is left after MEAN's "
                         f"rules for {settings.dataset} (type 'micro-expression', the dataset's emotions)")
    files, missing = {}, []
    for video in gt.videos:
        path = find_features(features_dir, video.subject, video.name)
        if path is None:
            missing.append(video.key)
        files[video.key] = path
    if missing:
        raise InputError(f"no feature file for {len(missing)} annotated video(s) in {features_dir!r}: "
                         f"{', '.join(missing[:8])}{' ...' if len(missing) > 8 else ''} (looked for "
                         f"<subject>/<video>/{_FEATURES}, <video>/{_FEATURES}, <subject>/<video>.npz, <video>.npz; "
                         f"make them with `meanspot-fused features VIDEOS --out {features_dir} --annotations ...`)")
    # The frame counts, so that MEAN's rules check every interval against its video.
    frames = {key: _read_frames(path, k) for key, path in files.items()}
    gt = apply_mean_rules(settings.dataset, rows, frames, emotion_pairing=pairing)
    counts = {key: n - k for key, n in frames.items()}
    samples = spot_samples(gt, counts, k_p=1)  # labels are made per fold (k_p); starts and groups are fixed
    recog = recognition_samples(gt) if settings.recognition else []
    maps, recog_maps = _gather(gt, files, samples, recog, k, cache_dir, log)
    return Corpus(gt, k, files, samples, maps, recog, recog_maps)


def _read_frames(path: str, k: int) -> int:
    """The frames of a feature file's video, from its arrays' headers and k (no map is read)."""
    from ..io.feature_files import open_features
    from ..io.errors import PredictError
    try:
        with open_features(path) as f:
            n, layout = f.n, f.layout
    except PredictError as e:
        raise FileError(str(e)) from e
    if layout != "u/v/os":
        raise FileError(f"features file {path!r} holds one stacked array; train reads the u, v and os arrays "
                        f"(and the recognition pairs) that `meanspot-fused features` writes")
    with np.load(path, allow_pickle=False) as z:
        if "k" in z.files and int(z["k"]) != k:
            raise FileError(f"features file {path!r} holds pairs at distance k={int(z['k'])}, the run uses k={k} "
                            f"(--k, or the dataset's)")
    return n + k


def _gather(gt: GroundTruth, files: Dict[str, str], samples, recog, k: int, cache_dir: str,
            log: Callable[[str], None]) -> Tuple[np.ndarray, np.ndarray]:
    """The spotting maps in one memory-mapped file and the recognition pairs' maps in another, both reused
    while the feature files and the samples stay the same (a resumed run reads no feature file again)."""
    os.makedirs(cache_dir, exist_ok=True)
    path, recog_path = os.path.join(cache_dir, "maps.npy"), os.path.join(cache_dir, "recog.npy")
    meta_path = os.path.join(cache_dir, "maps.json")
    n = int(samples.starts[-1])
    meta = {"keys": list(samples.video_keys), "files": _fingerprint(files), "k": k, "samples": n,
            "recog": [[r.video, r.onset, r.apex] for r in recog]}
    try:
        with open(meta_path, encoding="utf-8") as f:
            if json.load(f) == meta:
                log(f"samples: {n:,} spotting maps reused from {path}")
                return np.load(path, mmap_mode="r"), np.load(recog_path)
    except (OSError, ValueError):
        pass
    if os.path.exists(meta_path):
        os.remove(meta_path)
    log(f"samples: gathering {n:,} spotting maps ({n * _MAPS_PER_SAMPLE * 4 / 2**30:.2f} GiB) into {path}")
    maps = np.lib.format.open_memmap(path, mode="w+", dtype=np.float32, shape=(n, 3, INPUT_SIZE, INPUT_SIZE))
    recog_maps = np.zeros((len(recog), 3, INPUT_SIZE, INPUT_SIZE), np.float32)
    wanted: Dict[int, List[int]] = {}
    for r, sample in enumerate(recog):
        wanted.setdefault(sample.video, []).append(r)
    for j, video in enumerate(gt.videos):
        stacked, pairs, pair_maps = _read_maps(files[video.key])
        maps[samples.video_slice(j)] = stacked
        for r in wanted.get(j, ()):
            onset, apex = recog[r].onset, recog[r].apex
            hit = np.flatnonzero((pairs[:, 0] == onset) & (pairs[:, 1] == apex)) if pairs is not None else []
            if not len(hit):
                raise FileError(f"features file {files[video.key]!r} lacks the (onset, apex) = ({onset}, {apex}) "
                                f"frame pair of video {video.key}'s recognition sample: make the features with "
                                f"`meanspot-fused features ... --annotations ANNOTATIONS --dataset "
                                f"{gt.dataset}` (or train with --no-recognition)")
            recog_maps[r] = pair_maps[hit[0]]
    maps.flush()
    del maps
    np.save(recog_path, recog_maps)
    replace_atomically(meta_path, lambda tmp: _write_json(tmp, meta))
    return np.load(path, mmap_mode="r"), recog_maps


def _write_json(path: str, data: Any) -> None:
    with open(path, "w", encoding="utf-8") as f:
        json.dump(data, f, indent=1)
        f.write("\n")


def _write_text(path: str, text: str) -> None:
    with open(path, "w", encoding="utf-8") as f:
        f.write(text)


def _fold_name(fold: int, subject: str) -> str:
    return f"{fold:02d}_{subject}"


def _split(x: np.ndarray) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
    return x[:, 0:1], x[:, 1:2], x[:, 2:3]


def _score(net, maps: np.ndarray, device: torch.device, batch: int = 1024) -> Tuple[np.ndarray, Optional[np.ndarray]]:
    """(spot (P,), recog (P, C) or None) of the fused network on ``maps``, ``batch`` samples at a time."""
    spot, recog = [], []
    with torch.inference_mode():
        for lo in range(0, maps.shape[0], batch):
            x = torch.from_numpy(np.array(maps[lo:lo + batch])).to(device)  # a writable copy of the memmap rows
            out = net(*_split(x))
            out = out if isinstance(out, tuple) else (out,)
            spot.append(out[0][:, 0].float().cpu().numpy())
            if len(out) > 1:
                recog.append(out[1].float().cpu().numpy())
    return np.concatenate(spot), (np.concatenate(recog) if recog else None)


class _Run:
    """The state of one train_run: the corpus, every fold's plan (:func:`.folds.plan_folds`), the evaluation."""

    def __init__(self, corpus: Corpus, settings: TrainSettings, device: torch.device):
        self.corpus, self.settings, self.device = corpus, settings, device
        gt = corpus.gt
        self.subjects = gt.subjects
        wanted = settings.folds or self.subjects
        unknown = [s for s in wanted if s not in self.subjects]
        if unknown:
            raise InputError(f"folds: subject(s) {', '.join(unknown)} not in the annotations' kept subjects "
                             f"({', '.join(self.subjects)})")
        counts = {key: int(corpus.samples.starts[j + 1] - corpus.samples.starts[j])
                  for j, key in enumerate(corpus.samples.video_keys)}
        # Every fold is planned, whichever this run trains: MEAN's draws carry from fold to fold.
        self.plans = plan_folds(gt, counts, k_p_excludes_test_subject=settings.fixed("k-p-train-only"),
                                recognition_by_subject=settings.fixed("recog-folds"),
                                downsampling=settings.downsampling, ratio=settings.ratio,
                                seed=1 if settings.downsampling == "mean" else settings.seed,
                                guard_counts_negatives=settings.fixed("downsample-guard"))
        self.selected = [plan for plan in self.plans if plan.subject in wanted]
        self.evaluation = MeanEvaluation(gt, p=settings.p, no_peak_dummy=not settings.fixed("no-peak-dummy"),
                                         align_analysis_lists=settings.fixed("others-shift"),
                                         uar_nan_to_zero=settings.fixed("uar-nan"))

    def spot_data(self, plan) -> Samples:
        idx = plan.train_index
        y = plan.samples.labels[idx]
        if not np.any(y == 1):
            raise InputError(f"fold {plan.fold} (subject {plan.subject}): no positive training sample")
        return Samples(*_split(self.corpus.maps[idx]), y)

    def recog_data(self, plan) -> Optional[Samples]:
        if not self.settings.recognition:
            return None
        rf = plan.recognition_fold
        if not rf.trains:
            return None
        labels = [self.corpus.recog[i].label for i in rf.train_index]
        classes = len(RECOGNITION_CLASSES[self.corpus.gt.dataset])
        return Samples(*_split(self.corpus.recog_maps[rf.train_index]), one_hot(labels, classes))

    def evaluate(self, fold, model) -> Tuple[Dict[str, np.ndarray], Dict[str, np.ndarray]]:
        """Spot scores (and recognition outputs) of every video of the fold's subject, by the fused model."""
        from ..network.fuse import fuse
        net = fuse(model).to(self.device).eval()
        scores, probs = {}, {}
        samples = self.corpus.samples
        for j, key in enumerate(samples.video_keys):
            if self.corpus.gt.videos[j].subject != fold.subject:
                continue
            spot, recog = _score(net, self.corpus.maps[samples.video_slice(j)], self.device)
            scores[key] = spot
            if recog is not None:
                probs[key] = recog
        return scores, probs


def _write_fold(folder: str, run: _Run, fold, model, result, scores, probs, history: List[EpochReport],
                trainer: Trainer, seconds: float) -> None:
    """Fill a fold's folder (see the module doc); it is renamed into place by the caller when complete."""
    from ..io.plots import plot_scores
    from ..spotting.intervals import smooth, moilanen_threshold
    from .export import export_model
    export_model(model, folder, "model")
    trainer.save_state(os.path.join(folder, "trainer.pt"))
    os.makedirs(os.path.join(folder, "scores"))
    os.makedirs(os.path.join(folder, "plots"))
    gt = run.corpus.gt
    k_p = fold.k_p
    for video in gt.subject_videos(fold.subject):
        name = video.key.replace("/", "_")
        arrays = {"spot": scores[video.key]}
        if video.key in probs:
            arrays["recog"] = probs[video.key]
        with open(os.path.join(folder, "scores", name + ".npz"), "wb") as f:
            np.savez(f, **arrays)
        smoothed = smooth(scores[video.key], k_p)
        plot_scores(os.path.join(folder, "plots", name + ".png"), smoothed, moilanen_threshold(smoothed, run.settings.p),
                    result.intervals[video.key], gt=video.intervals()[:, [0, 2]],
                    title=f"fold {fold.fold} ({fold.subject}): {video.key} (k {run.corpus.k}, k_p {k_p})")
    info = {"fold": fold.fold, "subject": fold.subject, "k_p": k_p, "tp": result.tp, "fp": result.fp,
            "fn": result.fn, "train_samples": int(fold.train_index.size),
            "train_positives": int(np.sum(fold.samples.labels[fold.train_index] == 1)),
            "recognition_trained": result.analysed, "seconds": seconds,
            "intervals": {key: iv.tolist() for key, iv in result.intervals.items()},
            "history": [dataclasses.asdict(h) for h in history]}
    _write_json(os.path.join(folder, "fold.json"), info)


def _read_fold_scores(folder: str, run: _Run, fold) -> Tuple[Dict[str, np.ndarray], Dict[str, np.ndarray]]:
    """The scores a finished fold wrote (so a resumed run's evaluation equals an uninterrupted one's)."""
    scores, probs = {}, {}
    for video in run.corpus.gt.subject_videos(fold.subject):
        path = os.path.join(folder, "scores", video.key.replace("/", "_") + ".npz")
        try:
            with np.load(path, allow_pickle=False) as z:
                scores[video.key] = z["spot"]
                if "recog" in z.files:
                    probs[video.key] = z["recog"]
        except (OSError, ValueError, KeyError) as e:
            raise FileError(f"finished fold {folder!r}: cannot read {path!r} ({e}); remove the fold's folder to "
                            f"train it again") from e
    return scores, probs


def _write_summary(out: str, run: _Run, settings: TrainSettings, done: List[int], seconds: float) -> Dict:
    """summary.json and summary.md of the folds done so far (rewritten after each fold); returns the JSON."""
    d = {"settings": settings.to_json(), "folds_done": [run.subjects[f] for f in done],
         "folds_selected": [f.subject for f in run.selected], "complete": len(done) == len(run.selected),
         "seconds": seconds, "results": run.evaluation.to_dict()}
    md = [f"# Training run: {settings.dataset}, CBAM {settings.cbam}", "",
          f"Folds done: {len(done)} of {len(run.selected)} selected ({len(run.subjects)} subjects). "
          f"Fixes of MEAN's bugs: {', '.join(settings.fixes) or 'none (MEAN reproduced)'}. "
          f"Settings: `{json.dumps(settings.to_json(), sort_keys=True)}`", "", run.evaluation.to_markdown()]
    replace_atomically(os.path.join(out, "summary.json"), lambda tmp: _write_json(tmp, d))
    replace_atomically(os.path.join(out, "summary.md"), lambda tmp: _write_text(tmp, "\n".join(md) + "\n"))
    return d


def train_run(annotations, features_dir, out, settings: TrainSettings, *, resume: bool = False,
              device: str = "cpu", log: Optional[Callable[[str], None]] = None,
              stop_after: Optional[int] = None) -> Dict[str, Any]:
    """Train and evaluate every selected fold into ``out``; return the summary (also summary.json/.md).

    ``resume``: ``out`` holds a run with the same settings; its finished
    folds are kept and the run continues at the first unfinished one. Without
    it, ``out`` must not hold a run. ``stop_after``: return after that many
    folds trained by this call (tests interrupt a run so).
    """
    from ..predict import _device
    log = log or (lambda msg: print(msg, file=sys.stderr))
    settings.check()
    dev = _device(device)
    out = os.fspath(out)
    settings_path = os.path.join(out, "settings.json")
    if os.path.exists(out) and not os.path.isdir(out):
        raise InputError(f"--out {out!r} exists and is not a folder")
    if os.path.isfile(settings_path):
        if not resume:
            raise InputError(f"--out {out!r} already holds a training run; --resume continues it, or choose "
                             f"another folder")
        with open(settings_path, encoding="utf-8") as f:
            old = json.load(f)
        if old != settings.to_json():
            diff = sorted(k for k in set(old) | set(settings.to_json()) if old.get(k) != settings.to_json().get(k))
            raise InputError(f"--resume: the run in {out!r} was made with other settings ({', '.join(diff)} "
                             f"differ); run the same command, or choose another folder")
    elif resume and os.path.isdir(out) and os.listdir(out):
        raise InputError(f"--resume: {out!r} holds no training run (no settings.json)")
    t0 = time.perf_counter()
    os.makedirs(out, exist_ok=True)
    corpus = load_corpus(annotations, features_dir, settings, os.path.join(out, ".cache"), log)
    run = _Run(corpus, settings, dev)
    if not os.path.isfile(settings_path):
        replace_atomically(settings_path, lambda tmp: _write_json(tmp, settings.to_json()))
    folds_dir = os.path.join(out, "folds")
    os.makedirs(folds_dir, exist_ok=True)
    trainer: Optional[Trainer] = None
    done: List[int] = []
    trained = 0
    classes = len(RECOGNITION_CLASSES[settings.dataset])
    for fold in run.selected:
        folder = os.path.join(folds_dir, _fold_name(fold.fold, fold.subject))
        if os.path.isdir(folder):
            scores, probs = _read_fold_scores(folder, run, fold)
            run.evaluation.add_fold(fold.fold, fold.k_p, scores, probs or None)
            done.append(fold.fold)
            trainer = None  # the next fold to train continues from this one's state
            log(f"fold {fold.fold} ({fold.subject}): done before, kept")
            continue
        if stop_after is not None and trained >= stop_after:
            break
        if trainer is None:
            previous = [os.path.join(folds_dir, _fold_name(f, run.subjects[f])) for f in done]
            if previous:
                trainer = Trainer.from_state(os.path.join(previous[-1], "trainer.pt"), device=dev)
            else:
                trainer = Trainer(settings.cbam, recog_classes=classes, config=settings.config(), device=dev)
        start = time.perf_counter()
        spot = run.spot_data(fold)
        recog = run.recog_data(fold)
        log(f"fold {fold.fold} ({fold.subject}): {len(spot.y):,} spotting samples ({int(spot.y.sum())} positive)"
            f"{f', {len(recog.y)} recognition samples' if recog is not None else ', no recognition head'}")

        def progress(r: EpochReport) -> None:
            log(f"fold {r.fold} ({fold.subject}) {r.phase} epoch {r.epoch}/{r.epochs}: loss {r.loss:.5f} "
                f"({r.seconds:.1f} s)")
        trained_fold = trainer.train_fold(fold.fold, spot, recog, progress)
        scores, probs = run.evaluate(fold, trained_fold.model)
        result = run.evaluation.add_fold(fold.fold, fold.k_p, scores, probs if recog is not None else None)
        seconds = time.perf_counter() - start
        write_folder_atomically(folds_dir, _fold_name(fold.fold, fold.subject),
                                lambda tmp: _write_fold(tmp, run, fold, trained_fold.model, result, scores, probs,
                                                        trained_fold.history, trainer, seconds))
        done.append(fold.fold)
        trained += 1
        log(f"fold {fold.fold} ({fold.subject}): TP {result.tp} FP {result.fp} FN {result.fn} ({seconds:.1f} s)")
        _write_summary(out, run, settings, done, time.perf_counter() - t0)
    summary = _write_summary(out, run, settings, done, time.perf_counter() - t0)
    if summary["complete"]:
        shutil.rmtree(os.path.join(out, ".cache"), ignore_errors=True)
    return summary
