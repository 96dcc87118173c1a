"""Keras-exact training mechanics for :class:`MeanSpot` (``shared/design/TRAINING.md`` sections 5, 6, 10).

* :func:`keras_init_`: Keras's initial weights (Glorot-uniform kernels, zero
  biases, BN gamma 1 beta 0 mean 0 variance 1; CBAM's MLP Dense and 7x7 conv
  he_normal), drawn from a ``torch.Generator``.
* :func:`mse_loss`, :func:`cce_loss`, :func:`l2_penalty`: the losses Keras
  minimises (mean over the batch; L2 as ``kernel_regularizer=l2(lambda)`` adds it).
* :class:`KerasAdam`: Adam as TF/Keras applies it (epsilon added to the
  un-bias-corrected sqrt(v)), with a step count per parameter so that MEAN's
  shared-optimizer quirk (TRAINING.md 9a) can be reproduced.
* :func:`train_step`: one forward, backward and Adam step in training mode.

BatchNorm in training mode (:func:`keras_batchnorm`): torch's float32 CPU
batch statistics (sums over the 32*42*42 = 56448 values of a channel) are off
by up to 1e-4 relative in the normalised output where a channel's variance is
small next to its squared mean (post-ReLU maps, variances down to 1e-9 in the
Keras cases), where Keras's are not. So training swaps
each BatchNorm2d for :class:`KerasBatchNorm2d`, which takes the batch mean and
biased variance in two passes (mean, then the mean of centred squares; torch's
cascade sums: on the Keras cases as close to Keras as float64 statistics) and
normalises as Keras does
(x * inv + (beta - mean * inv), inv = gamma / sqrt(var + eps)). The moving
variance is updated with the Bessel-corrected batch variance by default, as
TF 2.4's fused BN (MEAN's Keras) does; ``moving_variance="biased"`` gives
Keras 3's update, which made the ground truth in ``shared/keras_cases``. At
n = 56448 the two differ by 1/56447 of the 1% new-statistic share, about 2e-7
relative on the moving variance, within float32 rounding of the stored values.

Against real Keras (``tests/training/test_keras_step.py``): in float64 every
quantity of three steps matches to Keras's own float32 rounding (about 1e-6);
in float32, what training uses, the forward pass, losses, BN statistics and
most weights do too, but gradients that batch-stat BN leaves small (branch
conv biases, BN beta) carry the float32 rounding of the larger gradient
arriving at the BN: up to 4e-4 of the largest such entry (see the test).
"""
from __future__ import annotations

import contextlib
import functools
import math
from typing import Dict, Iterable, Iterator, Optional

import numpy as np
import torch
from torch import nn

from ..errors import InputError, InputTypeError
from ..network.reference import BRANCH_NAMES, CBAM, MeanSpot, check_inputs

__all__ = ["ADAM_LR", "ADAM_BETAS", "ADAM_EPS", "BRANCH_L2", "HEAD_L2", "CCE_CLIP", "keras_init_", "glorot_head_",
           "mse_loss", "cce_loss", "l2_penalty", "KerasAdam", "head_output", "train_step", "set_dropout",
           "KerasBatchNorm2d", "keras_batchnorm", "MOVING_VARIANCE"]

#: Adam as MEAN compiles it (TRAINING.md 6): lr 5e-4, Keras's betas and epsilon.
ADAM_LR = 5e-4
ADAM_BETAS = (0.9, 0.999)
ADAM_EPS = 1e-7
#: L2 factors of ``kernel_regularizer=l2(...)``: branch convs 1e-3, merged/head convs 0.1 (TRAINING.md 5, 7).
BRANCH_L2 = 1e-3
HEAD_L2 = 0.1
#: Keras's ``backend.epsilon()``: categorical cross-entropy clips p to [eps, 1 - eps].
CCE_CLIP = 1e-7


def _check_generator(generator) -> None:
    if generator is not None and not isinstance(generator, torch.Generator):
        raise InputTypeError(f"generator must be a torch.Generator or None, got {type(generator).__name__}")


def _he_normal_(weight: torch.Tensor, generator: Optional[torch.Generator]) -> None:
    """Keras ``he_normal``: truncated normal (at 2 std) with std sqrt(2 / fan_in) / 0.8796...

    The divisor is the std of a unit normal truncated to [-2, 2], so the drawn
    values have std sqrt(2 / fan_in) (Keras ``VarianceScaling``). Fan-in is
    ``in * kh * kw`` for a conv and ``in`` for a Linear, as Keras counts it.
    """
    fan_in = weight[0].numel()
    std = math.sqrt(2.0 / fan_in) / 0.87962566103423978
    with torch.no_grad():
        nn.init.trunc_normal_(weight, 0.0, std, -2.0 * std, 2.0 * std, generator=generator)


