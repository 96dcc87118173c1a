"""Batch inference over a file of MEAN features: the engine of ``meanspot-fused predict``.

* :func:`save_model` / :func:`load_model`: a PyTorch MeanSpot checkpoint
  (``{"config": ..., "state_dict": ...}``, read with ``weights_only=True``);
  :func:`load_model` also reads every Keras file :func:`~meanspot_fused.load_keras` does.
* :func:`open_features`: the ``u``, ``v``, ``os`` maps of an ``.npz`` (or a
  stacked ``.npy``), validated up front and read batch by batch, so memory stays
  bounded by the batch size whatever the number of samples.
* :func:`predict_file`: model file + features file -> scores file, written to a
  temporary file beside the output and moved into place only when complete.

Errors a user can fix (a bad file, array, option) raise :class:`PredictError`
(a ``ValueError``); the command reports them with exit code 2.
"""
from __future__ import annotations

import os
import sys
import tempfile
import time
import warnings
import zipfile
import zlib
from dataclasses import dataclass
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch

from .keras import load_keras
from .reference import BRANCH_NAMES, INPUT_SIZE, MeanSpot

__all__ = ["PredictError", "save_model", "load_model", "open_features", "Features", "predict_file", "DTYPES"]

#: ``--dtype`` choices.
DTYPES = {"float32": torch.float32, "float64": torch.float64, "float16": torch.float16,
          "bfloat16": torch.bfloat16}
_S = INPUT_SIZE


class PredictError(ValueError):
    """A model file, features file, array or option that prediction cannot use."""


# ----------------------------------------------------------------------------------------------
# Models
# ----------------------------------------------------------------------------------------------

def _temp_beside(path: str) -> str:
    """A new empty temporary file in ``path``'s folder (so ``os.replace`` stays on one file system)."""
    fd, tmp = tempfile.mkstemp(prefix=f".{os.path.basename(path)}.", suffix=".tmp",
                               dir=os.path.dirname(os.path.abspath(path)))
    os.close(fd)
    # mkstemp makes the file private (0600); give it the permissions a plain open() would.
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o666 & ~umask)
    return tmp


def _replace_atomically(path: str, write: Callable[[str], None]) -> None:
    """Call ``write(tmp)`` on a temporary file beside ``path``, then move it to ``path``."""
    tmp = _temp_beside(path)
    try:
        write(tmp)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise


def save_model(model: MeanSpot, path) -> None:
    """Save ``model`` as ``{"config": model.config(), "state_dict": model.state_dict()}`` (torch.save)."""
    if not isinstance(model, MeanSpot):
        raise TypeError(f"model must be a MeanSpot, got {type(model).__name__}")
    state = {k: v.detach().cpu() for k, v in model.state_dict().items()}
    _replace_atomically(os.fspath(path), lambda tmp: torch.save({"config": model.config(), "state_dict": state}, tmp))


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
    Raises :class:`PredictError` or :class:`~meanspot_fused.keras.KerasFormatError`
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
                           "'config' and 'state_dict', as written by meanspot_fused.predict.save_model)")
    try:
        model = MeanSpot(**ckpt["config"])
        model.load_state_dict(ckpt["state_dict"], strict=True)
    except (TypeError, ValueError, RuntimeError) as e:
        raise PredictError(f"{path}: the checkpoint does not fit MeanSpot({ckpt['config']}): {e}") from e
    return model.float().eval()


# ----------------------------------------------------------------------------------------------
# Features
# ----------------------------------------------------------------------------------------------

class _Array:
    """One array of a features file, read in consecutive row ranges."""

    def __init__(self, name: str, shape: Tuple[int, ...], dtype: np.dtype, read_rows: Callable[[int, int], np.ndarray]):
        self.name, self.shape, self.dtype = name, shape, dtype
        self.read_rows = read_rows


