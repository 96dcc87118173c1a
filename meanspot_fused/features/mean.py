"""MEAN's features of frame pairs: ROIs, optical strain and the fused feature op.

MEAN (``feature_extraction.preProcess``) turns a pair of 128 x 128 grayscale
frames into a (42, 42, 3) map: TV-L1 flow, a cartToPolar/pol2cart round trip,
optical strain, per-channel min-max normalisation, and two ROIs (eyes, mouth)
from dlib's 68 landmarks, each resized to 42 x 21. Here the flow comes from
:func:`meanspot_fused.features.flow.tvl1_flow` and everything after it from one
op, :func:`meanspot_fused.features.ops.mean_roi_features`; outputs are
channels-first, (N, 3, 42, 42) with channels (u, v, os), the network's inputs.

* :func:`landmark_pixels`: float landmarks -> dlib's integer points (the one rounding rule).
* :func:`mean_rois`: landmarks -> (N, 2, 4) int64 boxes [top, bottom, left, right).
* :func:`optical_strain`: MEAN's strain of a flow, in plain torch ops.
* :func:`mean_features`: frame pairs -> features.
* :func:`video_features`: a video -> features of the pairs (i, i + k), in batches.
"""
from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from .ops import OUT_SIZE, mean_roi_features

__all__ = ["FRAME_SIZE", "landmark_pixels", "mean_rois", "optical_strain", "mean_features", "video_features"]

#: Side of MEAN's face crops; the ROI bounds are clamped to [0, FRAME_SIZE].
FRAME_SIZE = 128
#: Margin in pixels MEAN adds around the landmarks of each ROI.
ROI_MARGIN = 12
N_LANDMARKS = 68


def landmark_pixels(points):
    """Landmark coordinates as dlib's integer pixels: int64, floats rounded half up, floor(v + 0.5).

    dlib turns its float shape into the integer points MEAN uses with
    floor(v + 0.5) (dlib/geometry/vector.h), so a point at x.5 goes to x + 1;
    ``np.rint`` would round it to the even neighbour, and half of the .5
    points would land one pixel off. Every path from landmarks to MEAN's ROI
    boxes (files, arrays, tensors) rounds here. Integer points are kept as
    they are. ``points``: a numpy array (returns numpy) or a tensor (returns
    a tensor on its device); the rounding is done in float64.
    """
    t = points if isinstance(points, torch.Tensor) else torch.from_numpy(np.ascontiguousarray(points))
    if t.is_floating_point():
        t = torch.floor(t.double() + 0.5)
    t = t.long()
    return t if isinstance(points, torch.Tensor) else t.numpy()


def _landmarks_tensor(landmarks) -> torch.Tensor:
    """(68, 2) or (N, 68, 2) array-like -> (N, 68, 2) int64 tensor (floats rounded as dlib rounds)."""
    if isinstance(landmarks, torch.Tensor):
        t = landmarks.detach()
    else:
        a = np.asarray(landmarks)
        if a.dtype == object or not (np.issubdtype(a.dtype, np.integer) or np.issubdtype(a.dtype, np.floating)):
            raise TypeError(f"landmarks must be an int or float array of (x, y) points, got dtype {a.dtype}")
        t = torch.from_numpy(np.ascontiguousarray(a))
    if t.dtype == torch.bool or t.is_complex() or not (t.is_floating_point() or t.dtype in (
            torch.uint8, torch.int8, torch.int16, torch.int32, torch.int64)):
        raise TypeError(f"landmarks must be an int or float array of (x, y) points, got dtype {t.dtype}")
    if t.dim() == 2:
        t = t.unsqueeze(0)
    if t.dim() != 3 or tuple(t.shape[1:]) != (N_LANDMARKS, 2):
        raise ValueError(f"landmarks must have shape (68, 2) or (N, 68, 2) (dlib's 68 (x, y) points), "
                         f"got {tuple(landmarks.shape) if hasattr(landmarks, 'shape') else tuple(t.shape)}")
    if t.is_floating_point() and t.numel() and not bool(torch.isfinite(t).all()):
        raise ValueError("landmarks must be finite, got NaN or infinity")
    return landmark_pixels(t)


