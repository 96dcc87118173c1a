"""Annotation rows and MEAN's filtering rules (meanspot_fused.training.annotations) against TRAINING.md
sections 1 and 3, bug 9g, hand-written cases and MEAN's load_label loop (L:2-88) run on the same rows."""
import importlib.util

import numpy as np
import pytest

from meanspot_fused.errors import FileError, InputError, MissingDependencyError
from meanspot_fused.training.annotations import (AnnotationRow, apply_mean_rules, mean_emotion, natural_key,
                                                 read_casme_sq_xlsx, read_samm_lv_xlsx, read_training_csv,
                                                 read_smic_xlsx, rows_from_records, samm_lv_rows_from_frames,
                                                 smic_rows_from_frame)

HEADER = "subject,video,onset,apex,offset,type,emotion\n"


def mean_load_label(dataset_name, subjects, subjectsVideos, codeFinal):
    """MEAN's load_label (L:2-88) as written, on dict rows; returns final_subjects, _videos, _samples, _emotions."""
    emotion_list = ['repression', 'anger', 'contempt', 'disgust', 'fear', 'sadness', 'negative', 'happiness',
                    'positive', 'surprise', 'others', 'other']
    emotion_negative, emotion_positive, emotion_surprise, emotion_others = ['negative'], ['happiness'], ['surprise'], []
    if dataset_name == 'CASME_sq':
        emotion_positive = ['positive']
    elif dataset_name == 'SAMMLV':
        emotion_negative = ['anger', 'contempt', 'disgust', 'fear', 'sadness']
        emotion_others = ['other']
    elif 'SMIC' in dataset_name:
        emotion_positive = ['positive']
    elif dataset_name == 'CASME2':
        emotion_list = ['disgust', 'happiness', 'others', 'surprise', 'repression']
    vid_need_recog, vid_count, ground_truth, emotions = [], 0, [], []
    for sub_video_each_index, sub_vid_each in enumerate(subjectsVideos):
        ground_truth.append([])
        emotions.append([])
        for videoCode in sub_vid_each:
            each_emotion, on_off = [], []
            for row in codeFinal:
                row = dict(row)
                if str(row['subjectCode']) == str(subjects[sub_video_each_index]) and row['videoCode'] == videoCode:
                    if row['type'] == 'micro-expression':
                        row['emotion'] = row['emotion'].lower()
                        if row['emotion'] in emotion_list:
                            if dataset_name == 'CASME2' or dataset_name == 'CASME_sq':
                                each_emotion.append(row['emotion'])
                            else:
                                if row['emotion'] in emotion_negative:
                                    each_emotion.append('negative')
                                if row['emotion'] in emotion_positive:
                                    each_emotion.append('positive')
                                if row['emotion'] in emotion_surprise:
                                    each_emotion.append('surprise')
                                if row['emotion'] in emotion_others:
                                    each_emotion.append('others')
                            if row['offset'] == 0:
                                on_off.append([int(row['onset'] - 1), int(row['apex'] - 1), int(row['apex'] - 1)])
                            else:
                                if dataset_name == 'CASME2':
                                    if isinstance(row['apex'], int):
                                        if [int(row['onset'] - 1), int(row['apex']) - 1,
                                                int(row['offset']) - 1] != [65, 110, 110]:
                                            on_off.append([int(row['onset'] - 1), int(row['apex'] - 1),
                                                           int(row['offset']) - 1])
                                elif int(row['onset']) != 0:
                                    on_off.append([int(row['onset'] - 1), int(row['apex'] - 1),
                                                   int(row['offset'] - 1)])
            if len(each_emotion) > 0 and len(on_off) > 0:
                vid_need_recog.append(vid_count)
            ground_truth[-1].append(on_off)
            emotions[-1].append(each_emotion)
            vid_count += 1
    final_samples, final_videos, final_subjects, final_emotions, count = [], [], [], [], 0
    for subjectIndex, subject in enumerate(ground_truth):
        final_samples.append([])
        final_videos.append([])
        final_emotions.append([])
        for samplesIndex, samples in enumerate(subject):
            if count in vid_need_recog:
                final_samples[-1].append(samples)
                final_videos[-1].append(subjectsVideos[subjectIndex][samplesIndex])
                final_subjects.append(subjects[subjectIndex])
                final_emotions[-1].append(emotions[subjectIndex][samplesIndex])
            count += 1
    final_subjects = list(dict.fromkeys(final_subjects))
    return (final_subjects, [e for e in final_videos if e != []], [e for e in final_samples if e != []],
            [e for e in final_emotions if e != []])


