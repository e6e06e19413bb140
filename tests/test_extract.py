"""Frame extraction: round trip against the rendered toy videos, failures, layout read by Frames,
content identity, progress lines."""
import json
import logging
import shutil

import h5py
import numpy as np
import pytest

from vdc.config import stage_settings
from vdc.data.extract import ExtractionError, extract, kept_indices
from vdc.data.frames import Frames, load_bank
from vdc.data.toy import encode_video, generate, render_video
from vdc.resume import content_id

TOY = {"classes": 2, "train_per_class": 3, "test_per_class": 2, "min_frames": 10, "max_frames": 20,
       "size": [32, 40], "fps": 25, "gop": 4, "crf": 18, "seed": 3}


@pytest.fixture(scope="module")
def toy_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("toy")
    generate(root, {"dataset": {"toy": TOY}})
    return root


@pytest.fixture()
def settings(tiny_config, toy_root):
    """settings(root=toy_root, **dataset_keys): the extract settings of the toy dataset at ``root``, as
    a validated config gives them (the schema fills max_frames 64, frame_stride 1, split 1, ...)."""
    def build(root=toy_root, **over):
        ds = {"format": "toy", "video_root": str(root / "videos"), "annotations": str(root / "ucfTrainTestlist"),
              "toy": TOY, "storage_size": [32, 40], "input_size": 24, **over}
        return stage_settings(tiny_config(datasets={"toy": ds}), "extract", "toy")
    return build


def test_kept_indices():
    assert kept_indices(10, 1, 64).tolist() == list(range(10))
    assert kept_indices(1000, 1, None).tolist() == list(range(1000))
    assert kept_indices(10, 3, 64).tolist() == [0, 3, 6, 9]
    assert kept_indices(100, 1, 5).tolist() == [0, 25, 50, 74, 99]
    assert kept_indices(100, 4, 5).tolist() == [0, 24, 48, 72, 96]


def test_round_trip(toy_root, tmp_path, settings, caplog):
    out, rep = tmp_path / "f.h5", tmp_path / "f.failed.tsv"
    with caplog.at_level(logging.INFO, logger="vdc.extract"):
        summary = extract(settings(), out, rep)
    assert summary["failed"] == 0 and summary["videos"] == 10
    assert rep.read_text() == "path\treason\n"
    # both passes report through vdc.progress (here only the final line: the run takes < 30 s)
    for step in ("probe", "decode"):
        assert any(m.startswith(f"extract toy {step}: video 10/10 (100%)") and "ETA" in m and "failed 0" in m
                   for m in caplog.messages), caplog.messages
    with Frames(out) as fr:
        assert fr.classes == ["TranslateHorizontal", "TranslateUp"]
        assert fr.split.tolist() == [0] * 6 + [1] * 4
        assert fr.labels.tolist() == [0, 0, 0, 1, 1, 1, 0, 0, 1, 1]
        assert fr.frame_shape == (32, 40, 3)
        # contiguous: train then test, no gaps
        assert fr.offsets.tolist() == np.concatenate([[0], np.cumsum(fr.lengths)[:-1]]).tolist()
        a = fr.attrs
        assert a["dataset"] == "toy" and a["format"] == "toy" and list(a["storage_size"]) == [32, 40]
        assert a["num_classes"] == 2 and a["num_failed"] == 0 and a["vdc_version"]
        src = h5py.File(out)["videos/source_frames"][:]
        assert a["mean_source_frames_train"] == pytest.approx(src[:6].mean())
        assert fr.mean_length("train") == pytest.approx(src[:6].mean())
        errs = []
        for vid in range(10):
            cls, idx = int(fr.labels[vid]), int(fr.paths[vid].rsplit("_c", 1)[1][:2]) - 1
            g = int(fr.paths[vid].split("_g")[1][:2]) - 1
            index = g * 4 + idx if fr.split[vid] == 0 else 3 + (g - 1) * 4 + idx
            rendered = render_video(cls, np.random.default_rng([3, cls, index]), TOY)
            got = fr.read_video(vid)
            assert got.shape == rendered.shape
            errs.append(np.abs(got.astype(float) - rendered).mean())
        # H.264 at crf 18 on noisy 32x40 frames: measured mean abs error 3.0-4.7 / 255 per video
        # (two unrelated toy videos differ by ~40)
        assert max(errs) < 7, errs
        bank = load_bank(fr, "test", "cpu")
        assert len(bank) == 4 and bank.frames.shape[0] == int(fr.lengths[6:].sum())
        # the defaults (stride 1, no cap) keep every source frame: clip indices are rows, exactly
        assert fr.exact and a["exact_clips"] and a["max_frames"] == -1 and a["frame_stride"] == 1
        assert fr.lengths.tolist() == src.tolist() == fr.stored_lengths.tolist()
        assert fr.frame_source.tolist() == np.concatenate([np.arange(n) for n in src]).tolist()
        assert json.loads(a["split_warnings"]) == []


