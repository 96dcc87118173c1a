"""Batch inference over a file of MEAN features: the engine of ``meanspot-fused predict``.

:func:`predict_file`: model file + features file -> scores file. The model is
read by :func:`~meanspot_fused.io.checkpoints.load_model` (a PyTorch checkpoint
or a Keras file), the features streamed by
:func:`~meanspot_fused.io.feature_files.open_features` (memory bounded by the
batch size), and the scores written to a temporary file beside the output and
moved into place only when complete.

Errors a user can fix (a bad file, array, option) raise :class:`PredictError`
(a ``ValueError``); the command reports them with exit code 2. A model that
fails on valid inputs raises :class:`InferenceError` (exit code 1); an absent
device :class:`~meanspot_fused.errors.DeviceError` (exit code 4). All belong to
the package's error family (:mod:`meanspot_fused.errors`).
"""
from __future__ import annotations

import os
import sys
import time
import warnings
from typing import Callable, Optional, Sequence

import numpy as np
import torch

from .errors import ComputeError, DeviceError
from .io.checkpoints import load_model, save_model
from .io.errors import PredictError
from .io.feature_files import Features, _Scores, open_features
from .network.reference import BRANCH_NAMES, MeanSpot

# save_model and Features are re-exported: this module was their home.
__all__ = ["PredictError", "save_model", "load_model", "open_features", "Features", "predict_file", "DTYPES"]

#: ``--dtype`` choices.
DTYPES = {"float32": torch.float32, "float64": torch.float64, "float16": torch.float16,
          "bfloat16": torch.bfloat16}


class InferenceError(ComputeError):
    """The model failed on valid inputs (e.g. a dtype the chosen path does not support)."""


def _device(device: str) -> torch.device:
    try:
        dev = torch.device(device)
    except (RuntimeError, ValueError) as e:
        raise PredictError(f"--device {device!r} is not a device ({e})") from e
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise DeviceError(f"--device {device!r}: CUDA is not available in this PyTorch build or machine")
    if dev.type not in ("cpu", "cuda"):
        raise PredictError(f"--device {device!r}: expected cpu or cuda")
    return dev


def _build_net(model: MeanSpot, device: torch.device, dtype: torch.dtype, fuse: bool) -> torch.nn.Module:
    if not fuse:
        return model.to(device=device, dtype=dtype).eval()
    import meanspot_fused

    fuse_fn = getattr(meanspot_fused, "fuse", None)
    if not callable(fuse_fn):
        raise PredictError("the fused path (meanspot_fused.fuse) is not available; use --no-fuse for the reference")
    # Fuse the float32 model (BatchNorm folding happens in float64 from float32 weights),
    # then move the prepared buffers; folding from half-precision weights would lose accuracy.
    return fuse_fn(model).to(device=device, dtype=dtype).eval()


