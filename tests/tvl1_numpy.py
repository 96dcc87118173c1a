"""OpenCV's DualTVL1 solver (opencv_contrib optflow/tvl1flow.cpp) transcribed in
NumPy, operation for operation in float32, for the tests of tvl1_flow.

`dual_tvl1(a, b, remap=...)` uses OpenCV's resize and medianBlur and the given
bicubic remap: `opencv_remap` (cv2.remap, which makes this OpenCV's own
algorithm: tests/features/test_features_flow.py checks the result is bitwise
cv2.optflow.DualTVL1's), `kernel_remap` (the bicubic warp of
csrc/tvl1_math.h), `legacy_remap` (OpenCV 4.x's bicubic remap up to 4.13,
4.5.1 included, which makes it those versions' DualTVL1) or
`legacy_remap_simd` (OpenCV 4.14's, whose one-channel float interior sum
changed). Slow but exact; for small frames only.
"""
from __future__ import annotations

import cv2
import numpy as np

f32, f64 = np.float32, np.float64


def _fma_exact(a, b, c):
    # Correctly rounded float32 fma: a * b is exact in double; s = p + c is
    # rounded to double with exact error e (TwoSum); rounding s to float is
    # wrong only when s lies exactly halfway between two floats and e != 0.
    a, b, c = (np.asarray(v, f32) for v in (a, b, c))
    p, c64 = a.astype(f64) * b.astype(f64), c.astype(f64)
    s = p + c64
    bb = s - p
    e = (p - (s - bb)) + (c64 - bb)
    r = s.astype(f32)
    lo, hi = np.nextafter(r, f32(-np.inf)), np.nextafter(r, f32(np.inf))
    r = np.where((s == (r.astype(f64) + lo) * 0.5) & (e < 0), lo, r)
    r = np.where((s == (r.astype(f64) + hi) * 0.5) & (e > 0), hi, r)
    return r.astype(f32)


def _cubic_weights(t):
    # OpenCV 5's bicubic weights (A = -0.75) at offset t, s = 1 - t: the outer
    # taps A * (t * s^2), A * (s * t^2), the centre-left one fused twice, the
    # centre-right one the remainder of 1 (csrc/tvl1_math.h cubic_weights).
    a = f32(-0.75)
    s = (f32(1) - t).astype(f32)
    tt, ss = (t * t).astype(f32), (s * s).astype(f32)
    w0 = (a * (t * ss).astype(f32)).astype(f32)
    w3 = (a * (s * tt).astype(f32)).astype(f32)
    w1 = _fma_exact(tt, _fma_exact(np.full_like(t, a + 2), t, np.full_like(t, -(a + 3))), np.ones_like(t))
    w2 = (((f32(1) - w0).astype(f32) - w1).astype(f32) - w3).astype(f32)
    return [w0, w1, w2, w3]


def opencv_remap(img, mx, my):
    return cv2.remap(img, mx, my, cv2.INTER_CUBIC)


def kernel_remap(img, mx, my):
    h, w = img.shape
    mx = np.clip(mx, -8, w + 8).astype(f32)
    my = np.clip(my, -8, h + 8).astype(f32)
    fx, fy = np.floor(mx), np.floor(my)
    x0, y0 = fx.astype(int) - 1, fy.astype(int) - 1
    wx, wy = _cubic_weights((mx - fx).astype(f32)), _cubic_weights((my - fy).astype(f32))

    def tap(yy, xx):
        inside = (yy >= 0) & (yy < h) & (xx >= 0) & (xx < w)
        return np.where(inside, img[np.clip(yy, 0, h - 1), np.clip(xx, 0, w - 1)], f32(0)).astype(f32)

    def dot4(v, wt):
        acc = (v[0] * wt[0]).astype(f32)
        for j in range(1, 4):
            acc = _fma_exact(v[j], wt[j], acc)
        return acc

    rows = [dot4([tap(y0 + k, x0 + j) for j in range(4)], wx) for k in range(4)]
    return dot4(rows, wy)


