"""Python entry point and fake kernel of ``meanspot_fused::mean_roi_features``.

The wrapper checks its arguments (naming the argument and what was expected)
and calls the torch op; the C++ kernels check again, so calling
``torch.ops.meanspot_fused.mean_roi_features`` directly is just as safe. The
fake kernel gives the output's shape to ``torch.compile`` and ``torch.export``.
"""
from __future__ import annotations

import torch

from .. import _C  # noqa: F401  (import registers the ops with the dispatcher)
from ..errors import InputError, InputTypeError
# The TV-L1 op's wrapper and fake kernel live beside the solver's documentation
# (flow.py); the stage's ops are all reachable from here.
from .flow import tvl1_flow

__all__ = ["tvl1_flow", "mean_roi_features", "check_boxes", "OUT_SIZE"]

#: Side of the (3, OUT_SIZE, OUT_SIZE) features of one pair.
OUT_SIZE = 42


def check_boxes(boxes: torch.Tensor, height: int, width: int, name: str = "boxes") -> None:
    """Raise ``ValueError`` unless every box [top, bottom, left, right) is non-empty and inside H x W.

    Reads the values: free for CPU boxes, a synchronisation for boxes on a GPU.
    """
    top, bottom, left, right = boxes.unbind(-1)
    bad = (top < 0) | (bottom <= top) | (bottom > height) | (left < 0) | (right <= left) | (right > width)
    if bool(bad.any()):
        idx = tuple(int(i) for i in bad.nonzero()[0])
        raise InputError(
            f"{name}{list(idx)} = [top, bottom, left, right] = {boxes[idx].tolist()} must satisfy "
            f"0 <= top < bottom <= {height} and 0 <= left < right <= {width} (a non-empty box inside the map)")


def mean_roi_features(flow: torch.Tensor, boxes: torch.Tensor) -> torch.Tensor:
    """MEAN's features of each pair from its flow and ROI boxes, in one op.

    flow: (N, 2, H, W) float32 (x then y displacement; any strides).
    boxes: (N, 2, 4) int64 on the CPU or on flow's device: per pair the eyes
    and the mouth box as [top, bottom, left, right) (see
    :func:`meanspot_fused.features.mean.mean_rois`). Returns (N, 3, 42, 42)
    float32 on flow's device: channels (u, v, os) of MEAN's ``preProcess``
    after its TV-L1 step, rows 0-20 the eyes, 21-41 the mouth.

    A bad box is an error naming it on both devices. CPU boxes are checked
    without touching the device, also for a CUDA flow (the op copies them
    without waiting): pass CPU boxes, as the feature stage does, to avoid a
    synchronisation per batch. Boxes on the GPU are read back to be checked
    (one synchronisation), except while a CUDA graph is captured, when the
    kernel writes NaN for a pair with a bad box instead.
    """
    if not isinstance(flow, torch.Tensor):
        raise InputTypeError(f"flow must be a torch.Tensor of shape (N, 2, H, W), got {type(flow).__name__}")
    if not isinstance(boxes, torch.Tensor):
        raise InputTypeError(f"boxes must be a torch.Tensor of shape (N, 2, 4), got {type(boxes).__name__}")
    if flow.dim() != 4 or flow.shape[1] != 2 or flow.shape[2] < 1 or flow.shape[3] < 1:
        raise InputError(f"flow must have shape (N, 2, H, W) with H, W >= 1, got {tuple(flow.shape)}")
    if flow.dtype != torch.float32:
        raise InputTypeError(f"flow must be float32, got {flow.dtype}")
    if boxes.dim() != 3 or tuple(boxes.shape) != (flow.shape[0], 2, 4):
        raise InputError(f"boxes must have shape (N, 2, 4) with N = {flow.shape[0]} (flow's batch), "
                         f"got {tuple(boxes.shape)}")
    if boxes.dtype != torch.int64:
        raise InputTypeError(f"boxes must be int64, got {boxes.dtype}")
    if boxes.device != flow.device and boxes.device.type != "cpu":
        raise InputError(f"boxes must be on flow's device ({flow.device}) or on the CPU, got {boxes.device}")
    capturing = boxes.is_cuda and torch.cuda.is_current_stream_capturing()
    if not torch.compiler.is_compiling() and not capturing and boxes.numel():
        check_boxes(boxes, flow.shape[2], flow.shape[3])
    return torch.ops.meanspot_fused.mean_roi_features(flow, boxes)


@torch.library.register_fake("meanspot_fused::mean_roi_features")
def _mean_roi_features_fake(flow, boxes):
    return flow.new_empty((flow.shape[0], 3, OUT_SIZE, OUT_SIZE))
