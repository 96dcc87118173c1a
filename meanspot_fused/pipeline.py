"""The whole path from a face video to spotted intervals: the engine of ``meanspot-fused spot``.

    frames --crop--> 128x128 gray --features--> (N, 3, 42, 42) --network--> scores --spotting--> intervals

Videos stream: frames are read and cropped ``chunk`` at a time and the pairs
(i, i + k) whose frames have arrived are queued; the queue goes through the
features (TV-L1 flow and the fused ROI op) and the network ``batch_size``
pairs at a time, pairs of consecutive videos sharing a batch, so that short
clips still fill the device. Only the last k crops of a video, one batch of
pairs and the per-pair scores are kept, so an hour-long video needs no more
memory than a short one (the scores, 4-8 bytes per frame, are the only thing
that grows). A video's scores do not depend on the batches it shared: pairs
are independent and the network op's results do not depend on the batch.

:func:`spot_videos` runs many videos and writes each one's outputs to
``out_dir/<name>/`` (``intervals.csv``, ``scores.npy``, ``scores.png``,
``summary.json``) through :mod:`meanspot_fused.io.spot_outputs`, which
assembles a folder in a hidden temporary folder and renames it into place
when complete: a folder that exists is complete. It is skipped when its
``summary.json`` records the same run key (settings, model and input:
:mod:`meanspot_fused.engine.manifest`) unless ``force``; each finished video
appends a line to ``out_dir/manifest.jsonl``. :func:`spot_video` returns one
video's result in memory; :func:`meanspot_fused.engine.local.run_corpus`
spreads videos over worker processes.

The stages are MEAN's (PIPELINE.md sections 1-4): the face box of the first
frame (dlib, OpenCV's Haar cascade, or given) crops every frame, resized to
128x128 with MEAN's JPEG round trip; landmarks of the first crop (a file, or
dlib's predictor) give the eye and mouth ROIs; TV-L1 features per pair; the
network's spot score per pair; MEAN's smoothing, Moilanen threshold and peak
picking. Frame ``i`` of the score curve is the pair (i, i + k), as in MEAN.

Errors a user can fix (an unreadable video, no face found, landmarks of the
wrong shape, k not smaller than the number of frames, a model without a spot
head) raise :class:`SpotError` (a ``ValueError``) naming the problem.

(Over 500 lines: the streaming engine, _Video, _Batcher and _stream, shares
its private state with its two drivers, spot_video and spot_videos; the
output writer and the corpus engines live elsewhere.)
"""
from __future__ import annotations

import dataclasses
import os
import sys
import time
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch

from .errors import InputError, MissingDependencyError
from .features.mean import FRAME_SIZE, mean_rois
from .io.frames import FACES_EXTRA, FramesError, _as_landmarks, crop_faces, default_landmark_model, detect_face, \
    iter_frames, load_landmarks, predict_landmarks
from .io.spot_outputs import video_name, video_summary, write_video_folder
from .network.reference import MeanSpot
from .spotting import DATASET_K, recognise, spot_scores

__all__ = ["DATASET_K", "SpotError", "SpotSettings", "VideoResult", "spot_video", "spot_videos", "load_spot_model",
           "video_name"]


class SpotError(InputError):
    """An input, option or model that the spot pipeline cannot use; the message says which."""


