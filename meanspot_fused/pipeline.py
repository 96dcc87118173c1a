"""The whole path from a face video to spotted intervals: the engine of ``meanspot-fused spot``.

    frames --crop--> 128x128 gray --features--> (N, 3, 42, 42) --network--> scores --spotting--> intervals

:func:`spot_video` runs one video through every stage, streaming: frames are
read and cropped ``chunk`` at a time, the features of the pairs (i, i + k)
whose frames have arrived are computed and scored at once, and only the last
k crops and the per-pair scores are kept. Memory is bounded by one chunk, so
an hour-long video needs no more than a short one (the scores, 4-8 bytes per
frame, are the only thing that grows).

:func:`spot_videos` runs many videos and writes each one's outputs to
``out_dir/<name>/`` (``intervals.csv``, ``scores.npy``, ``scores.png``,
``summary.json``). A video's folder is assembled in a hidden temporary folder
beside it and renamed into place when complete, so a folder that exists is
complete; it is skipped unless ``overwrite``.

The stages are MEAN's (PIPELINE.md sections 1-4): the face box of the first
frame (dlib, OpenCV's Haar cascade, or given) crops every frame, resized to
128x128 with MEAN's JPEG round trip; landmarks of the first crop (a file, or
dlib's predictor) give the eye and mouth ROIs; TV-L1 features per pair; the
network's spot score per pair; MEAN's smoothing, Moilanen threshold and peak
picking. Frame ``i`` of the score curve is the pair (i, i + k), as in MEAN.

Errors a user can fix (an unreadable video, no face found, landmarks of the
wrong shape, k not smaller than the number of frames, a model without a spot
head) raise :class:`SpotError` (a ``ValueError``) naming the problem.
"""
from __future__ import annotations

import dataclasses
import json
import os
import platform
import shutil
import sys
import tempfile
import time
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch

from .features.mean import FRAME_SIZE, video_features
from .io.frames import FramesError, crop_faces, detect_face, iter_frames, load_landmarks, parse_face_box, \
    predict_landmarks
from .network.reference import MeanSpot
from .spotting import DATASET_K, find_intervals, moilanen_threshold, recognise, smooth, write_intervals_csv

__all__ = ["DATASET_K", "SpotError", "SpotSettings", "VideoResult", "spot_video", "spot_videos", "load_spot_model",
           "video_name"]

#: The files of one video's output folder, in the order they are written (spot_recog
#: models add recog.npy, the per-pair recognition output, after scores.npy).
OUTPUT_FILES = ("scores.npy", "intervals.csv", "scores.png", "summary.json")


class SpotError(ValueError):
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
    of the recognition classes (index order) for spot_recog models.
    """
    k: int
    k_p: int
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

    def check(self) -> None:
        for name in ("k", "k_p", "batch_size", "chunk"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < 1:
                raise SpotError(f"{name} must be an integer >= 1, got {v!r}")
        if not isinstance(self.p, (int, float)) or isinstance(self.p, bool) or not 0.0 <= float(self.p) <= 1.0:
            raise SpotError(f"p must be a number in [0, 1] (Moilanen's threshold fraction), got {self.p!r}")
        if self.chunk <= self.k:
            raise SpotError(f"chunk must be larger than k ({self.k}) so that every chunk completes pairs, "
                            f"got {self.chunk}")
        if self.landmarks is None and self.landmark_model is None:
            raise SpotError("landmarks are needed for MEAN's eye and mouth regions: give a (68, 2) landmark file "
                            "of the first 128x128 crop (--landmarks FILE, dlib's order, x then y), or dlib's "
                            "68-point model (--landmark-model shape_predictor_68_face_landmarks.dat, needs "
                            "pip install dlib)")


@dataclasses.dataclass
class VideoResult:
    """What :func:`spot_video` found in one video.

    scores: (T - k,) spot score of each pair (i, i + k); smoothed: MEAN's
    smoothed curve (at least as long as scores, see :func:`~meanspot_fused.spotting.smooth`);
    threshold: the peak threshold; intervals: int64 (M, 3) rows (onset,
    offset, apex) in pair indices; apex_scores: the smoothed score at each
    apex; emotions: one class per interval for spot_recog models (names when
    ``classes`` were given, else indices), or None. recog: (T - k, C) per-pair
    recognition output, or None. info: frames, pairs, face box, landmarks
    source and seconds per stage.
    """
    scores: np.ndarray
    smoothed: np.ndarray
    threshold: float
    intervals: np.ndarray
    apex_scores: np.ndarray
    emotions: Optional[List[Any]]
    recog: Optional[np.ndarray]
    info: Dict[str, Any]


def load_spot_model(path, fuse: bool = True, device: str = "cpu") -> Tuple[MeanSpot, torch.nn.Module]:
    """(model, network to run) from a Keras file or checkpoint; the model must have a spot head."""
    from .io.checkpoints import load_model
    from .io.errors import KerasFormatError, PredictError

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
    try:
        dev = torch.device(device)
    except (RuntimeError, ValueError) as e:
        raise SpotError(f"--device {device!r} is not a device ({e})") from e
    if dev.type not in ("cpu", "cuda"):
        raise SpotError(f"--device {device!r}: expected cpu or cuda")
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise SpotError(f"--device {device!r}: CUDA is not available in this PyTorch build or machine")
    return dev


def video_name(path) -> str:
    """The output folder name of an input: the file name without its extension, or the folder's name."""
    path = os.fspath(path).rstrip("/\\") or os.fspath(path)
    base = os.path.basename(path)
    return base if os.path.isdir(path) else os.path.splitext(base)[0]


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
        return predict_landmarks(first_crop, settings.landmark_model), f"dlib {settings.landmark_model}"
    if isinstance(lm, (str, os.PathLike)):
        return load_landmarks(lm), os.fspath(lm)
    arr = np.asarray(lm)
    if arr.shape != (68, 2) or not np.issubdtype(arr.dtype, np.number) or not np.all(np.isfinite(arr)):
        raise SpotError(f"landmarks must be 68 finite (x, y) points, shape (68, 2) in dlib's order, got "
                        f"{arr.dtype} of shape {arr.shape}")
    return np.rint(arr).astype(np.int64), "array"


