"""The generated toy action dataset: rendering, motion, files, determinism."""
import numpy as np
import pytest

from vdc.config import SCHEMA_PATH
from vdc.data.ingest import read_manifest
from vdc.data.toy import CLASSES, check_layout, generate, motion, render_video, video_name
from vdc.errors import ConfigError

TINY = {"classes": 3, "train_per_class": 2, "test_per_class": 1, "min_frames": 8, "max_frames": 12,
        "size": [32, 32], "fps": 25, "gop": 4, "crf": 18, "seed": 0}


def _settings(root, **toy):
    """Stage settings of a toy dataset at ``root`` (the keys toy.py and read_manifest read; TINY is complete)."""
    return {"dataset": {"name": "toy", "format": "toy", "video_root": str(root / "videos"),
                        "annotations": str(root / "ucfTrainTestlist"), "split": 1, "toy": {**TINY, **toy}}}


def _decode_all(root):
    import decord

    classes, recs = read_manifest(_settings(root)["dataset"])
    out = []
    for r in recs:
        vr = decord.VideoReader(str(root / "videos" / r.path))
        out.append((r.path, r.label, r.split, vr.get_batch(list(range(len(vr)))).asnumpy()))
    return classes, out


def test_render_video_pure_and_shaped():
    a = render_video(3, np.random.default_rng(5), TINY)
    b = render_video(3, np.random.default_rng(5), TINY)
    c = render_video(3, np.random.default_rng(6), TINY)
    assert a.dtype == np.uint8 and a.shape[1:] == (32, 32, 3) and 8 <= len(a) <= 12
    assert np.array_equal(a, b)
    assert a.shape != c.shape or not np.array_equal(a, c)
    assert a.std() > 10  # not blank


def test_motion_defines_the_class():
    """The trajectory follows the class: translation moves the centre, rotation the angle, zoom the size;
    a horizontal flip maps each class to itself (left and right are one class)."""
    t, h, w = 40, 64, 64
    rng = np.random.default_rng
    cx, cy, th, s = motion("TranslateUp", rng(0), t, h, w)
    assert np.all(np.diff(cy) < 0) and np.ptp(cx) == 0 and np.ptp(th) == 0
    cx, cy, th, s = motion("TranslateDown", rng(0), t, h, w)
    assert np.all(np.diff(cy) > 0)
    cx, cy, th, s = motion("Rotate", rng(0), t, h, w)
    assert np.ptp(cx) == 0 and abs(th[-1] - th[0]) > np.radians(100)
    cx, cy, th, s = motion("ZoomIn", rng(0), t, h, w)
    assert s[-1] / s[0] > 2 and np.ptp(cx) == 0
    cx, cy, th, s = motion("ZoomOut", rng(0), t, h, w)
    assert s[-1] < s[0] / 2 and np.ptp(cx) == 0
    cx, _, _, _ = motion("OscillateHorizontal", rng(0), t, h, w)
    assert np.any(np.diff(cx) > 0) and np.any(np.diff(cx) < 0)
    signs = {np.sign(motion("TranslateHorizontal", rng(i), t, h, w)[0][-1] - motion("TranslateHorizontal", rng(i), t, h, w)[0][0])
             for i in range(8)}
    assert signs == {-1.0, 1.0}
    with pytest.raises(ValueError, match="unknown toy class"):
        motion("Teleport", rng(0), t, h, w)
    assert len(CLASSES) == len(set(CLASSES)) >= 10


def test_video_names_follow_ucf101_groups():
    assert video_name("Rotate", 0, 6) == "v_Rotate_g01_c01.mp4"
    assert video_name("Rotate", 5, 6) == "v_Rotate_g02_c02.mp4"
    assert video_name("Rotate", 6, 6) == "v_Rotate_g03_c01.mp4"  # test videos start a new group


def test_generate_layout_and_determinism(tmp_path):
    a, b, c = tmp_path / "a", tmp_path / "b", tmp_path / "c"
    summary = generate(a, _settings(a))
    assert summary["videos"] == 9 and summary["classes"] == 3
    ann = a / "ucfTrainTestlist"
    assert (ann / "classInd.txt").read_text() == "1 TranslateHorizontal\n2 TranslateUp\n3 TranslateDown\n"
    assert (ann / "trainlist01.txt").read_text().splitlines()[0] == \
        "TranslateHorizontal/v_TranslateHorizontal_g01_c01.mp4 1"
    assert (ann / "testlist01.txt").read_text().splitlines()[-1] == "TranslateDown/v_TranslateDown_g02_c01.mp4"
    assert not list(a.rglob("*.tmp"))

    generate(b, _settings(b), workers=2)  # parallel generation gives the same videos
    generate(c, _settings(c, seed=1))
    ca, va = _decode_all(a)
    cb, vb = _decode_all(b)
    cc, vc = _decode_all(c)
    assert ca == cb == cc == CLASSES[:3]
    assert [x[:3] for x in va] == [x[:3] for x in vb] == [x[:3] for x in vc]
    assert [x[2] for x in va] == ["train"] * 6 + ["test"] * 3
    assert all(np.array_equal(x[3], y[3]) for x, y in zip(va, vb))
    assert not any(x[3].shape == y[3].shape and np.array_equal(x[3], y[3]) for x, y in zip(va, vc))
    # the decoded video is the rendered one up to codec error
    rendered = render_video(0, np.random.default_rng([0, 0, 0]), TINY)
    assert va[0][3].shape == rendered.shape
    assert np.abs(va[0][3].astype(float) - rendered).mean() < 6


def test_generate_rejects_bad_settings(tmp_path):
    with pytest.raises(ConfigError, match="toy.classes"):
        generate(tmp_path, _settings(tmp_path, classes=len(CLASSES) + 1))
    with pytest.raises(ConfigError, match="even height and width"):
        generate(tmp_path, _settings(tmp_path, size=[33, 32]))
    with pytest.raises(ConfigError, match=r"toy.min_frames \(13\) > toy.max_frames \(12\)"):
        generate(tmp_path, _settings(tmp_path, min_frames=13))
    assert not (tmp_path / "ucfTrainTestlist").exists() and not (tmp_path / "videos").exists()


def test_schema_allows_as_many_classes_as_the_toy_has():
    import yaml

    schema = yaml.safe_load(SCHEMA_PATH.read_text())
    assert schema["definitions"]["dataset"]["properties"]["toy"]["properties"]["classes"]["maximum"] == len(CLASSES)


def test_toy_layout_is_checked(tmp_path):
    settings = _settings(tmp_path / "root")
    check_layout(tmp_path / "root", settings)
    with pytest.raises(ConfigError, match=r"video_root is .*root/videos.* set video_root: .*elsewhere/videos"):
        check_layout(tmp_path / "elsewhere", settings)