@dataclasses.dataclass
class SpotSettings:
    """Parameters of one spotting run (shared by every video of a :func:`spot_videos` call).

    k: pair distance in frames; k_p: half the expected expression length
    (MEAN's ``int((N + 1) / 2)``); p: Moilanen's threshold fraction; multiple:
    several peaks per video (MEAN's spot_multiple) or only the highest.
    face_box: (x, y, w, h) for every video instead of detection; cascade: a
    Haar cascade file (detection without dlib); landmarks: a (68, 2) array or
    file for every video; landmark_model: dlib's 68-point predictor, used
    when ``landmarks`` is None. batch_size: pairs per features/network batch;
    chunk: frames read and cropped at a time (bounds memory). classes: names
    of the recognition classes (index order) for spot_recog models. remap:
    the OpenCV line whose TV-L1 flow the features reproduce, ``"opencv4"``
    (MEAN's, the default) or ``"opencv5"`` (see
    :func:`meanspot_fused.features.flow.tvl1_flow`). save_features: also
    write each video's feature maps (``features.npz``, what ``train`` reads).
    A features-only run (no model: ``meanspot-fused features`` over videos)
    needs no k_p (None) and writes the feature maps only. pairs: video name
    -> (first, second) 0-based frame pairs whose features are also saved
    (``features.npz`` ``pair_*``, with ``save_features``): the (onset, apex)
    pairs MEAN's recognition head trains on; a frame outside the video fails
    that video.
    """
    k: int
    k_p: Optional[int]
    p: float = 0.55
    multiple: bool = True
    face_box: Optional[Tuple[int, int, int, int]] = None
    cascade: Optional[str] = None
    landmarks: Any = None
    landmark_model: Optional[str] = None
    jpeg_roundtrip: bool = True
    device: str = "cpu"
    batch_size: int = 256
    chunk: int = 1024
    fuse: bool = True
    classes: Optional[Sequence[str]] = None
    remap: str = "opencv4"
    save_features: bool = False
    pairs: Optional[Dict[str, Sequence[Tuple[int, int]]]] = None

    def check(self) -> None:
        from .features.flow import check_remap
        try:
            check_remap(self.remap)
        except InputError as e:
            raise SpotError(str(e)) from None
        for name in ("k", "k_p", "batch_size", "chunk"):
            v = getattr(self, name)
            if name == "k_p" and v is None:  # a features-only run; spot_videos requires it with a model
                continue
            if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < 1:
                raise SpotError(f"{name} must be an integer >= 1, got {v!r}")
        if not isinstance(self.p, (int, float)) or isinstance(self.p, bool) or not 0.0 <= float(self.p) <= 1.0:
            raise SpotError(f"p must be a number in [0, 1] (Moilanen's threshold fraction), got {self.p!r}")
        if self.chunk <= self.k:
            raise SpotError(f"chunk must be larger than k ({self.k}) so that every chunk completes pairs, "
                            f"got {self.chunk}")
        if self.landmarks is None:
            # dlib predicts them on each video's first crop: dlib and a model must be there before any
            # video is read (a missing dependency, exit 3, not a failed video).
            if self.landmark_model is None and default_landmark_model() is None:
                raise MissingDependencyError(
                    "landmarks are needed for MEAN's eye and mouth regions: " + FACES_EXTRA + " (dlib and its "
                    "68-point model, found automatically), or give dlib's model file (--landmark-model "
                    "shape_predictor_68_face_landmarks.dat) or a (68, 2) landmark file of the first 128x128 crop "
                    "(--landmarks FILE, dlib's order, x then y)")
            from .io import frames
            if frames._import_dlib() is None:  # the import every dlib use goes through
                raise MissingDependencyError("predicting landmarks needs dlib: " + FACES_EXTRA + " (the dlib-bin "
                                             "wheel), or give a (68, 2) landmark file (--landmarks FILE)")


@dataclasses.dataclass
class VideoResult:
    """What :func:`spot_video` found in one video.

    scores: (T - k,) spot score of each pair (i, i + k), or None in a
    features-only run (then so are smoothed, threshold and the intervals); smoothed: MEAN's
    smoothed curve (at least as long as scores, see :func:`~meanspot_fused.spotting.smooth`);
    threshold: the peak threshold; intervals: int64 (M, 3) rows (onset,
    offset, apex) in pair indices; apex_scores: the smoothed score at each
    apex; emotions: one class per interval for spot_recog models (names when
    ``classes`` were given, else indices), or None. recog: (T - k, C) per-pair
    recognition output, or None. info: frames, pairs, face box, landmarks
    source, its points and seconds per stage. features: (T - k, 3, 42, 42)
    float32 maps (u, v, os) of each pair when ``save_features``, else None;
    frame_pairs (M, 2) and pair_features (M, 3, 42, 42): the video's
    ``settings.pairs`` and their maps, or None when it has none.
    """
    scores: np.ndarray
    smoothed: np.ndarray
    threshold: float
    intervals: np.ndarray
    apex_scores: np.ndarray
    emotions: Optional[List[Any]]
    recog: Optional[np.ndarray]
    info: Dict[str, Any]
    features: Optional[np.ndarray] = None
    frame_pairs: Optional[np.ndarray] = None
    pair_features: Optional[np.ndarray] = None


