"""Interval files (meanspot_fused.io.intervals): ground-truth annotations in, intervals.csv out."""
import csv
import os

import numpy as np
import pytest

from meanspot_fused.io.intervals import AnnotationError, read_annotations, write_intervals_csv
from meanspot_fused.spotting.evaluation import evaluate
from meanspot_fused.spotting.intervals import find_intervals


def test_intervals_csv_round_trip(tmp_path):
    path = tmp_path / "intervals.csv"
    intervals = np.array([[-3, 9, 3], [40, 52, 46]])
    scores = np.array([0.1 + 0.2, 1 / 3])
    write_intervals_csv(path, intervals, scores, emotions=["positive", "surprise"])
    with open(path, newline="") as handle:
        rows = list(csv.reader(handle))
    assert rows[0] == ["onset", "offset", "apex", "score", "emotion"]
    assert [[int(v) for v in r[:3]] for r in rows[1:]] == intervals.tolist()
    assert [float(r[3]) for r in rows[1:]] == scores.tolist()  # bit-exact
    assert [r[4] for r in rows[1:]] == ["positive", "surprise"]
    assert os.listdir(tmp_path) == ["intervals.csv"]  # no temporary file left

    write_intervals_csv(path, np.zeros((0, 3), np.int64), [])
    assert path.read_text() == "onset,offset,apex,score\n"


def test_write_intervals_csv_errors(tmp_path):
    with pytest.raises(ValueError, match="scores must have one value per interval"):
        write_intervals_csv(tmp_path / "x.csv", [[0, 1, 0]], [0.1, 0.2])
    with pytest.raises(ValueError, match=r"intervals must have shape \(M, 3\)"):
        write_intervals_csv(tmp_path / "x.csv", [[0, 1]], [0.1])
    with pytest.raises(FileNotFoundError):
        write_intervals_csv(tmp_path / "missing" / "x.csv", [[0, 1, 0]], [0.1])
    assert os.listdir(tmp_path) == []


def test_read_annotations(tmp_path):
    path = tmp_path / "gt.csv"
    path.write_text("Video, onset ,offset,apex,emotion\nv1,10,20,15,positive\nv2,0,5,2,negative\n"
                    "\nv1,30,42,33,surprise\n")
    ann = read_annotations(path)
    assert list(ann.intervals) == ["v1", "v2"]
    np.testing.assert_array_equal(ann.intervals["v1"], [[10, 20], [30, 42]])
    np.testing.assert_array_equal(ann.apex["v1"], [15, 33])
    assert ann.emotions == {"v1": ["positive", "surprise"], "v2": ["negative"]}
    assert ann.intervals["v1"].dtype == np.int64

    minimal = tmp_path / "min.csv"
    minimal.write_text("video,onset,offset\nv,1,2\n")
    ann = read_annotations(minimal)
    assert ann.apex is None and ann.emotions is None
    np.testing.assert_array_equal(ann.intervals["v"], [[1, 2]])


def test_read_annotations_subject_column_keys(tmp_path):
    path = tmp_path / "strs.csv"
    path.write_text("subject,video,onset,offset,emotion\n6,EP01_01,80,135,happiness\n"
                    "7,EP01_01,78,155,disgust\n")
    ann = read_annotations(path)
    assert sorted(ann.intervals) == ["6/EP01_01", "7/EP01_01"]


@pytest.mark.parametrize("text, message", [
    ("", "empty file; expected a header line"),
    ("video,onset\nv,1\n", "line 1: the header must name the columns video, onset, offset; missing offset"),
    ("video,onset,offest\nv,1,2\n", "missing offset"),
    ("video,onset,offset,score\nv,1,2,3\n", "line 1: unknown column"),
    ("video,onset,offset\nv,1,2\nv,x,3\n", "line 3, column onset: expected an integer frame index, got 'x'"),
    ("video,onset,offset\nv,1,2,9\n", "line 2: expected 3 fields"),
    ("video,onset,offset\nv,5,2\n", "line 2, column offset: expected offset >= onset"),
    ("video,onset,offset,apex\nv,1,2,\n", "line 2, column apex: expected an integer"),
    ("video,onset,offset\n,1,2\n", "line 2, column video: empty video name"),
])
def test_read_annotations_errors(tmp_path, text, message):
    path = tmp_path / "bad.csv"
    path.write_text(text)
    with pytest.raises(AnnotationError, match=message) as info:
        read_annotations(path)
    assert str(path) in str(info.value)


def test_read_annotations_missing_file(tmp_path):
    with pytest.raises(AnnotationError, match="cannot open"):
        read_annotations(tmp_path / "nope.csv")


def test_annotations_feed_evaluate(tmp_path):
    path = tmp_path / "gt.csv"
    path.write_text("video,onset,offset,emotion\na,16,25,pos\na,50,59,neg\n")
    ann = read_annotations(path)
    scores = np.zeros(60)
    scores[[20, 21]] = 1.0
    # k_p 5: smoothed[i] averages frames i-5 .. i+4, so 0.2 on the plateau 17..25,
    # peak at its midpoint 21 -> interval (16, 26): IoU 10/11 with 16..25.
    pred = find_intervals(scores, 5)
    np.testing.assert_array_equal(pred, [[16, 26, 21]])
    result = evaluate({"a": pred}, ann.intervals)
    assert (result.tp, result.fp, result.fn) == (1, 0, 1)
