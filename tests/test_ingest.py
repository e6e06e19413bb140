"""Annotation parsers on fixture files written in each dataset's exact format."""
import json

import pytest

from vdc.config import stage_settings
from vdc.data.ingest import AnnotationError, VideoRecord, annotation_files, read_manifest


def _write(path, text):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


# --------------------------------------------------------------------------- UCF101 / toy

def _ucf(tmp_path, trainlist=None):
    ann = tmp_path / "ucfTrainTestlist"
    _write(ann / "classInd.txt", "1 ApplyEyeMakeup\r\n2 HandstandPushups\r\n3 YoYo\r\n")
    _write(ann / "trainlist01.txt", trainlist or
           "ApplyEyeMakeup/v_ApplyEyeMakeup_g08_c01.avi 1\n"
           "HandstandPushups/v_HandStandPushups_g08_c01.avi 2\n"
           "YoYo/v_YoYo_g09_c02.avi 3\n\n")
    _write(ann / "testlist01.txt", "YoYo/v_YoYo_g01_c01.avi\nApplyEyeMakeup/v_ApplyEyeMakeup_g01_c01.avi\n")
    _write(ann / "trainlist02.txt", "YoYo/v_YoYo_g01_c01.avi 3\n")
    _write(ann / "testlist02.txt", "YoYo/v_YoYo_g09_c02.avi\n")
    return {"format": "ucf101", "annotations": str(ann), "video_root": str(tmp_path / "UCF-101"), "split": 1}


def test_ucf101(tmp_path):
    ds = _ucf(tmp_path)
    classes, recs = read_manifest(ds)
    assert classes == ["ApplyEyeMakeup", "HandstandPushups", "YoYo"]
    assert recs[:3] == [VideoRecord("ApplyEyeMakeup/v_ApplyEyeMakeup_g08_c01.avi", 0, "ApplyEyeMakeup", "train"),
                        VideoRecord("HandstandPushups/v_HandStandPushups_g08_c01.avi", 1, "HandstandPushups", "train"),
                        VideoRecord("YoYo/v_YoYo_g09_c02.avi", 2, "YoYo", "train")]
    assert recs[3:] == [VideoRecord("YoYo/v_YoYo_g01_c01.avi", 2, "YoYo", "test"),
                        VideoRecord("ApplyEyeMakeup/v_ApplyEyeMakeup_g01_c01.avi", 0, "ApplyEyeMakeup", "test")]
    _, recs2 = read_manifest({**ds, "split": 2})
    assert [(r.path, r.split) for r in recs2] == [("YoYo/v_YoYo_g01_c01.avi", "train"), ("YoYo/v_YoYo_g09_c02.avi", "test")]
    # toy is read exactly like ucf101
    assert read_manifest({**ds, "format": "toy"}) == (classes, recs)
    assert [p.rsplit("/", 1)[1] for p in annotation_files(ds)] == ["classInd.txt", "trainlist01.txt", "testlist01.txt"]


def test_ucf101_malformed_line(tmp_path):
    ds = _ucf(tmp_path, trainlist="ApplyEyeMakeup/v_ApplyEyeMakeup_g08_c01.avi 1\nYoYo/v_YoYo_g09_c02.avi\n")
    with pytest.raises(AnnotationError, match=r"trainlist01\.txt:2: expected '<ClassName>/<video> <label 1-based>'"):
        read_manifest(ds)


def test_ucf101_label_disagrees_with_folder(tmp_path):
    ds = _ucf(tmp_path, trainlist="YoYo/v_YoYo_g09_c02.avi 1\n")
    with pytest.raises(AnnotationError, match=r"trainlist01\.txt:1: expected a label matching the folder"):
        read_manifest(ds)


def test_missing_file_named(tmp_path):
    ds = _ucf(tmp_path)
    with pytest.raises(AnnotationError, match=r"trainlist03\.txt: annotation file not found"):
        read_manifest({**ds, "split": 3})


# --------------------------------------------------------------------------- HMDB51

def _hmdb(tmp_path, bad=False):
    ann = tmp_path / "testTrainMulti_7030_splits"
    _write(ann / "brush_hair_test_split1.txt", "April_09_brush_hair_u_nm_np1_ba_goo_0.avi 1 \nBlonde_brush_hair_f_nm_np2_le_med_2.avi 2 \n"
           "Brushing_hair_u_nm_np1_ba_goo_1.avi 0 \n")
    _write(ann / "shoot_ball_test_split1.txt", "ball_shot_f_cm_np1_ba_med_0.avi 2 \n" + ("oops.avi 3\n" if bad else "ball_1.avi 1\n"))
    _write(ann / "brush_hair_test_split2.txt", "Blonde_brush_hair_f_nm_np2_le_med_2.avi 1\n")
    _write(ann / "shoot_ball_test_split2.txt", "ball_1.avi 2\n")
    return {"format": "hmdb51", "annotations": str(ann), "video_root": "hmdb", "split": 1}


def test_hmdb51(tmp_path):
    classes, recs = read_manifest(_hmdb(tmp_path))
    assert classes == ["brush_hair", "shoot_ball"]
    assert [(r.path, r.label, r.split) for r in recs] == [
        ("brush_hair/April_09_brush_hair_u_nm_np1_ba_goo_0.avi", 0, "train"),
        ("shoot_ball/ball_1.avi", 1, "train"),
        ("brush_hair/Blonde_brush_hair_f_nm_np2_le_med_2.avi", 0, "test"),
        ("shoot_ball/ball_shot_f_cm_np1_ba_med_0.avi", 1, "test")]
    _, recs2 = read_manifest({**_hmdb(tmp_path), "split": 2})
    assert [(r.path, r.split) for r in recs2] == [("brush_hair/Blonde_brush_hair_f_nm_np2_le_med_2.avi", "train"),
                                                   ("shoot_ball/ball_1.avi", "test")]


