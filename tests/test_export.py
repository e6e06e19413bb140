"""python -m vdc export: a condensed set as playable MP4 / GIF files, one per class, decoded back."""
from __future__ import annotations

import json

import numpy as np
import pytest

from vdc.__main__ import main as vdc_main
from vdc.condensed import CondensedSet
from vdc.data.frames import write_frames
from vdc.export import export
from vdc.formats.media import read_video

CLASSES, IPC, T = 3, 2, 8


def colour(k: int, i: int, t: int) -> np.ndarray:
    """A distinct flat colour per class, clip and frame (decodable despite lossy coding)."""
    return np.array([40 + 80 * k, 60 + 100 * i, 20 + 25 * t], np.uint8)


def selected_set(path, h=20, w=30):
    clips = np.zeros((CLASSES * IPC, T, h, w, 3), np.uint8)
    labels = np.repeat(np.arange(CLASSES), IPC)
    for n, (k, i) in enumerate((k, i) for k in range(CLASSES) for i in range(IPC)):
        for t in range(T):
            clips[n, t] = colour(k, i, t)
    CondensedSet(clips, labels, source_video=np.arange(len(labels)) + 100,
                 attrs={"method": "rded", "ipc": IPC, "num_classes": CLASSES}).write(path)
    return path


@pytest.mark.parametrize("fmt", ["mp4", "gif"])
def test_export_writes_one_playable_file_per_class(tmp_path, fmt):
    cs = selected_set(tmp_path / "set.h5")
    written = export(cs, tmp_path / "out", fmt=fmt, fps=8)
    videos = [p for p in written if p.suffix == f".{fmt}"]
    assert [p.name for p in videos] == [f"{k:03d}_class{k}.{fmt}" for k in range(CLASSES)]
    scale = 6                                           # smallest whole factor making 20-px clips >= 112 px
    for k, p in enumerate(videos):
        frames = read_video(p)
        assert frames.shape[0] == T                     # every condensed frame, playable back
        assert frames.shape[1] == 20 * scale and frames.shape[2] == IPC * 30 * scale + (IPC - 1) * 2
        for t in (0, T - 1):
            for i in range(IPC):                        # each clip's tile shows its own colour
                x0 = i * (30 * scale + 2)
                tile = frames[t, 10:-10, x0 + 10:x0 + 30 * scale - 10].reshape(-1, 3).mean(0)
                assert np.abs(tile - colour(k, i, t)).max() < 12, (p, t, i, tile)
    index = json.loads((tmp_path / "out" / "index.json").read_text())
    assert index["files"][1] == {"file": videos[1].name, "class": 1, "class_name": "class1", "clips": [2, 3],
                                 "source_video": [102, 103]}


def test_distilled_float_clips_odd_sizes_and_class_names(tmp_path):
    frames = tmp_path / "f.h5"
    write_frames(frames, [np.zeros((8, 8, 8, 3), np.uint8)] * 6, [0, 1, 2, 0, 1, 2], [0, 0, 0, 1, 1, 1],
                 ["walk", "run fast", "jump"])
    clips = np.linspace(-0.2, 1.2, CLASSES * T * 21 * 21 * 3, dtype=np.float32).reshape(CLASSES, T, 21, 21, 3)
    CondensedSet(clips, np.arange(CLASSES), attrs={"num_classes": CLASSES}).write(tmp_path / "d.h5")
    written = export(tmp_path / "d.h5", tmp_path / "o", fmt="mp4", scale=1, frames_path=frames)
    assert [p.name for p in written[:3]] == ["000_walk.mp4", "001_run_fast.mp4", "002_jump.mp4"]
    v = read_video(written[0])
    assert v.shape == (T, 22, 22, 3)                    # padded to even for yuv420p


def test_command_line_and_errors(tmp_path, capsys):
    cs = selected_set(tmp_path / "set.h5")
    assert vdc_main(["export", "--condensed", str(cs), "--out", str(tmp_path / "g"), "--format", "gif",
                     "--scale", "2"]) == 0
    assert read_video(tmp_path / "g" / "000_class0.gif").shape == (T, 40, 2 * 60 + 2, 3)
    assert vdc_main(["export", "--condensed", str(tmp_path / "nope.h5"), "--out", str(tmp_path / "x")]) == 2
    assert "nope.h5" in capsys.readouterr().err
