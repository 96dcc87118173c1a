"""Keras-exact training steps: init, losses and Adam against real Keras (``../shared/keras_cases/train_step_*``).

The ground truth is read in place, never copied; its tests skip when it is absent.
"""
from __future__ import annotations

import copy
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # tests/: shared helpers
from helpers import KERAS_CASES  # noqa: E402

from meanspot_fused.errors import InputError  # noqa: E402
from meanspot_fused.network.reference import MeanSpot  # noqa: E402
from meanspot_fused.training.keras_semantics import (  # noqa: E402
    KerasAdam, cce_loss, keras_batchnorm, glorot_head_, head_output, keras_init_, l2_penalty, mse_loss, set_dropout, train_step)

PLACEMENTS = ["none", "all"]

# Tolerances per quantity and training dtype, as (rtol, atol): |got - want| <= rtol * max|want| + atol over
# each tensor (a tensor's small entries carry the rounding error of its large ones).
#
# float64: the semantics. The only error left is Keras's own float32 rounding:
# * loss parts: Keras's float32 L2 sum is 1.7e-6 off the exact one (measured; mse after a step: 1.2e-6);
# * gradients: Keras's float32 gradients of the CBAM MLP kernels (three-entry tensors, batch sums of products
#   of gates) are up to 1.4e-5 off the exact ones (measured: dense_3/kernel, "all"), and near-zero entries
#   (|g| ~ 1e-6) carry ~3e-10 absolute rounding from sums of far larger terms: rtol 2e-5, atol 1e-9
#   (m = 0.1 g likewise, v ~ g^2 twice the relative error); the MEAN network ("none") is within 2e-6;
# * weights: where |g| <~ eps / sqrt(1 - beta2^t) = 3e-6, the Adam step is ~ lr * g / (|g| + 3e-6), so that
#   gradient rounding becomes up to 2e-4 of one step (lr = 5e-4): atol 1e-7 (measured 6e-8, CBAM "all").
# float32: what the loop trains in. Forward quantities stay within float32 rounding. Gradients: batch-stat BN's
# backward removes the part of the incoming gradient that is affine in the normalised input; where that is
# nearly all of it, what is left (the gradient of a branch conv's bias, BN beta) is small, and the incoming
# gradient's float32 rounding (1.7e-6 of its largest entry, from the head and CBAM backward; measured) is not:
# up to 4e-4 of the largest conv-bias gradient ("all"; 4e-5 "none"). Computing BN, its statistics or the
# conv bias in float64 changes nothing (tried); float64 throughout is 1e-6 off Keras on the same entries.
# The weights after three steps follow (2.3e-4).
TOL = {
    torch.float64: dict(loss=(2e-6, 0), grad=(2e-5, 1e-9), m=(2e-5, 1e-10), v=(4e-5, 1e-15), weight=(2e-6, 1e-7),
                        bn=(1e-6, 0), infer=(1e-6, 0)),
    torch.float32: dict(loss=(2e-6, 0), grad=(1e-3, 1e-9), m=(1e-3, 1e-10), v=(1e-3, 1e-15), weight=(5e-4, 1e-7),
                        bn=(1e-6, 0), infer=(2e-5, 0)),
}


def _case(cbam):
    path = KERAS_CASES / f"train_step_{cbam}_seed0.npz"
    if not path.is_file():
        pytest.skip(f"Keras ground truth not found at {path} (set MEANSPOT_KERAS_CASES)")
    return np.load(path)


_BRANCH = {"b1": "branches.u", "b2": "branches.v", "b3": "branches.os"}


def _torch_name(ref: str) -> str:
    """The npz's ``ref_names`` (a PyTorch port's names) -> MeanSpot's state-dict key."""
    parts = ref.split(".")
    prefix = _BRANCH.get(parts[0])
    rest = parts[1:] if prefix else parts
    prefix = prefix or "heads.spot"
    rest = ".".join(rest)
    rest = {"merged_conv.weight": "conv.weight", "merged_conv.bias": "conv.bias", "fc.weight": "dense.weight",
            "fc.bias": "dense.bias"}.get(rest, rest)
    rest = (rest.replace("cbam.channel.fc1", "cbam.mlp1").replace("cbam.channel.fc2", "cbam.mlp2")
            .replace("cbam.spatial.conv", "cbam.spatial"))
    return f"{prefix}.{rest}"