def test_stride_cap_and_resize(tmp_path, settings):
    out = tmp_path / "s.h5"
    s = settings(frame_stride=2, storage_size=[16, 20])
    s["dataset"]["max_frames"] = 4  # below the schema's minimum (8), so that the cap bites on these short videos
    extract(s, out, tmp_path / "s.tsv", workers=2)
    with Frames(out) as fr:
        assert fr.frame_shape == (16, 20, 3) and fr.stored_lengths.max() == 4
        src = h5py.File(out)["videos/source_frames"][:]
        kept = [kept_indices(int(n), 2, 4) for n in src]
        assert fr.stored_lengths.tolist() == [len(k) for k in kept]
        assert fr.lengths.tolist() == src.tolist()  # clip indices still refer to source frames ...
        assert fr.frame_source.tolist() == np.concatenate(kept).tolist()  # ... mapped through the kept ones
        assert not fr.exact and not fr.attrs["exact_clips"]


def test_workers_give_identical_files(tmp_path, settings):
    extract(settings(), tmp_path / "one.h5", tmp_path / "one.tsv", workers=1)
    extract(settings(), tmp_path / "two.h5", tmp_path / "two.tsv", workers=2)
    with h5py.File(tmp_path / "one.h5") as a, h5py.File(tmp_path / "two.h5") as b:
        assert np.array_equal(a["frames"][:], b["frames"][:])
        assert np.array_equal(a["videos/offset"][:], b["videos/offset"][:])
        cid = a.attrs["content_id"]
        assert len(cid) == 32 and b.attrs["content_id"] == cid
    assert content_id(tmp_path / "one.h5") == content_id(tmp_path / "two.h5") == f"h5:{cid}"


def test_content_id_follows_the_frames(toy_root, tmp_path, settings):
    """Re-encoding one video with other pixels (same length, fps and path) changes only /frames, and
    the content id with it."""
    import decord

    root = tmp_path / "changed"
    shutil.copytree(toy_root, root)
    victim = sorted((root / "videos" / "TranslateUp").glob("*.mp4"))[1]
    vr = decord.VideoReader(str(victim))
    encode_video(255 - vr.get_batch(list(range(len(vr)))).asnumpy(), victim, TOY["fps"], TOY["gop"], TOY["crf"])
    extract(settings(), tmp_path / "a.h5", tmp_path / "a.tsv")
    extract(settings(root), tmp_path / "b.h5", tmp_path / "b.tsv")
    with h5py.File(tmp_path / "a.h5") as a, h5py.File(tmp_path / "b.h5") as b:
        for key in ("offset", "length", "label", "split", "path", "source_frames", "fps"):
            assert np.array_equal(a["videos"][key][:], b["videos"][key][:]), key
        assert not np.array_equal(a["frames"][:], b["frames"][:])
        cid = b.attrs["content_id"]
        assert a.attrs["content_id"] != cid
    assert content_id(tmp_path / "b.h5") == f"h5:{cid}"