def load_spot_model(path, fuse: bool = True, device: str = "cpu"
                    ) -> Tuple[Optional[MeanSpot], Optional[torch.nn.Module]]:
    """(model, network to run) from a Keras file or checkpoint; the model must have a spot head.

    ``path`` None: a features-only run, (None, None) (the device is still checked).
    """
    from .io.checkpoints import load_model
    from .io.errors import KerasFormatError, PredictError

    if path is None:
        _device(device)
        return None, None
    try:
        model = load_model(path)
    except (PredictError, KerasFormatError, OSError) as e:
        raise SpotError(f"--model: {e}") from e
    if "spot" not in model.head_names:
        raise SpotError(f"--model {os.fspath(path)!r} has no spot head (heads: {', '.join(model.head_names)}); "
                        f"spotting needs a spot or spot_recog model")
    dev = _device(device)
    if fuse:
        from .network.fuse import fuse as fuse_model
        net = fuse_model(model)
    else:
        net = model
    return model, net.to(dev).eval()


def _device(device: str) -> torch.device:
    """``device`` checked as ``predict`` checks it (cpu or an available cuda device)."""
    from .io.errors import PredictError
    from .predict import _device as predict_device

    try:
        return predict_device(device)
    except PredictError as e:
        raise SpotError(str(e)) from e


def _check_classes(model: Optional[MeanSpot], settings: SpotSettings) -> None:
    """Class names, when given, must name every recognition class of the model; a model needs k_p."""
    if model is not None and settings.k_p is None:
        raise SpotError("k_p must be an integer >= 1 to spot intervals, got None")
    names = settings.classes
    if names is None:
        return
    if model is None:
        raise SpotError("classes: a features-only run has no model")
    if "recog" not in model.head_names:
        raise SpotError(f"classes: the model has no recognition head (heads: {', '.join(model.head_names)})")
    if len(names) != model.recog_classes:
        raise SpotError(f"classes: the model has {model.recog_classes} recognition classes, got {len(names)} "
                        f"names ({', '.join(names)})")


def _is_color_source(path: str) -> bool:
    """Colour frames are read where MEAN reads them (videos, images); a .npy stack keeps its own layout."""
    if path.lower().endswith(".npy") and os.path.isfile(path):
        try:
            return np.load(path, mmap_mode="r", allow_pickle=False).ndim == 4
        except (OSError, ValueError) as e:
            raise FramesError(f"{path}: not a readable .npy array ({e})") from None
    return True


def _landmarks(settings: SpotSettings, first_crop: np.ndarray) -> Tuple[np.ndarray, str]:
    """(68, 2) int64 landmarks of the video and where they came from."""
    lm = settings.landmarks
    if lm is None:
        model = settings.landmark_model or default_landmark_model()
        return predict_landmarks(first_crop, model), f"dlib {model}"
    if isinstance(lm, (str, os.PathLike)):
        return load_landmarks(lm), os.fspath(lm)
    return _as_landmarks(np.asarray(lm), "landmarks"), "array"


class _Progress:
    """Progress bars of a run, one per stage (crop counts frames, the others pairs), over all its videos."""

    BARS = {"crop": "frame", "features": "pair", "network": "pair"}

    def __init__(self, progress: bool):
        self.bars = {}
        if progress:
            from tqdm.auto import tqdm
            for i, (name, unit) in enumerate(self.BARS.items()):
                self.bars[name] = tqdm(desc=f"spot {name}", unit=unit, position=i, leave=False, file=sys.stderr,
                                       dynamic_ncols=True)

    def advance(self, name: str, count: int) -> None:
        if count and name in self.bars:
            self.bars[name].update(count)

    def close(self) -> None:
        for bar in self.bars.values():
            bar.close()