def _legacy_cubic_table():
    # OpenCV 4.x interpolateCubic (imgwarp.cpp) at k / 32, k = 0..31, in float,
    # left to right, no FMA (the 4.x wheels build imgwarp.cpp at the SSE3
    # baseline): (32, 4) float32.
    x = (np.arange(32, dtype=f32) * f32(1 / 32)).astype(f32)
    a, one = f32(-0.75), f32(1)
    x1 = x + one
    c0 = ((a * x1 - f32(5) * a) * x1 + f32(8) * a) * x1 - f32(4) * a
    c1 = ((a + f32(2)) * x - (a + f32(3))) * x * x + one
    r = one - x
    c2 = ((a + f32(2)) * r - (a + f32(3))) * r * r + one
    c3 = one - c0 - c1 - c2
    return np.stack([c0, c1, c2, c3], axis=1).astype(f32)


_LEGACY_CUBIC = _legacy_cubic_table()


def _legacy_taps(img, mx, my):
    # RemapInvoker: cvRound(x * 32.f) (x * 32 is exact; rint is half to even),
    # tap base X >> 5, fraction X & 31; the weights float(cy[i] * cx[j]) of
    # initInterTab2D. NaN: cvRound gives INT_MIN, every tap outside, 0. The
    # clamp changes nothing (such positions have every tap outside) and keeps X
    # in int range.
    h, w = img.shape
    mx = np.clip(np.where(np.isnan(mx), f32(-8), mx), -8, w + 8).astype(f32)
    my = np.clip(np.where(np.isnan(my), f32(-8), my), -8, h + 8).astype(f32)
    X = np.rint(mx * f32(32)).astype(np.int64)
    Y = np.rint(my * f32(32)).astype(np.int64)
    x0, y0 = (X >> 5) - 1, (Y >> 5) - 1
    cx, cy = _LEGACY_CUBIC[X & 31], _LEGACY_CUBIC[Y & 31]
    wt = [[(cy[..., i] * cx[..., j]).astype(f32) for j in range(4)] for i in range(4)]
    inside, vals = [], []
    for i in range(4):
        yy = y0 + i
        for j in range(4):
            xx = x0 + j
            ins = (yy >= 0) & (yy < h) & (xx >= 0) & (xx < w)
            inside.append(ins)
            vals.append(np.where(ins, img[np.clip(yy, 0, h - 1), np.clip(xx, 0, w - 1)], f32(0)).astype(f32))
    S = [[vals[4 * i + j] for j in range(4)] for i in range(4)]
    ins = [[inside[4 * i + j] for j in range(4)] for i in range(4)]
    # (unsigned)(ix - 1) < max(W - 3, 0), the same in y: all 16 taps inside.
    interior = (x0 >= 0) & (x0 < max(w - 3, 0)) & (y0 >= 0) & (y0 < max(h - 3, 0))
    # Border (BORDER_CONSTANT 0): sum = 0, then sum += S * w for each tap inside,
    # row by row, column by column; no tap inside gives 0.
    border = np.zeros(mx.shape, f32)
    for i in range(4):
        for j in range(4):
            border = np.where(ins[i][j], (border + (S[i][j] * wt[i][j]).astype(f32)).astype(f32), border)
    return S, wt, interior, border


def legacy_remap(img, mx, my):
    """cv2.remap(img, mx, my, INTER_CUBIC), float32, BORDER_CONSTANT 0, of OpenCV 4.x up to 4.13 (4.5.1 included).

    imgwarp.cpp RemapInvoker + remapBicubic<Cast<float, float>, float, 1>,
    compiled at the SSE3 baseline (no FMA): interior pixels sum each row
    ((S0 w0 + S1 w1) + S2 w2) + S3 w3 and the rows in order; every operation
    rounded to float32. Verified bit for bit against the 4.13.0.92 (Python
    3.11) and 4.5.1.48 (cp39 wheel, Python 3.9, numpy 1.26) wheels, and with
    it this module's dual_tvl1 is their DualTVL1 bit for bit, given that
    version's own cv2.resize (4.5.1's float INTER_LINEAR resize differs from
    4.13's in the last bit at some sizes). OpenCV 4.14 runs a different
    interior sum for one-channel float images: `legacy_remap_simd`.
    """
    S, wt, interior, border = _legacy_taps(np.asarray(img, f32), np.asarray(mx, f32), np.asarray(my, f32))
    rows = [(((S[i][0] * wt[i][0]) + (S[i][1] * wt[i][1])) + (S[i][2] * wt[i][2])) + (S[i][3] * wt[i][3])
            for i in range(4)]
    inner = ((rows[0] + rows[1]) + rows[2]) + rows[3]
    return np.where(interior, inner, border).astype(f32)


