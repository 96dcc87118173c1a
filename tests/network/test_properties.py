"""Property-based tests (hypothesis) of every op and of ``fuse()`` against the float64 references.

Each example draws a batch size (mostly 0-4, sometimes 5-40, rarely 41-300), a
dtype, a memory layout per input, the values (from a drawn torch seed) and NaN /
+-inf injected at drawn positions of drawn samples. The result must match the
float64 reference of ``tests/helpers.py`` (ops) or ``MeanSpot`` (networks):
exactly the same NaN / +inf / -inf positions, and the finite values within the
tolerances stated at each assertion. A separate property checks isolation: the
poison of sample i leaves every other sample's outputs bitwise unchanged.

Hypothesis prints the falsifying example (with its torch seed) and a
``@reproduce_failure`` blob on failure. The whole file runs in ~20-30 s on 2
cores; raise ``MEANSPOT_PROPERTY_SCALE`` (a multiplier of max_examples) for
a longer hunt.
"""
from __future__ import annotations

import copy
import functools
import os
import zlib

import pytest
import torch
from hypothesis import HealthCheck, event, example, given, settings
from hypothesis import strategies as st

import meanspot_fused as mf
from meanspot_fused import ops
from meanspot_fused.network.fuse import MODES
from meanspot_fused.network.reference import PLACEMENTS

from helpers import HEAD_SETS, as_tuple, cbam_ref, channel_pool_ref, conv_block_ref, random_model, spatial_pool_ref

# Every CPU instruction-set level this machine runs (conftest.py).
pytestmark = pytest.mark.usefixtures("cpu_level")

SCALE = float(os.environ.get("MEANSPOT_PROPERTY_SCALE", "1"))
NAN, INF = float("nan"), float("inf")
DTYPES = (torch.float32, torch.float64)
LAYOUTS = ("contiguous", "strided", "batch-strided", "permuted", "transposed", "channels_last", "offset",
           "expanded")


def _settings(n: int):
    return settings(max_examples=max(1, int(n * SCALE)), deadline=None, print_blob=True,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])


# ---------------------------------------------------------------------------------------------
# Strategies
# ---------------------------------------------------------------------------------------------

@st.composite
def batch_sizes(draw, lo: int = 0):
    """Mostly tiny batches, some medium, a few up to 300 (the references cost ~8 ms/sample)."""
    tier = draw(st.sampled_from("sssssssmmmmL"))  # small 7/12, medium 4/12, large 1/12
    if tier == "s":
        n = draw(st.integers(lo, max(lo, 4)))
    elif tier == "m":
        n = draw(st.integers(max(lo, 5), 40))
    else:
        n = draw(st.integers(41, 300))
    event(f"batch {'0-4' if n <= 4 else '5-40' if n <= 40 else '41-300'}")  # --hypothesis-show-statistics
    return n


#: (sample selector, flat position selector, value, input index); taken modulo the sizes.
poison_items = st.tuples(st.integers(0, 2**31), st.integers(0, 2**31), st.sampled_from((NAN, INF, -INF)),
                         st.integers(0, 2))
poisons = st.lists(poison_items, max_size=4)
seeds = st.integers(0, 2**32 - 1)
dtypes = st.sampled_from(DTYPES)
layouts = st.sampled_from(LAYOUTS)


# ---------------------------------------------------------------------------------------------
# Building inputs
# ---------------------------------------------------------------------------------------------

def _uniform(gen, shape, lo, hi):
    return torch.rand(shape, generator=gen, dtype=torch.float64) * (hi - lo) + lo


def poison(xs, spec):
    """Write each (sample, position, value, input) of ``spec`` into the float64 tensors ``xs`` (in place).

    Returns the set of poisoned samples.
    """
    hit = set()
    n = xs[0].shape[0]
    if n == 0:
        return hit
    for s, p, value, which in spec:
        flat = xs[which % len(xs)].view(n, -1)
        flat[s % n, p % flat.shape[1]] = value
        hit.add(s % n)
    return hit


