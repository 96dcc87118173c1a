"""Annotation rows and MEAN's filtering rules (TRAINING.md sections 1 and 3).

The training annotation CSV (:func:`read_training_csv`) has one row per
annotated expression and the header (any column order, names matched
case-insensitively)::

    subject,video,onset,apex,offset,type,emotion

* ``subject``: the subject id as the feature folders name it (CAS(ME)^2
  ``s15``, SAMM-LV ``006``, CASME II ``1``); subjects are ordered the way
  ``natsort.natsorted`` orders them (:func:`natural_key`), which is MEAN's
  fold order.
* ``video``: the video name within its subject (CAS(ME)^2 ``0101``, SAMM-LV
  ``006_1``, CASME II ``02_01f``); videos are ordered by :func:`natural_key`
  within a subject.
* ``onset``, ``apex``, ``offset``: frame NUMBERS as the datasets write them,
  1-based; ``offset`` 0 means "no offset annotated" (MEAN then uses the apex).
  An ``apex`` that is not an integer (CASME II has one ``/``) is kept as
  None and handled by the rules below.
* ``type``: ``micro-expression`` (kept) or anything else (dropped, e.g.
  ``macro-expression``); ``emotion``: the dataset's emotion word.

:func:`apply_mean_rules` turns rows into :class:`GroundTruth` with MEAN's
load_label rules (L:30-66): type filter, the per-dataset emotion list and
mapping, frames to 0-based ``[onset-1, apex-1, offset-1]``, ``offset == 0``
=> apex, rows with onset 0 dropped outside CASME II, the two CASME II
exclusions, and videos left without an expression removed. Every frame
index in :class:`GroundTruth` is 0-based and every interval inclusive.

:func:`read_casme_sq_xlsx` and :func:`read_samm_lv_xlsx` read the datasets'
own spreadsheets (pandas and openpyxl, imported lazily).
"""
from __future__ import annotations

import csv
import dataclasses
import os
import re
from typing import Dict, Iterable, List, Mapping, Optional, Sequence, Tuple

import numpy as np

from ..errors import FileError, InputError, require
from ..spotting.intervals import DATASET_K

__all__ = ["DATASETS", "CSV_COLUMNS", "AnnotationRow", "Expression", "Video", "GroundTruth", "natural_key",
           "read_training_csv", "rows_from_records", "apply_mean_rules", "mean_emotion",
           "read_casme_sq_xlsx", "read_samm_lv_xlsx", "samm_lv_rows_from_frames", "smic_rows_from_frame",
           "read_smic_xlsx"]

#: The datasets MEAN knows (its ``dataset_name``), with the same spelling.
DATASETS = tuple(DATASET_K)

CSV_COLUMNS = ("subject", "video", "onset", "apex", "offset", "type", "emotion")

# MEAN's emotion words (L:3-17). A row is kept only if its lower-cased emotion
# is in the dataset's list; the mapping then gives the emotion stored with the
# interval (CAS(ME)^2 and CASME II keep the word itself).
_EMOTION_LIST = ('repression', 'anger', 'contempt', 'disgust', 'fear', 'sadness', 'negative', 'happiness',
                 'positive', 'surprise', 'others', 'other')
_CASME2_EMOTIONS = ('disgust', 'happiness', 'others', 'surprise', 'repression')


def _check_dataset(dataset: str) -> str:
    if dataset not in DATASETS:
        raise InputError(f"dataset must be one of {', '.join(DATASETS)} (MEAN's names), got {dataset!r}")
    return dataset


