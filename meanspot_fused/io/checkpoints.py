"""PyTorch MeanSpot checkpoints, and the model loader that also reads Keras files.

* :func:`save_model`: ``{"config": model.config(), "state_dict": ...}`` written
  with ``torch.save``, atomically.
* :func:`load_model`: such a checkpoint (read with ``weights_only=True``, its zip
  CRCs checked), or any Keras file :func:`~meanspot_fused.load_keras` reads.
"""
from __future__ import annotations

import os
import zipfile
import zlib

import torch

from ..network.reference import MeanSpot
from ..errors import InputTypeError
from .atomic import replace_atomically
from .errors import PredictError
from .keras import load_keras

__all__ = ["save_model", "load_model"]


def save_model(model: MeanSpot, path) -> None:
    """Save ``model`` as ``{"config": model.config(), "state_dict": model.state_dict()}`` (torch.save)."""
    if not isinstance(model, MeanSpot):
        raise InputTypeError(f"model must be a MeanSpot, got {type(model).__name__}")
    state = {k: v.detach().cpu() for k, v in model.state_dict().items()}
    replace_atomically(os.fspath(path), lambda tmp: torch.save({"config": model.config(), "state_dict": state}, tmp))


def _is_torch_checkpoint(path: str) -> bool:
    # torch.save writes a zip holding '<archive>/data.pkl'; a .keras zip holds config.json instead.
    if not zipfile.is_zipfile(path):
        return False
    with zipfile.ZipFile(path) as zf:
        names = zf.namelist()
    return "config.json" not in names and any(n.endswith("data.pkl") for n in names)


def load_model(path, **keras_options) -> MeanSpot:
    """Load a MeanSpot (float32, eval mode) from a :func:`save_model` checkpoint or any Keras file.

    ``keras_options`` go to :func:`~meanspot_fused.load_keras` (e.g. ``heads=``).
    Raises :class:`~meanspot_fused.PredictError` or :class:`~meanspot_fused.KerasFormatError`
    (both ``ValueError``) naming what is wrong with the file.
    """
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise PredictError(f"model file {path!r} does not exist" if not os.path.exists(path)
                           else f"model file {path!r} is not a file")
    if not _is_torch_checkpoint(path):
        return load_keras(path, **keras_options)
    try:
        # torch.load does not check the zip's CRCs: a flipped byte in a tensor
        # would load as a silently wrong weight. testzip() reads every member.
        with zipfile.ZipFile(path) as zf:
            bad = zf.testzip()
        if bad is not None:
            raise PredictError(f"{path}: the PyTorch checkpoint is corrupted (CRC mismatch in {bad!r})")
    except (zipfile.BadZipFile, OSError, EOFError, zlib.error) as e:
        raise PredictError(f"{path}: the PyTorch checkpoint is corrupted ({e})") from e
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # torch reports unpickling and zip errors with many exception types
        raise PredictError(f"{path}: cannot read the PyTorch checkpoint ({e})") from e
    if not isinstance(ckpt, dict) or not isinstance(ckpt.get("config"), dict) or \
            not isinstance(ckpt.get("state_dict"), dict):
        raise PredictError(f"{path}: a PyTorch file but not a MeanSpot checkpoint (expected a dict with "
                           "'config' and 'state_dict', as written by meanspot_fused.save_model)")
    try:
        model = MeanSpot(**ckpt["config"])
        model.load_state_dict(ckpt["state_dict"], strict=True)
    except (TypeError, ValueError, RuntimeError) as e:
        raise PredictError(f"{path}: the checkpoint does not fit MeanSpot({ckpt['config']}): {e}") from e
    return model.float().eval()