def make_layout(x: torch.Tensor, layout: str) -> torch.Tensor:
    """``x`` (contiguous) in another memory layout; gaps that a kernel must not read hold NaN.

    Same values as ``x`` except ``expanded``: sample 0 broadcast along the batch (stride 0).
    """
    n = x.shape[0]
    if layout == "contiguous":
        return x.contiguous()
    if layout == "strided":  # every other column of a tensor twice as wide
        wide = torch.full(x.shape[:3] + (2 * x.shape[3],), NAN, dtype=x.dtype)
        wide[..., ::2] = x
        return wide[..., ::2]
    if layout == "batch-strided":  # every other sample of a batch twice as large
        wide = torch.full((2 * n,) + x.shape[1:], NAN, dtype=x.dtype)
        wide[::2] = x
        return wide[::2]
    if layout == "permuted":  # created as (H, W, N, C), permuted back to NCHW
        return x.permute(2, 3, 0, 1).contiguous().permute(2, 3, 0, 1)
    if layout == "transposed":  # H and W strides swapped
        return x.transpose(2, 3).contiguous().transpose(2, 3)
    if layout == "channels_last":
        return x.contiguous(memory_format=torch.channels_last)
    if layout == "offset":  # storage offset of 7 elements: not vector-aligned
        base = torch.full((x.numel() + 7,), NAN, dtype=x.dtype)
        out = base[7:].view(x.shape)
        out.copy_(x)
        return out
    if layout == "expanded":  # stride 0 along the batch
        src = x[:1] if n > 0 else torch.zeros((1,) + x.shape[1:], dtype=x.dtype)
        return src.expand(x.shape)
    raise AssertionError(layout)


def inputs_for(xs64, dtype, layouts_):
    """Round the float64 values to ``dtype``, then lay each out as asked."""
    return [make_layout(x.to(dtype), lay) for x, lay in zip(xs64, layouts_)]


# ---------------------------------------------------------------------------------------------
# Assertions
# ---------------------------------------------------------------------------------------------

def assert_matches(got: torch.Tensor, expected: torch.Tensor, tol: float, what: str) -> None:
    """Same shape, exactly the reference's NaN / +inf / -inf positions, finite values within ``tol``."""
    assert got.shape == expected.shape, f"{what}: shape {tuple(got.shape)} != {tuple(expected.shape)}"
    got = got.double()
    for name, test in (("NaN", torch.isnan), ("+inf", torch.isposinf), ("-inf", torch.isneginf)):
        g, e = test(got), test(expected)
        if not torch.equal(g, e):
            where = (g != e).nonzero()[:5].tolist()
            raise AssertionError(f"{what}: {name} positions differ from the reference (first at {where}: "
                                 f"got {[got[tuple(i)].item() for i in where]}, "
                                 f"reference {[expected[tuple(i)].item() for i in where]})")
    torch.testing.assert_close(got, expected, atol=tol, rtol=tol, equal_nan=True, msg=lambda m: f"{what}: {m}")


def bits(t: torch.Tensor) -> torch.Tensor:
    return t.contiguous().view(torch.int64 if t.dtype == torch.float64 else torch.int32)


def assert_rows_bitwise_equal(a: torch.Tensor, b: torch.Tensor, rows, what: str) -> None:
    rows = sorted(rows)
    if not rows:
        return
    idx = torch.tensor(rows, dtype=torch.long)
    ba, bb = bits(a).index_select(0, idx), bits(b).index_select(0, idx)
    if not torch.equal(ba, bb):
        bad = sorted({rows[i] for i in (ba != bb).reshape(len(rows), -1).any(1).nonzero().flatten().tolist()})
        raise AssertionError(f"{what}: samples {bad[:10]} changed although only other samples were poisoned")


#: Tolerances, float64 result vs float64 reference (same math, another summation order) and
#: float32 result vs the float64 reference on the same float32-rounded inputs and weights.
OPS_TOL = {torch.float32: 2e-5, torch.float64: 1e-10}   # one op: <= 14 * 25 products per output
FUSE_TOL = {torch.float32: 1e-4, torch.float64: 1e-10}  # ~10 layers of float32 rounding


# ---------------------------------------------------------------------------------------------
# Op cases
# ---------------------------------------------------------------------------------------------

# (cin, cout, hw, k, pool, affine) of the network, then random small ones.
NETWORK_CONVS = [(1, 3, 42, 5, 3, True), (1, 8, 42, 5, 1, True), (1, 3, 42, 5, 1, True),
                 (14, 8, 14, 5, 2, False), (14, 8, 14, 5, 1, False)]
# (c, hw, hidden, k, pool, bn) of the network.
NETWORK_CBAMS = [(3, 42, 1, 7, 3, False), (8, 42, 1, 7, 3, False), (8, 42, 1, 7, 1, False),
                 (8, 14, 1, 7, 2, False), (8, 14, 4, 5, 1, True)]
NETWORK_MAPS = [(3, 42, 42), (8, 42, 42), (8, 14, 14), (14, 14, 14)]


