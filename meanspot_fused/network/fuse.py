"""``fuse(model)``: a drop-in module that runs a :class:`MeanSpot` through the fused ops.

All parameter preparation happens once, here: BatchNorms are folded to
per-channel scale/shift (Keras epsilon taken from the module), the Dense
weights are permuted from Keras's (H, W, C) flatten order to the NCHW order the
ops produce, and everything is stored as buffers so that ``.to(device)``,
``.half()`` and ``state_dict`` work as on any module.
"""
from __future__ import annotations

from typing import List, Tuple, Union

import torch
from torch import nn

from ..errors import InputError, InputTypeError
from . import ops  # noqa: F401  (loads the ops and registers their fake kernels)
from .reference import BRANCH_NAMES, CBAM, MeanSpot, _Branch, _Head, check_inputs

__all__ = ["fuse", "FusedMeanSpot", "fold_batchnorm"]

_ops = torch.ops.meanspot_fused
#: ``network``: the whole network in one op (one parallel region on CPU);
#: ``ops``: one op per block (conv block, CBAM), concatenation and Dense in torch.
MODES = ("network", "ops")
#: Largest batch the per-op path runs at once (its activations are about
#: 60 KB per sample in float32); larger batches run in chunks of this size.
OPS_CHUNK = 16384


def fold_batchnorm(bn: nn.BatchNorm2d) -> Tuple[torch.Tensor, torch.Tensor]:
    """Inference BatchNorm as ``scale * x + shift``, computed in float64.

    scale = gamma / sqrt(running_var + eps), shift = beta - running_mean * scale
    (eps added before the square root, as Keras and PyTorch both do).
    """
    if bn.running_mean is None or bn.running_var is None:
        raise InputError("fuse: a BatchNorm without running statistics (track_running_stats=False) cannot be folded")
    var = bn.running_var.detach().double()
    mean = bn.running_mean.detach().double()
    gamma = bn.weight.detach().double() if bn.weight is not None else torch.ones_like(var)
    beta = bn.bias.detach().double() if bn.bias is not None else torch.zeros_like(var)
    scale = gamma / torch.sqrt(var + bn.eps)
    return scale, beta - mean * scale


def _spatial_affine(cbam: CBAM) -> Tuple[torch.Tensor, torch.Tensor]:
    """The (1,) float64 scale and shift applied before CBAM's spatial sigmoid.

    A BatchNorm after the spatial conv (official CBAM, timm) folds into them;
    without one they are 1 and 0.
    """
    if cbam.spatial_bn is not None:
        return fold_batchnorm(cbam.spatial_bn)
    return torch.ones(1, dtype=torch.float64), torch.zeros(1, dtype=torch.float64)