def legacy_remap_simd(img, mx, my, fused=True):
    """cv2.remap(img, mx, my, INTER_CUBIC), float32, BORDER_CONSTANT 0, of OpenCV 4.14.

    Same grid, weights and border path as `legacy_remap`; interior pixels of
    a one-channel image go through imgwarp.simd.hpp remapBicubicC1wp_run
    (opencv PR #29507): four column lanes, lane j = fma(S[i][j], w[i][j], lane j)
    over the rows i = 0..3 starting from 0, then v_reduce_sum, which is
    (l0 + l2) + (l1 + l3). `fused`: v_fma is a fused multiply-add in the
    AVX2/AVX-512 builds the 4.14 x86-64 wheel dispatches to on FMA CPUs
    (verified bit for bit); without FMA (OPENCV_CPU_DISABLE, older CPUs) it is
    a rounded multiply then add (fused=False).
    """
    S, wt, interior, border = _legacy_taps(np.asarray(img, f32), np.asarray(mx, f32), np.asarray(my, f32))
    lanes = []
    for j in range(4):
        acc = np.zeros(interior.shape, f32)
        for i in range(4):
            acc = _fma_exact(S[i][j], wt[i][j], acc) if fused else (acc + (S[i][j] * wt[i][j]).astype(f32)).astype(f32)
        lanes.append(acc)
    inner = (lanes[0] + lanes[2]) + (lanes[1] + lanes[3])
    return np.where(interior, inner, border).astype(f32)


def _centered_gradient(s):
    dx, dy = np.empty_like(s), np.empty_like(s)
    dx[:, 1:-1] = f32(0.5) * (s[:, 2:] - s[:, :-2])
    dx[:, 0] = f32(0.5) * (s[:, 1] - s[:, 0])
    dx[:, -1] = f32(0.5) * (s[:, -1] - s[:, -2])
    dy[1:-1] = f32(0.5) * (s[2:] - s[:-2])
    dy[0] = f32(0.5) * (s[1] - s[0])
    dy[-1] = f32(0.5) * (s[-1] - s[-2])
    return dx, dy


def _forward_gradient(u):
    dx, dy = np.zeros_like(u), np.zeros_like(u)
    dx[:, :-1] = u[:, 1:] - u[:, :-1]
    dy[:-1] = u[1:] - u[:-1]
    return dx, dy


def _divergence(v1, v2):
    d = np.empty_like(v1)
    d[1:, 1:] = (v1[1:, 1:] - v1[1:, :-1]) + (v2[1:, 1:] - v2[:-1, 1:])
    d[0, 1:] = v1[0, 1:] - v1[0, :-1] + v2[0, 1:]
    d[1:, 0] = v1[1:, 0] + v2[1:, 0] - v2[:-1, 0]
    d[0, 0] = v1[0, 0] + v2[0, 0]
    return d


