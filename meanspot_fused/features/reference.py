"""MEAN's own feature code path (OpenCV + NumPy + pandas): the reference of the features stage.

This module re-states ``feature_extraction.preProcess`` of MEAN
(github genbing99/MEAN_Spot-then-recognize) step by step, with the same
libraries and the same dtypes, so that the fused op
(:func:`meanspot_fused.features.mean.mean_features`) can be held to it. It is
for tests and benchmarks: it runs one pair at a time and is slow.

* :func:`opencv_flow`: OpenCV's Dual TV-L1 flow (opencv-contrib), MEAN's defaults.
* :func:`installed_remap`: the ``remap`` of :func:`~meanspot_fused.features.flow.tvl1_flow`
  that reproduces the installed OpenCV line (what this module computes with).
* :func:`mean_strain`: MEAN's ``computeStrain`` (pandas ``shift(1)``, ``fillna(0)``).
* :func:`mean_preprocess`: MEAN's ``preProcess`` for one pair, landmarks as a
  (68, 2) array of dlib's integer (x, y) points instead of a dlib shape.

OpenCV (``cv2.optflow`` needs opencv-contrib) and pandas load on first use.
"""
from __future__ import annotations

import numpy as np

__all__ = ["TVL1_DEFAULTS", "installed_remap", "opencv_flow", "mean_strain", "mean_normalised_maps", "mean_preprocess", "mean_boxes"]

#: MEAN's TV-L1 parameters (OpenCV's defaults), under the names of our API.
TVL1_DEFAULTS = dict(tau=0.25, lambda_=0.15, theta=0.3, scales=5, warps=5, epsilon=0.01, inner_iterations=30,
                     outer_iterations=10, scale_step=0.8, median_filtering=5)

_INSTALL = "pip install opencv-contrib-python-headless pandas"


def _cv2():
    try:
        import cv2
    except ImportError as e:
        raise ImportError(f"meanspot_fused.features.reference needs OpenCV with the contrib modules: {_INSTALL}") from e
    if not hasattr(cv2, "optflow"):
        raise ImportError("meanspot_fused.features.reference needs cv2.optflow, which only the contrib build of "
                          f"OpenCV has: {_INSTALL}")
    return cv2


def installed_remap() -> str:
    """The ``remap`` of tvl1_flow that reproduces the installed cv2's DualTVL1 (the flow this module computes).

    ``"opencv4"`` for 4.0 to 4.13, ``"opencv4.14"`` for a later 4.x on a CPU
    with FMA (its wheel then runs fused multiply-adds in the remap),
    ``"opencv5"`` for 5.x. A later 4.x on a CPU without FMA has no match:
    NotImplementedError.
    """
    cv2 = _cv2()
    major, minor = (int(v) for v in cv2.__version__.split(".")[:2])
    if major != 4:
        return "opencv5"
    if minor < 14:
        return "opencv4"
    # cv2.checkHardwareSupport ids: CV_CPU_AVX2 = 11, CV_CPU_FMA3 = 12, CV_CPU_AVX_512F = 13.
    if (cv2.checkHardwareSupport(11) and cv2.checkHardwareSupport(12)) or cv2.checkHardwareSupport(13):
        return "opencv4.14"
    raise NotImplementedError(f"OpenCV {cv2.__version__} on a CPU without FMA sums its bicubic remap with separate "
                              "multiplies and adds, which no tvl1_flow remap reproduces")


def _pandas():
    try:
        import pandas
    except ImportError as e:
        raise ImportError(f"meanspot_fused.features.reference needs pandas: {_INSTALL}") from e
    return pandas


def _as_frames(name: str, x) -> np.ndarray:
    """(H, W) or (N, H, W) uint8/float32 array-like -> (N, H, W) array of the same dtype."""
    if hasattr(x, "detach"):  # a torch tensor
        x = x.detach().cpu().numpy()
    x = np.asarray(x)
    if x.dtype not in (np.uint8, np.float32):
        raise TypeError(f"{name} must be uint8 or float32 frames, got dtype {x.dtype}")
    if x.ndim == 2:
        x = x[None]
    if x.ndim != 3 or min(x.shape[1:]) < 1:
        raise ValueError(f"{name} must have shape (H, W) or (N, H, W), got {x.shape}")
    return x


def opencv_flow(prev, next, **params) -> np.ndarray:
    """Dual TV-L1 flow from ``prev`` to ``next`` with OpenCV, one pair at a time.

    prev, next: (H, W) or (N, H, W) uint8 or float32 (float frames in [0, 1],
    as OpenCV reads them). ``params`` override :data:`TVL1_DEFAULTS`.
    Returns (N, 2, H, W) float32: channel 0 the x (column) displacement,
    channel 1 the y (row) displacement. A fresh OpenCV object serves each pair,
    because ``calc`` lowers its ``nscales`` on small images and would carry
    that to the next call.
    """
    cv2 = _cv2()
    unknown = set(params) - set(TVL1_DEFAULTS)
    if unknown:
        raise TypeError(f"opencv_flow got unknown parameters {sorted(unknown)}; known: {sorted(TVL1_DEFAULTS)}")
    p = {**TVL1_DEFAULTS, **params}
    a, b = _as_frames("prev", prev), _as_frames("next", next)
    if a.shape != b.shape or a.dtype != b.dtype:
        raise ValueError(f"prev and next must have the same shape and dtype, got {a.shape} {a.dtype} and "
                         f"{b.shape} {b.dtype}")
    out = np.empty((a.shape[0], 2) + a.shape[1:], np.float32)
    for i in range(a.shape[0]):
        # Positional: the Python binding spells one keyword "innnerIterations".
        tvl1 = cv2.optflow.DualTVL1OpticalFlow_create(
            p["tau"], p["lambda_"], p["theta"], int(p["scales"]), int(p["warps"]), p["epsilon"],
            int(p["inner_iterations"]), int(p["outer_iterations"]), p["scale_step"], 0.0,
            int(p["median_filtering"]), False)
        out[i] = tvl1.calc(a[i], b[i], None).transpose(2, 0, 1)
    return out


