"""TV-L1 optical flow of frame pairs, batched: OpenCV's DualTVL1 as one torch op.

:func:`tvl1_flow` runs the whole coarse-to-fine solve of every pair inside
``torch.ops.meanspot_fused.tvl1_flow`` (CPU: one thread per pair; CUDA: one
block per pair), with OpenCV's algorithm, parameters and stopping rule, so it
returns what ``cv2.optflow.DualTVL1OpticalFlow_create(...).calc(prev, next,
None)`` returns per pair (see csrc/tvl1_math.h; the measured distance is in
the README).

OpenCV versions give different flow (PIPELINE.md section 3b) through the
bicubic ``cv::remap`` that each warp calls: ``remap="opencv4"`` (the default)
reproduces 4.0 to 4.13, MEAN's 4.5.1 among them (its published weights were
trained on such features); ``"opencv4.14"`` the 4.14 wheel on a CPU with FMA
(4.14 sums the interior of one-channel float images with fused multiply-adds);
``"opencv5"`` 5.x (5.0 replaced the bicubic kernel).
"""
from __future__ import annotations

import math
from typing import Tuple, Union

import numpy as np
import torch

from .. import _C  # noqa: F401  (import registers the ops with the dispatcher)
from ..errors import InputError, InputTypeError

__all__ = ["tvl1_flow", "TVL1_DEFAULTS", "REMAPS", "DEFAULT_REMAP", "check_remap"]

# MEAN's parameters: OpenCV's defaults (PIPELINE.md section 2).
TVL1_DEFAULTS = dict(tau=0.25, lambda_=0.15, theta=0.3, scales=5, warps=5, epsilon=0.01, inner_iterations=30,
                     outer_iterations=10, scale_step=0.8, median_filtering=5)
MIN_SIDE, MAX_SIDE = 16, 1024
#: The OpenCV versions whose bicubic remap tvl1_flow reproduces bit for bit:
#: 4.0 to 4.13, 4.14 (x86-64 wheel on an FMA CPU), 5.x.
REMAPS = ("opencv4", "opencv4.14", "opencv5")
#: MEAN's line: its code pinned OpenCV 4.5.1, and its published weights saw 4.x features.
DEFAULT_REMAP = "opencv4"

Frames = Union[np.ndarray, torch.Tensor]


@torch.library.register_fake("meanspot_fused::tvl1_flow")
def _tvl1_flow_fake(prev, next, tau, lambda_, theta, scales, warps, epsilon, inner_iterations, outer_iterations,
                    scale_step, median_filtering, remap="opencv4"):
    n, h, w = prev.shape
    return (prev.new_empty((n, 2, h, w), dtype=torch.float32), prev.new_empty((n, 2), dtype=torch.int64))


def as_frames(name: str, frames: Frames, device=None) -> torch.Tensor:
    """``frames`` ((N, H, W) or (H, W), uint8 or float32, NumPy or torch) as an (N, H, W) tensor."""
    if isinstance(frames, np.ndarray):
        frames = torch.from_numpy(frames)
    if not isinstance(frames, torch.Tensor):
        raise InputTypeError(f"{name} must be a NumPy array or a torch.Tensor of frames (N, H, W) or (H, W), "
                        f"got {type(frames).__name__}")
    if frames.dtype not in (torch.uint8, torch.float32):
        raise InputTypeError(f"{name} must be uint8 or float32 (float frames in [0, 1], as OpenCV), got {frames.dtype}")
    if frames.dim() == 2:
        frames = frames.unsqueeze(0)
    if frames.dim() != 3:
        raise InputError(f"{name} must have shape (N, H, W) or (H, W), got {tuple(frames.shape)}")
    h, w = frames.shape[1:]
    if not (MIN_SIDE <= h <= MAX_SIDE and MIN_SIDE <= w <= MAX_SIDE):
        raise InputError(f"{name} frames must be between {MIN_SIDE} and {MAX_SIDE} pixels in height and width, "
                         f"got {h} x {w}")
    if device is not None:
        frames = frames.to(device)
    return frames


def check_remap(remap: str, name: str = "remap") -> str:
    """``remap`` if it names an OpenCV line tvl1_flow reproduces, else the package's InputError."""
    if not isinstance(remap, str) or remap not in REMAPS:
        # The words of the op's own check (csrc/ops/tvl1_flow.cpp).
        raise InputError(f"{name} must be 'opencv4', 'opencv4.14' or 'opencv5' (the OpenCV whose bicubic remap "
                         f"the flow reproduces), got {remap!r}")
    return remap