def predict_file(model_path, input_path, output_path, *, device: str = "cpu", batch_size: int = 1024,
                 dtype: str = "float32", fuse: bool = True, heads: Optional[Sequence[str]] = None,
                 progress: bool = True, keras_options: Optional[dict] = None,
                 warn: Optional[Callable[[str], None]] = None) -> dict:
    """Score every sample of ``input_path`` with the model in ``model_path``; write ``output_path``.

    ``output_path`` ends in ``.npy`` (one head) or ``.npz`` (arrays named after the
    heads). ``heads`` selects heads to write (default: all of the model's).
    ``warn`` receives warnings (non-finite inputs); by default they go to
    :func:`warnings.warn`. Scores are float64 for ``dtype="float64"`` and float32 otherwise. Returns a
    summary dict (samples, heads, seconds, ...).

    Raises :class:`PredictError` / :class:`~meanspot_fused.KerasFormatError`
    for unusable files, arrays or options (checked before anything is computed),
    :class:`InferenceError` when the model itself fails. The output file appears
    only when complete.
    """
    output_path = os.fspath(output_path)
    if dtype not in DTYPES:
        raise PredictError(f"--dtype {dtype!r}: expected one of {', '.join(DTYPES)}")
    if not isinstance(batch_size, int) or batch_size < 1:
        raise PredictError(f"--batch-size must be a positive integer, got {batch_size!r}")
    if not output_path.endswith((".npy", ".npz")):
        raise PredictError(f"--output {output_path!r}: expected a .npy or .npz file name")
    folder = os.path.dirname(os.path.abspath(output_path))
    if not os.path.isdir(folder):
        raise PredictError(f"--output {output_path!r}: folder {folder!r} does not exist")
    if os.path.isdir(output_path):
        raise PredictError(f"--output {output_path!r} is a directory")
    dev = _device(device)
    torch_dtype = DTYPES[dtype]

    model = load_model(model_path, **(keras_options or {}))
    chosen = tuple(model.head_names if heads is None else heads)
    for h in chosen:
        if h not in model.head_names:
            raise PredictError(f"--head {h!r}: the model has heads {', '.join(model.head_names)}")
    if output_path.endswith(".npy") and len(chosen) != 1:
        raise PredictError(f"--output {output_path!r}: a .npy holds one array but the model has heads "
                           f"{', '.join(chosen)}; write an .npz or choose one with --head")
    widths = {h: (1 if h == "spot" else model.recog_classes) for h in chosen}
    # Scores (and inputs on their way to the device) in float64 for float64, else float32.
    out_dtype = in_dtype = np.float64 if torch_dtype == torch.float64 else np.float32

    with open_features(input_path) as feats:
        net = _build_net(model, dev, torch_dtype, fuse)
        scores = _Scores(output_path, widths, feats.n, out_dtype)
        t0 = time.perf_counter()
        warned = False
        try:
            from tqdm import tqdm
            with tqdm(total=feats.n, unit="sample", file=sys.stderr, disable=not progress,
                      dynamic_ncols=True, desc="predict") as bar, torch.inference_mode():
                for start in range(0, feats.n, batch_size):
                    stop = min(start + batch_size, feats.n)
                    maps = feats.batch(start, stop)
                    if not warned:
                        warned = _warn_non_finite(maps, start, feats.path, warn or _warn)
                    # np.array copies: the rows may be read-only views of the file's buffer.
                    xs = [torch.from_numpy(np.array(m, dtype=in_dtype, order="C")).to(dev, torch_dtype)
                          for m in maps]
                    try:
                        out = net(*xs)
                    except (RuntimeError, NotImplementedError, TypeError) as e:
                        hint = "" if not fuse else " (the fused path; --no-fuse runs the reference)"
                        raise InferenceError(f"inference failed on samples {start}:{stop} with {dtype} on "
                                             f"{dev}{hint}: {e}") from e
                    out = out if isinstance(out, tuple) else (out,)
                    by_head = dict(zip(model.head_names, out))
                    scores.write(start, stop, {h: by_head[h].to(torch.float64 if out_dtype == np.float64
                                                                else torch.float32).cpu().numpy()
                                               for h in chosen})
                    bar.update(stop - start)
            scores.commit()
        except BaseException:
            scores.abort()
            raise
    return {"samples": feats.n, "heads": chosen, "output": output_path, "layout": feats.layout,
            "seconds": time.perf_counter() - t0, "device": str(dev), "dtype": dtype, "fused": fuse}


def _warn(msg: str) -> None:
    warnings.warn(msg, RuntimeWarning, stacklevel=3)


def _warn_non_finite(maps, start: int, source: str, warn: Callable[[str], None]) -> bool:
    """Warn (once) about NaN or infinite inputs, naming the first such sample; True when it warned."""
    first, names = None, []
    for name, m in zip(BRANCH_NAMES, maps):
        if m.dtype.kind == "f":
            bad = ~np.isfinite(m.reshape(m.shape[0], -1)).all(axis=1)
            if bad.any():
                i = int(np.argmax(bad))
                if first is None or i < first:
                    first, names = i, [name]
                elif i == first:
                    names.append(name)
    if first is None:
        return False
    warn(f"{source}: NaN or infinite values in {' and '.join(names)} (first in sample {start + first}); "
         "the scores of such samples are not meaningful")
    return True