def _init_cbam_(cbam: CBAM, generator: Optional[torch.Generator]) -> None:
    for lin in (cbam.mlp1, cbam.mlp2):
        _he_normal_(lin.weight, generator)
        nn.init.zeros_(lin.bias)
    _he_normal_(cbam.spatial.weight, generator)
    if cbam.spatial_bn is not None:
        _reset_bn(cbam.spatial_bn)


def _reset_bn(bn: nn.BatchNorm2d) -> None:
    with torch.no_grad():
        nn.init.ones_(bn.weight)
        nn.init.zeros_(bn.bias)
        bn.running_mean.zero_()
        bn.running_var.fill_(1.0)
        bn.num_batches_tracked.zero_()


def _init_conv_or_dense_(layer: nn.Module, generator: Optional[torch.Generator]) -> None:
    # Glorot-uniform: U(+-sqrt(6 / (fan_in + fan_out))), fans counted as Keras does
    # (conv: kh*kw*in and kh*kw*out), which is torch's xavier_uniform_ with gain 1.
    nn.init.xavier_uniform_(layer.weight, generator=generator)
    if layer.bias is not None:
        nn.init.zeros_(layer.bias)


def glorot_head_(model: MeanSpot, head: str, generator: Optional[torch.Generator] = None) -> None:
    """A fresh Keras init of one head (conv, CBAM, Dense), as MEAN's new recognition head per fold (TRAINING.md 7)."""
    _check_generator(generator)
    if not isinstance(model, MeanSpot):
        raise InputTypeError(f"model must be a MeanSpot, got {type(model).__name__}")
    if head not in model.head_names:
        raise InputError(f"head must be one of the model's heads {model.head_names}, got {head!r}")
    h = model.heads[head]
    with torch.no_grad():
        # Keras builds the head's layers in this order: conv, [CBAM], Dense.
        _init_conv_or_dense_(h.conv, generator)
        if h.cbam is not None:
            _init_cbam_(h.cbam, generator)
        _init_conv_or_dense_(h.dense, generator)


def keras_init_(model: MeanSpot, generator: Optional[torch.Generator] = None) -> MeanSpot:
    """Re-initialise every weight of ``model`` as Keras does; return ``model``.

    Draw order (so a seed gives one init): branches u, v, os (conv, then the
    CBAM MLP Dense 1, Dense 2 and spatial conv), then each head (conv, CBAM,
    Dense). BN layers get gamma 1, beta 0, moving mean 0 and variance 1.
    """
    _check_generator(generator)
    if not isinstance(model, MeanSpot):
        raise InputTypeError(f"model must be a MeanSpot, got {type(model).__name__}")
    with torch.no_grad():
        for branch in model.branches.values():
            _init_conv_or_dense_(branch.conv, generator)
            _reset_bn(branch.bn)
            if branch.cbam is not None:
                _init_cbam_(branch.cbam, generator)
    for head in model.head_names:
        glorot_head_(model, head, generator)
    return model


#: How the moving variance takes the batch variance: "unbiased" (TF 2.4, MEAN) or "biased" (Keras 3).
MOVING_VARIANCE = ("unbiased", "biased")


class KerasBatchNorm2d(nn.BatchNorm2d):
    """``BatchNorm2d`` whose training-mode statistics are Keras-accurate (two-pass sums, not the fused kernel).

    Eval mode is torch's (moving statistics). In training mode the running
    statistics move as Keras's ``moving * 0.99 + batch * 0.01`` (torch's
    ``momentum`` is the 0.01); ``momentum == 0`` freezes them, which MEAN's
    frozen trunk needs during recognition training (TRAINING.md 7).
    Only :func:`keras_batchnorm` makes these, by switching the class of an
    existing module, so state dicts and the fused path see a plain BatchNorm2d.
    """

    moving_variance = "unbiased"

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training:
            return super().forward(x)
        n = x.numel() // x.shape[1]
        # Two passes (mean, then the mean of centred squares): as accurate as var_mean here and 5x faster.
        mean = x.mean(dim=(0, 2, 3))
        var = (x - mean[None, :, None, None]).square().mean(dim=(0, 2, 3))
        if self.momentum:
            with torch.no_grad():
                new_var = var * (n / (n - 1)) if self.moving_variance == "unbiased" and n > 1 else var
                keep = 1.0 - self.momentum
                self.running_mean.copy_(self.running_mean * keep + mean * self.momentum)
                self.running_var.copy_(self.running_var * keep + new_var * self.momentum)
                self.num_batches_tracked.add_(1)
        inv = torch.rsqrt(var + self.eps) * self.weight
        shift = self.bias - mean * inv
        return x * inv[None, :, None, None] + shift[None, :, None, None]