def mean_rois(landmarks, height: int = FRAME_SIZE, width: int = FRAME_SIZE) -> torch.Tensor:
    """MEAN's two ROI boxes from dlib-ordered 68-point landmarks.

    landmarks: (68, 2) or (N, 68, 2) (x, y) points, numpy or torch, int or
    float. Float points are first rounded half up, floor(v + 0.5), the rule
    dlib applies when it turns its float shape into the integer points MEAN
    uses (:func:`landmark_pixels`). Returns (N, 2, 4) int64 on the
    landmarks' device (CPU for numpy): per pair the eyes box, then the mouth
    box, as [top, bottom, left, right) (rows top..bottom - 1, columns
    left..right - 1), with p the points:

    * eyes: rows min(p19.y, p24.y) - 12 .. max(p41.y, p46.y) + 12,
      columns p17.x - 12 .. p26.x + 12;
    * mouth: rows p50.y - 12 .. p57.y + 12, columns p60.x - 12 .. p64.x + 12;

    lower bounds clamped with max(., 0), upper ones with min(., height or
    width), each before the min/max across points, as MEAN does. Raises
    ``ValueError`` naming the pair when a box is empty.
    """
    p = _landmarks_tensor(landmarks)
    x, y = p[..., 0], p[..., 1]
    m = ROI_MARGIN

    def lo(v):
        return (v - m).clamp(min=0)

    def hi(v, size):
        return (v + m).clamp(max=size)

    eyes = torch.stack([torch.minimum(lo(y[:, 19]), lo(y[:, 24])), torch.maximum(hi(y[:, 41], height),
                        hi(y[:, 46], height)), lo(x[:, 17]), hi(x[:, 26], width)], dim=-1)
    mouth = torch.stack([lo(y[:, 50]), hi(y[:, 57], height), lo(x[:, 60]), hi(x[:, 64], width)], dim=-1)
    boxes = torch.stack([eyes, mouth], dim=1)
    empty = (boxes[..., 1] <= boxes[..., 0]) | (boxes[..., 3] <= boxes[..., 2])
    if bool(empty.any()):
        i, r = (int(v) for v in empty.nonzero()[0])
        raise ValueError(f"landmarks[{i}] give an empty {('eyes', 'mouth')[r]} box [top, bottom, left, right) = "
                         f"{boxes[i, r].tolist()} in a {height} x {width} frame; are they dlib-ordered (x, y) "
                         f"points of this face?")
    return boxes


# OpenCV's cartToPolar angle polynomial (see csrc/features_math.h): float32
# coefficients c_k * float(180 / pi), in degrees.
_RAD_TO_DEG = np.float32(180.0 / np.pi)
_ATAN_P = [float(np.float32(c) * _RAD_TO_DEG) for c in
           (0.9997878412794807, -0.3258083974640975, 0.1555786518463281, -0.04432655554792128)]
_DBL_EPSILON = float(np.float32(np.finfo(np.float64).eps))
_DEG_TO_RAD = float(np.float32(np.pi / 180.0))


def _polar_round_trip(fx: torch.Tensor, fy: torch.Tensor):
    """MEAN's u, v: OpenCV's cartToPolar (approximate angle) then rho cos(phi), rho sin(phi), float32."""
    rho = torch.sqrt(fx * fx + fy * fy)
    ax, ay = fx.abs(), fy.abs()
    c = torch.minimum(ax, ay) / (torch.maximum(ax, ay) + _DBL_EPSILON)
    cc = c * c
    p1, p3, p5, p7 = _ATAN_P
    a = (((p7 * cc + p5) * cc + p3) * cc + p1) * c
    a = torch.where(ax >= ay, a, 90.0 - a)
    a = torch.where(fx < 0, 180.0 - a, a)
    a = torch.where(fy < 0, 360.0 - a, a)
    phi = a * _DEG_TO_RAD
    return rho * torch.cos(phi), rho * torch.sin(phi)