def _npy_stream(fp, name: str, source: str) -> _Array:
    """Stream an ``.npy`` from a binary file object: header now, rows on demand, in order.

    Used for ``.npz`` members (``np.load`` cannot memory-map them and would read
    the whole array) and for plain ``.npy`` files: sequential reads keep the
    resident memory at one batch, where a memory map would keep every page it
    touched resident (20 GB after 1M samples, measured).
    """
    try:
        version = np.lib.format.read_magic(fp)
        if version == (1, 0):
            shape, fortran, dtype = np.lib.format.read_array_header_1_0(fp)
        elif version == (2, 0):
            shape, fortran, dtype = np.lib.format.read_array_header_2_0(fp)
        else:
            shape, fortran, dtype = np.lib.format._read_array_header(fp, version)
    except (ValueError, OSError, EOFError, zipfile.BadZipFile, zlib.error) as e:
        raise PredictError(f"{source}: array {name!r} is not a readable .npy ({e})") from e
    if dtype.hasobject:
        raise PredictError(f"{source}: array {name!r} has dtype {dtype}, expected numbers")
    if fortran:  # rare; rows are not contiguous in the stream, so read it whole
        whole = np.lib.format.read_array(fp, allow_pickle=False)
        return _Array(name, tuple(shape), dtype, lambda a, b: whole[a:b])
    row_bytes = int(np.prod(shape[1:], dtype=np.int64)) * dtype.itemsize
    pos = [0]

    def read_rows(start: int, stop: int) -> np.ndarray:
        if start != pos[0]:
            raise RuntimeError(f"rows of {name!r} must be read in order (at {pos[0]}, asked {start})")
        buf = fp.read((stop - start) * row_bytes)
        if len(buf) != (stop - start) * row_bytes:
            raise PredictError(f"{source}: array {name!r} ends early (truncated file?)")
        pos[0] = stop
        return np.frombuffer(buf, dtype=dtype).reshape((stop - start,) + tuple(shape[1:]))
    return _Array(name, tuple(shape), dtype, read_rows)


@dataclass
class Features:
    """The inputs of a features file: N samples of u, v, os, read in consecutive batches.

    ``layout`` is ``"u/v/os"`` (three arrays) or ``"stacked"`` (one ``(N, 42, 42, 3)``
    or ``(N, 3, 42, 42)`` array, channels u, v, os).
    """

    path: str
    n: int
    layout: str
    arrays: List[_Array]
    _split: Callable[[List[np.ndarray]], Tuple[np.ndarray, np.ndarray, np.ndarray]]
    _close: Callable[[], None]

    def batch(self, start: int, stop: int) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Samples ``start:stop`` as three ``(k, 1, 42, 42)`` arrays in the file's dtype."""
        try:
            return self._split([a.read_rows(start, stop) for a in self.arrays])
        except (OSError, zipfile.BadZipFile, EOFError, zlib.error) as e:  # zip and deflate errors of a damaged file
            raise PredictError(f"{self.path}: cannot read samples {start}:{stop} ({e})") from e

    def close(self) -> None:
        self._close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def _check_dtype(a: _Array, source: str) -> None:
    if a.dtype.kind not in "fiu":
        raise PredictError(f"{source}: array {a.name!r} has dtype {a.dtype}, expected a real number type "
                           "(float or integer)")


def _map_shape(a: _Array, source: str) -> None:
    if a.shape[1:] not in ((1, _S, _S), (_S, _S, 1), (_S, _S)):
        raise PredictError(f"{source}: array {a.name!r} has shape {a.shape}, expected (N, 1, {_S}, {_S}) "
                           f"(NCHW), (N, {_S}, {_S}, 1) (NHWC) or (N, {_S}, {_S})")


def open_features(path) -> Features:
    """Open and validate a features file (see :class:`Features`); nothing but headers is read yet.

    ``.npz`` with arrays ``u``, ``v``, ``os`` (each NCHW ``(N, 1, 42, 42)`` or NHWC
    ``(N, 42, 42, 1)``), or with one array ``x`` (or a sole array) of MEAN's
    stacked ``(N, 42, 42, 3)`` (channels u, v, os; ``(N, 3, 42, 42)`` also
    accepted); or an ``.npy`` holding such a stacked array (read in batches).
    """
    path = os.fspath(path)
    if not os.path.exists(path):
        raise PredictError(f"features file {path!r} does not exist")
    if not os.path.isfile(path):
        raise PredictError(f"features file {path!r} is not a file")
    arrays: Dict[str, _Array] = {}
    close: Callable[[], None] = lambda: None  # noqa: E731
    if zipfile.is_zipfile(path):
        try:
            zf = zipfile.ZipFile(path)
            members = [m for m in zf.namelist() if m.endswith(".npy")]
            close = zf.close
            for m in members:
                arrays[m[:-4]] = _npy_stream(zf.open(m), m[:-4], path)
        except (zipfile.BadZipFile, OSError, EOFError, zlib.error) as e:
            close()
            raise PredictError(f"{path}: not a readable .npz ({e})") from e
        except PredictError:
            close()
            raise
    else:
        fp = open(path, "rb")
        close = fp.close
        try:
            arrays["x"] = _npy_stream(fp, "x", path)
        except PredictError as e:
            close()
            raise PredictError(f"{path}: neither an .npz nor an .npy file ({e})") from e
    try:
        return _features(path, arrays, close)
    except PredictError:
        close()
        raise