def _to_torch(arr: np.ndarray) -> torch.Tensor:
    t = torch.from_numpy(np.ascontiguousarray(arr, dtype=np.float32))
    if t.dim() == 4:
        return t.permute(3, 2, 0, 1).contiguous()  # Conv2D kernel HWIO -> OIHW
    if t.dim() == 2:
        return t.t().contiguous()  # Dense (in, out) -> Linear (out, in); both flatten (h, w, c)
    return t


def _names(case):
    return [(str(n), _torch_name(str(r)), bool(t)) for n, r, t in zip(case["names"], case["ref_names"], case["trainable"])]


def _model(case, cbam):
    model = MeanSpot(cbam=cbam, heads=("spot",))
    state = model.state_dict()
    names = _names(case)
    assert {k for _, k, _ in names} == {k for k in state if not k.endswith("num_batches_tracked")}
    for name, key, _ in names:
        state[key] = _to_torch(case[f"init/{name}"])
    model.load_state_dict(state)
    set_dropout(model, 0.0)  # the cases set every Dropout rate to 0
    return model.train()


def _inputs(case):
    return [torch.from_numpy(case[k]).permute(0, 3, 1, 2).contiguous() for k in ("u", "v", "os")], \
        torch.from_numpy(case["y"])


def _check(got: torch.Tensor, want: np.ndarray, tol, what: str) -> None:
    rtol, atol = tol
    want = torch.from_numpy(np.asarray(want, dtype=np.float32)).to(torch.float64)
    err = float((got.detach().to(torch.float64) - want).abs().max())
    bound = rtol * float(want.abs().max()) + atol
    assert err <= bound, f"{what}: max error {err:.3e} > {bound:.3e}"


def _rel_err(got: torch.Tensor, want: np.ndarray) -> float:
    want = torch.from_numpy(np.asarray(want, dtype=np.float32)).to(torch.float64)
    got = got.detach().to(torch.float64)
    scale = want.abs().max().clamp_min(1e-30)
    return float((got - want).abs().max() / scale)


def _run(cbam, dtype=torch.float32, optimizer_cls=KerasAdam, moving_variance="unbiased", **opt_kw):
    """Three training steps on the case's batch; record what the npz holds, in torch layout."""
    torch.manual_seed(0)
    case = _case(cbam)
    model = _model(case, cbam).to(dtype)
    (u, v, os), y = _inputs(case)
    u, v, os, y = (t.to(dtype) for t in (u, v, os, y))
    params = dict(model.named_parameters())
    opt = optimizer_cls(model.parameters(), lr=5e-4, **opt_kw)
    rec = {"mse": [], "l2": [], "grad": [], "state": [], "moments": []}
    with keras_batchnorm(model, moving_variance):
        _steps(model, opt, params, u, v, os, y, rec)
    model.eval()
    with torch.no_grad():
        rec["infer"] = model(u, v, os)
    return case, rec


def _steps(model, opt, params, u, v, os, y, rec):
    for _ in range(3):
        # train_step's own loss parts are the ones before the step; grads are read before it too.
        opt.zero_grad()
        pred = head_output(model, "spot", u, v, os)
        mse, l2 = mse_loss(pred, y), l2_penalty(model)
        (mse + l2).backward()
        rec["grad"].append({k: p.grad.clone() for k, p in params.items()})
        opt.step()
        rec["mse"].append(float(mse.detach()))
        rec["l2"].append(float(l2.detach()))
        rec["state"].append({k: t.clone() for k, t in model.state_dict().items()})
        rec["moments"].append({k: (opt.state[p]["exp_avg"].clone(), opt.state[p]["exp_avg_sq"].clone())
                               for k, p in params.items()})


@pytest.fixture(scope="module", params=[(c, d) for c in PLACEMENTS for d in (torch.float32, torch.float64)],
                ids=lambda p: f"{p[0]}-{str(p[1])[6:]}")
def keras_run(request):
    cbam, dtype = request.param
    return TOL[dtype], *_run(cbam, dtype)


def test_loss_parts_match_keras(keras_run):
    tol, case, rec = keras_run
    for part in ("mse", "l2"):
        for k in range(3):
            _check(torch.tensor(rec[part][k]), case[part][k], tol["loss"], f"{part} before step {k + 1}")
        _check(torch.tensor(rec["mse"][k] + rec["l2"][k]), case["loss"][k], tol["loss"], f"loss {k + 1}")