def mean_strain(u: np.ndarray, v: np.ndarray) -> np.ndarray:
    """MEAN's ``computeStrain``: optical strain of one (H, W) flow, in u's dtype.

    u_x = u - u shifted right by one column (NaN in column 0, then 0), v_y
    likewise down rows, u_y down rows, v_x along columns;
    os = sqrt(u_x^2 + v_y^2 + 1/2 (u_y + v_x)^2), the NaNs filled with 0
    before the squares are summed, exactly as MEAN writes it.
    """
    pd = _pandas()
    u_x = u - pd.DataFrame(u).shift(1, axis=1)
    v_y = v - pd.DataFrame(v).shift(1, axis=0)
    u_y = u - pd.DataFrame(u).shift(1, axis=0)
    v_x = v - pd.DataFrame(v).shift(1, axis=1)
    return np.array(np.sqrt((u_x ** 2).fillna(0) + (v_y ** 2).fillna(0) + 1 / 2 * (u_y.fillna(0) + v_x.fillna(0)) ** 2))


def mean_boxes(landmarks) -> tuple:
    """MEAN's two ROIs from dlib's 68 integer (x, y) points, as slices (eyes, mouth) of a 128 x 128 map."""
    p = np.asarray(landmarks)
    x31, y32 = max(p[17, 0] - 12, 0), max(p[19, 1] - 12, 0)
    x43, y34 = min(p[26, 0] + 12, 128), min(p[41, 1] + 12, 128)
    y42, y44 = max(p[24, 1] - 12, 0), min(p[46, 1] + 12, 128)
    x51, y52 = max(p[60, 0] - 12, 0), max(p[50, 1] - 12, 0)
    x53, y54 = min(p[64, 0] + 12, 128), min(p[57, 1] + 12, 128)
    eyes = (slice(min(y32, y42), max(y34, y44)), slice(x31, x43))
    mouth = (slice(y52, y54), slice(x51, x53))
    return eyes, mouth


def mean_preprocess(img1, img2, landmarks, flow=None) -> np.ndarray:
    """MEAN's ``preProcess`` for one pair: (42, 42, 3) float64, channels (u, v, os).

    img1, img2: (128, 128) uint8 frames; landmarks: (68, 2) integer (x, y)
    points in dlib's order. ``flow`` (2, H, W) or (H, W, 2) float32 replaces the
    TV-L1 step, so that the later steps can be compared on one flow.
    Steps: cartToPolar then NumPy's pol2cart (a lossy round trip), strain,
    float64 stack, per-channel min-max normalisation (``cv2.normalize``), the
    eyes and mouth boxes each resized (INTER_LINEAR) to 42 wide x 21 high.
    """
    cv2 = _cv2()
    if flow is None:
        tvl1 = cv2.optflow.DualTVL1OpticalFlow_create()
        flow = tvl1.calc(img1, img2, None)
    final = mean_normalised_maps(flow)
    eyes, mouth = mean_boxes(landmarks)
    out = np.zeros((42, 42, 3))
    out[:21] = cv2.resize(final[eyes], (42, 21))
    out[21:] = cv2.resize(final[mouth], (42, 21))
    return out


def mean_normalised_maps(flow) -> np.ndarray:
    """MEAN's (H, W, 3) float64 map (u, v, os), each channel min-max normalised, before the ROIs.

    flow: (2, H, W) or (H, W, 2) float32. cartToPolar, NumPy's pol2cart in
    float32, :func:`mean_strain`, the float64 stack, ``cv2.normalize``
    (NORM_MINMAX, 0..1) per channel.
    """
    cv2 = _cv2()
    flow = np.asarray(flow, np.float32)
    if flow.ndim == 3 and flow.shape[0] == 2 and flow.shape[2] != 2:
        flow = flow.transpose(1, 2, 0)
    if flow.ndim != 3 or flow.shape[2] != 2:
        raise ValueError(f"flow must have shape (2, H, W) or (H, W, 2), got {flow.shape}")
    magnitude, angle = cv2.cartToPolar(np.ascontiguousarray(flow[..., 0]), np.ascontiguousarray(flow[..., 1]))
    u, v = magnitude * np.cos(angle), magnitude * np.sin(angle)
    os = mean_strain(u, v)
    final = np.zeros(flow.shape[:2] + (3,))
    final[:, :, 0], final[:, :, 1], final[:, :, 2] = u, v, os
    for channel in range(3):
        final[:, :, channel] = cv2.normalize(final[:, :, channel], None, alpha=0, beta=1, norm_type=cv2.NORM_MINMAX)
    return final
