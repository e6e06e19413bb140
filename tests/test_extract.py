"""Frame extraction: round trip against the rendered toy videos, failures, layout read by Frames."""
import h5py
import numpy as np
import pytest

from vdc.data.extract import ExtractionError, extract, kept_indices
from vdc.data.frames import Frames, load_bank
from vdc.data.toy import generate, render_video

TOY = {"classes": 2, "train_per_class": 3, "test_per_class": 2, "min_frames": 10, "max_frames": 20,
       "size": [32, 40], "fps": 25, "gop": 4, "crf": 18, "seed": 3}


@pytest.fixture(scope="module")
def toy_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("toy")
    generate(root, {"dataset": {"toy": TOY}})
    return root


def _settings(root, **over):
    ds = {"name": "toy", "format": "toy", "video_root": str(root / "videos"),
          "annotations": str(root / "ucfTrainTestlist"), "split": 1, "toy": TOY, "storage_size": [32, 40],
          "max_frames": 64, "frame_stride": 1, "max_failed_fraction": 0.05}
    ds.update(over)
    return {"dataset": ds}


def test_kept_indices():
    assert kept_indices(10, 1, 64).tolist() == list(range(10))
    assert kept_indices(10, 3, 64).tolist() == [0, 3, 6, 9]
    assert kept_indices(100, 1, 5).tolist() == [0, 25, 50, 74, 99]
    assert kept_indices(100, 4, 5).tolist() == [0, 24, 48, 72, 96]


def test_round_trip(toy_root, tmp_path):
    out, rep = tmp_path / "f.h5", tmp_path / "f.failed.tsv"
    summary = extract(_settings(toy_root), out, rep)
    assert summary["failed"] == 0 and summary["videos"] == 10
    assert rep.read_text() == "path\treason\n"
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


def test_stride_cap_and_resize(toy_root, tmp_path):
    out = tmp_path / "s.h5"
    extract(_settings(toy_root, frame_stride=2, max_frames=4, storage_size=[16, 20]), out, tmp_path / "s.tsv", workers=2)
    with Frames(out) as fr:
        assert fr.frame_shape == (16, 20, 3) and fr.lengths.max() == 4
        src = h5py.File(out)["videos/source_frames"][:]
        assert fr.lengths.tolist() == [len(kept_indices(int(n), 2, 4)) for n in src]


def test_workers_give_identical_files(toy_root, tmp_path):
    extract(_settings(toy_root), tmp_path / "one.h5", tmp_path / "one.tsv", workers=1)
    extract(_settings(toy_root), tmp_path / "two.h5", tmp_path / "two.tsv", workers=2)
    with h5py.File(tmp_path / "one.h5") as a, h5py.File(tmp_path / "two.h5") as b:
        assert np.array_equal(a["frames"][:], b["frames"][:])
        assert np.array_equal(a["videos/offset"][:], b["videos/offset"][:])


def test_truncated_video_is_reported_and_skipped(toy_root, tmp_path):
    import shutil

    root = tmp_path / "copy"
    shutil.copytree(toy_root, root)
    victim = sorted((root / "videos" / "TranslateUp").glob("*.mp4"))[0]
    data = victim.read_bytes()
    victim.write_bytes(data[: len(data) // 2])
    missing = sorted((root / "videos" / "TranslateHorizontal").glob("*.mp4"))[-1]
    missing.unlink()
    out, rep = tmp_path / "t.h5", tmp_path / "t.tsv"
    with pytest.raises(ExtractionError, match=r"2 of 10 videos failed .* max_failed_fraction 0.05.*t\.tsv"):
        extract(_settings(root), out, rep)
    assert not out.exists() and not list(tmp_path.glob("*.tmp"))
    assert rep.read_text().count("\n") == 3

    extract(_settings(root, max_failed_fraction=0.5), out, rep)
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


def test_cli(toy_root, tmp_path):
    import json

    from vdc.__main__ import main

    out = tmp_path / "c.h5"
    rc = main(["extract", "--out", str(out), "--report", str(tmp_path / "c.tsv"), "--threads", "1",
               "--settings", json.dumps(_settings(toy_root, max_frames=8))])
    assert rc == 0
    with Frames(out) as fr:
        assert fr.lengths.max() == 8


def test_pyav_fallback_matches_decord(toy_root, tmp_path):
    """decord 0.6 cannot resize to width 48 (a decord bug); those videos go through PyAV, whose
    output matches decord's where both work."""
    import decord

    from vdc.data.extract import _pyav_frames, decode_video, probe_video

    path = str(sorted((toy_root / "videos" / "TranslateUp").glob("*.mp4"))[0])
    n, fps, dec, err = probe_video((path, (32, 48), 1, 64))
    assert (dec, err) == ("pyav", "") and n == len(decord.VideoReader(path)) and fps == 25
    frames, msg = decode_video((path, (32, 48), [0, 2, 4], "pyav"))
    assert msg == "" and frames.shape == (3, 32, 48, 3)
    ref = decord.VideoReader(path, width=40, height=32).get_batch([0, 2, 4]).asnumpy()
    got, _, _ = _pyav_frames(path, (32, 40), [0, 2, 4])
    assert np.abs(got.astype(float) - ref).mean() < 1.0
    extract(_settings(toy_root, storage_size=[32, 48]), tmp_path / "w.h5", tmp_path / "w.tsv")
    with Frames(tmp_path / "w.h5") as fr:
        assert fr.frame_shape == (32, 48, 3) and fr.attrs["num_failed"] == 0 and fr.lengths.min() >= 10