def mean_emotion(dataset: str, emotion: str) -> Tuple[bool, Optional[str]]:
    """(passes MEAN's emotion check, emotion MEAN stores or None) for one raw emotion word.

    L:3-17,36-47: the check is ``emotion.lower() in emotion_list``.
    CAS(ME)^2 and CASME II store the lower-cased word. SAMM-LV maps anger,
    contempt, disgust, fear, sadness to negative, happiness to positive,
    surprise to surprise and other to others; SMIC maps negative, positive,
    surprise to themselves. A word that passes the check but has no mapping
    (e.g. SAMM-LV 'repression') stores nothing: MEAN then keeps the interval
    without an emotion (bug 9g, see :func:`apply_mean_rules`).
    """
    _check_dataset(dataset)
    word = str(emotion).lower()
    allowed = _CASME2_EMOTIONS if dataset == "CASME2" else _EMOTION_LIST
    if word not in allowed:
        return False, None
    if dataset in ("CASME2", "CASME_sq"):
        return True, word
    negative, positive, others = ['negative'], ['happiness'], []
    if dataset == "SAMMLV":
        negative, others = ['anger', 'contempt', 'disgust', 'fear', 'sadness'], ['other']
    else:
        positive = ['positive']
    for words, mapped in ((negative, 'negative'), (positive, 'positive'), (['surprise'], 'surprise'),
                          (others, 'others')):
        if word in words:
            return True, mapped
    return True, None


def natural_key(text: str) -> tuple:
    """Sort key of ``natsort.natsorted``'s default order: digit runs compare as integers.

    ``re.split`` on digit runs puts text at even and integers at odd positions
    (a leading digit gives an empty first text), so keys of any two strings
    compare chunk by chunk without mixing types, as natsort's do.
    """
    parts = re.split(r"(\d+)", str(text))
    return tuple(int(p) if i % 2 else p for i, p in enumerate(parts))


@dataclasses.dataclass(frozen=True)
class AnnotationRow:
    """One annotation row as the dataset writes it: 1-based frame numbers.

    ``apex`` is None where the file holds no integer there. ``source`` and
    ``line`` (file and 1-based line or spreadsheet row) name the row in errors.
    """
    subject: str
    video: str
    onset: int
    apex: Optional[int]
    offset: int
    type: str
    emotion: str
    source: str = "<rows>"
    line: int = 0

    def where(self) -> str:
        return f"{self.source}, row {self.line} (subject {self.subject}, video {self.video})"


@dataclasses.dataclass(frozen=True)
class Expression:
    """One kept expression: 0-based frames of its video, ``[onset, offset]`` inclusive, ``apex`` as annotated.

    ``emotion`` is the emotion MEAN pairs with it (None when MEAN has none,
    see bug 9g in :func:`apply_mean_rules`). ``row`` is the row it came from.
    """
    onset: int
    apex: int
    offset: int
    emotion: Optional[str]
    row: Optional[AnnotationRow] = None


@dataclasses.dataclass(frozen=True)
class Video:
    """A video with at least one kept expression; its expressions in annotation row order, as MEAN keeps them."""
    subject: str
    name: str
    expressions: Tuple[Expression, ...]

    @property
    def key(self) -> str:
        """``"<subject>/<video>"``, unique in a dataset."""
        return f"{self.subject}/{self.name}"

    def intervals(self) -> np.ndarray:
        """int64 (M, 3) rows ``(onset, apex, offset)``, 0-based inclusive (MEAN's ``final_samples``)."""
        return np.array([(e.onset, e.apex, e.offset) for e in self.expressions], dtype=np.int64).reshape(-1, 3)


@dataclasses.dataclass(frozen=True)
class GroundTruth:
    """A dataset's ground truth after MEAN's rules, in MEAN's order.

    ``videos``: subjects in natsort order, each subject's videos in natsort
    order (MEAN's ``final_videos`` flattened); ``subjects``: the subjects that
    keep at least one video, in the same order (MEAN's ``final_subjects``:
    fold ``f`` tests ``subjects[f]``).
    """
    dataset: str
    videos: Tuple[Video, ...]

    @property
    def subjects(self) -> List[str]:
        return list(dict.fromkeys(v.subject for v in self.videos))

    def subject_videos(self, subject: str) -> List[Video]:
        return [v for v in self.videos if v.subject == subject]

    def expressions(self, exclude_subject: Optional[str] = None) -> List[Expression]:
        """Every kept expression in MEAN's order, optionally without one subject's."""
        return [e for v in self.videos if v.subject != exclude_subject for e in v.expressions]