def _one_scale(i0, i1, u1, u2, p, remap):
    h, w = i0.shape
    threshold = f32(p["epsilon"] * p["epsilon"] * h * w)
    l_t, taut, theta = f32(p["lambda_"] * p["theta"]), f32(p["tau"] / p["theta"]), f32(p["theta"])
    i1x, i1y = _centered_gradient(i1)
    p11, p12, p21, p22 = (np.zeros_like(i0) for _ in range(4))
    yy, xx = np.mgrid[0:h, 0:w]
    iterations = 0
    for _ in range(p["warps"]):
        m1, m2 = (xx + u1).astype(f32), (yy + u2).astype(f32)
        i1w, i1wx, i1wy = remap(i1, m1, m2), remap(i1x, m1, m2), remap(i1y, m1, m2)
        grad = i1wx * i1wx + i1wy * i1wy
        rho_c = i1w - i1wx * u1 - i1wy * u2 - i0
        error, n_outer = np.finfo(f32).max, 0
        while error > threshold and n_outer < p["outer_iterations"]:
            if p["median_filtering"] > 1:
                u1 = cv2.medianBlur(u1, p["median_filtering"])
                u2 = cv2.medianBlur(u2, p["median_filtering"])
            n_inner = 0
            while error > threshold and n_inner < p["inner_iterations"]:
                rho = rho_c + (i1wx * u1 + i1wy * u2)
                below, above = rho < -l_t * grad, rho > l_t * grad
                mid = ~below & ~above & (grad > np.finfo(f32).eps)
                fi = np.where(mid, -rho / np.where(mid, grad, f32(1)), f32(0)).astype(f32)
                d1 = np.where(below, l_t * i1wx, np.where(above, -l_t * i1wx, fi * i1wx)).astype(f32)
                d2 = np.where(below, l_t * i1wy, np.where(above, -l_t * i1wy, fi * i1wy)).astype(f32)
                v1, v2 = u1 + d1, u2 + d2
                n1 = v1 + theta * _divergence(p11, p12)
                n2 = v2 + theta * _divergence(p21, p22)
                # OpenCV's error: a serial float sum, row-major (cumsum is serial).
                error = np.cumsum(((n1 - u1) * (n1 - u1) + (n2 - u2) * (n2 - u2)).ravel(), dtype=f32)[-1]
                u1, u2 = n1, n2
                u1x, u1y = _forward_gradient(u1)
                u2x, u2y = _forward_gradient(u2)
                ng1 = f32(1) + taut * np.hypot(u1x.astype(f64), u1y).astype(f32)
                ng2 = f32(1) + taut * np.hypot(u2x.astype(f64), u2y).astype(f32)
                p11, p12 = (p11 + taut * u1x) / ng1, (p12 + taut * u1y) / ng1
                p21, p22 = (p21 + taut * u2x) / ng2, (p22 + taut * u2y) / ng2
                n_inner += 1
                iterations += 1
            n_outer += 1
    return u1, u2, iterations


def dual_tvl1(a, b, remap=opencv_remap, tau=0.25, lambda_=0.15, theta=0.3, scales=5, warps=5, epsilon=0.01,
              inner_iterations=30, outer_iterations=10, scale_step=0.8, median_filtering=5):
    """Flow (2, H, W) float32 and the inner iterations run, for one uint8 pair."""
    p = dict(tau=tau, lambda_=lambda_, theta=theta, warps=warps, epsilon=epsilon, inner_iterations=inner_iterations,
             outer_iterations=outer_iterations, median_filtering=median_filtering)
    i0, i1 = [a.astype(f32)], [b.astype(f32)]
    for _ in range(1, scales):
        n0 = cv2.resize(i0[-1], (0, 0), fx=scale_step, fy=scale_step, interpolation=cv2.INTER_LINEAR)
        if n0.shape[0] < 16 or n0.shape[1] < 16:
            break
        i0.append(n0)
        i1.append(cv2.resize(i1[-1], (0, 0), fx=scale_step, fy=scale_step, interpolation=cv2.INTER_LINEAR))
    u1 = np.zeros_like(i0[-1])
    u2 = np.zeros_like(i0[-1])
    total = 0
    for s in range(len(i0) - 1, -1, -1):
        u1, u2, n = _one_scale(i0[s], i1[s], u1, u2, p, remap)
        total += n
        if s == 0:
            break
        h, w = i0[s - 1].shape
        up = f32(1 / scale_step)
        u1 = cv2.resize(u1, (w, h), interpolation=cv2.INTER_LINEAR) * up
        u2 = cv2.resize(u2, (w, h), interpolation=cv2.INTER_LINEAR) * up
    return np.stack([u1, u2]), total
