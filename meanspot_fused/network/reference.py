"""Pure-PyTorch reference of MEAN-Spot with CBAM: the single source of truth.

Every fused path in this package is tested against these modules (run in
float64), and these modules are tested against outputs computed by real Keras.
The numerics follow ``shared/design/MODEL.md``:

* branch: Conv2d(1 -> F, 5x5, 'same') -> ReLU -> BatchNorm(eps=1e-3) ->
  [CBAM] -> MaxPool(3) -> Dropout(0.3); F = 3, 3, 8 for u, v, os.
* concat on channels in the order u, v, os -> 14 x 14 x 14.
* head (one per output): Conv2d(14 -> 8, 5x5, 'same') -> ReLU -> [CBAM] ->
  MaxPool(2) -> flatten in Keras (H, W, C) order -> Dropout(0.2) -> Dense.
"""
from __future__ import annotations

from typing import Sequence, Tuple, Union

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import InputError, InputTypeError

__all__ = ["CBAM", "MeanSpot", "PLACEMENTS", "HEADS", "INPUT_SIZE", "check_inputs"]

#: CBAM placements: where attention blocks sit in the network.
PLACEMENTS = ("all", "branches", "merged", "none")
#: Heads in their canonical order; ``heads`` is any non-empty subset.
HEADS = ("spot", "recog")
#: Spatial size of every input map.
INPUT_SIZE = 42
#: Filters of the u, v and os branch convolutions.
BRANCH_FILTERS = {"u": 3, "v": 3, "os": 8}
BRANCH_NAMES = ("u", "v", "os")
HEAD_FILTERS = 8
# Keras BatchNormalization defaults: epsilon 1e-3, momentum 0.99 (PyTorch's
# momentum is the weight of the new statistic, so 1 - 0.99).
KERAS_BN_EPS = 1e-3
KERAS_BN_MOMENTUM = 0.01


def check_inputs(u, v, os) -> None:
    """Validate the three input maps; raise ``ValueError``/``TypeError`` naming the argument."""
    ref = None
    for name, t in (("u", u), ("v", v), ("os", os)):
        if not isinstance(t, torch.Tensor):
            raise InputTypeError(f"{name} must be a torch.Tensor of shape (N, 1, 42, 42), got {type(t).__name__}")
        if not t.is_floating_point():
            raise InputTypeError(f"{name} must be a floating-point tensor, got dtype {t.dtype}")
        if t.dim() != 4 or tuple(t.shape[1:]) != (1, INPUT_SIZE, INPUT_SIZE):
            raise InputError(
                f"{name} must have shape (N, 1, {INPUT_SIZE}, {INPUT_SIZE}), got {tuple(t.shape)}")
        if ref is None:
            ref = (name, t)
        else:
            rname, r = ref
            if t.shape[0] != r.shape[0]:
                raise InputError(f"{name} has batch size {t.shape[0]} but {rname} has {r.shape[0]}")
            if t.dtype != r.dtype:
                raise InputTypeError(f"{name} has dtype {t.dtype} but {rname} has {r.dtype}")
            if t.device != r.device:
                raise InputError(f"{name} is on {t.device} but {rname} is on {r.device}")