def _dense_weight_nchw(head: _Head) -> torch.Tensor:
    """The head's Dense weight with its input permuted from Keras's (H, W, C) flatten order to NCHW.

    Column c*HW + h*W + w of the result is column (h*W + w)*C + c of the Dense weight.
    """
    dense = head.dense.weight.detach()
    channels = head.conv.out_channels
    side = int(round((dense.shape[1] // channels) ** 0.5))
    return dense.reshape(dense.shape[0], side, side, channels).permute(0, 3, 1, 2).reshape(dense.shape[0], -1)


class _CbamParams(nn.Module):
    """Buffers of one CBAM block in the layout of ``meanspot_fused::cbam``."""

    def __init__(self, cbam: CBAM):
        super().__init__()
        self.register_buffer("mlp_w1", cbam.mlp1.weight.detach().clone())
        self.register_buffer("mlp_b1", cbam.mlp1.bias.detach().clone())
        self.register_buffer("mlp_w2", cbam.mlp2.weight.detach().clone())
        self.register_buffer("mlp_b2", cbam.mlp2.bias.detach().clone())
        self.register_buffer("spatial_weight", cbam.spatial.weight.detach().clone())
        scale, shift = _spatial_affine(cbam)
        self.spatial_scale, self.spatial_shift = float(scale[0]), float(shift[0])

    def forward(self, x: torch.Tensor, pool: int) -> torch.Tensor:
        return _ops.cbam(x, self.mlp_w1, self.mlp_b1, self.mlp_w2, self.mlp_b2, self.spatial_weight,
                         self.spatial_scale, self.spatial_shift, pool)


class _FusedBranch(nn.Module):
    def __init__(self, branch: _Branch, dtype: torch.dtype):
        super().__init__()
        scale, shift = fold_batchnorm(branch.bn)
        self.register_buffer("weight", branch.conv.weight.detach().clone())
        self.register_buffer("bias", branch.conv.bias.detach().clone())
        self.register_buffer("scale", scale.to(dtype))
        self.register_buffer("shift", shift.to(dtype))
        self.pool = branch.pool.kernel_size
        self.cbam = _CbamParams(branch.cbam) if branch.cbam is not None else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.cbam is None:
            return _ops.conv_block(x, self.weight, self.bias, self.scale, self.shift, self.pool)
        return self.cbam(_ops.conv_block(x, self.weight, self.bias, self.scale, self.shift, 1), self.pool)


class _FusedHead(nn.Module):
    def __init__(self, head: _Head):
        super().__init__()
        self.register_buffer("weight", head.conv.weight.detach().clone())
        self.register_buffer("bias", head.conv.bias.detach().clone())
        self.pool = head.pool.kernel_size
        self.cbam = _CbamParams(head.cbam) if head.cbam is not None else None
        # Keras flattens (H, W, C); the ops produce NCHW: permute once here.
        self.register_buffer("dense_weight", _dense_weight_nchw(head).clone())
        self.register_buffer("dense_bias", head.dense.bias.detach().clone())
        self.softmax = head.softmax

    def forward(self, merged: torch.Tensor) -> torch.Tensor:
        if self.cbam is None:
            x = _ops.conv_block(merged, self.weight, self.bias, None, None, self.pool)
        else:
            x = self.cbam(_ops.conv_block(merged, self.weight, self.bias, None, None, 1), self.pool)
        x = torch.addmm(self.dense_bias, x.flatten(1), self.dense_weight.t())
        return torch.softmax(x, dim=1) if self.softmax else x


def _pack_cbam(cbam: CBAM) -> List[torch.Tensor]:
    return [cbam.mlp1.weight, cbam.mlp1.bias, cbam.mlp2.weight, cbam.mlp2.bias, cbam.spatial.weight,
            *_spatial_affine(cbam)]


def pack_network(model: MeanSpot, dtype: torch.dtype) -> Tuple[torch.Tensor, List[int]]:
    """Parameters of ``model`` as the packed vector and config of ``meanspot_fused::meanspot_net``.

    The order is the one csrc/net_layout.h documents (the C++ side checks the
    total size against the config).
    """
    in_branches = model.branches["u"].cbam is not None
    in_merged = model.heads[model.head_names[0]].cbam is not None
    hidden = [model.branches[n].cbam.hidden if in_branches else 1 for n in BRANCH_NAMES]
    head_hidden = model.heads[model.head_names[0]].cbam.hidden if in_merged else 1
    config = [int(in_branches), int(in_merged), int("spot" in model.head_names), int("recog" in model.head_names),
              model.recog_classes, *hidden, head_hidden, model.spatial_kernel]
    parts: List[torch.Tensor] = []
    for name in BRANCH_NAMES:
        branch = model.branches[name]
        scale, shift = fold_batchnorm(branch.bn)
        parts += [branch.conv.weight, branch.conv.bias, scale, shift]
        if in_branches:
            parts += _pack_cbam(branch.cbam)
    for name in model.head_names:
        head = model.heads[name]
        parts += [head.conv.weight, head.conv.bias]
        if in_merged:
            parts += _pack_cbam(head.cbam)
        parts += [_dense_weight_nchw(head), head.dense.bias]
    packed = torch.cat([p.detach().reshape(-1).to(torch.float64) for p in parts]).to(dtype)
    return packed, config


class FusedMeanSpot(nn.Module):
    """A :class:`MeanSpot` computed through the fused ops; build it with :func:`fuse`.

    Same forward signature and outputs as the model it was made from. Inference
    only: it has buffers, no parameters.
    """

    def __init__(self, model: MeanSpot, mode: str = "network"):
        super().__init__()
        _check_fusable(model)
        if mode not in MODES:
            raise InputError(f"fuse: mode must be one of {MODES}, got {mode!r}")
        dtype = model.branches["u"].conv.weight.dtype
        self.mode = mode
        self.config = model.config()
        self.head_names = model.head_names
        self.branches = nn.ModuleDict({n: _FusedBranch(model.branches[n], dtype) for n in BRANCH_NAMES})
        self.heads = nn.ModuleDict({n: _FusedHead(model.heads[n]) for n in model.head_names})
        # The per-op buffers above stay even in network mode: they are the
        # fallback on a device whose build has no whole-network kernel.
        packed, self.net_config = pack_network(model, dtype)
        self.register_buffer("packed", packed)
        self.head_sizes = [1 if n == "spot" else model.recog_classes for n in model.head_names]

    def _check_params(self, u: torch.Tensor) -> None:
        ref = self.branches["u"].weight
        if u.dtype != ref.dtype:
            raise InputTypeError(f"u, v, os have dtype {u.dtype} but the fused model is {ref.dtype}; "
                            f"convert the inputs or call .to({u.dtype}) on the model")
        if u.device != ref.device:
            raise InputError(f"u, v, os are on {u.device} but the fused model is on {ref.device}; "
                             f"move the inputs or call .to('{u.device}') on the model")

    def forward(self, u: torch.Tensor, v: torch.Tensor, os: torch.Tensor
                ) -> Union[torch.Tensor, Tuple[torch.Tensor, torch.Tensor]]:
        check_inputs(u, v, os)
        self._check_params(u)
        if self.mode == "network":
            out = _ops.meanspot_net(u, v, os, self.packed, self.net_config)
            if len(self.head_sizes) == 1:
                return out
            return tuple(torch.split(out, self.head_sizes, dim=1))
        n = u.shape[0]
        # A symbolic batch (torch.export / dynamic compile) is never chunked:
        # branching on it would constrain the exported batch range.
        if isinstance(n, int) and n > OPS_CHUNK:
            # The per-op path materializes (N, 8, 42, 42) activations: bound
            # them by running big batches in chunks (same per-sample results).
            parts = [self._forward_ops(u[i:i + OPS_CHUNK], v[i:i + OPS_CHUNK], os[i:i + OPS_CHUNK])
                     for i in range(0, n, OPS_CHUNK)]
            outs = tuple(torch.cat(p, dim=0) for p in zip(*parts))
        else:
            outs = self._forward_ops(u, v, os)
        return outs[0] if len(outs) == 1 else outs

    def _forward_ops(self, u: torch.Tensor, v: torch.Tensor, os: torch.Tensor) -> Tuple[torch.Tensor, ...]:
        merged = torch.cat([self.branches[name](x) for name, x in zip(BRANCH_NAMES, (u, v, os))], dim=1)
        return tuple(self.heads[name](merged) for name in self.head_names)

    def extra_repr(self) -> str:
        return f"mode={self.mode!r}, config={self.config}"


def _check_fusable(model) -> None:
    if not isinstance(model, MeanSpot):
        raise InputTypeError(f"fuse: model must be a meanspot_fused.MeanSpot, got {type(model).__name__}")
    if model.training:
        raise InputError("fuse: model is in training mode; call model.eval() first "
                         "(BatchNorm statistics and Dropout are only fixed in eval mode)")
    problems: List[str] = []
    for name in BRANCH_NAMES:
        b = model.branches[name] if name in model.branches else None
        if not isinstance(b, _Branch) or not isinstance(b.conv, nn.Conv2d) or not isinstance(b.bn, nn.BatchNorm2d) \
                or not isinstance(b.pool, nn.MaxPool2d):
            problems.append(f"branches.{name} is not a MeanSpot branch (conv, bn, pool)")
    for name in model.head_names:
        h = model.heads[name] if name in model.heads else None
        if not isinstance(h, _Head) or not isinstance(h.conv, nn.Conv2d) or not isinstance(h.dense, nn.Linear):
            problems.append(f"heads.{name} is not a MeanSpot head (conv, dense)")
    if problems:
        raise InputError("fuse: unsupported model structure: " + "; ".join(problems))
    dtypes = {p.dtype for p in model.parameters()}
    devices = {p.device for p in model.parameters()}
    if len(dtypes) != 1 or len(devices) != 1:
        raise InputError(f"fuse: all parameters must share one dtype and device, got {dtypes} on {devices}")


def fuse(model: MeanSpot, mode: str = "network") -> FusedMeanSpot:
    """Return a module with ``model``'s forward signature and outputs, computed by the fused ops.

    ``model`` must be an eval-mode :class:`MeanSpot` (any CBAM placement, any
    heads, float32 or float64); it is not modified. The result follows later
    ``.to(device/dtype)`` calls like any module. ``mode="network"`` (default)
    runs the whole network as one op where the build has that kernel for the
    input's device, else the per-op path; ``mode="ops"`` always runs per op.
    """
    with torch.no_grad():
        return FusedMeanSpot(model, mode=mode).eval()
