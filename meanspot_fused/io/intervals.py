"""Interval files: ground-truth annotations in, one video's spotted intervals out.

* :func:`read_annotations` (:class:`Annotations`, :class:`AnnotationError`):
  the ground-truth CSV of ``meanspot-fused evaluate``, ``video,onset,offset
  [,apex][,emotion][,subject]``.
* :func:`write_intervals_csv`: the ``intervals.csv`` of ``meanspot-fused
  spot``, ``onset,offset,apex,score[,emotion]``, written atomically.

Frame indices are 0-based, intervals inclusive, as in
:mod:`meanspot_fused.spotting`.
"""
from __future__ import annotations

import csv
import dataclasses
import os
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np

from ..errors import FileError
from ..spotting.intervals import _check_intervals
from .atomic import replace_atomically

__all__ = ["Annotations", "AnnotationError", "read_annotations", "write_intervals_csv"]


class AnnotationError(FileError):
    """A ground-truth CSV file that does not follow the documented format."""


@dataclasses.dataclass
class Annotations:
    """Ground truth read by :func:`read_annotations`, keyed by video name.

    ``intervals[video]``: int64 (M, 2) rows (onset, offset) in file order;
    ``apex`` / ``emotions``: per video, one entry per row, or None when the
    file has no such column.
    """
    intervals: Dict[str, np.ndarray]
    apex: Optional[Dict[str, np.ndarray]] = None
    emotions: Optional[Dict[str, List[str]]] = None


_REQUIRED = ("video", "onset", "offset")
_OPTIONAL = ("apex", "emotion", "subject")


def read_annotations(path) -> Annotations:
    """Read a ground-truth CSV: header ``video,onset,offset[,apex][,emotion]``.

    Columns may come in any order; names are matched case-insensitively after
    stripping spaces. onset/offset/apex are integer frame indices, 0-based
    like the score curve (the datasets number frames from 1; MEAN's
    load_label subtracts 1), with offset >= onset. An optional ``subject`` column
    (STRS-Metric's files) makes the key ``"<subject>/<video>"``, since video
    names repeat across subjects there. Any other column is an error, so that
    a misspelt name is not silently ignored.

    Raises :class:`AnnotationError` naming the file, line and column.
    """
    path = os.fspath(path)
    try:
        handle = open(path, newline="", encoding="utf-8-sig")
    except OSError as exc:
        raise AnnotationError(f"{path}: cannot open the annotation file ({exc.strerror})") from None
    with handle:
        reader = csv.reader(handle)
        try:
            header = next(reader)
        except StopIteration:
            raise AnnotationError(f"{path}: empty file; expected a header line "
                                  f"'video,onset,offset[,apex][,emotion]'") from None
        names = [h.strip().lower() for h in header]
        missing = [c for c in _REQUIRED if c not in names]
        if missing:
            raise AnnotationError(f"{path}, line 1: the header must name the columns video, onset, "
                                  f"offset; missing {', '.join(missing)} (header: {','.join(header)})")
        unknown = [h for h in names if h not in _REQUIRED + _OPTIONAL]
        if unknown:
            raise AnnotationError(f"{path}, line 1: unknown column(s) {', '.join(unknown)}; expected "
                                  f"video, onset, offset and optionally apex, emotion, subject")
        dup = sorted({h for h in names if names.count(h) > 1})
        if dup:
            raise AnnotationError(f"{path}, line 1: column(s) named twice: {', '.join(dup)}")
        col = {h: i for i, h in enumerate(names)}
        rows: Dict[str, List[Tuple[int, int, int, str]]] = {}
        for row in reader:
            line = reader.line_num
            if not row or all(not cell.strip() for cell in row):
                continue
            if len(row) != len(names):
                raise AnnotationError(f"{path}, line {line}: expected {len(names)} fields as in the "
                                      f"header, got {len(row)}")

            def integer(name: str) -> int:
                text = row[col[name]].strip()
                try:
                    return int(text)
                except ValueError:
                    raise AnnotationError(f"{path}, line {line}, column {name}: expected an integer "
                                          f"frame index, got {text!r}") from None

            video = row[col["video"]].strip()
            if not video:
                raise AnnotationError(f"{path}, line {line}, column video: empty video name")
            if "subject" in col:
                video = f"{row[col['subject']].strip()}/{video}"
            onset, offset = integer("onset"), integer("offset")
            if offset < onset:
                raise AnnotationError(f"{path}, line {line}, column offset: expected offset >= onset "
                                      f"({onset}), got {offset}")
            apex = integer("apex") if "apex" in col else -1
            emotion = row[col["emotion"]].strip() if "emotion" in col else ""
            rows.setdefault(video, []).append((onset, offset, apex, emotion))
    intervals = {v: np.array([r[:2] for r in rs], dtype=np.int64) for v, rs in rows.items()}
    apex = {v: np.array([r[2] for r in rs], dtype=np.int64) for v, rs in rows.items()} if "apex" in col else None
    emotions = {v: [r[3] for r in rs] for v, rs in rows.items()} if "emotion" in col else None
    return Annotations(intervals, apex, emotions)


def write_intervals_csv(path, intervals, scores, emotions: Optional[Sequence] = None) -> None:
    """Write one video's intervals as CSV: ``onset,offset,apex,score[,emotion]``.

    ``intervals``: (M, 3) rows (onset, offset, apex); ``scores``: M numbers
    (e.g. the smoothed score at each apex), written with full float
    precision (``repr``) so they read back bit-exactly; ``emotions``: M labels.
    The file is written to a temporary file in the same folder and moved into
    place with ``os.replace``, so a reader never sees a partial file.
    """
    path = os.fspath(path)
    iv = np.asarray(intervals)
    if iv.size == 0:
        iv = np.zeros((0, 3), dtype=np.int64)
    if iv.ndim != 2 or iv.shape[1] != 3:
        raise ValueError(f"intervals must have shape (M, 3) as rows (onset, offset, apex), got {iv.shape}")
    iv = _check_intervals(iv, "intervals")
    sc = np.asarray(scores, dtype=np.float64).reshape(-1)
    if sc.size != iv.shape[0]:
        raise ValueError(f"scores must have one value per interval ({iv.shape[0]}), got {sc.size}")
    if emotions is not None and len(emotions) != iv.shape[0]:
        raise ValueError(f"emotions must have one label per interval ({iv.shape[0]}), got {len(emotions)}")

    def write(tmp: str) -> None:
        with open(tmp, "w", newline="", encoding="utf-8") as handle:
            writer = csv.writer(handle, lineterminator="\n")
            writer.writerow(["onset", "offset", "apex", "score"] + (["emotion"] if emotions is not None else []))
            for i in range(iv.shape[0]):
                row = [int(iv[i, 0]), int(iv[i, 1]), int(iv[i, 2]), repr(float(sc[i]))]
                if emotions is not None:
                    row.append(str(emotions[i]))
                writer.writerow(row)
            handle.flush()
            os.fsync(handle.fileno())
    replace_atomically(path, write)
