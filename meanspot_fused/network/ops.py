"""Python entry points and fake (meta) kernels of the ``meanspot_fused`` ops.

Each function validates its arguments (naming the argument and what was
expected) and calls ``torch.ops.meanspot_fused.<op>``; the C++ kernels check
again, so calling the torch op directly is just as safe. The fake kernels give
shapes to ``torch.compile`` and ``torch.export`` without running anything.
"""
from __future__ import annotations

from typing import Optional, Tuple

import torch

from .. import _C  # noqa: F401  (import registers the ops with the dispatcher)
from ..errors import InputError, InputTypeError
from .reference import check_inputs

__all__ = ["conv_block", "channel_pool", "spatial_pool", "cbam", "meanspot_net"]

_ops = torch.ops.meanspot_fused


def _check_tensor(name: str, t, dim: int, shape_doc: str) -> None:
    if not isinstance(t, torch.Tensor):
        raise InputTypeError(f"{name} must be a torch.Tensor of shape {shape_doc}, got {type(t).__name__}")
    if t.dim() != dim:
        raise InputError(f"{name} must be a {dim}-D tensor of shape {shape_doc}, got shape {tuple(t.shape)}")
    if not t.is_floating_point():
        raise InputTypeError(f"{name} must be a floating-point tensor, got dtype {t.dtype}")


def _check_like(name: str, t: torch.Tensor, x: torch.Tensor) -> None:
    if t.dtype != x.dtype:
        raise InputTypeError(f"{name} must have the dtype of x ({x.dtype}), got {t.dtype}")
    if t.device != x.device:
        raise InputError(f"{name} must be on the device of x ({x.device}), got {t.device}")


def _check_shape(name: str, t: torch.Tensor, expected: tuple) -> None:
    if tuple(t.shape) != tuple(expected):
        raise InputError(f"{name} must have shape {tuple(expected)}, got {tuple(t.shape)}")


def _check_odd_square(name: str, t: torch.Tensor) -> None:
    if t.shape[-1] != t.shape[-2] or t.shape[-1] % 2 == 0:
        raise InputError(f"{name} must have a square odd kernel (K, K) for 'same' padding, got shape {tuple(t.shape)}")


def _check_pool(pool, x: torch.Tensor) -> None:
    if not isinstance(pool, int) or pool < 1:
        raise InputError(f"pool must be an int >= 1, got {pool!r}")
    if x.shape[2] % pool or x.shape[3] % pool:
        raise InputError(f"pool ({pool}) must divide the height and width of x, got {tuple(x.shape[2:])}")


def conv_block(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor, scale: Optional[torch.Tensor] = None,
               shift: Optional[torch.Tensor] = None, pool: int = 1) -> torch.Tensor:
    """``maxpool_pool(scale * relu(conv2d(x, weight, bias, padding='same')) + shift)`` in one pass.

    x: (N, Cin, H, W); weight: (Cout, Cin, K, K) with K odd; bias, scale, shift:
    (Cout,). ``scale``/``shift`` (both or neither) are a BatchNorm applied after
    the ReLU; ``pool`` is a max pool with kernel and stride ``pool`` (1: none).
    Returns (N, Cout, H / pool, W / pool).
    """
    _check_tensor("x", x, 4, "(N, Cin, H, W)")
    _check_tensor("weight", weight, 4, "(Cout, Cin, K, K)")
    _check_tensor("bias", bias, 1, "(Cout,)")
    for name, t in (("weight", weight), ("bias", bias)):
        _check_like(name, t, x)
    if (scale is None) != (shift is None):
        raise InputError("scale and shift must be given together (both or neither)")
    if scale is not None:
        _check_tensor("scale", scale, 1, "(Cout,)")
        _check_tensor("shift", shift, 1, "(Cout,)")
        _check_like("scale", scale, x)
        _check_like("shift", shift, x)
    if weight.shape[1] != x.shape[1]:
        raise InputError(f"weight must have {x.shape[1]} input channels to match x, got shape {tuple(weight.shape)}")
    _check_odd_square("weight", weight)
    _check_shape("bias", bias, (weight.shape[0],))
    if scale is not None:
        _check_shape("scale", scale, (weight.shape[0],))
        _check_shape("shift", shift, (weight.shape[0],))
    _check_pool(pool, x)
    return _ops.conv_block(x, weight, bias, scale, shift, pool)