class _Stages:
    """Seconds per stage and optional progress bars (one per stage, stacked)."""

    #: Stages with a bar (reading and cropping count frames, the others pairs).
    BARS = {"crop": "frame", "features": "pair", "network": "pair"}

    def __init__(self, progress: bool, label: str):
        self.seconds = dict.fromkeys(("read", "crop", "features", "network", "spotting", "write"), 0.0)
        self.bars = {}
        if progress:
            from tqdm.auto import tqdm
            for i, (name, unit) in enumerate(self.BARS.items()):
                self.bars[name] = tqdm(desc=f"{label} {name}", unit=unit, position=i, leave=False,
                                       file=sys.stderr, dynamic_ncols=True)

    def timed(self, name: str, fn: Callable, count: int = 0):
        """``fn()``, its seconds added to stage ``name`` and ``count`` items to its bar."""
        t0 = time.perf_counter()
        out = fn()
        self.seconds[name] += time.perf_counter() - t0
        self.advance(name, count)
        return out

    def advance(self, name: str, count: int) -> None:
        if count and name in self.bars:
            self.bars[name].update(count)

    def close(self) -> None:
        for bar in self.bars.values():
            bar.close()


def _score(net: torch.nn.Module, model: MeanSpot, feats: torch.Tensor, device: torch.device,
           batch_size: int) -> Dict[str, np.ndarray]:
    """Network outputs of (N, 3, 42, 42) features, per head, float32 NumPy."""
    outs: Dict[str, List[np.ndarray]] = {h: [] for h in model.head_names}
    with torch.inference_mode():
        for s in range(0, feats.shape[0], batch_size):
            x = feats[s:s + batch_size].to(device)
            out = net(x[:, 0:1], x[:, 1:2], x[:, 2:3])
            out = out if isinstance(out, tuple) else (out,)
            for h, o in zip(model.head_names, out):
                outs[h].append(o.float().cpu().numpy())
    return {h: np.concatenate(v) for h, v in outs.items()}