class _Video:
    """One video on its way through the stages: its pairs are produced chunk by chunk
    (:meth:`pairs`), scored by a :class:`_Batcher` (possibly together with other
    videos' pairs) and collected here in order."""

    def __init__(self, source, settings: SpotSettings, heads: Sequence[str]):
        self.path = os.fspath(source)
        self.settings = settings
        self.seconds = dict.fromkeys(("read", "crop", "features", "network", "spotting", "write"), 0.0)
        self.scores: Dict[str, List[np.ndarray]] = {h: [] for h in heads}
        self.features: List[np.ndarray] = []  # batches of (n, 3, 42, 42) maps when settings.save_features
        self.frames = 0
        self.queued = 0           # pairs handed to the batcher and not scored yet
        self.read_done = False    # every pair has been handed to the batcher
        self.landmarks: Optional[torch.Tensor] = None
        self.crop_mode: Optional[str] = None
        self.landmarks_source: Optional[str] = None
        wanted = (settings.pairs or {}).get(video_name(self.path), ())
        self.frame_pairs = np.asarray(wanted, dtype=np.int64).reshape(-1, 2)  # settings.pairs of this video
        self.pair_crops: Dict[int, np.ndarray] = {}  # the crops of those frames, kept as they stream past
        self.pair_features: Optional[np.ndarray] = None  # (M, 3, 42, 42) float32 once every pair's frames came

    def _timed(self, stage: str, fn: Callable):
        t0 = time.perf_counter()
        out = fn()
        self.seconds[stage] += time.perf_counter() - t0
        return out

    def pairs(self, progress: _Progress):
        """Yield (prev, next) uint8 arrays (n, 128, 128) of the pairs (i, i + k), in order, chunk by chunk.

        Only the last k crops stay between chunks. Raises :class:`SpotError`.
        """
        settings, k = self.settings, int(self.settings.k)
        box = settings.face_box
        tail: Optional[np.ndarray] = None
        try:
            chunks = iter_frames(self.path, chunk=int(settings.chunk), color=_is_color_source(self.path))
            while True:
                frames = self._timed("read", lambda: next(chunks, None))
                if frames is None:
                    break
                if self.frames == 0:
                    if box is None and frames.shape[1:3] != (FRAME_SIZE, FRAME_SIZE):
                        box = self._timed("crop", lambda: detect_face(frames[0], cascade_path=settings.cascade))
                    self.crop_mode = "as is (already 128x128)" if box is None else \
                        f"box x,y,w,h = {','.join(map(str, box))}"
                crops = self._timed("crop", lambda: crop_faces(frames, box, jpeg_roundtrip=settings.jpeg_roundtrip))
                progress.advance("crop", len(crops))
                if self.landmarks is None:
                    lm, self.landmarks_source = _landmarks(settings, crops[0])
                    mean_rois(lm)  # landmarks giving an empty eye or mouth box fail here, before any work
                    self.landmarks = torch.from_numpy(lm)
                for i in np.unique(self.frame_pairs):
                    if self.frames <= i < self.frames + len(crops):
                        self.pair_crops[int(i)] = np.array(crops[i - self.frames])
                self.frames += len(crops)
                # A fresh array: the crops of a memory-mapped 128x128 stack are read-only views.
                buf = np.array(crops) if tail is None else np.concatenate([tail, crops])
                tail = buf[-k:]
                if len(buf) > k:
                    yield buf[:-k], buf[k:]
        except SpotError:
            raise
        except FramesError as e:
            raise SpotError(str(e)) from e
        except ValueError as e:  # landmarks giving empty boxes, frames of an unusable size
            raise SpotError(f"{self.path}: {e}") from e
        if self.frames <= k:
            raise SpotError(f"{self.path}: k ({k}) must be smaller than the number of frames ({self.frames}); "
                            f"the video has no pair (i, i + k)")
        if len(self.frame_pairs):
            self._pair_features()

    def _pair_features(self) -> None:
        """The features of settings.pairs of this video (every frame has streamed past)."""
        outside = [int(i) for i in np.unique(self.frame_pairs) if not 0 <= i < self.frames]
        if outside:
            named = [tuple(p) for p in self.frame_pairs.tolist()]
            raise SpotError(f"{self.path}: frame pair(s) {named} name frame(s) {outside} outside the video's "
                            f"{self.frames} frames (0-based)")
        from .features import mean_features
        device = _device(self.settings.device)
        first = torch.from_numpy(np.stack([self.pair_crops[int(a)] for a in self.frame_pairs[:, 0]])).to(device)
        second = torch.from_numpy(np.stack([self.pair_crops[int(b)] for b in self.frame_pairs[:, 1]])).to(device)
        landmarks = self.landmarks.expand(len(first), -1, -1)
        feats = self._timed("features", lambda: mean_features(first, second, landmarks, remap=self.settings.remap))
        self.pair_features = feats.float().cpu().numpy()
        self.pair_crops.clear()

    def result(self) -> VideoResult:
        """MEAN's spotting on the collected scores (all pairs scored)."""
        settings = self.settings
        t0 = time.perf_counter()
        feats = np.concatenate(self.features) if self.features else None
        info = {"frames": self.frames, "pairs": self.frames - int(settings.k), "crop": self.crop_mode,
                "landmarks": self.landmarks_source, "landmark_points": self.landmarks.tolist(), "seconds": self.seconds}
        pairs = (self.frame_pairs, self.pair_features) if self.pair_features is not None else (None, None)
        if "spot" not in self.scores:  # a features-only run
            none = np.zeros((0, 3), np.int64)
            return VideoResult(None, None, None, none, np.zeros(0), None, None, info, feats, *pairs)
        spot = np.concatenate(self.scores["spot"])[:, 0]
        recog = np.concatenate(self.scores["recog"]) if "recog" in self.scores else None
        # One smoothing for the intervals, their apex scores and the plot.
        spotted = spot_scores(spot, settings.k_p, settings.p, settings.multiple)
        smoothed, threshold, intervals = spotted.smoothed, spotted.threshold, spotted.intervals
        apex_scores = smoothed[intervals[:, 2]] if len(intervals) else np.zeros(0)
        emotions = None
        if recog is not None:
            names = settings.classes  # checked against the model by _check_classes
            emotions = [names[c] if names is not None else int(c) for c in recognise(recog, intervals, settings.k_p)]
        self.seconds["spotting"] += time.perf_counter() - t0
        return VideoResult(spot, smoothed, threshold, intervals, apex_scores, emotions, recog, info, feats, *pairs)