WORDS = ["Negative", "positive", "surprise", "others", "other", "happiness", "anger", "Disgust", "fear",
         "repression", "sadness", "contempt", "tense", "fear"]


def random_rows(rng, dataset):
    rows = []
    for i in range(int(rng.integers(5, 30))):
        onset = int(rng.integers(0, 4)) * int(rng.integers(1, 40))
        apex = onset + int(rng.integers(0, 5))
        offset = 0 if rng.random() < 0.15 else apex + int(rng.integers(0, 9))
        apex_cell = "/" if dataset == "CASME2" and offset and rng.random() < 0.1 else apex
        rows.append({"subject": ["s1", "s2", "s10"][rng.integers(3)],
                     "video": ["0101", "0110", "0102"][rng.integers(3)],
                     "onset": onset, "apex": apex_cell, "offset": offset,
                     "type": "micro-expression" if rng.random() < 0.8 else "macro-expression",
                     "emotion": WORDS[rng.integers(len(WORDS))]})
    if dataset == "CASME2":
        rows.append({"subject": "s1", "video": "0101", "onset": 66, "apex": 111, "offset": 111,
                     "type": "micro-expression", "emotion": "disgust"})
    return rows


@pytest.mark.parametrize("dataset", ["CASME_sq", "SAMMLV", "CASME2", "SMIC_HS"])
def test_rules_equal_mean_load_label(dataset):
    rng = np.random.default_rng(list(b"rules") + [len(dataset)])
    for _ in range(25):
        records = random_rows(rng, dataset)
        gt = apply_mean_rules(dataset, rows_from_records(records))
        subjects = sorted({r["subject"] for r in records}, key=natural_key)
        videos = [sorted({r["video"] for r in records if r["subject"] == s}, key=natural_key) for s in subjects]
        mean_rows = [dict(r, subjectCode=r["subject"], videoCode=r["video"]) for r in records]
        f_subjects, f_videos, f_samples, f_emotions = mean_load_label(dataset, subjects, videos, mean_rows)
        assert gt.subjects == f_subjects
        assert [[v.name for v in gt.subject_videos(s)] for s in gt.subjects] == f_videos
        assert [[v.intervals().tolist() for v in gt.subject_videos(s)] for s in gt.subjects] == f_samples
        # Bug 9g, positional pairing: interval i gets MEAN's emotion i (None where MEAN's list is short).
        for s, subject_emotions in zip(gt.subjects, f_emotions):
            for v, emotions in zip(gt.subject_videos(s), subject_emotions):
                padded = emotions + [None] * len(v.expressions)
                assert [e.emotion for e in v.expressions] == padded[:len(v.expressions)]


def casme_rows(*rows):
    return rows_from_records([dict(zip(["subject", "video", "onset", "apex", "offset", "type", "emotion"], r))
                              for r in rows], "codes.csv", 2)


def test_casme_sq_rules_by_hand():
    gt = apply_mean_rules("CASME_sq", casme_rows(
        ("s10", "0101", 11, 13, 20, "micro-expression", "Negative"),   # kept, lower-cased, 0-based [10, 12, 19]
        ("s10", "0101", 30, 32, 0, "micro-expression", "others"),      # offset 0 => apex: [29, 31, 31]
        ("s10", "0101", 40, 42, 45, "macro-expression", "negative"),   # type filter
        ("s10", "0101", 50, 52, 55, "micro-expression", "tense"),      # not in the emotion list
        ("s2", "0102", 0, 3, 5, "micro-expression", "positive"),       # onset 0 dropped outside CASME II ...
        ("s2", "0401", 5, 6, 9, "micro-expression", "surprise"),
        ("s3", "0101", 5, 6, 9, "macro-expression", "surprise")))      # s3 keeps no video
    # ... so s2/0102 keeps an emotion but no interval and is removed; natsort order: s2 before s10.
    assert gt.subjects == ["s2", "s10"] and [v.key for v in gt.videos] == ["s2/0401", "s10/0101"]
    assert gt.videos[1].intervals().tolist() == [[10, 12, 19], [29, 31, 31]]
    assert [e.emotion for e in gt.videos[1].expressions] == ["negative", "others"]
    assert gt.videos[1].expressions[0].row.line == 2


