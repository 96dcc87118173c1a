"""What a corpus run must do, and what it did: inputs, run keys, the skip rule, the manifest.

Plain functions, shared by every engine (serial, the local process pool):

* :func:`expand_inputs`: the videos of a directory, a glob or a list file;
* :func:`run_key`: what an output folder was made from (the settings and model
  that change the numbers, hashed, and the input's size and mtime); a folder
  whose ``summary.json`` holds the same key is up to date and skipped;
* :class:`Manifest`: ``manifest.jsonl`` in the output folder, one JSON line
  appended (and flushed to disk) per video as it finishes: status (done,
  skipped, failed), intervals, seconds, error, the key.
"""
from __future__ import annotations

import dataclasses
import datetime
import glob
import hashlib
import json
import os
from typing import Any, Dict, Iterable, List, Optional

import numpy as np

from ..errors import InputError

__all__ = ["VIDEO_EXTENSIONS", "LIST_EXTENSIONS", "expand_inputs", "settings_hash", "input_fingerprint", "run_key",
           "is_up_to_date", "plan", "failed_row", "Manifest", "MANIFEST"]

#: File endings taken as videos when a directory is expanded (case-insensitive); .npy stacks too.
VIDEO_EXTENSIONS = (".mp4", ".avi", ".mov", ".mkv", ".webm", ".m4v", ".mpg", ".mpeg", ".wmv", ".npy")
#: An input ending so is a list file: one video, frame folder or .npy stack per line (# comments).
LIST_EXTENSIONS = (".txt", ".list", ".lst")
#: The manifest's name in the output folder.
MANIFEST = "manifest.jsonl"

# SpotSettings fields that do not change any number written (speed and memory only).
_NOT_IN_KEY = ("batch_size", "chunk")


def _is_frame_folder(path: str) -> bool:
    from ..io.frames import IMAGE_EXTENSIONS
    return any(name.lower().endswith(IMAGE_EXTENSIONS) for name in os.listdir(path))


def expand_inputs(inputs: Iterable) -> List[str]:
    """The videos of ``inputs``, in order, each once.

    An input is a video file or ``.npy`` stack; a folder of images (one
    video); a folder of those (its videos, .npy stacks and image folders,
    sorted by name); a glob pattern (its matches, sorted); or a list file
    (``.txt``, ``.list``, ``.lst``: one input per line, relative to the file,
    ``#`` comments). Anything else raises :class:`InputError` naming it.
    """
    out: List[str] = []

    def add(path: str) -> None:
        if path not in out:
            out.append(path)

    def expand(item: str, where: str) -> None:
        if os.path.isdir(item):
            if _is_frame_folder(item):
                add(item)
                return
            found = [os.path.join(item, n) for n in sorted(os.listdir(item)) if not n.startswith(".")]
            videos = [p for p in found if (os.path.isfile(p) and p.lower().endswith(VIDEO_EXTENSIONS))
                      or (os.path.isdir(p) and _is_frame_folder(p))]
            if not videos:
                raise InputError(f"{where} {item!r}: a folder with no videos, .npy stacks or image folders in it")
            for p in videos:
                add(p)
        elif os.path.isfile(item) and item.lower().endswith(LIST_EXTENSIONS):
            base = os.path.dirname(item)
            with open(item, encoding="utf-8") as f:
                lines = [ln.strip() for ln in f if ln.strip() and not ln.lstrip().startswith("#")]
            if not lines:
                raise InputError(f"list file {item!r} names no input")
            for ln in lines:
                expand(ln if os.path.isabs(ln) else os.path.join(base, ln), f"list file {item!r}: line")
        elif os.path.exists(item):
            add(item)
        elif glob.has_magic(item):
            matches = sorted(glob.glob(item))
            if not matches:
                raise InputError(f"{where} {item!r}: the pattern matches nothing")
            for m in matches:
                expand(m, where)
        else:
            raise InputError(f"{where} {item!r}: no such file or folder")

    for item in inputs:
        expand(os.fspath(item), "input")
    return out


