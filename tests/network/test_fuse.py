"""fuse(model) against the float64 reference model, plus torch.compile / torch.export."""
import copy

import pytest
import torch

import meanspot_fused as mf
from meanspot_fused.network.fuse import MODES

from helpers import HEAD_SETS, as_tuple, random_inputs, random_model

# Every CPU instruction-set level this machine runs (conftest.py).
pytestmark = pytest.mark.usefixtures("cpu_level")

# fused float64 vs reference float64: same math, different summation order.
TOL64 = dict(atol=1e-10, rtol=1e-10)
# fused float32 vs reference float64: float32 rounding through ~10 layers.
TOL32 = dict(atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("cbam", mf.PLACEMENTS)
@pytest.mark.parametrize("heads", HEAD_SETS, ids="+".join)
@pytest.mark.parametrize("n", [0, 1, 2, 17, 64])
def test_fuse_matches_reference(mode, cbam, heads, n):
    seed = hash((cbam, heads, n)) % 2**31
    ref = random_model(cbam, heads, seed=seed, recog_classes=5)
    inputs = random_inputs(n)  # fresh inputs every run: no seed
    expected = as_tuple(ref(*inputs))
    got = as_tuple(mf.fuse(ref, mode=mode)(*inputs))
    assert len(got) == len(expected)
    for g, e in zip(got, expected):
        assert g.dtype == torch.float64 and g.shape == e.shape
        torch.testing.assert_close(g, e, **TOL64)
    got32 = as_tuple(mf.fuse(copy.deepcopy(ref).float(), mode=mode)(*(t.float() for t in inputs)))
    for g, e in zip(got32, expected):
        assert g.dtype == torch.float32
        torch.testing.assert_close(g.double(), e, **TOL32)


@pytest.mark.parametrize("mode", MODES)
def test_fuse_spatial_batchnorm_and_ratio(mode):
    """Official-CBAM style BatchNorm after the spatial conv folds into scale/shift; other ratio/kernel."""
    ref = random_model("all", ("spot", "recog"), cbam_spatial_bn=True, cbam_ratio=2, spatial_kernel=5, seed=3)
    inputs = random_inputs(9)
    for g, e in zip(as_tuple(mf.fuse(ref, mode=mode)(*inputs)), as_tuple(ref(*inputs))):
        torch.testing.assert_close(g, e, **TOL64)


def test_fuse_does_not_modify_model_and_follows_dtype():
    ref = random_model("all", ("spot",), seed=1)
    before = copy.deepcopy(ref.state_dict())
    fused = mf.fuse(ref)
    for k, v in ref.state_dict().items():
        assert torch.equal(v, before[k]), k
    inputs = random_inputs(4)
    fused32 = fused.to(torch.float32)
    out = fused32(*(t.float() for t in inputs))
    torch.testing.assert_close(out.double(), ref(*inputs), **TOL32)


def test_fuse_errors():
    ref = random_model("all", ("spot",))
    with pytest.raises(ValueError, match="training mode"):
        mf.fuse(copy.deepcopy(ref).train())
    with pytest.raises(TypeError, match="MeanSpot"):
        mf.fuse(torch.nn.Linear(2, 2))
    broken = copy.deepcopy(ref)
    broken.branches["u"].bn = torch.nn.Identity()
    with pytest.raises(ValueError, match="branches.u"):
        mf.fuse(broken)
    with pytest.raises(ValueError, match="mode"):
        mf.fuse(ref, mode="nope")


def test_forward_bad_inputs():
    fused = mf.fuse(random_model("all", ("spot",), dtype=torch.float32))
    good = random_inputs(2, dtype=torch.float32)
    for model in (fused, random_model("all", ("spot",), dtype=torch.float32)):
        with pytest.raises(TypeError, match="u must be a torch.Tensor"):
            model(good[0].numpy(), *good[1:])
        with pytest.raises(ValueError, match=r"v must have shape \(N, 1, 42, 42\)"):
            model(good[0], good[1][:, :, :40], good[2])
        with pytest.raises(ValueError, match=r"os must have shape"):
            model(good[0], good[1], good[2][0])
        with pytest.raises(TypeError, match="os must be a floating-point"):
            model(good[0], good[1], (good[2] * 10).long())
        with pytest.raises(ValueError, match="batch size"):
            model(good[0], good[1][:1], good[2])
        with pytest.raises(TypeError):
            model(good[0], good[1])
    with pytest.raises(TypeError, match="dtype"):
        fused(*(t.double() for t in good))
    with pytest.raises(ValueError, match="are on meta but the fused model is on cpu"):
        fused(*(t.to("meta") for t in good))


@pytest.mark.parametrize("mode", MODES)
def test_torch_compile_fullgraph(mode):
    ref = random_model("all", ("spot", "recog"), dtype=torch.float32, seed=5)
    fused = mf.fuse(ref, mode=mode)
    compiled = torch.compile(fused, fullgraph=True, backend="inductor")
    inputs = random_inputs(3, dtype=torch.float32)
    for g, e in zip(compiled(*inputs), fused(*inputs)):
        torch.testing.assert_close(g, e, atol=1e-6, rtol=1e-6)


@pytest.mark.parametrize("mode", MODES)
def test_torch_export(mode):
    ref = random_model("merged", ("spot",), dtype=torch.float32, seed=6)
    fused = mf.fuse(ref, mode=mode)
    inputs = random_inputs(5, dtype=torch.float32)
    batch = torch.export.Dim("batch", min=1, max=1 << 20)
    ep = torch.export.export(fused, inputs, dynamic_shapes=({0: batch}, {0: batch}, {0: batch}))
    targets = {str(n.target) for n in ep.graph.nodes if n.op == "call_function"}
    assert any("meanspot_fused" in t for t in targets), targets
    other = random_inputs(7, dtype=torch.float32)
    torch.testing.assert_close(ep.module()(*other), fused(*other), atol=1e-6, rtol=1e-6)


def test_ops_mode_chunks_big_batches(monkeypatch):
    """Batches above OPS_CHUNK run in chunks; results equal the unchunked reference."""
    import sys
    # (meanspot_fused.network.fuse the attribute is the function; the module is in sys.modules)
    monkeypatch.setattr(sys.modules["meanspot_fused.network.fuse"], "OPS_CHUNK", 5)
    ref = random_model("all", ("spot", "recog"), seed=11)
    inputs = random_inputs(17)
    for g, e in zip(mf.fuse(ref, mode="ops")(*inputs), ref(*inputs)):
        torch.testing.assert_close(g, e, **TOL64)


@pytest.mark.parametrize("cbam", mf.PLACEMENTS)
def test_network_small_batch_split_is_bitwise_identical(cbam):
    """Batches smaller than the thread count split samples by branch and head; same bits as one thread."""
    fused = mf.fuse(random_model(cbam, ("spot", "recog"), dtype=torch.float32, seed=4), mode="network")
    inputs = random_inputs(3, dtype=torch.float32)
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(8)  # 3 samples < 8 threads: branch/head split
        split = fused(*inputs)
        torch.set_num_threads(1)  # one thread runs whole samples
        whole = fused(*inputs)
    finally:
        torch.set_num_threads(threads)
    for a, b in zip(split, whole):
        assert torch.equal(a, b)