# --------------------------------------------------------------------------------------------
# Readers
# --------------------------------------------------------------------------------------------

def _frame_number(text, where: str, column: str, allow_text: bool = False) -> Optional[int]:
    """An integer frame number from a cell; None for a non-integer apex (``allow_text``)."""
    value = str(text).strip()
    try:
        number = float(value)
    except ValueError:
        number = float("nan")
    if np.isfinite(number) and number == int(number):
        return int(number)
    if allow_text:
        return None
    raise FileError(f"{where}, column {column}: expected an integer frame number (1-based), got {value!r}")


def rows_from_records(records: Iterable[Mapping], source: str = "<rows>", first_line: int = 1
                      ) -> List[AnnotationRow]:
    """:class:`AnnotationRow` from mappings with the :data:`CSV_COLUMNS` keys.

    Row ``i`` of ``records`` is reported as line ``first_line + i`` of ``source``.
    """
    rows = []
    for i, rec in enumerate(records):
        line = first_line + i
        where = f"{source}, row {line}"
        missing = [c for c in CSV_COLUMNS if c not in rec]
        if missing:
            raise FileError(f"{where}: missing column(s) {', '.join(missing)}; expected {', '.join(CSV_COLUMNS)}")
        subject, video = str(rec["subject"]).strip(), str(rec["video"]).strip()
        if not subject or not video:
            raise FileError(f"{where}: empty subject or video name")
        rows.append(AnnotationRow(subject, video, _frame_number(rec["onset"], where, "onset"),
                                  _frame_number(rec["apex"], where, "apex", allow_text=True),
                                  _frame_number(rec["offset"], where, "offset"),
                                  str(rec["type"]).strip(), str(rec["emotion"]).strip(), source, line))
    return rows


def read_training_csv(path) -> List[AnnotationRow]:
    """Read the training annotation CSV (format in the module docstring) into rows.

    Raises :class:`~meanspot_fused.errors.FileError` naming the file, line and
    column for a missing file, a bad header (missing, unknown or repeated
    columns) or a cell that is not an integer frame number.
    """
    path = os.fspath(path)
    try:
        handle = open(path, newline="", encoding="utf-8-sig")
    except OSError as exc:
        raise FileError(f"{path}: cannot open the annotation file ({exc.strerror})") from None
    with handle:
        reader = csv.reader(handle)
        header = next(reader, None)
        if header is None:
            raise FileError(f"{path}: empty file; expected the header {','.join(CSV_COLUMNS)}")
        names = [h.strip().lower() for h in header]
        missing = [c for c in CSV_COLUMNS if c not in names]
        unknown = [h for h in names if h not in CSV_COLUMNS]
        repeated = sorted({h for h in names if names.count(h) > 1})
        if missing or unknown or repeated:
            raise FileError(f"{path}, line 1: the header must name each of {','.join(CSV_COLUMNS)} once; "
                            f"missing: {missing or 'none'}, unknown: {unknown or 'none'}, "
                            f"repeated: {repeated or 'none'}")
        records, lines = [], []
        for row in reader:
            if not row or all(not cell.strip() for cell in row):
                continue
            if len(row) != len(names):
                raise FileError(f"{path}, line {reader.line_num}: expected {len(names)} fields as in the "
                                f"header, got {len(row)}")
            records.append(dict(zip(names, row)))
            lines.append(reader.line_num)
    rows = []
    for rec, line in zip(records, lines):
        rows.extend(rows_from_records([rec], path, line))
    return rows


def _pandas(purpose: str):
    pd = require("pandas", 'pip install "meanspot_fused[train]"', purpose)
    require("openpyxl", 'pip install "meanspot_fused[train]"', purpose)
    return pd


