"""Bad input to every public entry point: a clear error naming the argument, never a crash.

Each case is checked twice: through the Python wrapper in meanspot_fused.ops
(TypeError/ValueError raised in Python) and through torch.ops.meanspot_fused
directly (the C++ TORCH_CHECK, a RuntimeError). The direct calls also run in a
subprocess so that a crash would show up as a signal, not take pytest down.
"""
import subprocess
import sys
import textwrap

import pytest
import torch

from meanspot_fused import ops

f32 = dict(dtype=torch.float32)


def conv_args(**over):
    args = dict(x=torch.rand(2, 3, 12, 12, **f32), weight=torch.rand(4, 3, 5, 5, **f32), bias=torch.rand(4, **f32),
                scale=torch.rand(4, **f32), shift=torch.rand(4, **f32), pool=3)
    args.update(over)
    return args


def cbam_args(**over):
    args = dict(x=torch.rand(2, 8, 14, 14, **f32), mlp_w1=torch.rand(1, 8, **f32), mlp_b1=torch.rand(1, **f32),
                mlp_w2=torch.rand(8, 1, **f32), mlp_b2=torch.rand(8, **f32), spatial_weight=torch.rand(1, 2, 7, 7, **f32),
                spatial_scale=1.0, spatial_shift=0.0, pool=2)
    args.update(over)
    return args


CONV_CASES = [
    (dict(x=torch.rand(3, 12, 12)), "x must be a 4-D tensor"),
    (dict(weight=torch.rand(4, 2, 5, 5)), "weight must have .*3.* input channels"),
    (dict(weight=torch.rand(4, 3, 4, 4)), "odd kernel"),
    (dict(bias=torch.rand(5)), "bias must have shape"),
    (dict(scale=torch.rand(3)), "scale must have shape"),
    (dict(shift=None), "scale and shift must be given together"),
    (dict(weight=torch.rand(4, 3, 5, 5, dtype=torch.float64)), "weight must have the dtype of x"),
    (dict(x=torch.randint(0, 5, (2, 3, 12, 12))), "x must be a floating-point"),
    (dict(pool=0), "pool must be"),
    (dict(pool=5), "pool .* must divide"),
]
CONV_CASES_CPP_ONLY = [
    (dict(x=torch.rand(2, 3, 12, 12, dtype=torch.float16), weight=torch.rand(4, 3, 5, 5, dtype=torch.float16),
          bias=torch.rand(4, dtype=torch.float16), scale=None, shift=None), "float32 or float64"),
]
CBAM_CASES = [
    (dict(x=torch.rand(8, 14, 14)), "x must be a 4-D tensor"),
    (dict(mlp_w1=torch.rand(1, 7)), "mlp_w1 must have shape"),
    (dict(mlp_b1=torch.rand(2)), "mlp_b1 must have shape"),
    (dict(mlp_w2=torch.rand(8, 2)), "mlp_w2 must have shape"),
    (dict(mlp_b2=torch.rand(7)), "mlp_b2 must have shape"),
    (dict(spatial_weight=torch.rand(1, 1, 7, 7)), r"spatial_weight must have shape \(1, 2, K, K\)"),
    (dict(spatial_weight=torch.rand(1, 2, 6, 6)), "spatial_weight must have shape"),
    (dict(mlp_b2=torch.rand(8, dtype=torch.float64)), "mlp_b2 must have the dtype of x"),
    (dict(pool=3), "pool .* must divide"),
]


def _cpp_call(op, args):
    return getattr(torch.ops.meanspot_fused, op)(*args.values())


@pytest.mark.parametrize("over,msg", CONV_CASES + CONV_CASES_CPP_ONLY)
def test_conv_block_errors(over, msg):
    args = conv_args(**over)
    with pytest.raises(RuntimeError, match=msg):
        _cpp_call("conv_block", args)
    if (over, msg) in CONV_CASES_CPP_ONLY:
        return
    # One wording: the Python wrapper says what the C++ check says.
    with pytest.raises((TypeError, ValueError), match=msg):
        ops.conv_block(**args)


@pytest.mark.parametrize("over,msg", CBAM_CASES)
def test_cbam_errors(over, msg):
    args = cbam_args(**over)
    with pytest.raises(RuntimeError, match=msg):
        _cpp_call("cbam", args)
    with pytest.raises((TypeError, ValueError), match=msg):
        ops.cbam(**args)


