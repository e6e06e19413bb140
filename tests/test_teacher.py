"""Teacher stage: the lr schedule, a tiny CPU run, its outputs, load_teacher, and exact resume after a kill."""
import json

import pytest
import torch

from vdc.config import stage_settings
from vdc.errors import InputError
from vdc.formats.teacher import load_teacher
from vdc.train.teacher import lr_factor, train_teacher


def teacher_settings(tiny_config, tmp_path, **teacher):
    cfg = tiny_config(teacher={"epochs": 3, "batch": 4, "warmup_epochs": 1, "milestones": [2], "eval_every": 2,
                               **teacher})
    return stage_settings(cfg, "teacher", "tiny", arch="minic3d")


def test_lr_factor_warmup_and_steps():
    cfg = {"warmup_epochs": 10, "warmup_start_factor": 0.1, "milestones": [90, 130], "gamma": 0.1}
    assert lr_factor(0, 100, cfg) == pytest.approx(0.1)
    assert lr_factor(500, 100, cfg) == pytest.approx(0.1 + 0.9 * 0.5)
    assert lr_factor(1000, 100, cfg) == pytest.approx(1.0)
    assert lr_factor(89 * 100 + 99, 100, cfg) == pytest.approx(1.0)
    assert lr_factor(90 * 100, 100, cfg) == pytest.approx(0.1)
    assert lr_factor(149 * 100, 100, cfg) == pytest.approx(0.01)


def test_teacher_outputs_and_load(tmp_path, tiny_config, frames_file):
    settings = teacher_settings(tiny_config, tmp_path)
    m = train_teacher(frames_file, tmp_path / "t.pt", tmp_path / "t.json", settings)
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
    assert not list((tmp_path / "work").rglob("*.pt"))  # the checkpoint is removed when done


def test_killed_teacher_resumes_to_identical_weights(tmp_path, tiny_config, frames_file, kill_after):
    settings = teacher_settings(tiny_config, tmp_path)
    train_teacher(frames_file, tmp_path / "a.pt", tmp_path / "a.json", settings, workdir=tmp_path / "wa")
    kill_after(2)
    with pytest.raises(KeyboardInterrupt):
        train_teacher(frames_file, tmp_path / "b.pt", tmp_path / "b.json", settings, workdir=tmp_path / "wb")
    assert not (tmp_path / "b.pt").exists() and (tmp_path / "wb" / "last.pt").exists()
    kill_after(None)
    train_teacher(frames_file, tmp_path / "b.pt", tmp_path / "b.json", settings, workdir=tmp_path / "wb")

    a = torch.load(tmp_path / "a.pt", weights_only=True)["state_dict"]
    b = torch.load(tmp_path / "b.pt", weights_only=True)["state_dict"]
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k
    ja, jb = (json.loads((tmp_path / f"{n}.json").read_text()) for n in "ab")
    assert ja["curve"] == jb["curve"]


def test_checkpoint_of_other_settings_is_not_resumed(tmp_path, tiny_config, frames_file, kill_after):
    settings = teacher_settings(tiny_config, tmp_path)
    kill_after(1)
    with pytest.raises(KeyboardInterrupt):
        train_teacher(frames_file, tmp_path / "t.pt", tmp_path / "t.json", settings, workdir=tmp_path / "w")
    kill_after(None)
    other = teacher_settings(tiny_config, tmp_path, lr=0.01)
    m = train_teacher(frames_file, tmp_path / "t.pt", tmp_path / "t.json", other, workdir=tmp_path / "w")
    assert [r["epoch"] for r in m["curve"]] == [0, 1, 2]      # started over, not resumed at epoch 1


def test_empty_test_split_is_an_error(tmp_path, tiny_config, make_frames):
    frames = make_frames(tmp_path / "f.h5", test_per_class=0)
    with pytest.raises(InputError, match="test split is empty"):
        train_teacher(frames, tmp_path / "t.pt", tmp_path / "t.json", teacher_settings(tiny_config, tmp_path))
    assert not (tmp_path / "t.pt").exists()


def test_a_given_network_is_checked_tested_and_written_instead_of_trained(tmp_path, tiny_config, frames_file):
    """datasets.<name>.teachers.<arch>: a bare state_dict (as converted from another codebase) becomes
    the teacher file, with its test accuracy; a network of the wrong shape is refused with the file's name."""
    from vdc.models import create_model
    from vdc.train.teacher import import_teacher

    torch.manual_seed(0)
    net = create_model("i3d_r18", 3, width=0.125)
    torch.save(net.state_dict(), tmp_path / "pretrained.pt")
    cfg = tiny_config(datasets={"tiny": {"teachers": {"i3d_r18": str(tmp_path / "pretrained.pt")}}})
    settings = stage_settings(cfg, "teacher", "tiny", arch="i3d_r18")
    assert settings["given"] == str(tmp_path / "pretrained.pt")
    m = import_teacher(frames_file, settings["given"], tmp_path / "t.pt", tmp_path / "t.json", settings)
    assert m["imported_from"].endswith("pretrained.pt") and 0 <= m["top1"] <= 100
    back = load_teacher(tmp_path / "t.pt")
    for k, v in net.state_dict().items():
        assert torch.equal(back.state_dict()[k], v), k
    torch.save(create_model("i3d_r18", 5, width=0.125).state_dict(), tmp_path / "wrong.pt")
    with pytest.raises(InputError, match="wrong.pt: the weights do not fit"):
        import_teacher(frames_file, tmp_path / "wrong.pt", tmp_path / "w.pt", tmp_path / "w.json", settings)
    assert stage_settings(tiny_config(), "teacher", "tiny", arch="i3d_r18")["given"] is None