def read_casme_sq_xlsx(path) -> List[AnnotationRow]:
    """Rows of CAS(ME)^2's ``code_final.xlsx``, as MEAN's load_excel reads it (X:6-20).

    Sheet 0 holds the rows with the columns subject, video, onset, apex,
    offset, au, emotion, type, selfReport (no header); sheet 1 maps the
    subject number (column 2) to the folder name (column 1, ``s15``); sheet 2
    maps the video name (column 1) to its 4-digit code (column 0). The video
    name is the part of the video column before ``_``.
    """
    path = os.fspath(path)
    pd = _pandas("reading CAS(ME)^2's code_final.xlsx")
    try:
        book = pd.ExcelFile(path)
        columns = ['subject', 'video', 'onset', 'apex', 'offset', 'au', 'emotion', 'type', 'selfReport']
        codes = pd.read_excel(book, sheet_name=book.sheet_names[0], header=None, names=columns)
        subject_names = pd.read_excel(book, sheet_name=book.sheet_names[1], header=None)
        video_names = pd.read_excel(book, sheet_name=book.sheet_names[2], header=None, converters={0: str})
    except (OSError, ValueError, IndexError) as exc:
        raise FileError(f"{path}: cannot read CAS(ME)^2's code_final.xlsx (three sheets expected): {exc}") from None
    subject_of = dict(zip(subject_names.iloc[:, 2], subject_names.iloc[:, 1]))
    video_of = dict(zip(video_names.iloc[:, 1], video_names.iloc[:, 0]))
    records = []
    for i, rec in enumerate(codes.to_dict("records")):
        name = str(rec["video"]).split('_')[0]
        if rec["subject"] not in subject_of or name not in video_of:
            raise FileError(f"{path}, sheet {book.sheet_names[0]!r} row {i + 1}: subject {rec['subject']!r} or "
                            f"video {name!r} is not in the naming sheets")
        records.append(dict(rec, subject=subject_of[rec["subject"]], video=video_of[name]))
    return rows_from_records(records, path)


def samm_lv_rows_from_frames(long_videos, micro_codes, source: str = "<SAMM-LV>") -> List[AnnotationRow]:
    """Rows of SAMM-LV from its two sheets as DataFrames, as MEAN's load_excel merges them (X:24-41).

    ``long_videos``: SAMM_LongVideos_V2_Release's rows, columns Subject,
    Filename, Inducement Code, Onset, Apex, Offset, Duration, Type, Action
    Units, Notes; ``micro_codes``: SAMM_20181215_Micro_FACS_Codes_v2's rows
    with at least Filename, Type and Emotion. They are inner-merged on
    (Filename, Type), which gives the long-video rows an emotion; the
    subject is the Filename before the first ``_``, the video the first two
    ``_`` parts, and type 'Micro - 1/2' becomes 'micro-expression'.
    """
    micro = micro_codes[['Filename', 'Type', 'Emotion']].copy()
    micro['Filename'] = micro['Filename'].astype('object')
    merged = long_videos.merge(micro, on=['Filename', 'Type'])
    records = []
    for rec in merged.to_dict("records"):
        parts = str(rec['Filename']).split('_')
        if len(parts) < 2:
            raise FileError(f"{source}: Filename {rec['Filename']!r} is not '<subject>_<video>_...'")
        records.append({"subject": parts[0], "video": parts[0] + '_' + parts[1], "onset": rec['Onset'],
                        "apex": rec['Apex'], "offset": rec['Offset'],
                        "type": 'micro-expression' if rec['Type'] == 'Micro - 1/2' else rec['Type'],
                        "emotion": rec['Emotion']})
    return rows_from_records(records, source)