def test_truncated_video_is_reported_and_skipped(toy_root, tmp_path, settings):
    root = tmp_path / "copy"
    shutil.copytree(toy_root, root)
    victim = sorted((root / "videos" / "TranslateUp").glob("*.mp4"))[0]
    data = victim.read_bytes()
    victim.write_bytes(data[: len(data) // 2])
    missing = sorted((root / "videos" / "TranslateHorizontal").glob("*.mp4"))[-1]
    missing.unlink()
    out, rep = tmp_path / "t.h5", tmp_path / "t.tsv"
    with pytest.raises(ExtractionError, match=r"2 of 10 videos failed .* max_failed_fraction 0.05.*t\.tsv"):
        extract(settings(root), out, rep)
    assert not out.exists() and not list(tmp_path.glob("*.tmp"))
    assert rep.read_text().count("\n") == 3

    extract(settings(root, max_failed_fraction=0.5), out, rep)
    lines = rep.read_text().splitlines()
    assert lines[0] == "path\treason" and len(lines) == 3
    assert any(str(victim) in ln for ln in lines) and any(str(missing) in ln and "not found" in ln for ln in lines)
    with Frames(out) as fr:
        bad = [fr.paths.index(str(p.relative_to(root / "videos"))) for p in (victim, missing)]
        assert fr.split[bad].tolist() == [-1, -1] and fr.lengths[bad].tolist() == [0, 0]
        assert fr.attrs["num_failed"] == 2
        assert len(fr.split_ids("train")) + len(fr.split_ids("test")) == 8
        ok = fr.split >= 0
        assert np.all(fr.lengths[ok] > 0)


def test_cli(tmp_path, settings):
    import json

    from vdc.__main__ import main

    out = tmp_path / "c.h5"
    rc = main(["extract", "--out", str(out), "--report", str(tmp_path / "c.tsv"), "--threads", "1",
               "--settings", json.dumps(settings(max_frames=8))])
    assert rc == 0
    with Frames(out) as fr:
        assert fr.stored_lengths.max() == 8


def test_pyav_fallback_matches_decord(toy_root, tmp_path, settings):
    """decord 0.6 cannot resize to width 48 (a decord bug); those videos go through PyAV, whose
    output matches decord's where both work."""
    import decord

    from vdc.data.extract import _pyav_frames, decode_video, probe_video

    path = str(sorted((toy_root / "videos" / "TranslateUp").glob("*.mp4"))[0])
    n, fps, dec, err = probe_video((path, (32, 48), 1, 64, 0.8))
    assert (dec, err) == ("pyav", "") and n == len(decord.VideoReader(path)) and fps == 25
    frames, msg = decode_video((path, (32, 48), [0, 2, 4], "pyav"))
    assert msg == "" and frames.shape == (3, 32, 48, 3)
    ref = decord.VideoReader(path, width=40, height=32).get_batch([0, 2, 4]).asnumpy()
    got, _, _ = _pyav_frames(path, (32, 40), [0, 2, 4])
    assert np.abs(got.astype(float) - ref).mean() < 1.0
    extract(settings(storage_size=[32, 48]), tmp_path / "w.h5", tmp_path / "w.tsv")
    with Frames(tmp_path / "w.h5") as fr:
        assert fr.frame_shape == (32, 48, 3) and fr.attrs["num_failed"] == 0 and fr.lengths.min() >= 10


def _encode(path, frames, codec, **options):
    import av

    with av.open(str(path), "w", options=options) as c:
        st = c.add_stream(codec, rate=25)
        st.width, st.height, st.pix_fmt = frames.shape[2], frames.shape[1], "yuv420p"
        st.options = {"threads": "1"}
        for f in frames:
            for pkt in st.encode(av.VideoFrame.from_ndarray(np.ascontiguousarray(f), format="rgb24")):
                c.mux(pkt)
        for pkt in st.encode():
            c.mux(pkt)


@pytest.fixture(scope="module")
def truncated_dataset(tmp_path_factory, toy_root):
    """A list-format dataset: 4 intact toy videos and two 61-frame videos cut at half their bytes, an
    AVI (MPEG-4 part 2) and an MP4 (moov first), both still opening and decoding a few frames."""
    root = tmp_path_factory.mktemp("trunc")
    (root / "videos").mkdir()
    good = sorted((toy_root / "videos").rglob("*.mp4"))
    for i, p in enumerate(good[:2] + good[-2:]):
        shutil.copy(p, root / "videos" / f"good{i}.mp4")
    toy = dict(TOY, size=[128, 170], min_frames=61, max_frames=61)
    frames = render_video(1, np.random.default_rng(1), toy)
    _encode(root / "videos" / "cut.avi", frames, "mpeg4")
    _encode(root / "videos" / "cut.mp4", frames, "mpeg4", movflags="faststart")
    for name in ("cut.avi", "cut.mp4"):
        data = (root / "videos" / name).read_bytes()
        (root / "videos" / name).write_bytes(data[: len(data) // 2])
    (root / "ann").mkdir()
    (root / "ann" / "train.txt").write_text("good0.mp4 0\ngood2.mp4 1\ncut.avi 0\ncut.mp4 1\n")
    (root / "ann" / "test.txt").write_text("good1.mp4 0\ngood3.mp4 1\n")
    return root


def test_truncated_avi_and_mp4_are_failed_not_stored_tiny(truncated_dataset, tmp_path, tiny_config):
    root = truncated_dataset

    def run(**over):
        ds = {"format": "list", "video_root": str(root / "videos"), "annotations": str(root / "ann"),
              "storage_size": [32, 40], "input_size": 24, "max_failed_fraction": 0.5, **over}
        s = stage_settings(tiny_config(datasets={"tiny": ds}), "extract", "tiny")
        out, rep = tmp_path / f"{len(over)}.h5", tmp_path / f"{len(over)}.tsv"
        return extract(s, out, rep), out, rep

    # what was seen: without the check both are kept with a handful of their 61 frames
    summary, out, _ = run(min_decoded_fraction=0.0)
    assert summary["failed"] == 0
    with Frames(out) as fr:
        cut = [fr.paths.index(n) for n in ("cut.avi", "cut.mp4")]
        assert all(1 <= n < 10 for n in fr.lengths[cut])
    # the default compares them with the 61 frames their headers declare
    summary, out, rep = run()
    lines = rep.read_text().splitlines()[1:]
    assert summary["failed"] == 2 and len(lines) == 2
    for name, line in zip(("cut.avi", "cut.mp4"), lines):
        assert line.startswith(str(root / "videos" / name)) and "truncated or damaged" in line
        assert "of the 61 frames the container declares" in line
    with Frames(out) as fr:
        assert fr.attrs["num_failed"] == 2 and fr.split[[fr.paths.index("cut.avi"), fr.paths.index("cut.mp4")]].tolist() == [-1, -1]
        assert fr.lengths[fr.split >= 0].min() >= 10  # the intact videos are whole


def test_split_checks(truncated_dataset, tmp_path, tiny_config, caplog):
    """Empty split, duplicates, train/test overlap, empty classes: the rule of docs/data.md."""
    from vdc.data.ingest import AnnotationError

    root = tmp_path / "ds"
    shutil.copytree(truncated_dataset, root)

    def run(train, test, **over):
        (root / "ann" / "train.txt").write_text(train)
        (root / "ann" / "test.txt").write_text(test)
        ds = {"format": "list", "video_root": str(root / "videos"), "annotations": str(root / "ann"),
              "storage_size": [32, 40], "input_size": 24, **over}
        s = stage_settings(tiny_config(datasets={"tiny": ds}), "extract", "tiny")
        extract(s, tmp_path / "s.h5", tmp_path / "s.tsv")
        return Frames(tmp_path / "s.h5")

    ok_train, ok_test = "good0.mp4 0\ngood2.mp4 1\n", "good1.mp4 0\ngood3.mp4 1\n"
    with pytest.raises(AnnotationError, match=r"the test split lists no videos .*test\.txt"):
        run(ok_train, "")
    with pytest.raises(AnnotationError, match=r"the train split lists no videos .*train\.txt"):
        run("", ok_test)
    with pytest.raises(AnnotationError, match=r"1 of 3 classes have no training video \(class_002"):
        run(ok_train, ok_test + "good1.mp4 2\n")
    with pytest.raises(AnnotationError, match=r"listed more than once in the train split \(e\.g\. good0\.mp4\).*split_checks: warn"):
        run(ok_train + "good0.mp4 0\n", ok_test)
    with pytest.raises(AnnotationError, match=r"1 video\(s\) listed in both the train and the test split \(e\.g\. good1\.mp4\)"):
        run(ok_train + "good1.mp4 0\n", ok_test)
    with caplog.at_level(logging.WARNING, logger="vdc.extract"):
        with run(ok_train + "good1.mp4 0\n" + "good0.mp4 0\n", ok_test, split_checks="warn") as fr:
            warnings = json.loads(fr.attrs["split_warnings"])
    assert len(warnings) == 2 and "more than once" in warnings[0] and "both the train and the test" in warnings[1]
    assert sum("listed" in m for m in caplog.messages) == 2
    # a class whose test videos are all missing: a warning; whose training videos all fail: an error
    with run(ok_train, "good1.mp4 0\n") as fr:
        assert "1 class(es) have no test video (class_001)" in json.loads(fr.attrs["split_warnings"])[0]
    with pytest.raises(ExtractionError, match=r"every training video of class\(es\) class_001 failed .*s\.tsv"):
        run("good0.mp4 0\ncut.mp4 1\n", ok_test, max_failed_fraction=0.5)