def channel_pool(x: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
    """Mean and max over H x W of x (N, C, H, W), in one read: two (N, C) tensors."""
    _check_tensor("x", x, 4, "(N, C, H, W)")
    return _ops.channel_pool(x)


def spatial_pool(x: torch.Tensor) -> torch.Tensor:
    """Mean (channel 0) and max (channel 1) over channels of x (N, C, H, W): (N, 2, H, W)."""
    _check_tensor("x", x, 4, "(N, C, H, W)")
    return _ops.spatial_pool(x)


def cbam(x: torch.Tensor, mlp_w1: torch.Tensor, mlp_b1: torch.Tensor, mlp_w2: torch.Tensor, mlp_b2: torch.Tensor,
         spatial_weight: torch.Tensor, spatial_scale: float = 1.0, spatial_shift: float = 0.0,
         pool: int = 1) -> torch.Tensor:
    """The whole CBAM block (channel gate, then spatial gate), then an optional max pool.

    x: (N, C, H, W); mlp_w1: (hidden, C); mlp_b1: (hidden,); mlp_w2: (C, hidden);
    mlp_b2: (C,); spatial_weight: (1, 2, K, K), input channel 0 the channel mean
    and 1 the max. ``spatial_scale``/``spatial_shift`` are applied to the
    spatial conv before its sigmoid (a folded BatchNorm). Returns
    (N, C, H / pool, W / pool).
    """
    _check_tensor("x", x, 4, "(N, C, H, W)")
    _check_tensor("mlp_w1", mlp_w1, 2, "(hidden, C)")
    _check_tensor("mlp_b1", mlp_b1, 1, "(hidden,)")
    _check_tensor("mlp_w2", mlp_w2, 2, "(C, hidden)")
    _check_tensor("mlp_b2", mlp_b2, 1, "(C,)")
    _check_tensor("spatial_weight", spatial_weight, 4, "(1, 2, K, K)")
    for name, t in (("mlp_w1", mlp_w1), ("mlp_b1", mlp_b1), ("mlp_w2", mlp_w2), ("mlp_b2", mlp_b2),
                    ("spatial_weight", spatial_weight)):
        _check_like(name, t, x)
    c, hidden = x.shape[1], mlp_w1.shape[0]
    _check_shape("mlp_w1", mlp_w1, (hidden, c))
    _check_shape("mlp_b1", mlp_b1, (hidden,))
    _check_shape("mlp_w2", mlp_w2, (c, hidden))
    _check_shape("mlp_b2", mlp_b2, (c,))
    sw = tuple(spatial_weight.shape)
    if sw[:2] != (1, 2) or sw[2] != sw[3] or sw[2] % 2 == 0:
        # The C++ check's wording (csrc/ops/cbam.cpp).
        raise InputError(f"spatial_weight must have shape (1, 2, K, K) with K odd, got {sw}")
    _check_pool(pool, x)
    return _ops.cbam(x, mlp_w1, mlp_b1, mlp_w2, mlp_b2, spatial_weight, float(spatial_scale), float(spatial_shift),
                     pool)


def meanspot_net(u: torch.Tensor, v: torch.Tensor, os: torch.Tensor, params: torch.Tensor, config) -> torch.Tensor:
    """The whole MEAN-Spot network in one op; ``params``/``config`` come from ``fuse.pack_network``.

    u, v, os: (N, 1, 42, 42). Returns (N, outputs): the spot score (if that
    head exists) then the recog probabilities (if that head exists).
    """
    check_inputs(u, v, os)
    _check_tensor("params", params, 1, "(P,)")
    _check_like("params", params, u)
    config = [int(c) for c in config]
    if len(config) != 10:
        raise InputError(f"config must have 10 entries (see csrc/net_layout.h), got {len(config)}")
    return _ops.meanspot_net(u, v, os, params, config)


# Fake kernels: output metadata only, for torch.compile / torch.export tracing.
# Shape errors are left to the real kernels' checks, which run at call time.
@torch.library.register_fake("meanspot_fused::conv_block")
def _conv_block_fake(x, weight, bias, scale, shift, pool):
    torch._check(pool >= 1, lambda: f"pool must be >= 1, got {pool}")
    return x.new_empty((x.shape[0], weight.shape[0], x.shape[2] // pool, x.shape[3] // pool))


@torch.library.register_fake("meanspot_fused::channel_pool")
def _channel_pool_fake(x):
    return x.new_empty(x.shape[:2]), x.new_empty(x.shape[:2])


@torch.library.register_fake("meanspot_fused::spatial_pool")
def _spatial_pool_fake(x):
    return x.new_empty((x.shape[0], 2, x.shape[2], x.shape[3]))


@torch.library.register_fake("meanspot_fused::cbam")
def _cbam_fake(x, mlp_w1, mlp_b1, mlp_w2, mlp_b2, spatial_weight, spatial_scale, spatial_shift, pool):
    torch._check(pool >= 1, lambda: f"pool must be >= 1, got {pool}")
    return x.new_empty((x.shape[0], x.shape[1], x.shape[2] // pool, x.shape[3] // pool))


@torch.library.register_fake("meanspot_fused::meanspot_net")
def _meanspot_net_fake(u, v, os, params, config):
    return u.new_empty((u.shape[0], config[2] + config[3] * config[4]))