def read_samm_lv_xlsx(long_videos_path, micro_codes_path) -> List[AnnotationRow]:
    """Rows of SAMM-LV from ``SAMM_LongVideos_V2_Release.xlsx`` and ``SAMM_20181215_Micro_FACS_Codes_v2.xlsx``.

    As MEAN reads them (X:24-31): the first sheet of each, the long-video
    sheet without its first 10 rows, the micro sheet without its first; then
    :func:`samm_lv_rows_from_frames`.
    """
    pd = _pandas("reading SAMM-LV's spreadsheets")
    long_cols = ['Subject', 'Filename', 'Inducement Code', 'Onset', 'Apex', 'Offset', 'Duration', 'Type',
                 'Action Units', 'Notes']
    micro_cols = ['Subject', 'Filename', 'Inducement Code', 'Onset', 'Apex', 'Offset', 'Duration', 'Type',
                  'Action Units', 'Emotion', 'Classes', 'Notes']
    frames = []
    for path, cols, skip in ((long_videos_path, long_cols, list(range(10))), (micro_codes_path, micro_cols, [0])):
        path = os.fspath(path)
        try:
            book = pd.ExcelFile(path)
            frames.append(pd.read_excel(book, sheet_name=book.sheet_names[0], header=None, names=cols,
                                        skiprows=skip))
        except (OSError, ValueError, IndexError) as exc:
            raise FileError(f"{path}: cannot read the SAMM spreadsheet: {exc}") from None
    return samm_lv_rows_from_frames(frames[0], frames[1], os.fspath(long_videos_path))


def smic_rows_from_frame(frame, first_frame_fix: bool = False, source: str = "<SMIC>") -> List[AnnotationRow]:
    """Rows of a SMIC-E long-video annotation sheet as a DataFrame, as MEAN's load_excel reads it (X:64-91).

    Columns Subject, Filename, OnsetF, OffsetF, Emotion, FirstF; only the
    first 157 rows (MEAN drops the notes below the table that way). Subject
    ``n`` becomes ``s0n``, the video the 2nd and 3rd ``_`` parts of Filename;
    there is no apex (0, as MEAN: it computes SMIC's apex from the features).
    Bug 9h: MEAN stores ``OnsetF - FirstF`` and later subtracts 1 again as
    if it were 1-based, so every interval starts one frame early and an
    expression starting on the clip's first frame gets onset 0 and is
    dropped. ``first_frame_fix=True`` stores ``OnsetF - FirstF + 1`` (and
    the same for the offset), the 1-based number of the frame in its clip.
    """
    shift = 1 if first_frame_fix else 0
    records = []
    for rec in frame.iloc[:157].to_dict("records"):
        parts = str(rec['Filename']).split('_')
        if len(parts) < 3:
            raise FileError(f"{source}: Filename {rec['Filename']!r} is not '<subject>_<emotion>_<n>'")
        records.append({"subject": 's' + str(rec['Subject']).zfill(2), "video": parts[1] + '_' + parts[2],
                        "onset": rec['OnsetF'] - rec['FirstF'] + shift, "apex": 0,
                        "offset": rec['OffsetF'] - rec['FirstF'] + shift, "type": 'micro-expression',
                        "emotion": rec['Emotion']})
    return rows_from_records(records, source)


def read_smic_xlsx(path, first_frame_fix: bool = False) -> List[AnnotationRow]:
    """Rows of ``SMIC-<HS|VIS|NIR>-E_annotation.xlsx`` (first sheet, with a header): :func:`smic_rows_from_frame`."""
    path = os.fspath(path)
    pd = _pandas("reading SMIC-E's annotation spreadsheet")
    try:
        frame = pd.read_excel(path, sheet_name=0)
    except (OSError, ValueError, IndexError) as exc:
        raise FileError(f"{path}: cannot read the SMIC-E annotation spreadsheet: {exc}") from None
    return smic_rows_from_frame(frame, first_frame_fix, path)


# --------------------------------------------------------------------------------------------
# MEAN's rules
# --------------------------------------------------------------------------------------------

def _mean_interval(dataset: str, row: AnnotationRow) -> Optional[Tuple[int, int, int]]:
    """MEAN's 0-based ``[onset, apex, offset]`` of a row that passed the emotion check, or None if dropped."""
    if row.offset == 0:  # L:48-49: no offset annotated, use the apex
        if row.apex is None:
            raise InputError(f"{row.where()}: offset is 0 (take the apex) but the apex is not an integer")
        return row.onset - 1, row.apex - 1, row.apex - 1
    if dataset == "CASME2":  # L:51-54: a '/' apex and one sample with a wrong index are dropped
        if row.apex is None or (row.onset - 1, row.apex - 1, row.offset - 1) == (65, 110, 110):
            return None
        return row.onset - 1, row.apex - 1, row.offset - 1
    if row.onset == 0:  # L:55-56: onset 0 marks rows to ignore outside CASME II
        return None
    if row.apex is None:
        raise InputError(f"{row.where()}: expected an integer apex frame number")
    return row.onset - 1, row.apex - 1, row.offset - 1


