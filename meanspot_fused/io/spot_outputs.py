"""The output folder of ``meanspot-fused spot``: one folder per video, complete or absent.

``out_dir/<name>/`` holds

* ``intervals.csv``: rows ``onset,offset,apex,score[,emotion]``
  (:func:`meanspot_fused.io.intervals.write_intervals_csv`; score is the
  smoothed score at the apex);
* ``scores.npy``: the spot score of each pair (i, i + k); ``recog.npy``: the
  per-pair recognition output of spot_recog models;
* ``scores.png``: the smoothed curve, threshold and intervals;
* ``summary.json``: the settings, model, frame counts, versions and seconds
  per stage (:func:`video_summary`);
* ``features.npz`` with ``save_features`` (and alone but for summary.json
  in a features-only run, without a model): :func:`write_features_npz`.

The files are written into a hidden temporary folder beside the final one,
which is then renamed into place (:func:`write_video_folder`): a folder that
exists is complete, so the engine can skip it on a rerun. The engine
(:mod:`meanspot_fused.pipeline`) decides what to compute; this module only
writes what it computed.
"""
from __future__ import annotations

import json
import os
import platform
import shutil
import time
from typing import TYPE_CHECKING, Any, Dict, Optional

import numpy as np

from .atomic import write_folder_atomically
from .intervals import write_intervals_csv

if TYPE_CHECKING:  # the engine's types; imported for annotations only, the engine imports this module
    from ..pipeline import SpotSettings, VideoResult

__all__ = ["FEATURES_FILE", "video_name", "video_summary", "write_features_npz", "write_video_folder"]


def video_name(path) -> str:
    """The output folder name of an input: the file name without its extension, or the folder's name."""
    path = os.fspath(path).rstrip("/\\") or os.fspath(path)
    base = os.path.basename(path)
    return base if os.path.isdir(path) else os.path.splitext(base)[0]


def _versions() -> Dict[str, str]:
    import torch

    from .. import __version__

    out = {"meanspot_fused": __version__, "torch": torch.__version__, "numpy": np.__version__,
           "python": platform.python_version()}
    try:
        import cv2
        out["opencv"] = cv2.__version__
    except ImportError:
        pass
    return out


def video_summary(name: str, source, model_path, heads, settings: SpotSettings, result: VideoResult,
                  dataset: Optional[str] = None) -> Dict[str, Any]:
    """The content of summary.json, before the write and total seconds that :func:`write_video_folder` adds.

    ``seconds`` is the result's own per-stage dict (``result.info["seconds"]``),
    so the seconds added while writing show in the result too.
    """
    info = result.info
    return {
        "video": name, "input": os.path.abspath(os.fspath(source)),
        "model": None if model_path is None else os.path.abspath(os.fspath(model_path)), "heads": list(heads),
        "dataset": dataset, "k": settings.k, "k_p": settings.k_p, "p": settings.p,
        "multiple": settings.multiple, "device": settings.device, "fused": settings.fuse,
        "batch_size": settings.batch_size, "jpeg_roundtrip": settings.jpeg_roundtrip, "remap": settings.remap,
        "frames": info["frames"], "pairs": info["pairs"], "crop": info["crop"],
        "landmarks": info["landmarks"], "threshold": result.threshold,
        "intervals": None if result.scores is None else int(len(result.intervals)),
        "features": result.features is not None, "versions": _versions(),
        "seconds": info["seconds"],
    }


def _write_files(folder: str, name: str, result: VideoResult, settings: SpotSettings, summary: dict,
                 started: float) -> None:
    """scores.npy (recog.npy for spot_recog models), intervals.csv, scores.png, then summary.json with the
    write and total seconds, into ``folder``."""
    from .plots import plot_scores

    t0 = time.perf_counter()
    if result.features is not None:
        write_features_npz(os.path.join(folder, FEATURES_FILE), result.features, settings.k, result.info["frames"],
                           settings.remap, result.info["landmark_points"], result.frame_pairs, result.pair_features)
    if result.scores is not None:
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


#: The feature file of a video folder (``save_features``; what ``meanspot-fused train`` reads).
FEATURES_FILE = "features.npz"


def write_features_npz(path: str, features: np.ndarray, k: int, frames: int, remap: str, landmarks,
                       pairs: Optional[np.ndarray] = None, pair_features: Optional[np.ndarray] = None) -> None:
    """A video's feature maps as ``meanspot-fused features`` writes them (every mode), with what made them.

    Keys: ``u``, ``v``, ``os`` (P, 1, 42, 42) float32 from ``features`` (P, 3,
    42, 42), sample i being the pair (i, i + k)
    (:func:`meanspot_fused.io.feature_files.open_features` reads them);
    ``k``, ``frames`` (int), ``remap`` (str), ``landmarks`` (68, 2) int64 of
    the first crop; with ``pairs``, the (M, 2) int64 frame pairs (first,
    second) and ``pair_u``, ``pair_v``, ``pair_os`` (M, 1, 42, 42) from their
    ``pair_features``. Written straight to ``path``: callers write into a
    temporary folder or file that appears complete.
    """
    extra = {}
    if pairs is not None:
        extra = dict(pairs=np.asarray(pairs, dtype=np.int64), pair_u=pair_features[:, 0:1],
                     pair_v=pair_features[:, 1:2], pair_os=pair_features[:, 2:3])
    with open(path, "wb") as f:
        np.savez(f, u=features[:, 0:1], v=features[:, 1:2], os=features[:, 2:3], k=np.int64(k),
                 frames=np.int64(frames), remap=np.array(remap), landmarks=np.asarray(landmarks, dtype=np.int64),
                 **extra)


def write_video_folder(out_dir: str, name: str, result: VideoResult, settings: SpotSettings, summary: dict,
                       started: float) -> str:
    """Write one video's files to ``out_dir/<name>/``, replacing an old folder; return its path.

    ``summary``: from :func:`video_summary`; its ``seconds`` gain ``write``
    and ``total`` (from ``started``, a ``time.perf_counter()`` value). The
    files go to a hidden folder ``.<name>.partial-*`` that is renamed into
    place when complete and removed on any failure, so ``out_dir/<name>``
    is at every moment absent, the old folder or the new one.
    """
    return write_folder_atomically(out_dir, name, lambda tmp: _write_files(tmp, name, result, settings, summary,
                                                                            started))


def remove_leftovers(out_dir: str, names) -> None:
    """Remove the hidden ``.<name>.partial-*`` and ``.<name>.old-*`` folders that a process killed while writing
    left behind. Only while no process writes those videos (a corpus engine calls it between worker pools)."""
    if not os.path.isdir(out_dir):
        return
    prefixes = tuple(f".{n}.{kind}-" for n in names for kind in ("partial", "old"))
    for entry in os.listdir(out_dir):
        if entry.startswith(prefixes):
            shutil.rmtree(os.path.join(out_dir, entry), ignore_errors=True)