def test_gradients_match_keras(keras_run):
    tol, case, rec = keras_run
    for k in range(3):
        for name, key, trainable in _names(case):
            if trainable:
                _check(rec["grad"][k][key], _to_torch(case[f"grad{k + 1}/{name}"]).numpy(), tol["grad"],
                       f"grad{k + 1}/{name}")


def test_adam_moments_match_keras(keras_run):
    tol, case, rec = keras_run
    for k, step in ((0, 1), (2, 3)):
        for name, key, trainable in _names(case):
            if trainable:
                m, v = rec["moments"][k][key]
                for what, got in (("m", m), ("v", v)):
                    _check(got, _to_torch(case[f"adam_{what}{step}/{name}"]).numpy(), tol[what],
                           f"adam_{what}{step}/{name}")


def test_weights_and_bn_stats_match_keras(keras_run):
    tol, case, rec = keras_run
    for k, step in ((0, 1), (2, 3)):
        for name, key, trainable in _names(case):  # trainable weights and BN moving mean/variance
            _check(rec["state"][k][key], _to_torch(case[f"step{step}/{name}"]).numpy(),
                   tol["weight" if trainable else "bn"], f"step{step}/{name}")


def test_inference_after_three_steps_matches_keras(keras_run):
    tol, case, rec = keras_run
    _check(rec["infer"], case["spot_infer3"], tol["infer"], "spot_infer3")


def test_keras3_biased_moving_variance_also_matches():
    """Keras 3 (which made the cases) updates the moving variance with the biased batch variance."""
    case, rec = _run("none", torch.float64, moving_variance="biased")
    for name, key, trainable in _names(case):
        if not trainable:
            _check(rec["state"][2][key], _to_torch(case[f"step3/{name}"]).numpy(), TOL[torch.float64]["bn"], name)


def test_train_step_returns_keras_loss():
    case = _case("none")
    model = _model(case, "none")
    (u, v, os), y = _inputs(case)
    opt = KerasAdam(model.parameters())
    with keras_batchnorm(model):
        for k in range(3):
            parts = train_step(model, opt, u, v, os, y)
            _check(parts["loss"], case["loss"][k], TOL[torch.float32]["loss"], f"loss {k + 1}")
    assert opt.iterations == 3


def test_torch_adam_misses_keras():
    """torch.optim.Adam (eps on the bias-corrected sqrt(v)) is off by far more than rounding (issue 20)."""
    case, rec = _run("none", torch.float64, torch.optim.Adam, eps=1e-7)
    worst = max(_rel_err(rec["state"][2][key], _to_torch(case[f"step3/{name}"]).numpy())
                for name, key, _ in _names(case))
    assert worst > 100 * TOL[torch.float64]["weight"][0]


# ---------------------------------------------------------------------------------------------
# Pieces without the ground truth
# ---------------------------------------------------------------------------------------------

def test_adam_against_formula():
    """One parameter, hand-written TF Adam in float64 (eps outside the bias correction)."""
    g = torch.Generator().manual_seed(3)
    p = torch.randn(50, generator=g, dtype=torch.float64)
    grads = [torch.randn(50, generator=g, dtype=torch.float64) * 1e-6 for _ in range(4)]
    param = torch.nn.Parameter(p.clone())
    opt = KerasAdam([param], lr=1e-3)
    m = torch.zeros(50, dtype=torch.float64)
    v = torch.zeros(50, dtype=torch.float64)
    want = p.clone()
    for t, gr in enumerate(grads, 1):
        param.grad = gr.clone()
        opt.step()
        m = 0.9 * m + 0.1 * gr
        v = 0.999 * v + 0.001 * gr * gr
        # Keras computes alpha in float32 from float32 betas (1 - 0.999 is 1.3e-5 off in float32): kept here.
        f = np.float32
        alpha = f(1e-3) * np.sqrt(f(1) - f(0.999) ** f(t)) / (f(1) - f(0.9) ** f(t))
        want = want - float(alpha) * m / (v.sqrt() + 1e-7)
    # float32 alpha may round differently by an ulp (6e-8 relative) per step of ~1e-3.
    torch.testing.assert_close(param.detach(), want, rtol=0, atol=3e-10)