def test_emotion_pairing_bug_9g():
    rows = casme_rows(("s1", "0101", 0, 2, 4, "micro-expression", "negative"),  # emotion kept, interval dropped
                      ("s1", "0101", 10, 12, 14, "micro-expression", "positive"))
    mean = apply_mean_rules("CASME_sq", rows)
    assert mean.videos[0].intervals().tolist() == [[9, 11, 13]]
    assert mean.videos[0].expressions[0].emotion == "negative"   # MEAN: shifted onto the wrong interval
    fixed = apply_mean_rules("CASME_sq", rows, emotion_pairing="row")
    assert fixed.videos[0].expressions[0].emotion == "positive"
    with pytest.raises(InputError, match="emotion_pairing"):
        apply_mean_rules("CASME_sq", rows, emotion_pairing="zip")


def test_emotion_mapping_per_dataset():
    assert [mean_emotion("SAMMLV", w)[1] for w in ("Anger", "contempt", "disgust", "fear", "sadness")] == \
        ["negative"] * 5
    assert [mean_emotion("SAMMLV", w) for w in ("Happiness", "surprise", "Other", "repression", "tense")] == \
        [(True, "positive"), (True, "surprise"), (True, "others"), (True, None), (False, None)]
    assert mean_emotion("CASME_sq", "Others") == (True, "others")
    assert mean_emotion("CASME2", "negative") == (False, None) and mean_emotion("CASME2", "Repression")[1] == \
        "repression"
    assert mean_emotion("SMIC_NIR", "positive") == (True, "positive") and mean_emotion("SMIC_NIR", "happiness") == \
        (True, None)
    with pytest.raises(InputError, match="CASME_sq, SAMMLV"):
        mean_emotion("CASME3", "negative")


def test_casme2_exclusions():
    gt = apply_mean_rules("CASME2", casme_rows(
        ("1", "02_01f", 0, 5, 9, "micro-expression", "disgust"),      # onset 0 kept in CASME II: [-1, 4, 8]
        ("1", "02_01f", 10, None, 20, "micro-expression", "others"),  # '/' apex dropped
        ("1", "02_01f", 66, 111, 111, "micro-expression", "others"),  # the [65, 110, 110] sample dropped
        ("1", "02_01f", 30, 33, 36, "micro-expression", "negative")))  # not a CASME II emotion
    assert gt.videos[0].intervals().tolist() == [[-1, 4, 8]]


def test_rule_errors_name_file_and_row():
    with pytest.raises(InputError, match=r"codes.csv, row 3 \(subject s1, video 0101\): onset 9 is after offset 5"):
        apply_mean_rules("CASME_sq", casme_rows(("s1", "0101", 1, 2, 3, "micro-expression", "negative"),
                                                ("s1", "0101", 9, 5, 5, "micro-expression", "negative")))
    rows = casme_rows(("s1", "0101", 1, 2, 3, "micro-expression", "negative"),
                      ("s1", "0101", 8, 9, 12, "micro-expression", "negative"))
    # Frame counts: frame 12 (1-based) is past a 10-frame video; a kept video without a count is an error.
    with pytest.raises(InputError, match=r"row 3 .*frames 8..12 \(1-based\) lie outside the video's 10 frames"):
        apply_mean_rules("CASME_sq", rows, {"s1/0101": 10})
    with pytest.raises(InputError, match="s1/0101 has annotated expressions but no frame count"):
        apply_mean_rules("CASME_sq", rows, {})
    assert len(apply_mean_rules("CASME_sq", rows, {"s1/0101": 12}).videos) == 1
    with pytest.raises(InputError, match="dataset must be one of"):
        apply_mean_rules("casme", rows)
    with pytest.raises(InputError, match="row 2.*integer apex"):
        apply_mean_rules("SAMMLV", casme_rows(("006", "006_1", 3, None, 9, "micro-expression", "anger")))