def apply_mean_rules(dataset: str, rows: Sequence[AnnotationRow],
                     frame_counts: Optional[Mapping[str, int]] = None, *,
                     emotion_pairing: str = "mean") -> GroundTruth:
    """MEAN's load_label (L:30-66): the expressions MEAN trains and tests on.

    Per video, in row order: keep ``type == 'micro-expression'`` rows whose
    emotion passes :func:`mean_emotion`; their interval becomes 0-based
    ``[onset-1, apex-1, offset-1]`` (offset 0 => apex); outside CASME II a row
    with onset 0 is dropped, in CASME II a non-integer apex and the sample
    ``[65, 110, 110]``. Videos without a kept interval or emotion are removed.
    Subjects and videos are ordered by :func:`natural_key`.

    Bug 9g: MEAN appends the emotion BEFORE the interval checks, to a
    separate list, and pairs the two lists by position later. A dropped
    interval (or a SAMM-LV word without mapping) shifts every later emotion
    of that video onto the wrong interval. ``emotion_pairing="mean"``
    (default) pairs by position as MEAN does (extra emotions are ignored,
    missing ones are None: MEAN crashes when it needs one); ``"row"`` keeps
    each interval's own emotion (the fix).

    ``frame_counts``: optional ``{"<subject>/<video>": n_frames}``; then every
    kept interval must lie in ``[0, n_frames - 1]`` and every kept video must
    be listed. Any row with ``onset > offset`` (after offset 0 => apex) is an
    error. Errors are :class:`~meanspot_fused.errors.InputError` naming the
    file and row.
    """
    _check_dataset(dataset)
    if emotion_pairing not in ("mean", "row"):
        raise InputError(f"emotion_pairing must be 'mean' (MEAN's positional pairing, bug 9g) or 'row' "
                         f"(each interval keeps its own emotion), got {emotion_pairing!r}")
    by_video: Dict[Tuple[str, str], List[AnnotationRow]] = {}
    for row in rows:
        by_video.setdefault((row.subject, row.video), []).append(row)
    videos = []
    for (subject, name) in sorted(by_video, key=lambda sv: (natural_key(sv[0]), natural_key(sv[1]))):
        emotions, kept = [], []
        for row in by_video[(subject, name)]:
            if row.type != 'micro-expression':
                continue
            passes, emotion = mean_emotion(dataset, row.emotion)
            if not passes:
                continue
            if emotion is not None:
                emotions.append(emotion)
            interval = _mean_interval(dataset, row)
            if interval is None:
                continue
            if interval[0] > interval[2]:
                raise InputError(f"{row.where()}: onset {row.onset} is after offset "
                                 f"{row.offset if row.offset else row.apex} (frame numbers, 1-based)")
            kept.append((interval, emotion, row))
        if not emotions or not kept:  # L:59: such videos are removed from training and testing
            continue
        key = f"{subject}/{name}"
        if frame_counts is not None:
            if key not in frame_counts:
                raise InputError(f"video {key} has annotated expressions but no frame count "
                                 f"(no features?); rows from {kept[0][2].where()}")
            n = int(frame_counts[key])
            for (on, _, off), _, row in kept:
                if on < 0 or off > n - 1:
                    raise InputError(f"{row.where()}: interval frames {on + 1}..{off + 1} (1-based) lie outside "
                                     f"the video's {n} frames")
        expressions = []
        for i, (interval, own_emotion, row) in enumerate(kept):
            if emotion_pairing == "row":
                emotion = own_emotion
            else:
                emotion = emotions[i] if i < len(emotions) else None
            expressions.append(Expression(*interval, emotion, row))
        videos.append(Video(subject, name, tuple(expressions)))
    return GroundTruth(dataset, tuple(videos))