@contextlib.contextmanager
def keras_batchnorm(model: nn.Module, moving_variance: str = "unbiased") -> Iterator[nn.Module]:
    """Within the block, every ``nn.BatchNorm2d`` of ``model`` trains as :class:`KerasBatchNorm2d`."""
    if moving_variance not in MOVING_VARIANCE:
        raise InputError(f"moving_variance must be one of {MOVING_VARIANCE}, got {moving_variance!r}")
    swapped = []
    for m in model.modules():
        if type(m) is nn.BatchNorm2d:
            m.__class__ = KerasBatchNorm2d
            m.moving_variance = moving_variance
            swapped.append(m)
    try:
        yield model
    finally:
        for m in swapped:
            m.__class__ = nn.BatchNorm2d
            del m.moving_variance


def set_dropout(model: nn.Module, rate: Optional[float]) -> None:
    """Set every Dropout's rate (``None`` leaves them): the Keras ground truth uses rate 0 for a deterministic step."""
    if rate is None:
        return
    if not 0.0 <= rate < 1.0:
        raise InputError(f"dropout rate must be in [0, 1), got {rate}")
    for m in model.modules():
        if isinstance(m, nn.Dropout):
            m.p = float(rate)


def mse_loss(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Keras ``mse`` with SUM_OVER_BATCH_SIZE: mean of (pred - target)^2 over every element.

    ``pred`` (N, 1) is the linear spot output (no sigmoid); ``target`` (N,) or (N, 1) the 0/1 labels.
    """
    return (pred - target.reshape(pred.shape).to(pred.dtype)).square().mean()


def cce_loss(probs: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Keras 2.4 ``categorical_crossentropy`` on a softmax layer's output (TRAINING.md 10).

    p <- p / sum(p), clipped to [1e-7, 1 - 1e-7], loss = -sum(y log p) per
    sample, mean over the batch. ``probs`` and ``target`` are (N, C), target one-hot.
    """
    if probs.shape != target.shape:
        raise InputError(f"target must have the shape of the recog output {tuple(probs.shape)} (one-hot), "
                         f"got {tuple(target.shape)}")
    p = probs / probs.sum(dim=1, keepdim=True)
    p = p.clamp(CCE_CLIP, 1.0 - CCE_CLIP)
    return -(target.to(p.dtype) * p.log()).sum(dim=1).mean()


def l2_penalty(model: MeanSpot, heads: Optional[Iterable[str]] = None) -> torch.Tensor:
    """The L2 terms Keras adds to the loss: 1e-3 * sum(k^2) per branch conv kernel, 0.1 * sum(k^2) per head conv kernel.

    Only these kernels carry a regulariser in MEAN (TRAINING.md 5): not the
    biases, BN, Dense or CBAM layers. ``heads`` names the heads in the Keras
    model being trained (default: all of ``model``'s); a frozen branch conv's
    term is a constant, as in Keras, where frozen layers keep their losses.
    """
    heads = model.head_names if heads is None else tuple(heads)
    total = torch.zeros((), dtype=next(model.parameters()).dtype, device=next(model.parameters()).device)
    for branch in model.branches.values():
        total = total + BRANCH_L2 * branch.conv.weight.square().sum()
    for h in heads:
        total = total + HEAD_L2 * model.heads[h].conv.weight.square().sum()
    return total


@functools.lru_cache(maxsize=4096)
def _adam_alpha(lr: float, beta1: float, beta2: float, t: int) -> float:
    """lr * sqrt(1 - beta2^t) / (1 - beta1^t) in float32 arithmetic, as Keras computes it from float32 betas."""
    f = np.float32
    return float(f(lr) * np.sqrt(f(1.0) - f(beta2) ** f(t)) / (f(1.0) - f(beta1) ** f(t)))


class KerasAdam(torch.optim.Optimizer):
    """Adam as TF 2.4 (``ResourceApplyAdam``) and Keras 3 apply it (TRAINING.md 10).

    Per parameter, with t its step count after this step::

        m += (g - m) * (1 - beta1)          # Keras's incremental form
        v += (g * g - v) * (1 - beta2)
        p -= lr * sqrt(1 - beta2^t) / (1 - beta1^t) * m / (sqrt(v) + eps)

    eps is added to the UN-corrected sqrt(v) (torch.optim.Adam adds it to the
    bias-corrected one, which differs where sqrt(v) is small: up to 1e-3
    relative after three steps on the Keras cases). The powers beta^t are
    float32, as in Keras.

    ``initial_step``: the step count a parameter starts from when it gets its
    first update. Keras keeps ONE iteration count per optimizer, so a Keras
    optimizer reused for new variables (MEAN's ``adam_recog`` across folds,
    TRAINING.md 9a) gives them zero moments but continues t; pass the previous
    optimizer's :attr:`iterations` to reproduce that, 0 for a fresh optimizer.
    State (per-parameter ``step``, ``exp_avg``, ``exp_avg_sq``) round-trips
    through ``state_dict``/``load_state_dict``.
    """

    def __init__(self, params, lr: float = ADAM_LR, betas=ADAM_BETAS, eps: float = ADAM_EPS,
                 initial_step: int = 0):
        if not lr > 0.0:
            raise InputError(f"lr must be > 0, got {lr}")
        if len(betas) != 2 or not all(0.0 <= b < 1.0 for b in betas):
            raise InputError(f"betas must be two numbers in [0, 1), got {betas!r}")
        if not eps > 0.0:
            raise InputError(f"eps must be > 0, got {eps}")
        if int(initial_step) != initial_step or initial_step < 0:
            raise InputError(f"initial_step must be an integer >= 0, got {initial_step!r}")
        super().__init__(params, dict(lr=lr, betas=tuple(betas), eps=eps, initial_step=int(initial_step)))

    @property
    def iterations(self) -> int:
        """The largest step count of any parameter: Keras's ``optimizer.iterations`` when all step together."""
        steps = [int(s["step"]) for s in self.state.values() if "step" in s]
        return max(steps) if steps else max(g["initial_step"] for g in self.param_groups)

    @torch.no_grad()
    def step(self, closure=None):
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            beta1, beta2 = group["betas"]
            params, grads, ms, vs, alphas = [], [], [], [], []
            for p in group["params"]:
                if p.grad is None:
                    continue
                state = self.state[p]
                if not state:
                    # A Python int step keeps state_dict small and exact; the moments live with the parameter.
                    state["step"] = group["initial_step"]
                    state["exp_avg"] = torch.zeros_like(p, memory_format=torch.preserve_format)
                    state["exp_avg_sq"] = torch.zeros_like(p, memory_format=torch.preserve_format)
                state["step"] = int(state["step"]) + 1
                params.append(p)
                grads.append(p.grad)
                ms.append(state["exp_avg"])
                vs.append(state["exp_avg_sq"])
                alphas.append(-_adam_alpha(group["lr"], beta1, beta2, state["step"]))
            if not params:
                continue
            # One multi-tensor op per stage (the same element-wise arithmetic as a loop over parameters).
            # lerp_ is Keras's incremental form: m += (g - m) * (1 - beta1), v += (g^2 - v) * (1 - beta2).
            torch._foreach_lerp_(ms, grads, 1.0 - beta1)
            torch._foreach_lerp_(vs, torch._foreach_mul(grads, grads), 1.0 - beta2)
            denom = torch._foreach_sqrt(vs)
            torch._foreach_add_(denom, group["eps"])
            torch._foreach_addcdiv_(params, ms, denom, alphas)
        return loss


def head_output(model: MeanSpot, head: str, u: torch.Tensor, v: torch.Tensor, os: torch.Tensor) -> torch.Tensor:
    """The output of one head only (the trunk, then that head): the Keras model that has just this head."""
    check_inputs(u, v, os)
    merged = torch.cat([model.branches[name](x) for name, x in zip(BRANCH_NAMES, (u, v, os))], dim=1)
    return model.heads[head](merged)


def train_step(model: MeanSpot, optimizer: torch.optim.Optimizer, u: torch.Tensor, v: torch.Tensor,
               os: torch.Tensor, target: torch.Tensor, head: str = "spot") -> Dict[str, torch.Tensor]:
    """One Keras ``train_on_batch``: loss at the current weights, backward, one optimizer step.

    The model must be in the mode the caller wants (``train()`` for Keras
    training: batch-stat BN updating its moving statistics, dropout active).
    ``head`` picks the output and loss: ``"spot"`` MSE on (N,) / (N, 1) labels,
    ``"recog"`` clipped categorical cross-entropy on (N, C) one-hot labels.
    Only ``head``'s L2 term joins the branch terms (the Keras model trained has
    that one head). Returns detached ``loss`` (the total, what Keras reports),
    ``data`` (MSE or CCE) and ``l2``, all from before the step.
    """
    if head not in model.head_names:
        raise InputError(f"head must be one of the model's heads {model.head_names}, got {head!r}")
    optimizer.zero_grad(set_to_none=True)
    pred = head_output(model, head, u, v, os)
    data = mse_loss(pred, target) if head == "spot" else cce_loss(pred, target)
    l2 = l2_penalty(model, (head,))
    loss = data + l2
    loss.backward()
    optimizer.step()
    return dict(loss=loss.detach(), data=data.detach(), l2=l2.detach())