def _features(path: str, arrays: Dict[str, _Array], close) -> Features:
    keys = sorted(arrays)
    present = [k for k in BRANCH_NAMES if k in arrays]
    if len(present) == 3:
        chosen = [arrays[k] for k in BRANCH_NAMES]
        for a in chosen:
            _check_dtype(a, path)
            _map_shape(a, path)
        ns = {a.name: a.shape[0] for a in chosen}
        if len(set(ns.values())) != 1:
            raise PredictError(f"{path}: u, v and os must hold the same number of samples, got {ns}")

        def split(rows):  # (k, 1, 42, 42), (k, 42, 42, 1), (k, 42, 42): one channel, so a reshape
            return tuple(r.reshape(r.shape[0], 1, _S, _S) for r in rows)
        return Features(path, chosen[0].shape[0], "u/v/os", chosen, split, close)
    if present:
        missing = [k for k in BRANCH_NAMES if k not in arrays]
        raise PredictError(f"{path}: has {present} but not {missing}; expected arrays u, v and os, or one "
                           f"stacked array x")
    if "x" in arrays or len(arrays) == 1:
        a = arrays["x"] if "x" in arrays else arrays[keys[0]]
        _check_dtype(a, path)
        if a.shape[1:] == (_S, _S, 3):
            def split(rows):
                (r,) = rows
                return tuple(r[:, None, :, :, c] for c in range(3))
        elif a.shape[1:] == (3, _S, _S):
            def split(rows):
                (r,) = rows
                return tuple(r[:, c:c + 1] for c in range(3))
        else:
            raise PredictError(f"{path}: array {a.name!r} has shape {a.shape}, expected MEAN's stacked "
                               f"(N, {_S}, {_S}, 3) (channels u, v, os) or (N, 3, {_S}, {_S})")
        return Features(path, a.shape[0], "stacked", [a], split, close)
    raise PredictError(f"{path}: expected arrays u, v and os, or one stacked array x; found {keys or 'no arrays'}")


# ----------------------------------------------------------------------------------------------
# Output
# ----------------------------------------------------------------------------------------------

class _Scores:
    """Scores written row range by row range into temporary ``.npy`` files beside the output.

    ``commit`` moves the finished file into place (zipping the heads first for
    ``.npz``); ``abort`` removes every temporary file, so a failed run leaves
    nothing behind.
    """

    def __init__(self, path: str, widths: Dict[str, int], n: int, dtype: np.dtype):
        self.path = path
        self.tmps: List[str] = []
        self.arrays: Dict[str, np.memmap] = {}
        try:
            for head, width in widths.items():
                tmp = self._tmp()
                self.arrays[head] = np.lib.format.open_memmap(tmp, mode="w+", dtype=dtype, shape=(n, width))
        except BaseException:
            self.abort()
            raise

    def _tmp(self) -> str:
        self.tmps.append(_temp_beside(self.path))
        return self.tmps[-1]

    def write(self, start: int, stop: int, scores: Dict[str, np.ndarray]) -> None:
        for head, arr in self.arrays.items():
            arr[start:stop] = scores[head]

    def commit(self) -> None:
        heads = list(self.arrays)
        files = dict(zip(heads, self.tmps))
        for head in heads:
            self.arrays.pop(head).flush()  # flush and drop each memmap before its file moves
        if self.path.endswith(".npz"):
            final = self._tmp()
            with zipfile.ZipFile(final, "w", zipfile.ZIP_STORED, allowZip64=True) as zf:
                for head in heads:
                    zf.write(files[head], arcname=f"{head}.npy")
        else:
            final = files[heads[0]]
        os.replace(final, self.path)
        self.abort()  # the per-head temporaries of an .npz

    def abort(self) -> None:
        self.arrays.clear()
        for tmp in self.tmps:
            if os.path.exists(tmp):
                os.remove(tmp)
        self.tmps.clear()


# ----------------------------------------------------------------------------------------------
# Running
# ----------------------------------------------------------------------------------------------

class InferenceError(RuntimeError):
    """The model failed on valid inputs (e.g. a dtype the chosen path does not support)."""


def _device(device: str) -> torch.device:
    try:
        dev = torch.device(device)
    except (RuntimeError, ValueError) as e:
        raise PredictError(f"--device {device!r} is not a device ({e})") from e
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise PredictError(f"--device {device!r}: CUDA is not available in this PyTorch build or machine")
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

    Raises :class:`PredictError` / :class:`~meanspot_fused.keras.KerasFormatError`
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