def optical_strain(flow: torch.Tensor) -> torch.Tensor:
    """MEAN's optical strain of a flow, before normalisation: (N, 2, H, W) -> (N, 1, H, W) float32.

    u, v are MEAN's polar round trip of the flow (OpenCV's approximate
    cartToPolar angle, then u = rho cos(phi), v = rho sin(phi)); with
    backward differences u_x = u[i, j] - u[i, j - 1] (0 in column 0) and
    v_y = v[i, j] - v[i - 1, j] (0 in row 0), u_y and v_x likewise,
    os = sqrt(u_x^2 + v_y^2 + 1/2 (u_y + v_x)^2). Plain torch ops in float32
    (CPU, CUDA, torch.compile, export); equal to MEAN's float32 pandas
    ``computeStrain`` up to float32 rounding.
    """
    if not isinstance(flow, torch.Tensor):
        raise TypeError(f"flow must be a torch.Tensor of shape (N, 2, H, W), got {type(flow).__name__}")
    if flow.dim() != 4 or flow.shape[1] != 2:
        raise ValueError(f"flow must have shape (N, 2, H, W), got {tuple(flow.shape)}")
    if not flow.is_floating_point():
        raise TypeError(f"flow must be a floating-point tensor, got {flow.dtype}")
    flow = flow.float()
    u, v = _polar_round_trip(flow[:, 0], flow[:, 1])
    u_x = F.pad(u[:, :, 1:] - u[:, :, :-1], (1, 0))
    v_x = F.pad(v[:, :, 1:] - v[:, :, :-1], (1, 0))
    u_y = F.pad(u[:, 1:, :] - u[:, :-1, :], (0, 0, 1, 0))
    v_y = F.pad(v[:, 1:, :] - v[:, :-1, :], (0, 0, 1, 0))
    s = u_y + v_x
    return torch.sqrt(u_x * u_x + v_y * v_y + 0.5 * (s * s)).unsqueeze(1)


def _frames_tensor(name: str, frames, device=None) -> torch.Tensor:
    """(H, W) or (N, H, W) uint8/float32 numpy or torch -> (N, H, W) tensor, dtype kept."""
    t = frames if isinstance(frames, torch.Tensor) else torch.from_numpy(np.ascontiguousarray(frames))
    if t.dtype not in (torch.uint8, torch.float32):
        raise TypeError(f"{name} must be uint8 or float32 frames (float in [0, 1]), got dtype {t.dtype}")
    if t.dim() == 2:
        t = t.unsqueeze(0)
    if t.dim() != 3 or t.shape[1] < 1 or t.shape[2] < 1:
        raise ValueError(f"{name} must have shape (H, W) or (N, H, W), got {tuple(frames.shape)}")
    return t if device is None else t.to(device)


def mean_features(prev, next, landmarks, **tvl1_params) -> torch.Tensor:
    """MEAN's features of frame pairs (prev[i], next[i]): (N, 3, 42, 42) float32.

    prev, next: (N, H, W) or (H, W) uint8 or float32 (float frames in [0, 1],
    as OpenCV reads them), numpy or torch, MEAN's 128 x 128 face crops.
    landmarks: (68, 2) shared by all pairs (MEAN: one set per video, from its
    first frame) or (N, 68, 2), see :func:`mean_rois`. ``tvl1_params`` go to
    :func:`meanspot_fused.features.flow.tvl1_flow` (MEAN's defaults when
    omitted). The result is on the frames' device, channels (u, v, os).
    """
    a = _frames_tensor("prev", prev)
    b = _frames_tensor("next", next, a.device)
    if a.shape != b.shape or a.dtype != b.dtype:
        raise ValueError(f"prev and next must have the same shape and dtype, got {tuple(a.shape)} {a.dtype} and "
                         f"{tuple(b.shape)} {b.dtype}")
    boxes = _pair_boxes(landmarks, a.shape[0], a.shape[1], a.shape[2])
    return _pair_features(a, b, boxes, tvl1_params)