def _file_sha256(path: str) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def settings_hash(settings, model_path, dataset: Optional[str] = None) -> str:
    """sha256 of what decides the numbers written: the settings (not batch size or chunk), the model's bytes,
    the dataset preset and the package version."""
    from .. import __version__
    fields = {k: v for k, v in dataclasses.asdict(settings).items() if k not in _NOT_IN_KEY}
    if isinstance(fields.get("landmarks"), (str, os.PathLike)) and os.path.isfile(fields["landmarks"]):
        fields["landmarks"] = _file_sha256(os.fspath(fields["landmarks"]))
    elif fields.get("landmarks") is not None and not isinstance(fields["landmarks"], str):
        # An array (or nested list) of landmarks: its values, whatever their size (repr elides big arrays).
        lm = np.ascontiguousarray(fields["landmarks"])
        fields["landmarks"] = hashlib.sha256(f"{lm.dtype}{lm.shape}".encode() + lm.tobytes()).hexdigest()
    model = None if model_path is None else _file_sha256(os.fspath(model_path))  # None: a features-only run
    payload = dict(settings=fields, model=model, dataset=dataset, version=__version__)
    return hashlib.sha256(json.dumps(payload, sort_keys=True, default=str).encode()).hexdigest()


def input_fingerprint(path: str) -> Dict[str, int]:
    """Size and mtime (ns) of a file; for a folder, of its files (count, total size, newest mtime)."""
    if os.path.isdir(path):
        stats = [os.stat(os.path.join(path, n)) for n in sorted(os.listdir(path))
                 if os.path.isfile(os.path.join(path, n))]
        return dict(files=len(stats), size=sum(s.st_size for s in stats),
                    mtime_ns=max((s.st_mtime_ns for s in stats), default=0))
    st = os.stat(path)
    return dict(size=st.st_size, mtime_ns=st.st_mtime_ns)


def run_key(source, settings_digest: str) -> Dict[str, Any]:
    """What ``summary.json`` records of the run that wrote a video's folder."""
    return dict(settings=settings_digest, input=input_fingerprint(os.fspath(source)))


def is_up_to_date(folder: str, key: Dict[str, Any]) -> bool:
    """True when ``folder/summary.json`` exists and records ``key`` (same settings, model and input)."""
    try:
        with open(os.path.join(folder, "summary.json"), encoding="utf-8") as f:
            return json.load(f).get("run_key") == key
    except (OSError, ValueError):
        return False


def plan(sources, out_dir: str, digest: str, force: bool):
    """(videos to run, rows of the videos skipped because their folder is up to date), in input order."""
    from ..io.spot_outputs import video_name
    todo, skipped = [], []
    for src in map(os.fspath, sources):
        final = os.path.join(out_dir, video_name(src))
        if not force and is_up_to_date(final, run_key(src, digest)):
            skipped.append(dict(video=video_name(src), input=src, output=final, status="skipped"))
        else:
            todo.append(src)
    return todo, skipped


def failed_row(source, out_dir: str, error: str) -> Dict[str, Any]:
    """The result row of a video that failed outside spot_videos (its worker died, an engine error)."""
    from ..io.spot_outputs import video_name
    name = video_name(source)
    return dict(video=name, input=os.fspath(source), output=os.path.join(out_dir, name), status="failed", error=error)


class Manifest:
    """``out_dir/manifest.jsonl``: one line appended per finished video, flushed to disk at once."""

    def __init__(self, out_dir: str):
        self.out_dir = out_dir
        self.path = os.path.join(out_dir, MANIFEST)
        self._held: List[Dict[str, Any]] = []

    def add(self, row: Dict[str, Any]) -> None:
        """Append ``row`` once the output folder exists (made by the first video written); hold it until then,
        so that a run whose videos all fail leaves no folder behind."""
        self._held.append(row)
        if os.path.isdir(self.out_dir):
            for r in self._held:
                self.append(r)
            self._held.clear()

    def append(self, row: Dict[str, Any]) -> None:
        os.makedirs(os.path.dirname(self.path) or ".", exist_ok=True)
        line = json.dumps({**row, "time": datetime.datetime.now().isoformat(timespec="seconds")}, default=str)
        with open(self.path, "a", encoding="utf-8") as f:
            f.write(line + "\n")
            f.flush()
            os.fsync(f.fileno())

    def rows(self) -> List[Dict[str, Any]]:
        """Every line written so far (a torn last line, from a killed run, is left out)."""
        try:
            with open(self.path, encoding="utf-8") as f:
                lines = f.read().splitlines()
        except FileNotFoundError:
            return []
        out = []
        for ln in lines:
            try:
                out.append(json.loads(ln))
            except ValueError:
                continue
        return out
