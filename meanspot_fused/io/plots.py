"""Plots of the spotting stage: the smoothed score curve of one video.

MEAN draws the same figure in training_utils.spotting (curve, threshold,
ground-truth bounds); here it is written to a PNG file. matplotlib loads on
first use and draws on its Agg canvas (no display needed).
"""
from __future__ import annotations

import os

import numpy as np

from ..errors import InputError
from .atomic import replace_atomically

__all__ = ["plot_scores", "score_figure"]

#: The curve has one value per frame pair (i, i + k), at index i: the axis
#: counts pairs, which are also the onset frames of the pairs.
X_LABEL = "Pair index i (frames i and i + k)"


def plot_scores(path, smoothed, threshold: float, intervals, gt=None, title: str = "Spotting scores",
                *, dpi: int = 100) -> None:
    """Write a PNG of a video's smoothed scores with its spotted intervals (see :func:`score_figure`).

    Written to a temporary file in the same folder, then moved into place.
    """
    fig = score_figure(smoothed, threshold, intervals, gt, title, dpi=dpi)
    path = os.fspath(path)
    replace_atomically(path, lambda tmp: fig.savefig(tmp, format="png"))


def score_figure(smoothed, threshold: float, intervals, gt=None, title: str = "Spotting scores", *, dpi: int = 100):
    """The matplotlib Figure of a video's smoothed scores with its spotted intervals.

    ``smoothed``: the curve :func:`meanspot_fused.spotting.smooth` returns;
    ``threshold``: the peak threshold (:func:`~meanspot_fused.spotting.moilanen_threshold`);
    ``intervals``: (M, 3) rows (onset, offset, apex) drawn as shaded spans
    from onset to offset + 1 (inclusive frames) with the apex marked;
    ``gt``: optional (K, 2+) ground-truth rows (onset, offset), drawn as red
    bounds at onset and offset + 1 as MEAN does. Indices are pair indices.
    """
    try:
        # The Agg canvas directly, not pyplot: no global backend switch, no
        # display, safe in threads and next to a user's own pyplot figures.
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
    except ImportError:
        raise ImportError("plotting needs matplotlib: pip install matplotlib") from None
    curve = np.asarray(smoothed, dtype=np.float64).reshape(-1)
    if curve.size == 0:
        raise InputError("smoothed must hold at least one value, got an empty array")
    iv = np.asarray(intervals, dtype=np.int64).reshape(-1, 3) if np.size(intervals) else np.zeros((0, 3), np.int64)
    truth = np.asarray(gt, dtype=np.int64) if gt is not None and np.size(gt) else np.zeros((0, 2), np.int64)
    if truth.ndim != 2 or truth.shape[1] < 2:
        raise InputError(f"gt must have shape (K, 2) or (K, 3) as rows (onset, offset[, apex]), got {truth.shape}")

    fig = Figure(figsize=(15, 4), dpi=dpi)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    ax.plot(np.arange(curve.size), curve, color="tab:blue", linewidth=1, label="smoothed score")
    ax.axhline(threshold, color="tab:green", linewidth=1, label=f"threshold {threshold:.4g}")
    for n, (onset, offset, apex) in enumerate(iv):
        ax.axvspan(onset, offset + 1, color="tab:orange", alpha=0.25, label="spotted" if n == 0 else None)
        if 0 <= apex < curve.size:
            ax.plot([apex], [curve[apex]], "v", color="tab:orange")
    for n, (onset, offset) in enumerate(truth[:, :2]):
        ax.axvline(onset, color="tab:red", linewidth=1, label="ground truth" if n == 0 else None)
        ax.axvline(offset + 1, color="tab:red", linewidth=1)
    ax.set_xlabel(X_LABEL)
    ax.set_ylabel("Score")
    ax.set_title(title)
    ax.set_xlim(min(0, int(iv[:, 0].min()) if iv.size else 0), max(curve.size - 1, 1))
    ax.legend(loc="upper right", fontsize="small")
    fig.tight_layout()
    return fig
