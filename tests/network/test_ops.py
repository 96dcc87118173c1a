"""Each fused op against its float64 reference (tests/helpers.py), on every device (conftest.py ``device``).

On the CPU at every instruction-set level this machine runs (conftest.py
``cpu_level``); on CUDA when a GPU is present, the same definitions (the
CUDA-only cases, low precision, streams, graphs, shared-memory limits, are in
tests/network/test_cuda.py).
"""
import pytest
import torch

from meanspot_fused import ops

from helpers import (CBAM_SHAPES, CONV_SHAPES, POOL_SHAPES, cbam_ref, channel_pool_ref, conv_block_ref, layouts,
                     spatial_pool_ref)

pytestmark = pytest.mark.usefixtures("cpu_level")

# float64 kernels must match the float64 reference to rounding; float32 kernels
# accumulate in float32 (up to 14 * 25 terms per conv output).
TOL = {torch.float64: dict(atol=1e-12, rtol=1e-12), torch.float32: dict(atol=2e-5, rtol=2e-5)}
DTYPES = [torch.float32, torch.float64]
BATCHES = [0, 1, 2, 17]


def _rand(*shape, lo=-1.0, hi=1.0):
    return torch.rand(*shape, dtype=torch.float64) * (hi - lo) + lo


def _on(device, dtype):
    """Cast a parameter (or None) to dtype on device."""
    return lambda t: None if t is None else t.to(device=device, dtype=dtype)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("n", BATCHES)
@pytest.mark.parametrize("cin,cout,hw,k,pool,affine", CONV_SHAPES)
def test_conv_block(device, dtype, n, cin, cout, hw, k, pool, affine):
    x = _rand(n, cin, hw, hw)
    w, b = _rand(cout, cin, k, k), _rand(cout)
    scale, shift = (_rand(cout, lo=-2, hi=2), _rand(cout)) if affine else (None, None)
    expected = conv_block_ref(x, w, b, scale, shift, pool)
    cast = _on(device, dtype)
    for name, xl in layouts(x.to(dtype), device):
        got = ops.conv_block(xl, cast(w), cast(b), cast(scale), cast(shift), pool)
        assert got.device == xl.device and got.dtype == dtype and got.shape == expected.shape, name
        exp = expected if name != "expanded" else conv_block_ref(xl.double().cpu(), w, b, scale, shift, pool)
        torch.testing.assert_close(got.cpu().double(), exp, **TOL[dtype], msg=name)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("n", BATCHES)
@pytest.mark.parametrize("shape", POOL_SHAPES, ids=str)
def test_channel_and_spatial_pool(device, dtype, n, shape):
    x = _rand(n, *shape, lo=-3, hi=3)
    for name, xl in layouts(x.to(dtype), device):
        xd = xl.double().cpu()
        mean, mx = ops.channel_pool(xl)
        emean, emx = channel_pool_ref(xd)
        assert mean.device == xl.device and mean.dtype == dtype, name
        torch.testing.assert_close(mean.cpu().double(), emean, **TOL[dtype], msg=name)
        torch.testing.assert_close(mx.cpu().double(), emx, atol=0, rtol=0, msg=name)  # max is exact
        got = ops.spatial_pool(xl)
        assert got.device == xl.device and got.dtype == dtype, name
        torch.testing.assert_close(got.cpu().double(), spatial_pool_ref(xd), **TOL[dtype], msg=name)


def _cbam_params(c, hidden, k):
    return _rand(hidden, c), _rand(hidden), _rand(c, hidden), _rand(c), _rand(1, 2, k, k)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("n", BATCHES)
@pytest.mark.parametrize("c,hw,hidden,k,pool,bn", CBAM_SHAPES)
def test_cbam(device, dtype, n, c, hw, hidden, k, pool, bn):
    x = _rand(n, c, hw, hw, lo=-2, hi=2)
    params = _cbam_params(c, hidden, k)
    scale, shift = (-1.3, 0.4) if bn else (1.0, 0.0)
    cast = _on(device, dtype)
    for name, xl in layouts(x.to(dtype), device):
        got = ops.cbam(xl, *(cast(p) for p in params), scale, shift, pool)
        assert got.device == xl.device and got.dtype == dtype, name
        expected = cbam_ref(xl.double().cpu(), *params, scale, shift, pool)
        torch.testing.assert_close(got.cpu().double(), expected, **TOL[dtype], msg=name)


def test_nan_and_inf_stay_in_their_sample(device):
    """A NaN or inf in one sample changes that sample's outputs exactly as in the reference, no other."""
    x = _rand(4, 8, 14, 14)
    x[1, 3, 5, 6] = float("nan")
    x[2, 0, 0, 0] = float("inf")
    x[3, 7, 13, 13] = -float("inf")
    w, b = _rand(8, 8, 5, 5), _rand(8)
    params = _cbam_params(8, 1, 7)
    on = _on(device, torch.float64)
    xc, wc, bc, pc = on(x), on(w), on(b), [on(p) for p in params]
    cases = [(ops.conv_block(xc, wc, bc, None, None, 2), conv_block_ref(x, w, b, None, None, 2)),
             (ops.cbam(xc, *pc, 1.0, 0.0, 2), cbam_ref(x, *params, pool=2)),
             (ops.spatial_pool(xc), spatial_pool_ref(x))] + list(zip(ops.channel_pool(xc), channel_pool_ref(x)))
    for got, exp in cases:
        torch.testing.assert_close(got.cpu(), exp, equal_nan=True, atol=1e-12, rtol=1e-12)  # float64
        assert torch.isfinite(got[0]).all()


OPCHECK_CASES = [
    ("conv_block", lambda: (_rand(3, 2, 12, 12).float(), _rand(4, 2, 5, 5).float(), _rand(4).float(),
                            _rand(4).float(), _rand(4).float(), 3)),
    ("conv_block", lambda: (_rand(2, 14, 14, 14), _rand(8, 14, 5, 5), _rand(8), None, None, 2)),
    ("channel_pool", lambda: (_rand(3, 8, 14, 14).float(),)),
    ("spatial_pool", lambda: (_rand(3, 8, 14, 14),)),
    ("cbam", lambda: (_rand(2, 8, 14, 14).float(), *(p.float() for p in _cbam_params(8, 1, 7)), 1.0, 0.0, 2)),
    ("cbam", lambda: (_rand(2, 3, 42, 42), *_cbam_params(3, 1, 7), 0.5, -0.2, 3)),
]


@pytest.mark.parametrize("op,make_args", OPCHECK_CASES, ids=[c[0] for c in OPCHECK_CASES])
def test_opcheck(op, make_args):
    torch.library.opcheck(getattr(torch.ops.meanspot_fused, op), make_args())


def test_opcheck_meanspot_net():
    from meanspot_fused.network.fuse import pack_network
    from helpers import random_model
    for cbam, heads, dtype in [("all", ("spot", "recog"), torch.float32), ("none", ("recog",), torch.float64)]:
        packed, config = pack_network(random_model(cbam, heads, dtype=dtype), dtype)
        u, v, os = (torch.rand(3, 1, 42, 42, dtype=dtype) for _ in range(3))
        torch.library.opcheck(torch.ops.meanspot_fused.meanspot_net, (u, v, os, packed, config))