@pytest.mark.parametrize("op", ["channel_pool", "spatial_pool"])
@pytest.mark.parametrize("x,msg", [
    (torch.rand(3, 4, 5), "x must be a 4-D tensor"),
    (torch.rand(2, 0, 4, 4), "C, H, W >= 1"),
    (torch.randint(0, 3, (2, 3, 4, 4)), "floating-point"),
    (torch.rand(2, 3, 4, 4, dtype=torch.bfloat16), "float32 or float64"),
])
def test_pool_errors(op, x, msg):
    with pytest.raises(RuntimeError, match=msg):
        getattr(torch.ops.meanspot_fused, op)(x)
    if x.dim() != 4 or not x.is_floating_point():
        with pytest.raises((TypeError, ValueError), match=msg):
            getattr(ops, op)(x)


def test_device_mismatch_python():
    # (A meta tensor dispatches to the fake kernel, so only the Python check sees this; CPU vs CUDA
    # mixes reach the C++ check, tested in test_cuda.py.)
    with pytest.raises(ValueError, match="bias must be on the device of x"):
        ops.conv_block(**conv_args(bias=torch.rand(4, device="meta")))


def test_missing_and_wrong_type_arguments():
    with pytest.raises(TypeError):
        ops.conv_block(torch.rand(1, 1, 4, 4))
    with pytest.raises(TypeError, match="x must be a torch.Tensor"):
        ops.channel_pool([[1.0]])
    with pytest.raises(RuntimeError):
        torch.ops.meanspot_fused.cbam(torch.rand(1, 8, 4, 4))
    with pytest.raises(ValueError, match="pool must be an int"):
        ops.conv_block(**conv_args(pool=1.5))


def test_direct_op_abuse_in_subprocess_raises_not_crashes():
    """Wrong arguments straight to torch.ops in a fresh process: every call raises, the process exits 0."""
    script = textwrap.dedent("""
        import torch, meanspot_fused
        O = torch.ops.meanspot_fused
        r = torch.rand
        calls = [
            lambda: O.conv_block(r(2, 3, 12, 12), r(4, 3, 5, 5), r(4), None, None, 7),
            lambda: O.conv_block(r(2, 3, 12, 12), r(4, 9, 5, 5), r(4), None, None, 1),
            lambda: O.conv_block(r(0), r(4, 3, 5, 5), r(4), None, None, 1),
            lambda: O.conv_block(r(2, 3, 12, 12), r(4, 3, 5, 5), r(0), r(4), r(4), 1),
            lambda: O.cbam(r(2, 8, 14, 14), r(1, 8), r(1), r(8, 1), r(8), r(1, 2, 7), 1.0, 0.0, 2),
            lambda: O.cbam(r(2, 8, 14, 14), r(3, 8), r(3), r(8, 1), r(8), r(1, 2, 7, 7), 1.0, 0.0, 2),
            lambda: O.cbam(r(2, 8, 14, 14), r(1, 8), r(1), r(8, 1), r(8), r(1, 2, 7, 7), 1.0, 0.0, -1),
            lambda: O.channel_pool(r(5)),
            lambda: O.spatial_pool(r(1, 1, 0, 3)),
        ]
        for i, c in enumerate(calls):
            try:
                c()
            except RuntimeError as e:
                assert "meanspot_fused." in str(e), (i, str(e))
            else:
                raise SystemExit(f"call {i} did not raise")
        print("all raised")
    """)
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, (proc.returncode, proc.stderr[-2000:])
    assert "all raised" in proc.stdout


def _net_args():
    import meanspot_fused as mf
    from meanspot_fused.network.fuse import pack_network
    model = mf.MeanSpot("all", ("spot", "recog")).eval()
    packed, config = pack_network(model, torch.float32)
    u = torch.rand(2, 1, 42, 42)
    return u, u.clone(), u.clone(), packed, config


@pytest.mark.parametrize("mutate,msg", [
    (lambda a: (a[0][:, :, :41], *a[1:]), r"u must have shape \(N, 1, 42, 42\)"),
    (lambda a: (a[0], a[1][:1], *a[2:]), "v has batch size 1 but u has 2"),
    (lambda a: (*a[:2], a[2].double(), *a[3:]), "os must have the dtype of"),
    (lambda a: (*a[:3], a[3][:-1], a[4]), "params must have .* elements"),
    (lambda a: (*a[:3], a[3].reshape(1, -1), a[4]), "params must be a 1-D"),
    (lambda a: (*a[:4], a[4][:9]), "config must have 10 entries"),
    (lambda a: (*a[:4], [0, 0, 0, 0] + a[4][4:]), "at least one head"),
    (lambda a: (*a[:4], a[4][:9] + [4]), "spatial_kernel"),
    (lambda a: (*a[:4], a[4][:5] + [9] + a[4][6:]), "hidden width"),
])
def test_meanspot_net_errors(mutate, msg):
    args = mutate(_net_args())
    with pytest.raises(RuntimeError, match=msg):
        torch.ops.meanspot_fused.meanspot_net(*args)
    with pytest.raises((TypeError, ValueError, RuntimeError)):
        ops.meanspot_net(*args)