class _Batcher:
    """Pairs of one or more videos through features and network, ``batch_size`` pairs at a time.

    Pairs are queued in arrival order; a full batch (or :meth:`flush`) runs
    the features (TV-L1 flow and the fused ROI op, each pair with its own
    video's landmarks) and the network once, and hands each video its scores
    in order. Short videos share batches, so the device sees full batches
    however short the videos are. Each video is charged the stage seconds of
    a batch in proportion to its pairs in it.
    """

    def __init__(self, model: Optional[MeanSpot], net: Optional[torch.nn.Module], settings: SpotSettings,
                 progress: _Progress):
        self.heads = tuple(model.head_names) if model is not None else ()
        self.save_features = bool(settings.save_features)
        self.net = net
        self.device = _device(settings.device)
        self.batch_size = int(settings.batch_size)
        self.remap = settings.remap
        self.progress = progress
        self.queue: List[Tuple[_Video, np.ndarray, np.ndarray]] = []
        self.queued = 0

    def add(self, video: _Video, prev: np.ndarray, nxt: np.ndarray) -> None:
        start = 0
        while start < len(prev):
            take = min(len(prev) - start, self.batch_size - self.queued)
            self.queue.append((video, prev[start:start + take], nxt[start:start + take]))
            video.queued += take
            self.queued += take
            start += take
            if self.queued == self.batch_size:
                self.flush()

    def drop(self, video: _Video) -> None:
        """Forget a failed video's queued pairs."""
        self.queue = [q for q in self.queue if q[0] is not video]
        self.queued = sum(len(q[1]) for q in self.queue)
        video.queued = 0

    def flush(self) -> None:
        if not self.queue:
            return
        from .features import mean_features

        queue, self.queue, n = self.queue, [], self.queued
        self.queued = 0
        prev = torch.from_numpy(np.concatenate([q[1] for q in queue])).to(self.device)
        nxt = torch.from_numpy(np.concatenate([q[2] for q in queue])).to(self.device)
        landmarks = torch.cat([q[0].landmarks.expand(len(q[1]), -1, -1) for q in queue])
        t0 = time.perf_counter()
        feats = mean_features(prev, nxt, landmarks, remap=self.remap)
        t1 = time.perf_counter()
        self.progress.advance("features", n)
        kept = feats.float().cpu().numpy() if self.save_features else None
        by_head = {}
        if self.net is not None:
            with torch.inference_mode():
                out = self.net(feats[:, 0:1], feats[:, 1:2], feats[:, 2:3])
            out = out if isinstance(out, tuple) else (out,)
            by_head = {h: o.float().cpu().numpy() for h, o in zip(self.heads, out)}
        t2 = time.perf_counter()
        self.progress.advance("network", n)
        start = 0
        for video, a, _ in queue:
            m = len(a)
            for h in self.heads:
                video.scores[h].append(by_head[h][start:start + m])
            if kept is not None:
                video.features.append(kept[start:start + m])
            video.seconds["features"] += (t1 - t0) * m / n
            video.seconds["network"] += (t2 - t1) * m / n
            video.queued -= m
            start += m