def test_natural_key_is_natsort_order():
    assert sorted(["s10", "s2", "s1", "s15"], key=natural_key) == ["s1", "s2", "s10", "s15"]
    assert sorted(["006_10", "006_9", "007_1"], key=natural_key) == ["006_9", "006_10", "007_1"]
    assert sorted(["10", "9", "1"], key=natural_key) == ["1", "9", "10"]


def test_read_training_csv(tmp_path):
    path = tmp_path / "ann.csv"
    path.write_text(HEADER + "s15,0101,11,13,20,micro-expression,negative\n\n"
                    "s15,0102,5.0,/,0,micro-expression,surprise\n")
    rows = read_training_csv(path)
    assert rows[0] == AnnotationRow("s15", "0101", 11, 13, 20, "micro-expression", "negative", str(path), 2)
    assert (rows[1].onset, rows[1].apex, rows[1].offset, rows[1].line) == (5, None, 0, 4)
    # Columns in another order, names in any case.
    path.write_text("Emotion,Type,Offset,Apex,Onset,Video,Subject\nnegative,micro-expression,20,13,11,0101,s15\n")
    assert read_training_csv(path)[0].offset == 20


@pytest.mark.parametrize("text, message", [
    ("", "empty file"),
    ("subject,video,onset,offset,type,emotion\n", r"line 1: .*missing: \['apex'\]"),
    (HEADER.strip() + ",au\n", r"unknown: \['au'\]"),
    (HEADER + "s1,v,1,2\n", "line 2: expected 7 fields"),
    (HEADER + "s1,v,one,2,3,micro-expression,negative\n",
     "bad.csv, row 2, column onset: expected an integer frame number"),
    (HEADER + ",v,1,2,3,micro-expression,negative\n", "row 2: empty subject"),
])
def test_read_training_csv_errors(tmp_path, text, message):
    path = tmp_path / "bad.csv"
    path.write_text(text)
    with pytest.raises(FileError, match=message):
        read_training_csv(path)


def test_read_training_csv_missing_file(tmp_path):
    with pytest.raises(FileError, match="cannot open"):
        read_training_csv(tmp_path / "nope.csv")


def test_samm_lv_merge():
    pd = pytest.importorskip("pandas")
    long_videos = pd.DataFrame({"Subject": [6, 6, 6], "Filename": ["006_1_2", "006_1_3", "006_2_1"],
                                "Inducement Code": [1, 1, 2], "Onset": [100, 200, 300], "Apex": [110, 210, 310],
                                "Offset": [120, 220, 0], "Duration": [21, 21, 0],
                                "Type": ["Micro - 1/2", "Macro", "Micro - 1/2"], "Action Units": ["", "", ""],
                                "Notes": ["", "", ""]})
    micro = pd.DataFrame({"Filename": ["006_1_2", "006_2_1", "006_9_9"], "Type": ["Micro - 1/2"] * 3,
                          "Emotion": ["Anger", "Other", "Happiness"]})
    rows = samm_lv_rows_from_frames(long_videos, micro)
    # Inner merge on (Filename, Type): the macro row has no partner and goes; the renamed type is kept.
    assert [(r.subject, r.video, r.onset, r.apex, r.offset, r.type, r.emotion) for r in rows] == [
        ("006", "006_1", 100, 110, 120, "micro-expression", "Anger"),
        ("006", "006_2", 300, 310, 0, "micro-expression", "Other")]
    gt = apply_mean_rules("SAMMLV", rows)
    assert [(v.key, v.intervals().tolist(), [e.emotion for e in v.expressions]) for v in gt.videos] == [
        ("006/006_1", [[99, 109, 119]], ["negative"]), ("006/006_2", [[299, 309, 309]], ["others"])]


@pytest.mark.skipif(importlib.util.find_spec("openpyxl") is not None, reason="openpyxl is installed")
def test_spreadsheet_readers_need_openpyxl(tmp_path):
    with pytest.raises(MissingDependencyError, match=r"meanspot_fused\[train\]"):
        read_casme_sq_xlsx(tmp_path / "code_final.xlsx")
    with pytest.raises(MissingDependencyError, match="openpyxl"):
        read_samm_lv_xlsx(tmp_path / "a.xlsx", tmp_path / "b.xlsx")


