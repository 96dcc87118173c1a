"""Shared test helpers: random models and float64 reference versions of the ops."""
from __future__ import annotations

import os
import threading
import types
from pathlib import Path

import torch
import torch.nn.functional as F

import meanspot_fused as mf

#: The repository, and the optional ground truth of real Keras and MEAN's
#: published weights beside it (``../shared/keras_cases``, or
#: $MEANSPOT_KERAS_CASES); tests that need it skip when it is absent.
ROOT = Path(__file__).resolve().parents[1]
KERAS_CASES = Path(os.environ.get("MEANSPOT_KERAS_CASES", ROOT.parent / "shared" / "keras_cases"))

HEAD_SETS = [("spot",), ("recog",), ("spot", "recog")]


def randomize_batchnorm(model: torch.nn.Module, gen: torch.Generator) -> None:
    """Random BN statistics and affine parameters, gamma of both signs."""
    for m in model.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            n = m.num_features
            m.running_mean.copy_(torch.rand(n, generator=gen) * 2 - 1)
            m.running_var.copy_(torch.rand(n, generator=gen) * 1.8 + 0.2)
            m.weight.data.copy_(torch.rand(n, generator=gen) * 4 - 2)
            m.bias.data.copy_(torch.rand(n, generator=gen) * 2 - 1)


def random_model(cbam="all", heads=("spot",), dtype=torch.float64, seed=0, **kwargs) -> mf.MeanSpot:
    gen = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    model = mf.MeanSpot(cbam=cbam, heads=heads, **kwargs)
    with torch.no_grad():
        randomize_batchnorm(model, gen)
        # Keep pre-activations O(1) so gates and pools are exercised on both sides.
        for m in model.modules():
            if isinstance(m, (torch.nn.Conv2d, torch.nn.Linear)):
                m.weight.mul_(1.5)
    return model.eval().to(dtype)


def random_inputs(n, dtype=torch.float64, seed=None, device="cpu"):
    gen = torch.Generator().manual_seed(seed) if seed is not None else None
    return tuple(torch.rand(n, 1, 42, 42, generator=gen, dtype=torch.float64).to(dtype=dtype, device=device)
                 for _ in range(3))


def as_tuple(out):
    return out if isinstance(out, tuple) else (out,)


