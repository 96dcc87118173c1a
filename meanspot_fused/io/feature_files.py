"""Feature files in, score files out, with bounded memory whatever the number of samples.

* :func:`open_features` / :class:`Features`: the ``u``, ``v``, ``os`` maps of an
  ``.npz`` (or a stacked ``.npy``), validated up front and streamed batch by
  batch from the file (``.npy`` headers and rows read sequentially, no mmap).
* :class:`_Scores`: scores written batch by batch into temporary ``.npy`` files
  beside the output and moved into place (as ``.npy`` or ``.npz``) only when complete.

Unusable files and arrays raise :class:`~meanspot_fused.PredictError`.
"""
from __future__ import annotations

import os
import zipfile
import zlib
from dataclasses import dataclass
from typing import Callable, Dict, List, Tuple

import numpy as np

from ..network.reference import BRANCH_NAMES, INPUT_SIZE
from .atomic import temp_beside
from .errors import PredictError

__all__ = ["open_features", "Features"]

_S = INPUT_SIZE


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
# Scores
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
        self.tmps.append(temp_beside(self.path))
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