@st.composite
def conv_cases(draw):
    if draw(st.booleans()):
        return draw(st.sampled_from(NETWORK_CONVS))
    pool = draw(st.integers(1, 4))
    hw = pool * draw(st.integers(1, 4))
    k = draw(st.sampled_from((1, 3, 5, 7)))
    cin = draw(st.integers(1, min(8, 350 // (k * k))))  # <= 350 products per output, as in the network
    return cin, draw(st.integers(1, 9)), hw, k, pool, draw(st.booleans())


@st.composite
def cbam_cases(draw):
    if draw(st.booleans()):
        return draw(st.sampled_from(NETWORK_CBAMS))
    pool = draw(st.integers(1, 4))
    c = draw(st.integers(1, 16))
    return c, pool * draw(st.integers(1, 4)), draw(st.integers(1, 4)), draw(st.sampled_from((1, 3, 5, 7))), pool, \
        draw(st.booleans())


@st.composite
def map_shapes(draw):
    if draw(st.booleans()):
        return draw(st.sampled_from(NETWORK_MAPS))
    return draw(st.integers(1, 16)), draw(st.integers(1, 20)), draw(st.integers(1, 20))


def _conv_args(case, n, seed):
    cin, cout, hw, k, pool, affine = case
    gen = torch.Generator().manual_seed(seed)
    x = _uniform(gen, (n, cin, hw, hw), -1, 1)
    w, b = _uniform(gen, (cout, cin, k, k), -1, 1), _uniform(gen, (cout,), -1, 1)
    scale, shift = (_uniform(gen, (cout,), -2, 2), _uniform(gen, (cout,), -1, 1)) if affine else (None, None)
    return x, (w, b, scale, shift), pool


def _cbam_args(case, n, seed):
    c, hw, hidden, k, pool, bn = case
    gen = torch.Generator().manual_seed(seed)
    x = _uniform(gen, (n, c, hw, hw), -2, 2)
    params = (_uniform(gen, (hidden, c), -1, 1), _uniform(gen, (hidden,), -1, 1), _uniform(gen, (c, hidden), -1, 1),
              _uniform(gen, (c,), -1, 1), _uniform(gen, (1, 2, k, k), -1, 1))
    scale, shift = (float(_uniform(gen, (), -2, 2)), float(_uniform(gen, (), -1, 1))) if bn else (1.0, 0.0)
    return x, params, scale, shift, pool


def _cast(params, dtype):
    return tuple(None if p is None else p.to(dtype) for p in params)


def _double(params):
    return tuple(None if p is None else p.double() for p in params)


# ---------------------------------------------------------------------------------------------
# Ops against their references
# ---------------------------------------------------------------------------------------------

@_settings(80)
@given(case=conv_cases(), n=batch_sizes(), dtype=dtypes, layout=layouts, seed=seeds, spec=poisons)
def test_conv_block_property(case, n, dtype, layout, seed, spec):
    x, params, pool = _conv_args(case, n, seed)
    poison([x], spec)
    (xl,) = inputs_for([x], dtype, [layout])
    p = _cast(params, dtype)
    got = ops.conv_block(xl, *p, pool)
    assert got.dtype == dtype
    expected = conv_block_ref(xl.double(), *_double(p), pool)  # reference on the rounded values
    assert_matches(got, expected, OPS_TOL[dtype], f"conv_block {case} {layout} n={n}")


@_settings(80)
@given(shape=map_shapes(), n=batch_sizes(), dtype=dtypes, layout=layouts, seed=seeds, spec=poisons)
def test_channel_and_spatial_pool_property(shape, n, dtype, layout, seed, spec):
    x = _uniform(torch.Generator().manual_seed(seed), (n, *shape), -3, 3)
    poison([x], spec)
    (xl,) = inputs_for([x], dtype, [layout])
    xd = xl.double()
    mean, mx = ops.channel_pool(xl)
    emean, emx = channel_pool_ref(xd)
    assert_matches(mean, emean, OPS_TOL[dtype], f"channel_pool mean {shape} {layout} n={n}")
    assert_matches(mx, emx, 0.0, f"channel_pool max {shape} {layout} n={n}")  # a max is exact
    got = ops.spatial_pool(xl)
    expected = spatial_pool_ref(xd)
    assert_matches(got[:, :1], expected[:, :1], OPS_TOL[dtype], f"spatial_pool mean {shape} {layout} n={n}")
    assert_matches(got[:, 1:], expected[:, 1:], 0.0, f"spatial_pool max {shape} {layout} n={n}")  # exact


@_settings(80)
@given(case=cbam_cases(), n=batch_sizes(), dtype=dtypes, layout=layouts, seed=seeds, spec=poisons)
def test_cbam_property(case, n, dtype, layout, seed, spec):
    x, params, scale, shift, pool = _cbam_args(case, n, seed)
    poison([x], spec)
    (xl,) = inputs_for([x], dtype, [layout])
    p = _cast(params, dtype)
    got = ops.cbam(xl, *p, scale, shift, pool)
    expected = cbam_ref(xl.double(), *_double(p), scale, shift, pool)
    assert_matches(got, expected, OPS_TOL[dtype], f"cbam {case} scale={scale} shift={shift} {layout} n={n}")


# ---------------------------------------------------------------------------------------------
# fuse() (both modes; network mode is meanspot_net) against MeanSpot in float64
# ---------------------------------------------------------------------------------------------

@st.composite
def model_configs(draw):
    return (draw(st.sampled_from(PLACEMENTS)), draw(st.sampled_from(HEAD_SETS)), draw(st.sampled_from((3, 1, 5))),
            draw(st.sampled_from((8, 2, 1))), draw(st.sampled_from((7, 5, 3))), draw(st.booleans()))


@functools.lru_cache(maxsize=64)
def _fused(config, dtype, mode):
    """(reference in float64 with the ``dtype``-rounded weights, fused ``dtype`` module)."""
    cbam, heads, classes, ratio, kernel, spatial_bn = config
    seed = zlib.crc32(repr(config).encode())  # stable across processes (unlike hash()): reproducible failures
    model = random_model(cbam, heads, dtype=torch.float64, seed=seed, recog_classes=classes, cbam_ratio=ratio,
                         spatial_kernel=kernel, cbam_spatial_bn=spatial_bn).to(dtype)
    return copy.deepcopy(model).double(), mf.fuse(model, mode=mode)


def _net_inputs(n, seed):
    gen = torch.Generator().manual_seed(seed)
    return [_uniform(gen, (n, 1, 42, 42), 0, 1) for _ in range(3)]  # maps in [0, 1) as tests/helpers


@_settings(60)
@given(config=model_configs(), mode=st.sampled_from(MODES), n=batch_sizes(), dtype=dtypes,
       lays=st.tuples(layouts, layouts, layouts), seed=seeds, spec=poisons)
# Always run a few hundred samples at least once per mode and dtype (the draw makes them rare).
@example(config=("all", ("spot", "recog"), 3, 8, 7, False), mode="network", n=300, dtype=torch.float32,
         lays=("strided", "channels_last", "offset"), seed=1, spec=[(7, 100, NAN, 0), (250, 1000, NAN, 2)])
@example(config=("branches", ("spot",), 3, 2, 5, True), mode="ops", n=257, dtype=torch.float64,
         lays=("permuted", "contiguous", "batch-strided"), seed=2, spec=[(3, 5, NAN, 1)])
def test_fuse_property(config, mode, n, dtype, lays, seed, spec):
    ref, fused = _fused(config, dtype, mode)
    xs = _net_inputs(n, seed)
    poison(xs, spec)
    inputs = inputs_for(xs, dtype, lays)
    with torch.inference_mode():
        got = as_tuple(fused(*inputs))
        expected = as_tuple(ref(*(x.double() for x in inputs)))
    assert len(got) == len(expected)
    for head, g, e in zip(ref.head_names, got, expected):
        assert g.dtype == dtype
        assert_matches(g, e, FUSE_TOL[dtype], f"fuse(mode={mode!r}) {config} head {head} {lays} n={n}")
    if mode == "network":  # the op itself, called directly, is the module's output bit for bit
        with torch.inference_mode():
            direct = ops.meanspot_net(*inputs, fused.packed, fused.net_config)
        assert torch.equal(bits(direct), bits(torch.cat(got, dim=1)))


# ---------------------------------------------------------------------------------------------
# Isolation: poisoning samples S changes no output of any sample outside S, bit for bit
# ---------------------------------------------------------------------------------------------

ISOLATION_TARGETS = ("conv_block", "channel_pool", "spatial_pool", "cbam") + tuple(f"fuse-{m}" for m in MODES)


def _run_target(target, inputs, extra):
    """Outputs (each with the batch first) of ``target`` on ``inputs``."""
    if target == "conv_block":
        params, pool = extra
        return [ops.conv_block(inputs[0], *params, pool)]
    if target == "channel_pool":
        return list(ops.channel_pool(inputs[0]))
    if target == "spatial_pool":
        return [ops.spatial_pool(inputs[0])]
    if target == "cbam":
        params, scale, shift, pool = extra
        return [ops.cbam(inputs[0], *params, scale, shift, pool)]
    with torch.inference_mode():
        return list(as_tuple(extra(*inputs)))


@_settings(80)
@example(target="fuse-network", config=("all", ("spot", "recog"), 3, 8, 7, False), n=300, dtype=torch.float32,
         layout="contiguous", seed=3, spec=[(0, 0, NAN, 0), (299, 1763, INF, 1), (150, 900, -INF, 2)])
@example(target="fuse-ops", config=("merged", ("recog",), 5, 8, 7, True), n=300, dtype=torch.float64,
         layout="offset", seed=4, spec=[(1, 10, INF, 2), (298, 77, NAN, 0)])
@given(target=st.sampled_from(ISOLATION_TARGETS), config=model_configs(), n=batch_sizes(lo=2), dtype=dtypes,
       layout=st.sampled_from([lay for lay in LAYOUTS if lay != "expanded"]), seed=seeds,
       spec=st.lists(poison_items, min_size=1, max_size=4))
def test_poison_stays_in_its_sample(target, config, n, dtype, layout, seed, spec):
    if target == "conv_block":
        x, params, pool = _conv_args(NETWORK_CONVS[seed % len(NETWORK_CONVS)], n, seed)
        xs, extra = [x], (_cast(params, dtype), pool)
    elif target == "cbam":
        x, params, scale, shift, pool = _cbam_args(NETWORK_CBAMS[seed % len(NETWORK_CBAMS)], n, seed)
        xs, extra = [x], (_cast(params, dtype), scale, shift, pool)
    elif target in ("channel_pool", "spatial_pool"):
        xs, extra = [_uniform(torch.Generator().manual_seed(seed), (n, 8, 14, 14), -3, 3)], None
    else:
        xs, extra = _net_inputs(n, seed), _fused(config, dtype, target.split("-")[1])[1]
    clean = _run_target(target, inputs_for(xs, dtype, [layout] * len(xs)), extra)
    poisoned_xs = [x.clone() for x in xs]
    hit = poison(poisoned_xs, spec)
    poisoned = _run_target(target, inputs_for(poisoned_xs, dtype, [layout] * len(xs)), extra)
    others = set(range(n)) - hit
    for i, (c, p) in enumerate(zip(clean, poisoned)):
        assert torch.isfinite(c).all(), f"{target}: clean inputs gave non-finite outputs"
        assert_rows_bitwise_equal(c, p, others, f"{target} output {i} {layout} n={n} poisoned {sorted(hit)}")


def test_float32_spatial_gate_of_minus_inf_is_zero():
    """sigmoid(-inf) must be exactly 0, as in the reference, so that inf * gate is NaN, not inf.

    Regression test of a deviation found by test_cbam_property: the vectorized float32
    exp (csrc/cpu/sample_kernels.h, exp_vec) saturates at exp(88.38), so the vector lanes
    of the spatial gate give sigmoid(-inf) ~ 4e-39 and an infinite activation passes the
    gate as +-inf (or, after the max pool, vanishes) where the reference has NaN. The
    scalar tail and float64 are exact. 8 x 8 = 64 pixels fill the vector path.
    """
    x = torch.full((1, 1, 8, 8), INF)
    one, zero = torch.ones(1, 1), torch.zeros(1)
    sw = torch.full((1, 2, 1, 1), -1.0)  # spatial logit = -(inf + inf) = -inf everywhere
    for dtype in DTYPES:
        p = _cast((one, zero, one, zero, sw), dtype)
        got = ops.cbam(x.to(dtype), *p, 1.0, 0.0, 1)
        expected = cbam_ref(x.double(), *_double(p))
        assert torch.isnan(expected).all()
        assert_matches(got, expected, OPS_TOL[dtype], f"cbam of +inf through a -inf spatial logit, {dtype}")


def test_layouts_are_what_they_claim():
    """The layout builder itself: same values, the intended strides."""
    x = torch.rand(3, 2, 4, 4, dtype=torch.float64)
    for lay in LAYOUTS:
        y = make_layout(x, lay)
        assert y.shape == x.shape, lay
        if lay == "expanded":
            assert y.stride(0) == 0 and torch.equal(y[2], x[0])
        else:
            assert torch.equal(y, x), lay
            assert lay == "contiguous" or not y.is_contiguous() or lay == "offset", lay
    assert make_layout(x, "offset").storage_offset() == 7


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(pytest.main([__file__, "-q"]))