def _stream(sources: Sequence, model: MeanSpot, net: torch.nn.Module, settings: SpotSettings, progress: bool,
            skip: Callable[[Any], bool] = lambda source: False):
    """Run the videos of ``sources`` through shared batches; yield (source, result, start time).

    result: the VideoResult, the SpotError of a video that failed, or None for
    a skipped one; start time: ``time.perf_counter()`` when its reading began.

    Videos come out in input order, each as soon as all its pairs are scored
    (a video waits for the batch its last pairs are in, which later videos
    may fill). ``skip(source)`` True leaves a video out. A failing video does
    not stop the others.
    """
    bars = _Progress(progress)
    batcher = _Batcher(model, net, settings, bars)
    waiting: List[Tuple[Any, Any, float]] = []  # (source, _Video or SpotError or None, start time)

    def ready():
        while waiting:
            source, item, started = waiting[0]
            if isinstance(item, _Video):
                if not item.read_done or item.queued:
                    return
                try:
                    item = item.result()
                except SpotError as e:
                    item = e
            waiting.pop(0)
            yield source, item, started

    try:
        for source in sources:
            if skip(source):
                waiting.append((source, None, time.perf_counter()))
                yield from ready()
                continue
            video = _Video(source, settings, batcher.heads)
            started = time.perf_counter()
            try:
                for prev, nxt in video.pairs(bars):
                    batcher.add(video, prev, nxt)
                    yield from ready()
            except SpotError as e:
                batcher.drop(video)
                waiting.append((source, e, started))
            else:
                video.read_done = True
                waiting.append((source, video, started))
            yield from ready()
        batcher.flush()
        yield from ready()
    finally:
        bars.close()


def spot_video(source, model: MeanSpot, net: torch.nn.Module, settings: SpotSettings, *,
               progress: bool = False) -> VideoResult:
    """Spot the expressions of one video (file, image folder or .npy stack); see the module doc.

    ``model``/``net``: from :func:`load_spot_model` (``net`` is what runs:
    the fused module or the reference). Raises :class:`SpotError` for bad
    inputs; nothing is written.
    """
    settings.check()
    _check_classes(model, settings)
    ((_, result, _),) = list(_stream([source], model, net, settings, progress))
    if isinstance(result, SpotError):
        raise result
    return result


def check_run(sources: Sequence, model_path, out_dir, settings: SpotSettings,
              loaded: Optional[Tuple[MeanSpot, torch.nn.Module]] = None):
    """Everything a run can check before its first video, in the order a user wants to hear it.

    Returns (model, net, output names, out_dir as str); ``loaded`` skips loading the model.
    """
    if not sources:
        raise SpotError("no input video given")
    # A missing input is the first thing to report: it is what the user typed
    # wrong, whatever else the settings lack.
    for src in sources:
        if not os.path.exists(os.fspath(src)):
            raise SpotError(f"input {os.fspath(src)!r}: no such file or folder")
    settings.check()
    names = [video_name(s) for s in sources]
    seen: Dict[str, str] = {}
    for s, n in zip(sources, names):
        if not n or n.startswith("."):
            raise SpotError(f"input {os.fspath(s)!r} gives the output folder name {n!r}; rename the input")
        if n in seen:
            raise SpotError(f"inputs {seen[n]!r} and {os.fspath(s)!r} would both write {n}/ in the output folder; "
                            f"rename one")
        seen[n] = os.fspath(s)
    out_dir = os.fspath(out_dir)
    if os.path.exists(out_dir) and not os.path.isdir(out_dir):
        raise SpotError(f"--out {out_dir!r} exists and is not a folder")
    if settings.landmarks is not None and isinstance(settings.landmarks, (str, os.PathLike)):
        load_landmarks(settings.landmarks)  # a bad file fails before any video is read
    model, net = loaded or load_spot_model(model_path, fuse=settings.fuse, device=settings.device)
    _check_classes(model, settings)
    return model, net, names, out_dir