def test_adam_initial_step_continues_bias_correction():
    """TRAINING.md 9a: new variables in a reused Keras optimizer start at t = iterations, zero moments."""
    a, b = torch.nn.Parameter(torch.zeros(3)), torch.nn.Parameter(torch.zeros(3))
    fresh, carried = KerasAdam([a]), KerasAdam([b], initial_step=5000)
    for p, opt in ((a, fresh), (b, carried)):
        p.grad = torch.full((3,), 1e-2)
        opt.step()
    assert fresh.state[a]["step"] == 1 and carried.state[b]["step"] == 5001
    assert float(fresh.state[a]["exp_avg"][0]) == float(carried.state[b]["exp_avg"][0])
    # First step: lr (bias-corrected) vs lr * sqrt(1 - 0.999^5001) / (1 - 0.9^5001) * 0.1 / sqrt(0.001) = 3.16 lr
    # Both steps are shrunk by sqrt(v) / (sqrt(v) + eps) = 1 - 3.2e-4 (sqrt(v) = 3.2e-4, eps = 1e-7).
    shrink = 1 - 1e-7 / (np.sqrt(1e-3) * 1e-2)
    # rel 2e-5: Keras's float32 betas (1 - 0.999 is 1.3e-5 off in float32, 6.4e-6 after the square root)
    assert float(-a.detach()[0]) == pytest.approx(5e-4 * shrink, rel=2e-5)
    assert float(-b.detach()[0]) == pytest.approx(5e-4 * np.sqrt(1 - 0.999 ** 5001) * 0.1 / np.sqrt(1e-3) * shrink, rel=2e-5)


def test_adam_state_dict_round_trip():
    g = torch.Generator().manual_seed(1)
    p1 = torch.nn.Parameter(torch.randn(4, generator=g))
    p2 = torch.nn.Parameter(p1.detach().clone())
    o1, o2 = KerasAdam([p1]), KerasAdam([p2])
    for _ in range(2):
        p1.grad = torch.ones(4)
        o1.step()
    o2.load_state_dict(copy.deepcopy(o1.state_dict()))  # load_state_dict keeps same-device tensors
    p2.data.copy_(p1.data)
    for p, o in ((p1, o1), (p2, o2)):
        p.grad = torch.full((4,), 0.5)
        o.step()
    assert torch.equal(p1, p2) and o2.iterations == 3


@pytest.mark.parametrize("kwargs", [dict(lr=0.0), dict(betas=(0.9, 1.0)), dict(eps=0.0), dict(initial_step=-1)])
def test_adam_rejects_bad_settings(kwargs):
    with pytest.raises(InputError):
        KerasAdam([torch.nn.Parameter(torch.zeros(1))], **kwargs)


def test_cce_clips_and_normalises():
    probs = torch.tensor([[1.0, 0.0, 0.0], [0.2, 0.3, 0.5]], dtype=torch.float64)
    y = torch.tensor([[0.0, 1.0, 0.0], [0.0, 0.0, 1.0]], dtype=torch.float64)
    want = (-np.log(1e-7) - np.log(0.5)) / 2
    assert float(cce_loss(probs, y)) == pytest.approx(want, rel=1e-12)
    with pytest.raises(InputError, match="target"):
        cce_loss(probs, y[:, :2])


@pytest.mark.parametrize("cbam", PLACEMENTS)
def test_keras_init_statistics_and_seed(cbam):
    a = keras_init_(MeanSpot(cbam=cbam, heads=("spot", "recog")), torch.Generator().manual_seed(7))
    b = keras_init_(MeanSpot(cbam=cbam, heads=("spot", "recog")), torch.Generator().manual_seed(7))
    for (k, ta), tb in zip(a.state_dict().items(), b.state_dict().values()):
        assert torch.equal(ta, tb), k
    conv = a.heads["spot"].conv.weight.detach()
    bound = np.sqrt(6 / (25 * 14 + 25 * 8))
    assert float(conv.abs().max()) <= bound and float(conv.abs().max()) > 0.9 * bound
    assert float(a.heads["recog"].dense.bias.detach().abs().max()) == 0.0
    bn = a.branches["os"].bn
    assert torch.equal(bn.running_var, torch.ones(8)) and torch.equal(bn.weight, torch.ones(8))
    if cbam == "all":
        w = a.branches["os"].cbam.spatial.weight.detach()  # he_normal, fan_in 2*7*7, truncated at 2 std
        std = np.sqrt(2 / 98) / 0.87962566103423978
        assert float(w.abs().max()) <= 2 * std
    before = a.heads["spot"].conv.weight.clone()
    glorot_head_(a, "recog", torch.Generator().manual_seed(8))
    assert torch.equal(before, a.heads["spot"].conv.weight)
    assert not torch.equal(a.heads["recog"].conv.weight, b.heads["recog"].conv.weight)
