"""Teacher stage: the lr schedule, a tiny CPU run, its outputs, load_teacher, and exact resume after a kill."""
import json

import numpy as np
import pytest
import torch

from vdc.config import stage_settings, validate_config
from vdc.data.frames import write_frames
from vdc.train import loop
from vdc.train.teacher import load_teacher, lr_factor, train_teacher

torch.set_num_threads(1)


def tiny_config(tmp_path, **teacher_over):
    cfg = {
        "device": "cpu", "workdir": str(tmp_path / "work"),
        "study": {"datasets": ["tiny"], "methods": ["random"]},
        "datasets": {"tiny": {"format": "list", "video_root": "v", "annotations": "a", "storage_size": [52, 56],
                              "input_size": 48}},
        "models": {"minic3d": {"width": 0.125}},
        "teacher": {"epochs": 3, "batch": 4, "warmup_epochs": 1, "milestones": [2], "eval_every": 2, "threads": 1,
                    **teacher_over},
        "methods": {"random": {}},
    }
    return validate_config(cfg)


def tiny_frames(path, classes=3, train_per_class=3, test_per_class=2, seed=0):
    """Noise videos of 10..30 frames at 52x56 whose mean brightness encodes the class."""
    rng = np.random.default_rng(seed)
    videos, labels, splits = [], [], []
    for split, per in ((0, train_per_class), (1, test_per_class)):
        for c in range(classes):
            for _ in range(per):
                v = rng.integers(0, 60, (int(rng.integers(10, 31)), 52, 56, 3)).astype(np.uint8) + np.uint8(60 * c)
                videos.append(v), labels.append(c), splits.append(split)
    write_frames(path, videos, labels, splits, [f"class{c}" for c in range(classes)])
    return path


def test_lr_factor_warmup_and_steps():
    cfg = {"warmup_epochs": 10, "warmup_start_factor": 0.1, "milestones": [90, 130], "gamma": 0.1}
    assert lr_factor(0, 100, cfg) == pytest.approx(0.1)
    assert lr_factor(500, 100, cfg) == pytest.approx(0.1 + 0.9 * 0.5)
    assert lr_factor(1000, 100, cfg) == pytest.approx(1.0)
    assert lr_factor(89 * 100 + 99, 100, cfg) == pytest.approx(1.0)
    assert lr_factor(90 * 100, 100, cfg) == pytest.approx(0.1)
    assert lr_factor(149 * 100, 100, cfg) == pytest.approx(0.01)


def test_teacher_outputs_and_load(tmp_path):
    frames = tiny_frames(tmp_path / "f.h5")
    settings = stage_settings(tiny_config(tmp_path), "teacher", "tiny", arch="minic3d")
    m = train_teacher(frames, tmp_path / "t.pt", tmp_path / "t.json", settings)
    js = json.loads((tmp_path / "t.json").read_text())
    for key in ("top1", "top5", "curve", "wall_time_s", "device", "settings", "arch", "dataset"):
        assert key in js
    assert js["top1"] == m["top1"] and 0 <= js["top1"] <= 100 and js["top5"] >= js["top1"]
    assert [r["epoch"] for r in js["curve"]] == [0, 1, 2]
    assert "test_top1" in js["curve"][1] and "test_top1" in js["curve"][2] and "test_top1" not in js["curve"][0]
    # warm-up over epoch 0 (3 iterations from 0.1 x lr), full lr at epoch 1, x0.1 from epoch 2
    lrs = [r["lr"] for r in js["curve"]]
    assert lrs == pytest.approx([0.002, 0.02, 0.002])
    ckpt = torch.load(tmp_path / "t.pt", weights_only=True)
    assert {"arch", "num_classes", "model", "state_dict", "settings"} <= set(ckpt)
    assert ckpt["num_classes"] == 3 and ckpt["model"] == {"width": 0.125, "dropout": 0.5}
    net = load_teacher(tmp_path / "t.pt", "cpu")
    assert not net.training
    assert net(torch.zeros(2, 3, 8, 48, 48)).shape == (2, 3)
    assert not (tmp_path / "work" / "teacher" / "tiny-minic3d" / "last.pt").exists()  # removed when done


def test_killed_teacher_resumes_to_identical_weights(tmp_path, monkeypatch):
    frames = tiny_frames(tmp_path / "f.h5")
    settings = stage_settings(tiny_config(tmp_path, epochs=3, milestones=[2]), "teacher", "tiny", arch="minic3d")
    train_teacher(frames, tmp_path / "a.pt", tmp_path / "a.json", settings, workdir=tmp_path / "wa")

    real_save = loop.save_checkpoint
    saved = []

    def save_then_die(state, path):
        real_save(state, path)
        saved.append(state["epoch"])
        if state["epoch"] == 2:
            raise KeyboardInterrupt("killed after epoch 2")

    monkeypatch.setattr(loop, "save_checkpoint", save_then_die)
    with pytest.raises(KeyboardInterrupt):
        train_teacher(frames, tmp_path / "b.pt", tmp_path / "b.json", settings, workdir=tmp_path / "wb")
    assert not (tmp_path / "b.pt").exists() and (tmp_path / "wb" / "last.pt").exists()
    monkeypatch.setattr(loop, "save_checkpoint", real_save)
    train_teacher(frames, tmp_path / "b.pt", tmp_path / "b.json", settings, workdir=tmp_path / "wb")

    a = torch.load(tmp_path / "a.pt", weights_only=True)["state_dict"]
    b = torch.load(tmp_path / "b.pt", weights_only=True)["state_dict"]
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k
    ja, jb = (json.loads((tmp_path / f"{n}.json").read_text()) for n in "ab")
    assert ja["curve"] == jb["curve"]


def test_checkpoint_of_other_settings_is_ignored(tmp_path):
    frames = tiny_frames(tmp_path / "f.h5")
    settings = stage_settings(tiny_config(tmp_path, epochs=1), "teacher", "tiny", arch="minic3d")
    wd = tmp_path / "w"
    wd.mkdir()
    loop.save_checkpoint({"fingerprint": "someone-else", "epoch": 99}, wd / "last.pt")
    m = train_teacher(frames, tmp_path / "t.pt", tmp_path / "t.json", settings, workdir=wd)
    assert [r["epoch"] for r in m["curve"]] == [0]