def spot_videos(sources: Sequence, model_path, out_dir, settings: SpotSettings, *, force: bool = False,
                progress: bool = False, dataset: Optional[str] = None,
                log: Optional[Callable[[str], None]] = None, overwrite: bool = False, manifest: bool = True,
                loaded: Optional[Tuple[MeanSpot, torch.nn.Module]] = None) -> List[Dict[str, Any]]:
    """Spot every video of ``sources`` with the model in ``model_path``; write ``out_dir/<name>/``.

    ``model_path`` None: a features-only run (``settings.save_features`` must
    be set): each folder holds ``features.npz`` and ``summary.json``.

    Checks everything that can be checked before the first video (settings,
    model, input names, output folder). Then, per video: a complete folder
    already there from the same settings, model and input is skipped unless
    ``force`` (``overwrite``: its old name); a video that fails (unreadable,
    no face, ...) is reported through ``log`` and leaves nothing behind, and
    the others go on. Returns one summary dict per video, with ``status``
    "done", "skipped" or "failed" (and ``error``); with ``manifest``, each
    also goes to ``out_dir/manifest.jsonl`` as it finishes (held back until
    the output folder exists: a run whose videos all fail leaves no folder).
    ``loaded``: (model, net) already loaded from ``model_path`` (a worker
    process loads them once).
    """
    log = log or (lambda msg: print(msg, file=sys.stderr))
    if model_path is None and not settings.save_features:
        raise SpotError("a run without a model computes features only: set save_features")
    model, net, names, out_dir = check_run(sources, model_path, out_dir, settings, loaded)
    from .engine.manifest import Manifest, is_up_to_date, run_key, settings_hash
    digest = settings_hash(settings, model_path, dataset)
    keys = {os.fspath(src): run_key(src, digest) for src in sources}
    book = Manifest(out_dir) if manifest else None
    force = force or overwrite
    results = []
    finals = {os.fspath(src): os.path.join(out_dir, name) for src, name in zip(sources, names)}

    def exists(source) -> bool:
        return not force and is_up_to_date(finals[os.fspath(source)], keys[os.fspath(source)])

    def done(row: Dict[str, Any]) -> None:
        results.append(row)
        if book is not None:
            book.add({**row, "settings": digest})

    for source, result, started in _stream(sources, model, net, settings, progress, skip=exists):
        name, final = video_name(source), finals[os.fspath(source)]
        record: Dict[str, Any] = {"video": name, "input": os.fspath(source), "output": final}
        if result is None:
            log(f"{name}: {final} is up to date (same settings, model and input), skipped (--force recomputes it)")
            done({**record, "status": "skipped"})
            continue
        if isinstance(result, SpotError):
            log(f"{name}: error: {result}")
            done({**record, "status": "failed", "error": str(result)})
            continue
        summary = video_summary(name, source, model_path, model.head_names if model is not None else (), settings,
                                result, dataset)
        summary["run_key"] = keys[os.fspath(source)]
        # The output folder is made with the first video written: a run whose
        # videos all fail (k larger than a video, no face, ...) leaves no folder.
        os.makedirs(out_dir, exist_ok=True)
        write_video_folder(out_dir, name, result, settings, summary, started)
        seconds = summary["seconds"]
        found = f"{len(result.intervals)} interval(s)" if model is not None else \
            f"features of {result.info['pairs']} pair(s)"
        log(f"{name}: {found} in {result.info['frames']} frames -> {final} "
            f"({seconds['read'] + seconds['crop'] + seconds['features'] + seconds['network']:.1f} s of "
            f"reading, cropping, features and network)")
        done({**record, "status": "done", "intervals": int(len(result.intervals)), "seconds": seconds})
    return results