class CBAM(nn.Module):
    """Convolutional Block Attention Module in the Keras ``cbam_block`` form.

    Channel gate: sigmoid(MLP(mean_hw x) + MLP(max_hw x)) with one shared MLP
    Dense(h, relu) -> Dense(C), both with bias, h = max(1, C // ratio).
    Spatial gate: sigmoid(conv7x7([mean_c x, max_c x])) (mean first, no bias).
    ``spatial_bn=True`` adds a BatchNorm after the spatial conv, as the official
    CBAM and timm do; the fused path folds it into a scale and shift.
    """

    def __init__(self, channels: int, ratio: int = 8, spatial_kernel: int = 7, spatial_bn: bool = False):
        super().__init__()
        if channels < 1:
            raise InputError(f"channels must be >= 1, got {channels}")
        if ratio < 1:
            raise InputError(f"ratio must be >= 1, got {ratio}")
        if spatial_kernel < 1 or spatial_kernel % 2 == 0:
            raise InputError(f"spatial_kernel must be a positive odd integer, got {spatial_kernel}")
        self.channels = channels
        self.hidden = max(1, channels // ratio)
        self.mlp1 = nn.Linear(channels, self.hidden)
        self.mlp2 = nn.Linear(self.hidden, channels)
        self.spatial = nn.Conv2d(2, 1, spatial_kernel, padding=spatial_kernel // 2, bias=False)
        self.spatial_bn = nn.BatchNorm2d(1, eps=KERAS_BN_EPS, momentum=KERAS_BN_MOMENTUM) if spatial_bn else None

    def _mlp(self, t: torch.Tensor) -> torch.Tensor:
        return self.mlp2(F.relu(self.mlp1(t)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        gate = torch.sigmoid(self._mlp(x.mean(dim=(2, 3))) + self._mlp(x.amax(dim=(2, 3))))
        x = x * gate[:, :, None, None]
        s = torch.cat([x.mean(dim=1, keepdim=True), x.amax(dim=1, keepdim=True)], dim=1)
        s = self.spatial(s)
        if self.spatial_bn is not None:
            s = self.spatial_bn(s)
        return x * torch.sigmoid(s)


class _Branch(nn.Module):
    def __init__(self, filters: int, cbam: bool, ratio: int, spatial_kernel: int, spatial_bn: bool):
        super().__init__()
        self.conv = nn.Conv2d(1, filters, 5, padding=2)
        # BN after the ReLU, with Keras's epsilon (PyTorch's 1e-5 is off by up
        # to 1.4 on the published weights).
        self.bn = nn.BatchNorm2d(filters, eps=KERAS_BN_EPS, momentum=KERAS_BN_MOMENTUM)
        self.cbam = CBAM(filters, ratio, spatial_kernel, spatial_bn) if cbam else None
        self.pool = nn.MaxPool2d(3)
        self.dropout = nn.Dropout(0.3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.bn(F.relu(self.conv(x)))
        if self.cbam is not None:
            x = self.cbam(x)
        return self.dropout(self.pool(x))


class _Head(nn.Module):
    def __init__(self, in_channels: int, outputs: int, softmax: bool, cbam: bool, ratio: int,
                 spatial_kernel: int, spatial_bn: bool):
        super().__init__()
        self.conv = nn.Conv2d(in_channels, HEAD_FILTERS, 5, padding=2)
        self.cbam = CBAM(HEAD_FILTERS, ratio, spatial_kernel, spatial_bn) if cbam else None
        self.pool = nn.MaxPool2d(2)
        self.dropout = nn.Dropout(0.2)
        pooled = INPUT_SIZE // 3 // 2
        self.dense = nn.Linear(pooled * pooled * HEAD_FILTERS, outputs)
        self.softmax = softmax

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu(self.conv(x))
        if self.cbam is not None:
            x = self.cbam(x)
        x = self.pool(x)
        # Keras flattens channels-last: (H, W, C) order.
        x = self.dropout(x.permute(0, 2, 3, 1).flatten(1))
        x = self.dense(x)
        return torch.softmax(x, dim=1) if self.softmax else x


class MeanSpot(nn.Module):
    """MEAN-Spot (and MEAN's recognition / spot-then-recognise heads) with CBAM.

    Args:
        cbam: placement of the CBAM blocks: ``"all"``, ``"branches"``,
            ``"merged"`` or ``"none"`` (the published MEAN).
        heads: non-empty subset of ``("spot", "recog")``; ``spot`` is Dense(1)
            linear, ``recog`` is Dense(recog_classes) softmax. Each head has its
            own conv (and CBAM when the placement includes ``merged``).
        recog_classes: classes of the recognition head.
        cbam_ratio: channel reduction ratio (hidden width max(1, C // ratio)).
        spatial_kernel: size of CBAM's spatial conv.
        cbam_spatial_bn: add a BatchNorm after CBAM's spatial conv (official CBAM).

    ``forward(u, v, os)`` takes three ``(N, 1, 42, 42)`` tensors and returns the
    spot tensor ``(N, 1)``, the recog probabilities ``(N, recog_classes)`` or the
    tuple ``(spot, recog)`` when both heads exist.
    """

    def __init__(self, cbam: str = "all", heads: Sequence[str] = ("spot",), recog_classes: int = 3,
                 cbam_ratio: int = 8, spatial_kernel: int = 7, cbam_spatial_bn: bool = False):
        super().__init__()
        if cbam not in PLACEMENTS:
            raise InputError(f"cbam must be one of {PLACEMENTS}, got {cbam!r}")
        if isinstance(heads, str):
            heads = (heads,)
        heads = tuple(heads)
        if not heads or any(h not in HEADS for h in heads) or len(set(heads)) != len(heads):
            raise InputError(f"heads must be a non-empty subset of {HEADS} without repeats, got {heads!r}")
        if recog_classes < 1:
            raise InputError(f"recog_classes must be >= 1, got {recog_classes}")
        self.cbam_placement = cbam
        self.head_names = tuple(h for h in HEADS if h in heads)
        self.recog_classes = recog_classes
        self.cbam_ratio = cbam_ratio
        self.spatial_kernel = spatial_kernel
        self.cbam_spatial_bn = cbam_spatial_bn
        in_branches = cbam in ("all", "branches")
        in_merged = cbam in ("all", "merged")
        self.branches = nn.ModuleDict({
            name: _Branch(BRANCH_FILTERS[name], in_branches, cbam_ratio, spatial_kernel, cbam_spatial_bn)
            for name in BRANCH_NAMES})
        merged_channels = sum(BRANCH_FILTERS.values())
        self.heads = nn.ModuleDict({
            name: _Head(merged_channels, 1 if name == "spot" else recog_classes, name == "recog", in_merged,
                        cbam_ratio, spatial_kernel, cbam_spatial_bn)
            for name in self.head_names})

    def config(self) -> dict:
        """Constructor arguments that rebuild this architecture."""
        return dict(cbam=self.cbam_placement, heads=self.head_names, recog_classes=self.recog_classes,
                    cbam_ratio=self.cbam_ratio, spatial_kernel=self.spatial_kernel,
                    cbam_spatial_bn=self.cbam_spatial_bn)

    def forward(self, u: torch.Tensor, v: torch.Tensor, os: torch.Tensor
                ) -> Union[torch.Tensor, Tuple[torch.Tensor, torch.Tensor]]:
        check_inputs(u, v, os)
        merged = torch.cat([self.branches[name](x) for name, x in zip(BRANCH_NAMES, (u, v, os))], dim=1)
        outs = tuple(self.heads[name](merged) for name in self.head_names)
        return outs[0] if len(outs) == 1 else outs