# Float64 references of the ops, written with plain torch functions.
def conv_block_ref(x, weight, bias, scale=None, shift=None, pool=1):
    y = F.relu(F.conv2d(x, weight, bias, padding=weight.shape[-1] // 2))
    if scale is not None:
        y = y * scale[:, None, None] + shift[:, None, None]
    return F.max_pool2d(y, pool) if pool > 1 else y


def channel_pool_ref(x):
    return x.mean(dim=(2, 3)), x.amax(dim=(2, 3))


def spatial_pool_ref(x):
    return torch.cat([x.mean(dim=1, keepdim=True), x.amax(dim=1, keepdim=True)], dim=1)


def cbam_ref(x, w1, b1, w2, b2, sw, scale=1.0, shift=0.0, pool=1):
    def mlp(t):
        return F.linear(F.relu(F.linear(t, w1, b1)), w2, b2)
    a, m = channel_pool_ref(x)
    y = x * torch.sigmoid(mlp(a) + mlp(m))[:, :, None, None]
    s = F.conv2d(spatial_pool_ref(y), sw, padding=sw.shape[-1] // 2)
    y = y * torch.sigmoid(scale * s + shift)
    return F.max_pool2d(y, pool) if pool > 1 else y


def layouts(x, device=None):
    """x (moved to ``device`` if given) in several memory layouts: contiguous, channels_last, strided,
    H/W-transposed, expanded.

    The kernels read x through its strides, so every layout exercises a
    different addressing of the same values.
    """
    if device is not None:
        x = x.to(device)
    yield "contiguous", x.contiguous()
    yield "channels_last", x.contiguous(memory_format=torch.channels_last)
    wide = torch.zeros(x.shape[:3] + (x.shape[3] * 2,), dtype=x.dtype, device=x.device)
    wide[..., ::2] = x
    yield "strided", wide[..., ::2]
    yield "hw_transposed", x.transpose(2, 3).contiguous().transpose(2, 3)  # stride_w > stride_h
    if x.shape[0] > 0:
        yield "expanded", x[:1].expand_as(x)


# Argument shapes of the per-op tests (tests/network/test_ops.py on every device, test_cuda.py's
# CUDA-only cases).
CONV_SHAPES = [  # cin, cout, hw, k, pool, affine
    (1, 3, 42, 5, 3, True),    # MEAN u/v branch, no CBAM
    (1, 8, 42, 5, 1, True),    # os branch before CBAM
    (14, 8, 14, 5, 2, False),  # head conv, no CBAM
    (14, 8, 14, 5, 1, False),  # head conv before CBAM
    (3, 17, 12, 3, 4, True),   # odd channel counts (two CUDA channel blocks), other kernel
    (2, 5, 9, 1, 3, True),     # 1x1 kernel
    (2, 2, 7, 3, 7, False),    # two output channels, one pooled pixel
]
POOL_SHAPES = [(3, 42, 42), (8, 14, 14), (5, 7, 3), (1, 1, 1),
               (5, 70, 70)]  # planes of >= 2048 pixels: one CUDA block per plane
CBAM_SHAPES = [  # c, hw, hidden, k, pool, spatial BatchNorm
    (3, 42, 1, 7, 3, False),   # u/v branch
    (8, 42, 1, 7, 3, False),   # os branch: 8 x 42 x 42 in CUDA shared memory (> 48 KB in float32)
    (8, 14, 1, 7, 2, False),   # head
    (8, 14, 1, 7, 1, True),    # head, spatial BatchNorm folded
    (16, 10, 4, 3, 5, True),   # wider MLP, other kernel
]


def run_concurrently(calls, repeats):
    """Runs each of `calls` `repeats` times on its own host thread and stream, all threads started together.

    Returns, per call, the list of its results; re-raises the first exception a
    thread met. torch.ops calls release the GIL while the op runs, so the host
    sides of the launches of the threads interleave.
    """
    barrier = threading.Barrier(len(calls))
    results = [[] for _ in calls]
    errors = []
    torch.cuda.synchronize()  # the inputs are ready before other streams read them

    def work(i):
        try:
            stream = torch.cuda.Stream()
            barrier.wait(timeout=60)
            with torch.cuda.stream(stream):
                for _ in range(repeats):
                    results[i].append(calls[i]())
            stream.synchronize()
        except BaseException as e:  # noqa: BLE001  (re-raised in the main thread)
            errors.append(e)
            barrier.abort()  # a thread still waiting must not hang

    threads = [threading.Thread(target=work, args=(i,)) for i in range(len(calls))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if errors:
        raise errors[0]
    return results


def assert_low_precision_close(got, ref_low, exact, what="", reference="reference ops"):
    """flash-attention's criterion: |got - exact| <= 2 |ref_low - exact| + 1 ulp at the output scale (max norms).

    got: the kernel in float16/bfloat16; ref_low: the reference ops in that
    precision; exact: the float64 result of the same rounded inputs. A NaN in
    got makes the error NaN and fails the assertion.
    """
    assert got.dtype in (torch.float16, torch.bfloat16) and got.shape == exact.shape, what
    if exact.numel() == 0:
        return
    err = (got.double().cpu() - exact).abs().max().item()
    ref_err = (ref_low.double().cpu() - exact).abs().max().item()
    ulp = torch.finfo(got.dtype).eps * max(1.0, exact.abs().max().item())
    assert err <= 2 * ref_err + ulp, (f"{what}: {got.dtype} kernel error {err:.3g} exceeds twice the error of the "
                                      f"{reference} in {got.dtype} ({ref_err:.3g}) plus {ulp:.3g}")


# A stand-in for dlib (face detector and 68-point predictor), shared by the
# frames and spot tests.
class FakeRect:
    def __init__(self, left, top, right, bottom):
        self._v = (left, top, right, bottom)

    def left(self):
        return self._v[0]

    def top(self):
        return self._v[1]

    def right(self):
        return self._v[2]

    def bottom(self):
        return self._v[3]


def fake_dlib(rects=(), calls=None):
    """A stand-in for dlib that records how it is called."""
    calls = [] if calls is None else calls

    def get_frontal_face_detector():
        def detect(image, upsample):
            calls.append(("detect", image.shape, upsample))
            return list(rects)
        return detect

    class Shape:
        num_parts = 68

        def part(self, i):
            return types.SimpleNamespace(x=i, y=2 * i + 1)

    def shape_predictor(path):
        calls.append(("predictor", path))

        def predict(image, rect):
            calls.append(("predict", image.shape, rect))
            return Shape()
        return predict

    module = types.SimpleNamespace(get_frontal_face_detector=get_frontal_face_detector,
                                   shape_predictor=shape_predictor, rectangle=lambda *v: v)
    return module, calls


# MEAN's own spotting (scipy), the reference of the spotting stage; shared by
# the spotting and spot tests (which skip without scipy).
def mean_spotting(scores, k_p, p, spot_multiple):
    """MEAN's training_utils.spotting for one video, as PIPELINE.md section 4 states it.

    Returns the (onset, offset, apex) rows MEAN appends to ``preds`` (columns
    0, 2 and 6 of its 7-column rows), dummy [0, 0] included.
    """
    import numpy as np
    from scipy import signal as scipy_signal

    y = np.asarray(scores, dtype=np.float64)
    box = np.ones(k_p * 2) / (k_p * 2)
    score_plot_agg = np.convolve(y, box, mode="same")
    threshold = score_plot_agg.mean() + p * (max(score_plot_agg) - score_plot_agg.mean())
    preds = []
    if spot_multiple:
        peaks, _ = scipy_signal.find_peaks(score_plot_agg, height=threshold, distance=k_p)
        if len(peaks) == 0:
            preds.append([0, 0, 0])
        for peak in peaks:
            preds.append([peak - k_p, peak + k_p, peak])
    else:
        peak = np.where(score_plot_agg == max(score_plot_agg))[0][0]
        preds.append([peak - k_p, peak + k_p, peak])
    return np.array(preds, dtype=np.int64).reshape(-1, 3), score_plot_agg, threshold