def test_casme_sq_xlsx(tmp_path):
    pd = pytest.importorskip("pandas")
    pytest.importorskip("openpyxl")
    path = tmp_path / "code_final.xlsx"
    with pd.ExcelWriter(path) as writer:
        pd.DataFrame([[15, "disgust1_1", 11, 13, 20, "4", "negative", "micro-expression", "x"]]).to_excel(
            writer, sheet_name="codes", header=False, index=False)
        pd.DataFrame([[0, "s15", 15]]).to_excel(writer, sheet_name="subjects", header=False, index=False)
        pd.DataFrame([["0101", "disgust1"]]).to_excel(writer, sheet_name="videos", header=False, index=False)
    rows = read_casme_sq_xlsx(path)
    assert [(r.subject, r.video, r.onset, r.apex, r.offset, r.emotion) for r in rows] == \
        [("s15", "0101", 11, 13, 20, "negative")]


def test_samm_lv_xlsx(tmp_path):
    pd = pytest.importorskip("pandas")
    pytest.importorskip("openpyxl")
    long_path, micro_path = tmp_path / "SAMM_LongVideos_V2_Release.xlsx", tmp_path / "SAMM_Micro_FACS_Codes.xlsx"
    # The long-video sheet's first 10 rows are a title block; the micro sheet has one header row.
    title = [["SAMM Long Videos"] + [""] * 9] * 10
    pd.DataFrame(title + [[6, "006_1_2", 1, 100, 110, 120, 21, "Micro - 1/2", "AU4", ""]]).to_excel(
        long_path, header=False, index=False)
    pd.DataFrame([["Subject", "Filename", "Inducement Code", "Onset", "Apex", "Offset", "Duration", "Type",
                   "Action Units", "Emotion", "Classes", "Notes"],
                  [6, "006_1_2", 1, 5, 6, 7, 3, "Micro - 1/2", "AU4", "Contempt", 1, ""]]).to_excel(
        micro_path, header=False, index=False)
    rows = read_samm_lv_xlsx(long_path, micro_path)
    assert [(r.subject, r.video, r.onset, r.apex, r.offset, r.type, r.emotion) for r in rows] == \
        [("006", "006_1", 100, 110, 120, "micro-expression", "Contempt")]


def test_smic_first_frame_bug_9h(tmp_path):
    pd = pytest.importorskip("pandas")
    frame = pd.DataFrame({"Subject": [1, 1], "Filename": ["s1_ne_01", "s1_po_02"], "FirstF": [100, 200],
                          "OnsetF": [110, 200], "OffsetF": [120, 215], "Emotion": ["negative", "positive"]})
    rows = smic_rows_from_frame(frame)
    assert [(r.subject, r.video, r.onset, r.offset) for r in rows] == [("s01", "ne_01", 10, 20),
                                                                       ("s01", "po_02", 0, 15)]
    # MEAN: frame 110 of a clip starting at 100 (position 10) becomes [9, 19]; the ME on the clip's first
    # frame gets onset 0 and is dropped.
    gt = apply_mean_rules("SMIC_HS", rows)
    assert [(v.key, v.intervals().tolist()) for v in gt.videos] == [("s01/ne_01", [[9, -1, 19]])]
    fixed = apply_mean_rules("SMIC_HS", smic_rows_from_frame(frame, first_frame_fix=True))
    assert [(v.key, v.intervals()[:, [0, 2]].tolist()) for v in fixed.videos] == [
        ("s01/ne_01", [[10, 20]]), ("s01/po_02", [[0, 15]])]
    if importlib.util.find_spec("openpyxl") is None:
        with pytest.raises(MissingDependencyError, match="openpyxl"):
            read_smic_xlsx(tmp_path / "SMIC-HS-E_annotation.xlsx")
    else:
        frame.to_excel(tmp_path / "SMIC-HS-E_annotation.xlsx", index=False)
        assert read_smic_xlsx(tmp_path / "SMIC-HS-E_annotation.xlsx") == [
            AnnotationRow(r.subject, r.video, r.onset, r.apex, r.offset, r.type, r.emotion,
                          str(tmp_path / "SMIC-HS-E_annotation.xlsx"), r.line) for r in rows]