def test_hmdb51_malformed_line(tmp_path):
    with pytest.raises(AnnotationError, match=r"shoot_ball_test_split1\.txt:2: expected '<video>.avi <0\|1\|2>'"):
        read_manifest(_hmdb(tmp_path, bad=True))


# --------------------------------------------------------------------------- SSv2

def _ssv2(tmp_path, validation=None):
    ann = tmp_path / "labels"
    _write(ann / "something-something-v2-labels.json", json.dumps(
        {"Approaching something with your camera": "0", "Holding something next to something": "2",
         "Dropping something into something": "1"}))
    _write(ann / "something-something-v2-train.json", json.dumps([
        {"id": "78687", "label": "holding potato next to vicks vaporub bottle",
         "template": "Holding [something] next to [something]", "placeholders": ["potato", "vicks vaporub bottle"]},
        {"id": "42326", "label": "dropping a pen into a cup", "template": "Dropping [something] into [something]",
         "placeholders": ["a pen", "a cup"]}]))
    _write(ann / "something-something-v2-validation.json", json.dumps(validation or [
        {"id": "74225", "label": "approaching a chair with your camera",
         "template": "Approaching [something] with your camera", "placeholders": ["a chair"]}]))
    return {"format": "ssv2", "annotations": str(ann), "video_root": "ssv2", "split": 1}


def test_ssv2(tmp_path):
    classes, recs = read_manifest(_ssv2(tmp_path))
    assert classes == ["Approaching something with your camera", "Dropping something into something",
                       "Holding something next to something"]
    assert [(r.path, r.label, r.split) for r in recs] == [("78687.webm", 2, "train"), ("42326.webm", 1, "train"),
                                                          ("74225.webm", 0, "test")]


def test_ssv2_unknown_template(tmp_path):
    ds = _ssv2(tmp_path, validation=[{"id": "1", "template": "Juggling [something]", "placeholders": []}])
    with pytest.raises(AnnotationError, match=r"validation\.json: entry 1 \(id 1\): template 'Juggling something'"):
        read_manifest(ds)


# --------------------------------------------------------------------------- K400

def _k400(tmp_path, extra=""):
    ann = tmp_path / "k400"
    _write(ann / "train.csv", "label,youtube_id,time_start,time_end,split\n"
           "abseiling,--Ntc6nrqJo,32,42,train\n\"tying bow tie\",-0A6e8Xl0kU,0,10,train\n" + extra)
    _write(ann / "validate.csv", "label,youtube_id,time_start,time_end,split\nabseiling,0wR5jVB-WPk,417,427,val\n")
    return {"format": "k400", "annotations": str(ann), "video_root": "k400", "split": 1, "k400_layout": "flat"}


def test_k400_layouts(tmp_path, tiny_config):
    # the layout the schema fills in when the config does not say
    k400 = {**_k400(tmp_path), "storage_size": [32, 32], "input_size": 16}
    del k400["k400_layout"]
    ds = stage_settings(tiny_config(datasets={"k400": k400}), "extract", "k400")["dataset"]
    assert ds["k400_layout"] == "flat"
    classes, recs = read_manifest(ds)
    assert classes == ["abseiling", "tying bow tie"]
    assert [(r.path, r.label, r.split) for r in recs] == [("train/--Ntc6nrqJo_000032_000042.mp4", 0, "train"),
                                                          ("train/-0A6e8Xl0kU_000000_000010.mp4", 1, "train"),
                                                          ("val/0wR5jVB-WPk_000417_000427.mp4", 0, "test")]
    _, recs = read_manifest({**_k400(tmp_path), "k400_layout": "by_label"})
    assert recs[1].path == "train/tying bow tie/-0A6e8Xl0kU_000000_000010.mp4"


def test_k400_malformed_line(tmp_path):
    with pytest.raises(AnnotationError, match=r"train\.csv:4: expected 'label,youtube_id,time_start,time_end,...'"):
        read_manifest(_k400(tmp_path, extra="abseiling,xyz,start,10,train\n"))


# --------------------------------------------------------------------------- generic list

def test_list_format(tmp_path):
    ann = tmp_path / "lists"
    _write(ann / "train.txt", "a/x 1.mp4 0\nb/y.mp4 1\n")
    _write(ann / "test.txt", "b/z.mp4 1\n")
    ds = {"format": "list", "annotations": str(ann), "video_root": "v", "split": 1}
    classes, recs = read_manifest(ds)
    assert classes == ["class_000", "class_001"]
    assert [(r.path, r.label, r.split) for r in recs] == [("a/x 1.mp4", 0, "train"), ("b/y.mp4", 1, "train"),
                                                          ("b/z.mp4", 1, "test")]
    _write(ann / "classes.txt", "walk\nrun\n")
    assert read_manifest(ds)[0] == ["walk", "run"]
    assert annotation_files(ds)[-1].endswith("classes.txt")
    _write(ann / "test.txt", "b/z.mp4 1\nb/w.mp4 run\n")
    with pytest.raises(AnnotationError, match=r"test\.txt:2: expected '<relative/path> <label 0-based>', got 'b/w.mp4 run'"):
        read_manifest(ds)