def spot_video(source, model: MeanSpot, net: torch.nn.Module, settings: SpotSettings, *,
               progress: bool = False) -> VideoResult:
    """Spot the expressions of one video (file, image folder or .npy stack); see the module doc.

    ``model``/``net``: from :func:`load_spot_model` (``net`` is what runs:
    the fused module or the reference). Raises :class:`SpotError` for bad
    inputs; nothing is written.
    """
    settings.check()
    path = os.fspath(source)
    dev = _device(settings.device)
    k = int(settings.k)
    stages = _Stages(progress, video_name(path))
    box, landmarks, lm_source = settings.face_box, None, None
    tail: Optional[np.ndarray] = None  # the last k crops of the previous chunk
    scores: Dict[str, List[np.ndarray]] = {h: [] for h in model.head_names}
    n_frames, crop_mode = 0, None
    try:
        chunks = iter_frames(path, chunk=int(settings.chunk), color=_is_color_source(path))
        while True:
            frames = stages.timed("read", lambda: next(chunks, None))
            if frames is None:
                break
            if n_frames == 0:
                height, width = frames.shape[1:3]
                if box is None and (height, width) != (FRAME_SIZE, FRAME_SIZE):
                    box = stages.timed("crop", lambda: detect_face(frames[0], cascade_path=settings.cascade))
                crop_mode = "as is (already 128x128)" if box is None else f"box x,y,w,h = {','.join(map(str, box))}"
            crops = stages.timed("crop", lambda: crop_faces(frames, box, jpeg_roundtrip=settings.jpeg_roundtrip),
                                 len(frames))
            if landmarks is None:
                landmarks, lm_source = _landmarks(settings, crops[0])
            n_frames += len(crops)
            # A fresh array: the crops of a memory-mapped 128x128 stack are read-only views.
            buf = np.array(crops) if tail is None else np.concatenate([tail, crops])
            tail = buf[-k:]
            if len(buf) <= k:
                continue
            feats = stages.timed("features", lambda: video_features(
                torch.from_numpy(buf).to(dev), k, landmarks, batch_size=int(settings.batch_size)), len(buf) - k)
            out = stages.timed("network", lambda: _score(net, model, feats, dev, int(settings.batch_size)),
                               len(buf) - k)
            for h, o in out.items():
                scores[h].append(o)
    except SpotError:
        raise
    except FramesError as e:
        raise SpotError(str(e)) from e
    except ValueError as e:  # landmarks giving empty boxes, frames of an unusable size
        raise SpotError(f"{path}: {e}") from e
    finally:
        stages.close()
    if n_frames <= k:
        raise SpotError(f"{path}: k ({k}) must be smaller than the number of frames ({n_frames}); the video "
                        f"has no pair (i, i + k)")

    t0 = time.perf_counter()
    spot = np.concatenate(scores["spot"])[:, 0]
    recog = np.concatenate(scores["recog"]) if "recog" in scores else None
    smoothed = smooth(spot, settings.k_p)
    threshold = moilanen_threshold(smoothed, settings.p)
    intervals = find_intervals(spot, settings.k_p, settings.p, settings.multiple)
    apex_scores = smoothed[intervals[:, 2]] if len(intervals) else np.zeros(0)
    emotions = None
    if recog is not None:
        classes = recognise(recog, intervals, settings.k_p)
        names = settings.classes
        if names is not None and len(names) != recog.shape[1]:
            raise SpotError(f"classes: the model has {recog.shape[1]} recognition classes, got {len(names)} "
                            f"names ({', '.join(names)})")
        emotions = [names[c] if names is not None else int(c) for c in classes]
    stages.seconds["spotting"] += time.perf_counter() - t0
    info = {"frames": n_frames, "pairs": int(spot.size), "crop": crop_mode, "landmarks": lm_source,
            "seconds": stages.seconds}
    return VideoResult(spot, smoothed, threshold, intervals, apex_scores, emotions, recog, info)


def _versions() -> Dict[str, str]:
    from . import __version__

    out = {"meanspot_fused": __version__, "torch": torch.__version__, "numpy": np.__version__,
           "python": platform.python_version()}
    try:
        import cv2
        out["opencv"] = cv2.__version__
    except ImportError:
        pass
    return out


def _write_outputs(folder: str, name: str, result: VideoResult, settings: SpotSettings, summary: dict,
                   started: float) -> None:
    """The files of OUTPUT_FILES into ``folder``; summary.json last, with the write and total seconds."""
    from .io.plots import plot_scores

    t0 = time.perf_counter()
    np.save(os.path.join(folder, "scores.npy"), result.scores)
    if result.recog is not None:
        np.save(os.path.join(folder, "recog.npy"), result.recog)
    write_intervals_csv(os.path.join(folder, "intervals.csv"), result.intervals, result.apex_scores,
                        result.emotions)
    plot_scores(os.path.join(folder, "scores.png"), result.smoothed, result.threshold, result.intervals,
                title=f"{name}: smoothed spot score (k {settings.k}, k_p {settings.k_p}, p {settings.p:g})")
    now = time.perf_counter()
    summary["seconds"]["write"] = now - t0
    summary["seconds"]["total"] = now - started
    with open(os.path.join(folder, "summary.json"), "w", encoding="utf-8") as f:
        json.dump(summary, f, indent=1)
        f.write("\n")


def _new_folder(parent: str, prefix: str) -> str:
    """A new empty hidden folder in ``parent``, with the permissions os.mkdir would give (mkdtemp: 0700)."""
    path = tempfile.mkdtemp(prefix=prefix, dir=parent)
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(path, 0o777 & ~umask)
    return path