def _pair_boxes(landmarks, pairs: int, height: int, width: int) -> torch.Tensor:
    """Boxes of `pairs` pairs from one landmark set or one per pair: (1 or pairs, 2, 4) int64 on the CPU.

    On the CPU whatever the frames' device: mean_roi_features checks CPU boxes on the host and copies them
    without waiting for the GPU, so a batch costs no synchronisation.
    """
    boxes = mean_rois(landmarks, height, width).cpu()
    if boxes.shape[0] not in (1, pairs):
        raise ValueError(f"landmarks must be one (68, 2) set or one per pair ({pairs}, 68, 2), "
                         f"got {boxes.shape[0]} sets")
    return boxes


def _pair_features(a: torch.Tensor, b: torch.Tensor, boxes: torch.Tensor, tvl1_params: dict) -> torch.Tensor:
    """Flow then the fused op for checked frames a, b (N, H, W) and CPU boxes (1 or N, 2, 4)."""
    from .flow import tvl1_flow

    if a.shape[0] == 0:
        return torch.empty((0, 3, OUT_SIZE, OUT_SIZE), device=a.device)
    flow = tvl1_flow(a, b, **tvl1_params)
    return mean_roi_features(flow, boxes.expand(a.shape[0], -1, -1).contiguous())


def video_features(frames, k: int, landmarks, batch_size: int = 256, progress: bool = False,
                   **tvl1_params) -> torch.Tensor:
    """MEAN's spotting features of a video: the pairs (i, i + k), i < T - k -> (T - k, 3, 42, 42) float32.

    frames: (T, H, W) uint8 or float32, numpy or torch (MEAN: 128 x 128 crops);
    k: the pair distance (MEAN's k per dataset, e.g. 3 for CAS(ME)^2);
    landmarks: (68, 2) for the video (MEAN: from its first frame) or one set
    per pair, (T - k, 68, 2). Pairs are processed ``batch_size`` at a time, so
    memory stays bounded by one batch of flows plus the preallocated output;
    ``progress`` shows a tqdm bar. Output on the frames' device; an error in
    any batch propagates, no partial result is returned.
    """
    t = _frames_tensor("frames", frames)
    n_frames = t.shape[0]
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)):
        raise TypeError(f"k must be an int (the distance between the frames of a pair), got {type(k).__name__}")
    if not 1 <= k < n_frames:
        raise ValueError(f"k must be in [1, T - 1] = [1, {n_frames - 1}] for a video of T = {n_frames} frames, "
                         f"got {k}")
    if isinstance(batch_size, bool) or not isinstance(batch_size, (int, np.integer)) or batch_size < 1:
        raise ValueError(f"batch_size must be an int >= 1, got {batch_size!r}")
    k = int(k)
    pairs = n_frames - k
    boxes = _pair_boxes(landmarks, pairs, t.shape[1], t.shape[2])
    out = torch.empty((pairs, 3, OUT_SIZE, OUT_SIZE), device=t.device)
    starts = range(0, pairs, int(batch_size))
    if progress:
        try:
            from tqdm.auto import tqdm
        except ImportError as e:
            raise ImportError("video_features(progress=True) needs tqdm: pip install tqdm") from e
        starts = tqdm(starts, total=len(starts), unit="batch", desc="MEAN features")
    for s in starts:
        e = min(s + int(batch_size), pairs)
        batch_boxes = boxes if boxes.shape[0] == 1 else boxes[s:e]
        out[s:e] = _pair_features(t[s:e], t[s + k:e + k], batch_boxes, tvl1_params)
    return out