def _check_params(p: dict) -> None:
    for key in ("tau", "lambda_", "theta"):
        v = p[key]
        if not isinstance(v, (int, float)) or not math.isfinite(v) or v <= 0:
            raise InputError(f"{key} must be a finite number > 0, got {v!r}")
    e = p["epsilon"]
    if not isinstance(e, (int, float)) or not math.isfinite(e) or e < 0:
        raise InputError(f"epsilon must be a finite number >= 0, got {e!r}")
    for key, hi in (("scales", 64), ("warps", 1000), ("inner_iterations", 100000), ("outer_iterations", 100000)):
        v = p[key]
        if not isinstance(v, (int, np.integer)) or isinstance(v, bool) or not 1 <= v <= hi:
            raise InputError(f"{key} must be an int in [1, {hi}], got {v!r}")
    s = p["scale_step"]
    if not isinstance(s, (int, float)) or not 0 < s < 1:
        raise InputError(f"scale_step must be in (0, 1), got {s!r}")
    if p["median_filtering"] not in (0, 1, 3, 5) or isinstance(p["median_filtering"], bool):
        raise InputError("median_filtering must be 0 or 1 (off), 3 or 5 (OpenCV's float median sizes), "
                         f"got {p['median_filtering']!r}")


def tvl1_flow(prev: Frames, next: Frames, *, tau: float = 0.25, lambda_: float = 0.15, theta: float = 0.3,
              scales: int = 5, warps: int = 5, epsilon: float = 0.01, inner_iterations: int = 30,
              outer_iterations: int = 10, scale_step: float = 0.8, median_filtering: int = 5,
              remap: str = DEFAULT_REMAP, return_iterations: bool = False) -> Union[torch.Tensor, Tuple[torch.Tensor, torch.Tensor]]:
    """TV-L1 optical flow from ``prev`` to ``next``, per pair, as OpenCV's DualTVL1.

    prev, next: (N, H, W) or (H, W) frames, uint8 or float32 (float frames are
    taken to be in [0, 1], as OpenCV does), NumPy arrays or torch tensors on
    the CPU or a CUDA device; 16 <= H, W <= 1024. The parameters are
    ``cv2.optflow.DualTVL1OpticalFlow_create``'s (gamma 0, no initial flow).
    ``remap``: ``"opencv4"`` (default: OpenCV 4.0 to 4.13, MEAN's 4.5.1
    among them), ``"opencv4.14"`` or ``"opencv5"``, the OpenCV whose result
    is reproduced bit for bit.

    Returns the flow (N, 2, H, W) float32 on the frames' device (channel 0 the
    x displacement, 1 the y displacement). With ``return_iterations`` also an
    (N, 2) int64 tensor: the inner iterations each pair ran (all levels and
    warps), and the same weighted by the pixels of each iteration's level.
    """
    params = dict(tau=tau, lambda_=lambda_, theta=theta, scales=scales, warps=warps, epsilon=epsilon,
                  inner_iterations=inner_iterations, outer_iterations=outer_iterations, scale_step=scale_step,
                  median_filtering=median_filtering)
    _check_params(params)
    check_remap(remap)
    a = as_frames("prev", prev)
    b = as_frames("next", next, device=a.device)
    if a.shape != b.shape:
        raise InputError(f"next must have the shape of prev {tuple(a.shape)}, got {tuple(b.shape)}")
    if a.dtype != b.dtype:
        raise InputTypeError(f"next must have the dtype of prev ({a.dtype}), got {b.dtype}")
    # A data-dependent check: eager only. Under torch.compile it would break the
    # graph (and on CUDA force a sync); compiled callers get the op's own checks.
    if a.dtype == torch.float32 and a.numel() and not torch.compiler.is_compiling() and \
            not bool(torch.isfinite(a).all() and torch.isfinite(b).all()):
        raise InputError("prev and next must hold finite values (NaN or inf found)")
    flow, iterations = torch.ops.meanspot_fused.tvl1_flow(
        a, b, float(tau), float(lambda_), float(theta), int(scales), int(warps), float(epsilon),
        int(inner_iterations), int(outer_iterations), float(scale_step), int(median_filtering), remap)
    return (flow, iterations) if return_iterations else flow