def _install_folder(tmp: str, final: str) -> None:
    """Move the finished folder ``tmp`` to ``final``, replacing an old one (``overwrite``)."""
    if not os.path.exists(final):
        os.rename(tmp, final)
        return
    # A folder cannot be renamed over a non-empty one: move the old one aside
    # first, so that `final` is at every moment either the old or the new one.
    old = tempfile.mkdtemp(prefix=f".{os.path.basename(final)}.old-", dir=os.path.dirname(final))
    os.rmdir(old)
    os.rename(final, old)
    os.rename(tmp, final)
    shutil.rmtree(old, ignore_errors=True)


def spot_videos(sources: Sequence, model_path, out_dir, settings: SpotSettings, *, overwrite: bool = False,
                progress: bool = False, dataset: Optional[str] = None,
                log: Optional[Callable[[str], None]] = None) -> List[Dict[str, Any]]:
    """Spot every video of ``sources`` with the model in ``model_path``; write ``out_dir/<name>/``.

    Checks everything that can be checked before the first video (settings,
    model, input names, output folder). Then, per video: a complete folder
    already there is skipped unless ``overwrite``; a video that fails
    (unreadable, no face, ...) is reported through ``log`` and leaves nothing
    behind, and the others go on. Returns one summary dict per video, with
    ``status`` "done", "skipped" or "failed" (and ``error``).
    """
    settings.check()
    log = log or (lambda msg: print(msg, file=sys.stderr))
    if not sources:
        raise SpotError("no input video given")
    names = [video_name(s) for s in sources]
    seen: Dict[str, str] = {}
    for s, n in zip(sources, names):
        if not n or n.startswith("."):
            raise SpotError(f"input {os.fspath(s)!r} gives the output folder name {n!r}; rename the input")
        if n in seen:
            raise SpotError(f"inputs {seen[n]!r} and {os.fspath(s)!r} would both write {n}/ in the output folder; "
                            f"rename one")
        seen[n] = os.fspath(s)
    for s in sources:
        if not os.path.exists(os.fspath(s)):
            raise SpotError(f"input {os.fspath(s)!r}: no such file or folder")
    out_dir = os.fspath(out_dir)
    if os.path.exists(out_dir) and not os.path.isdir(out_dir):
        raise SpotError(f"--out {out_dir!r} exists and is not a folder")
    if settings.landmarks is not None and isinstance(settings.landmarks, (str, os.PathLike)):
        load_landmarks(settings.landmarks)  # a bad file fails before any video is read
    model, net = load_spot_model(model_path, fuse=settings.fuse, device=settings.device)
    os.makedirs(out_dir, exist_ok=True)
    results = []
    for source, name in zip(sources, names):
        final = os.path.join(out_dir, name)
        record: Dict[str, Any] = {"video": name, "input": os.fspath(source), "output": final}
        if os.path.isdir(final) and not overwrite:
            log(f"{name}: {final} exists, skipped (--overwrite recomputes it)")
            results.append({**record, "status": "skipped"})
            continue
        tmp = _new_folder(out_dir, f".{name}.partial-")
        try:
            t0 = time.perf_counter()
            result = spot_video(source, model, net, settings, progress=progress)
            summary = {
                "video": name, "input": os.path.abspath(os.fspath(source)),
                "model": os.path.abspath(os.fspath(model_path)), "heads": list(model.head_names),
                "dataset": dataset, "k": settings.k, "k_p": settings.k_p, "p": settings.p,
                "multiple": settings.multiple, "device": settings.device, "fused": settings.fuse,
                "batch_size": settings.batch_size, "jpeg_roundtrip": settings.jpeg_roundtrip,
                "frames": result.info["frames"], "pairs": result.info["pairs"], "crop": result.info["crop"],
                "landmarks": result.info["landmarks"], "threshold": result.threshold,
                "intervals": int(len(result.intervals)), "versions": _versions(),
                "seconds": result.info["seconds"],
            }
            _write_outputs(tmp, name, result, settings, summary, t0)
            _install_folder(tmp, final)
        except SpotError as e:
            shutil.rmtree(tmp, ignore_errors=True)
            log(f"{name}: error: {e}")
            results.append({**record, "status": "failed", "error": str(e)})
            continue
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        fps = result.info["frames"] / max(summary["seconds"]["total"], 1e-9)
        log(f"{name}: {len(result.intervals)} interval(s) in {result.info['frames']} frames -> {final} "
            f"({summary['seconds']['total']:.1f} s, {fps:,.1f} frames/s)")
        results.append({**record, "status": "done", "intervals": int(len(result.intervals)),
                        "seconds": summary["seconds"]})
    return results
