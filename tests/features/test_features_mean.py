"""The features stage after the flow: mean_rois, optical_strain and the fused
mean_roi_features op, held to MEAN's own OpenCV/pandas code path
(meanspot_fused.features.reference) on the same flows."""
from __future__ import annotations

import sys
import types

import numpy as np
import pytest
import torch

from meanspot_fused.features import mean_rois, optical_strain
from meanspot_fused.features.mean import landmark_pixels
from meanspot_fused.features.ops import mean_roi_features

cv2 = pytest.importorskip("cv2")
pytest.importorskip("pandas")
pytest.importorskip("skimage")
from meanspot_fused.features import reference as R  # noqa: E402
from meanspot_fused.features import synthetic as S  # noqa: E402

# Every CPU instruction-set level this machine runs (conftest.py).
pytestmark = pytest.mark.usefixtures("cpu_level")

raw_op = torch.ops.meanspot_fused.mean_roi_features
cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")

# The op computes in float32 what MEAN computes partly in float64 (the
# normalisation and resize): measured max |diff| about 1e-6 on unit-range
# features. 1e-5 leaves room for other libms; the end-to-end bounds
# are mean 0.005 and max 0.05.
OP_MAX_ABS = 1e-5
OP_MEAN_ABS = 1e-6


def smooth_flows(n, seed=0, scale=3.0, size=128):
    """Random smooth flows (n, 2, size, size) float32 of a few pixels."""
    rng = np.random.default_rng(seed)
    noise = rng.standard_normal((n, 2, size // 8, size // 8)).astype(np.float32)
    out = np.stack([np.stack([cv2.resize(c, (size, size), interpolation=cv2.INTER_CUBIC) for c in f]) for f in noise])
    return (out * scale).astype(np.float32)


def boxes_of(landmarks):
    return mean_rois(landmarks)


def reference_features(flow, boxes):
    """MEAN's steps after the flow for explicit boxes: (N, 3, 42, 42) float64."""
    out = np.zeros((len(flow), 3, 42, 42))
    for i, (f, b) in enumerate(zip(flow, np.asarray(boxes))):
        maps = R.mean_normalised_maps(f)
        for r, (top, bottom, left, right) in enumerate(b):
            out[i, :, 21 * r:21 * (r + 1)] = cv2.resize(maps[top:bottom, left:right], (42, 21)).transpose(2, 0, 1)
    return out


def opencv_pair_flows():
    """OpenCV TV-L1 flows of synthetic pairs: deformed faces and textures, and video frame pairs."""
    pairs = [S.deformed_pair(m, kind, seed=s) for m, kind, s in ((1.0, "face", 0), (2.5, "texture", 1),
                                                                    (0.7, "translation", 2))]
    frames, _ = S.face_video(16, events=((4, "brow", 6, 2.5), (9, "mouth", 5, 2.0)), drift=0.05, seed=3)
    pairs += [(frames[i], frames[i + 3]) for i in (0, 5, 9)]
    a = np.stack([p[0] for p in pairs])
    b = np.stack([p[1] for p in pairs])
    return R.opencv_flow(a, b)


@pytest.fixture(scope="module")
def cv_flows():
    return opencv_pair_flows()


# ---------------------------------------------------------------- mean_rois


def test_mean_rois_matches_mean_formula():
    rng = np.random.default_rng(0)
    lms = [S.face_landmarks()] + [rng.integers(-20, 150, (68, 2)) for _ in range(200)]
    checked = 0
    for lm in lms:
        eyes, mouth = R.mean_boxes(lm)
        ref = [[s[0].start, s[0].stop, s[1].start, s[1].stop] for s in (eyes, mouth)]
        if any(b[1] <= b[0] or b[3] <= b[2] for b in ref):
            with pytest.raises(ValueError, match="empty"):
                mean_rois(lm)
            continue
        assert mean_rois(lm)[0].tolist() == ref
        checked += 1
    assert checked > 20
    batch = np.stack([S.face_landmarks()] * 3)
    assert tuple(mean_rois(torch.from_numpy(batch)).shape) == (3, 2, 4)
    assert mean_rois(batch).dtype == torch.int64


def test_landmark_pixels_is_dlibs_half_up_rule():
    # floor(v + 0.5): every .5 goes up, also below 0 (np.rint: -1.5, -0.5, 0.5, 2.5, 126.5 -> -2, 0, 0, 2, 126).
    v = np.array([[-1.5, -0.5], [0.5, 1.5], [2.5, 2.4999], [126.5, 3.0]])
    want = [[-1, 0], [1, 2], [3, 2], [127, 3]]
    out = landmark_pixels(v)
    assert isinstance(out, np.ndarray) and out.dtype == np.int64 and out.tolist() == want
    t = landmark_pixels(torch.from_numpy(v.astype(np.float32)))
    assert t.dtype == torch.int64 and t.tolist() == want
    ints = np.array([[3, 4]], np.int32)
    assert landmark_pixels(ints).dtype == np.int64 and landmark_pixels(ints).tolist() == [[3, 4]]


def test_mean_rois_rounds_floats_half_up_like_dlib():
    lm = S.face_landmarks()
    assert torch.equal(mean_rois(lm + 0.49), mean_rois(lm))
    assert torch.equal(mean_rois(lm - 0.5), mean_rois(lm))  # floor(x - 0.5 + 0.5) = x
    assert torch.equal(mean_rois(lm.astype(np.float32) + 0.5), mean_rois(lm + 1))


@pytest.mark.parametrize("bad, err, match", [
    (np.zeros((67, 2)), ValueError, "68, 2"),
    (np.zeros((2, 68, 3)), ValueError, "68, 2"),
    (np.full((68, 2), np.nan), ValueError, "finite"),
    (np.array([["a", "b"]] * 68), TypeError, "int or float"),
])
def test_mean_rois_errors(bad, err, match):
    with pytest.raises(err, match=match):
        mean_rois(bad)


def test_mean_rois_empty_box_names_pair():
    lm = np.stack([S.face_landmarks()] * 2)
    lm[1, 64, 0] = lm[1, 60, 0] - 30  # mouth right edge left of its left edge
    with pytest.raises(ValueError, match=r"landmarks\[1\].*mouth"):
        mean_rois(lm)


# ----------------------------------------------------------- optical_strain


def test_optical_strain_matches_pandas(cv_flows):
    flows = np.concatenate([cv_flows, smooth_flows(3, seed=1)])
    got = optical_strain(torch.from_numpy(flows))[:, 0].numpy()
    worst = 0.0
    for f, g in zip(flows, got):
        mag, ang = cv2.cartToPolar(f[0], f[1])
        ref = R.mean_strain(mag * np.cos(ang), mag * np.sin(ang))
        assert ref.dtype == np.float32  # MEAN's strain runs in float32
        worst = max(worst, float(np.abs(g - ref).max() / max(np.abs(ref).max(), 1e-30)))
    # Float32 rounding: torch evaluates the angle polynomial without FMA and
    # cos/sin with its own vector libm; measured up to 4e-6 of the map's max.
    assert worst <= 2e-5, worst


# --------------------------------------------------- mean_roi_features op


def check_against_reference(flows, boxes, label):
    got = mean_roi_features(torch.from_numpy(flows), boxes).numpy()
    ref = reference_features(flows, boxes)
    diff = np.abs(got - ref)
    print(f"{label}: max |diff| {diff.max():.3g}, mean |diff| {diff.mean():.3g} over {len(flows)} pairs")
    assert diff.max() <= OP_MAX_ABS and diff.mean() <= OP_MEAN_ABS, (diff.max(), diff.mean())


def test_op_matches_mean_preprocess_on_opencv_flows(cv_flows):
    lm = S.face_landmarks()
    got = mean_roi_features(torch.from_numpy(cv_flows), boxes_of(np.stack([lm] * len(cv_flows)))).numpy()
    diffs = []
    for f, g in zip(cv_flows, got):
        ref = R.mean_preprocess(None, None, lm, flow=f)  # MEAN's preProcess on the same flow
        diffs.append(np.abs(g.transpose(1, 2, 0) - ref))
    diffs = np.stack(diffs)
    print(f"opencv flows: max |diff| {diffs.max():.3g}, mean |diff| {diffs.mean():.3g}")
    assert diffs.max() <= OP_MAX_ABS and diffs.mean() <= OP_MEAN_ABS


def test_op_matches_reference_on_random_smooth_flows():
    rng = np.random.default_rng(5)
    flows = smooth_flows(12, seed=2, scale=4.0)
    lms = np.stack([S.face_landmarks() + rng.integers(-6, 7, (68, 2)) for _ in range(12)])
    check_against_reference(flows, boxes_of(lms), "random smooth flows")


def test_resize_matches_cv2_on_many_box_sizes():
    # Boxes of heights and widths 1 .. 128: smaller than, equal to and larger
    # than 21 rows / 42 columns, touching 0 and 128, at odd offsets.
    sizes = [1, 2, 3, 7, 20, 21, 22, 40, 41, 42, 43, 63, 84, 85, 127, 128]
    boxes = []
    for k, h in enumerate(sizes):
        for j, w in enumerate(sizes):
            top = 0 if k % 3 == 0 else (128 - h if k % 3 == 1 else (128 - h) // 3)
            left = 128 - w if j % 2 else (128 - w) * j // 31
            boxes.append([[top, top + h, left, left + w], [(128 - h) // 2, (128 - h) // 2 + h, 0, w]])
    boxes = torch.tensor(boxes)
    flows = np.broadcast_to(smooth_flows(1, seed=7), (len(boxes), 2, 128, 128)).copy()
    check_against_reference(flows, boxes, f"{len(boxes)} box sizes")


def test_constant_flow_gives_zero_channels_like_opencv():
    lm = S.face_landmarks()
    for value in (0.0, 1.5):
        flow = np.full((1, 2, 128, 128), value, np.float32)
        flow[:, 1] *= -0.5
        got = mean_roi_features(torch.from_numpy(flow), boxes_of(lm)).numpy()[0]
        ref = R.mean_preprocess(None, None, lm, flow=flow[0])
        assert np.all(got == 0) and np.all(ref == 0)
    # Only v constant: flow along +x has angle exactly 0, so v = rho sin(0) = 0
    # and its channel is all 0. (Along y, cos of the float angle pi / 2 is
    # about -4e-8, not 0: MEAN's u then varies and normalises to [0, 1].)
    flow = np.zeros((1, 2, 128, 128), np.float32)
    flow[0, 0] = np.abs(smooth_flows(1, seed=3)[0, 0]) + 0.1
    got = mean_roi_features(torch.from_numpy(flow), boxes_of(lm)).numpy()[0]
    ref = R.mean_preprocess(None, None, lm, flow=flow[0]).transpose(2, 0, 1)
    assert np.all(got[1] == 0) and np.all(ref[1] == 0) and got[0].max() > 0.1 and got[2].max() > 0.1
    assert np.abs(got - ref).max() <= OP_MAX_ABS


@pytest.mark.parametrize("n", [0, 1, 17])
def test_batch_sizes(n):
    flows = smooth_flows(n, seed=n) if n else np.zeros((0, 2, 128, 128), np.float32)
    boxes = boxes_of(np.stack([S.face_landmarks()] * n)) if n else torch.zeros((0, 2, 4), dtype=torch.int64)
    out = mean_roi_features(torch.from_numpy(flows), boxes)
    assert out.shape == (n, 3, 42, 42) and out.dtype == torch.float32
    if n:
        check_against_reference(flows, boxes, f"batch {n}")


def test_other_map_sizes():
    flows = smooth_flows(2, seed=9, size=64)
    boxes = torch.tensor([[[0, 64, 0, 64], [10, 30, 5, 60]], [[3, 4, 0, 1], [63, 64, 63, 64]]])
    check_against_reference(flows, boxes, "64 x 64 maps")


def test_bitwise_deterministic_across_runs_and_threads():
    flows = torch.from_numpy(smooth_flows(9, seed=11))
    boxes = boxes_of(np.stack([S.face_landmarks()] * 9))
    before = torch.get_num_threads()
    try:
        torch.set_num_threads(2)
        a, b = mean_roi_features(flows, boxes), mean_roi_features(flows, boxes)
        torch.set_num_threads(1)
        c = mean_roi_features(flows, boxes)
    finally:
        torch.set_num_threads(before)
    assert torch.equal(a, b) and torch.equal(a, c)


def test_strided_and_expanded_flows():
    base = torch.from_numpy(smooth_flows(4, seed=12))
    boxes = boxes_of(np.stack([S.face_landmarks()] * 4))
    ref = mean_roi_features(base.contiguous(), boxes)
    channels_last = base.contiguous(memory_format=torch.channels_last)
    transposed = base.transpose(2, 3).contiguous().transpose(2, 3)
    padded = torch.zeros(4, 3, 130, 260)
    padded[:, 1:, 1:129, 2:258:2] = base
    strided = padded[:, 1:, 1:129, 2:258:2]
    assert not strided.is_contiguous()
    for flow in (channels_last, transposed, strided):
        assert torch.equal(mean_roi_features(flow, boxes), ref)
    expanded = base[:1].expand(4, -1, -1, -1)
    assert torch.equal(mean_roi_features(expanded, boxes), ref[:1].expand(4, -1, -1, -1))
    shared = boxes[:1].expand(4, -1, -1)
    assert torch.equal(mean_roi_features(base, shared), mean_roi_features(base, shared.contiguous()))


GOOD_FLOW = torch.zeros(2, 2, 128, 128)
GOOD_BOXES = torch.tensor([[[10, 50, 10, 100], [70, 100, 30, 90]]] * 2)


@pytest.mark.parametrize("flow, boxes, err, match", [
    (GOOD_FLOW[0], GOOD_BOXES, ValueError, "flow must have shape"),
    (torch.zeros(2, 3, 128, 128), GOOD_BOXES, ValueError, "flow must have shape"),
    (GOOD_FLOW.double(), GOOD_BOXES, TypeError, "flow must be float32"),
    (GOOD_FLOW, GOOD_BOXES.int(), TypeError, "boxes must be int64"),
    (GOOD_FLOW, GOOD_BOXES[:1], ValueError, "boxes must have shape"),
    (GOOD_FLOW, GOOD_BOXES[..., :3], ValueError, "boxes must have shape"),
    (GOOD_FLOW, GOOD_BOXES.to("meta"), ValueError, "boxes must be on flow's device"),
    (GOOD_FLOW.numpy(), GOOD_BOXES, TypeError, "flow must be a torch.Tensor"),
])
def test_python_errors(flow, boxes, err, match):
    with pytest.raises(err, match=match):
        mean_roi_features(flow, boxes)


@pytest.mark.parametrize("box, field", [
    ([10, 129, 10, 100], "bottom"), ([-1, 50, 10, 100], "top"), ([10, 50, 30, 30], "left"), ([60, 50, 0, 9], "top"),
    ([10, 50, 100, 200], "right"),
])
def test_box_out_of_range_errors(box, field):
    boxes = GOOD_BOXES.clone()
    boxes[1, 1] = torch.tensor(box)
    with pytest.raises(ValueError, match=r"boxes\[1, 1\].*0 <= top < bottom <= 128"):
        mean_roi_features(GOOD_FLOW, boxes)
    with pytest.raises(RuntimeError, match=r"boxes\[1, 1\] \(mouth\).*0 <= top < bottom <= 128"):
        raw_op(GOOD_FLOW, boxes)


@pytest.mark.parametrize("flow, boxes, match", [
    (GOOD_FLOW[0], GOOD_BOXES, "flow must have shape"),
    (torch.zeros(2, 2, 0, 128), GOOD_BOXES, "H, W >= 1"),
    (GOOD_FLOW.double(), GOOD_BOXES, "flow must be float32"),
    (GOOD_FLOW, GOOD_BOXES.float(), "boxes must be int64"),
    (GOOD_FLOW, GOOD_BOXES[:1], "boxes must have shape"),
])
def test_raw_op_errors(flow, boxes, match):
    with pytest.raises(RuntimeError, match=match):
        raw_op(flow, boxes)


def test_opcheck():
    flows = torch.from_numpy(smooth_flows(3, seed=13))
    boxes = boxes_of(np.stack([S.face_landmarks()] * 3))
    torch.library.opcheck(raw_op, (flows, boxes))
    torch.library.opcheck(raw_op, (flows[:0], boxes[:0]))


class Features(torch.nn.Module):
    def forward(self, flow, boxes):
        return mean_roi_features(flow, boxes) * 2.0


def test_torch_compile_fullgraph_and_export():
    flows = torch.from_numpy(smooth_flows(2, seed=14))
    boxes = boxes_of(np.stack([S.face_landmarks()] * 2))
    eager = Features()(flows, boxes)
    compiled = torch.compile(Features(), fullgraph=True, backend="aot_eager")
    assert torch.equal(compiled(flows, boxes), eager)
    exported = torch.export.export(Features(), (flows, boxes))
    assert "meanspot_fused.mean_roi_features" in str(exported.graph)
    assert torch.equal(exported.module()(flows, boxes), eager)


# ------------------------------------------ mean_features / video_features
# Plumbing (landmarks, batching, devices) with OpenCV's flow standing in for
# the TV-L1 op; tests/features/test_features_e2e.py runs the real one.


@pytest.fixture
def opencv_as_tvl1(monkeypatch):
    def tvl1_flow(prev, next, **params):
        return torch.from_numpy(R.opencv_flow(prev.cpu().numpy(), next.cpu().numpy(), **params)).to(prev.device)

    module = types.ModuleType("meanspot_fused.features.flow")
    module.tvl1_flow = tvl1_flow
    monkeypatch.setitem(sys.modules, "meanspot_fused.features.flow", module)


def test_video_features_plumbing(opencv_as_tvl1):
    from meanspot_fused.features import mean_features, video_features

    frames, _ = S.face_video(9, events=((2, "brow", 5, 2.0),), seed=4)
    lm = S.face_landmarks()
    got = video_features(frames, 3, lm, batch_size=4)
    assert got.shape == (6, 3, 42, 42)
    for i in range(6):
        ref = R.mean_preprocess(frames[i], frames[i + 3], lm)
        assert np.abs(got[i].numpy().transpose(1, 2, 0) - ref).max() <= OP_MAX_ABS
    pairs = mean_features(torch.from_numpy(frames[:6]), frames[3:], np.stack([lm] * 6))
    assert torch.equal(pairs, got)
    assert torch.equal(video_features(frames, 3, np.stack([lm] * 6), batch_size=1), got)


@pytest.mark.parametrize("k, match", [(0, r"k must be in \[1, T - 1\]"), (9, r"k must be in"),
                                      (2.0, "k must be an int")])
def test_video_features_bad_k(opencv_as_tvl1, k, match):
    from meanspot_fused.features import video_features

    frames = np.zeros((9, 128, 128), np.uint8)
    with pytest.raises((ValueError, TypeError), match=match):
        video_features(frames, k, S.face_landmarks())


def test_mean_features_bad_frames(opencv_as_tvl1):
    from meanspot_fused.features import mean_features

    lm = S.face_landmarks()
    with pytest.raises(TypeError, match="prev must be uint8 or float32"):
        mean_features(np.zeros((128, 128), np.int32), np.zeros((128, 128), np.int32), lm)
    with pytest.raises(ValueError, match="same shape"):
        mean_features(np.zeros((2, 128, 128), np.uint8), np.zeros((3, 128, 128), np.uint8), lm)
    with pytest.raises(ValueError, match="one per pair"):
        mean_features(np.zeros((2, 128, 128), np.uint8), np.zeros((2, 128, 128), np.uint8), np.stack([lm] * 3))


# ----------------------------------------------------------------- CUDA


@cuda
def test_cuda_matches_cpu(cv_flows):
    flows = torch.from_numpy(np.concatenate([cv_flows, smooth_flows(20, seed=15)]))
    rng = np.random.default_rng(1)
    boxes = boxes_of(np.stack([S.face_landmarks() + rng.integers(-8, 9, (68, 2)) for _ in range(len(flows))]))
    cpu = mean_roi_features(flows, boxes)
    gpu = mean_roi_features(flows.cuda(), boxes.cuda())
    # cosf/sinf of CUDA and of the host libm differ by an ulp or two.
    assert (gpu.cpu() - cpu).abs().max() <= 2e-6
    strided = flows.cuda().transpose(2, 3).contiguous().transpose(2, 3)
    assert torch.equal(mean_roi_features(strided, boxes.cuda()), gpu)
    assert torch.equal(mean_roi_features(flows.cuda(), boxes.cuda()), gpu)
    assert mean_roi_features(flows[:0].cuda(), boxes[:0].cuda()).shape == (0, 3, 42, 42)


@cuda
def test_cuda_bad_box_raises_as_on_cpu_and_only_graph_capture_writes_nan():
    boxes = GOOD_BOXES.clone()
    boxes[1, 0, 1] = 500
    message = r"boxes\[1, 0\] \(eyes\).*0 <= top < bottom <= 128"
    with pytest.raises(RuntimeError, match=message):
        raw_op(GOOD_FLOW, boxes)  # the CPU op
    for where in (boxes, boxes.cuda()):  # CPU boxes (no synchronisation) and device boxes (one read back)
        with pytest.raises(RuntimeError, match=message):
            raw_op(GOOD_FLOW.cuda(), where)
    good = raw_op(GOOD_FLOW.cuda(), GOOD_BOXES)  # CPU boxes with a CUDA flow: the same as device boxes
    assert torch.equal(good, raw_op(GOOD_FLOW.cuda(), GOOD_BOXES.cuda()))
    flow, device_boxes = GOOD_FLOW.cuda(), boxes.cuda()
    graph = torch.cuda.CUDAGraph()
    raw_op(flow, GOOD_BOXES.cuda())  # warm-up outside the capture
    with torch.cuda.graph(graph):
        out = raw_op(flow, device_boxes)
    graph.replay()
    assert not torch.isnan(out[0]).any() and torch.isnan(out[1]).all()
    if torch.cuda.device_count() > 1:
        with pytest.raises(RuntimeError, match="boxes must be on flow's device"):
            raw_op(GOOD_FLOW.cuda(0), GOOD_BOXES.cuda(1))
    torch.library.opcheck(raw_op, (GOOD_FLOW.cuda(), GOOD_BOXES.cuda()))
    torch.library.opcheck(raw_op, (GOOD_FLOW.cuda(), GOOD_BOXES))
