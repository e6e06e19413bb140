"""Evaluation protocol: schedule, late epochs, losses, Multi-SL relabelling, a tiny end-to-end run,
resume after a kill, and the "full" pseudo-method."""
import copy
import json
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

import vdc.evaluate as E
from vdc.condense.base import Context
from vdc.condensed import CondensedSet
from vdc.config import stage_settings, validate_config
from vdc.data.frames import write_frames
from vdc.models import create_model
from vdc.train import loop
from vdc.utils import save_torch

torch.set_num_threads(1)
K = 3


# ----------------------------------------------------------------------------- fixtures

def tiny_config(tmp_path, **ev):
    cfg = {
        "device": "cpu", "workdir": str(tmp_path / "work"),
        "study": {"datasets": ["tiny"], "methods": ["random"]},
        "datasets": {"tiny": {"format": "list", "video_root": "v", "annotations": "a", "storage_size": [52, 56],
                              "input_size": 48, "base_batch": 2}},
        "models": {"minic3d": {"width": 0.125}},
        "evaluate": {"epochs": 3, "test_batch": 4, **ev},
        "methods": {"random": {}},
    }
    return validate_config(cfg)


def settings_for(cfg, labels="multisl", loss="msegt", cutmix="nocutmix", seed=0, arch="minic3d"):
    return stage_settings(cfg, "evaluate", "tiny", arch=arch, labels=labels, loss=loss, cutmix=cutmix, seed=seed)


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    d = tmp_path_factory.mktemp("eval")
    rng = np.random.default_rng(0)
    videos, labels, splits = [], [], []
    for split, per in ((0, 3), (1, 2)):
        for c in range(K):
            for _ in range(per):
                videos.append(rng.integers(0, 255, (int(rng.integers(12, 30)), 52, 56, 3), dtype=np.uint8))
                labels.append(c), splits.append(split)
    write_frames(d / "frames.h5", videos, labels, splits, [f"c{c}" for c in range(K)])
    # a condensed set of 2 clips per class (IPC 2), uint8 at storage size, 8 frames
    sel = CondensedSet(clips=rng.integers(0, 255, (2 * K, 8, 52, 56, 3), dtype=np.uint8),
                       labels=np.repeat(np.arange(K), 2), source_video=np.arange(2 * K),
                       attrs={"dataset": "tiny", "method": "random", "ipc": 2, "t_c": 8, "sampling": "naive",
                              "interpolation": "none", "seed": 0, "num_classes": K})
    sel.write(d / "sel.h5")
    # a distilled-looking set: float clips at input size, 4 frames (dup to 8), own label logits
    dist = CondensedSet(clips=rng.random((K, 4, 48, 48, 3)).astype(np.float32), labels=np.arange(K),
                        label_logits=rng.normal(size=(K, K)).astype(np.float32),
                        attrs={"dataset": "tiny", "method": "datm", "ipc": 1, "t_c": 4, "sampling": "naive",
                               "interpolation": "dup", "seed": 0, "num_classes": K})
    dist.write(d / "dist.h5")
    torch.manual_seed(1)
    net = create_model("minic3d", K, width=0.125)
    save_torch({"arch": "minic3d", "num_classes": K, "model": {"width": 0.125, "dropout": 0.5},
                "state_dict": net.state_dict(), "settings": {}}, d / "teacher.pt")
    return d


# ----------------------------------------------------------------------------- unit pieces

def test_schedule_factor():
    assert E.schedule_factor(0, 300) == pytest.approx(1.0)
    assert E.schedule_factor(150, 300) == pytest.approx(0.5 * (1 + math.cos(math.pi / 4)))
    assert E.schedule_factor(150, 300) == pytest.approx(0.854, abs=1e-3)
    assert E.schedule_factor(299, 300) == pytest.approx(0.503, abs=1e-3)


def test_late_epochs():
    assert E.late_epochs(300) == list(range(209, 300, 10))
    assert E.late_epochs(30) == list(range(20, 30))
    assert E.late_epochs(3) == [1, 2]
    assert E.late_epochs(30, [5, 10, 99]) == [5, 10, 29]


def test_msegt_by_hand():
    s = torch.tensor([[1.0, 2.0], [0.0, 0.0]])
    t = torch.tensor([[0.0, 2.0], [1.0, 1.0]])
    y = torch.tensor([1, 0])
    mse = (1 + 0 + 1 + 1) / 4
    ce = (math.log(1 + math.exp(-1)) + math.log(2)) / 2
    got = E.msegt_loss(s, t, E.hard_ce(s, y), 0.1)
    assert float(got) == pytest.approx(mse + 0.1 * ce, rel=1e-6)


def test_kl_by_hand_with_the_references_formula():
    """Video-DC val.py: KLDivLoss(reduction='batchmean')(log_softmax(s / tau), softmax(t / tau)) - no tau^2."""
    s = torch.tensor([[0.0, 0.0], [1.0, -1.0]])
    t = torch.tensor([[math.log(3.0), 0.0], [0.0, 0.0]])
    p1 = [0.75, 0.25]                                            # softmax(t_1)
    q2 = [math.e / (math.e + math.exp(-1)), math.exp(-1) / (math.e + math.exp(-1))]  # softmax(s_2)
    kl1 = sum(p * math.log(p / 0.5) for p in p1)
    kl2 = sum(0.5 * math.log(0.5 / q) for q in q2)
    assert float(E.kl_loss(s, t, 1.0)) == pytest.approx((kl1 + kl2) / 2, rel=1e-6)
    ref = torch.nn.KLDivLoss(reduction="batchmean")(F.log_softmax(s / 2, 1), F.softmax(t / 2, 1))
    assert float(E.kl_loss(s, t, 2.0)) == pytest.approx(float(ref), rel=1e-6)
    assert float(E.kl_loss(s, t, 2.0, tau_squared=True)) == pytest.approx(4 * float(ref), rel=1e-6)


def test_hard_ce_cutmix_mixes_both_labels():
    s = torch.tensor([[2.0, 0.0], [0.0, 1.0]])
    y = torch.tensor([0, 1])
    perm = torch.tensor([1, 0])
    import torch.nn.functional as F
    want = 0.3 * F.cross_entropy(s, y) + 0.7 * F.cross_entropy(s, y[perm])
    assert float(E.hard_ce(s, y, perm, 0.3)) == pytest.approx(float(want))


# ----------------------------------------------------------------------------- Multi-SL

def test_multisl_labels_are_the_teachers_logits_on_the_students_view(files, tmp_path, monkeypatch):
    cfg = tiny_config(tmp_path, cutmix=True)
    ev = settings_for(cfg, cutmix="cutmix")["evaluate"]
    ds = settings_for(cfg)["dataset"]
    data = E.CondensedClips(CondensedSet.read(files / "sel.h5"), ds, ev["scale"], ev["ratio"], "cpu")
    torch.manual_seed(0)
    student = create_model("minic3d", K, width=0.125)
    labeler = create_model("minic3d", K, width=0.125).eval()
    opt = torch.optim.AdamW(loop.decay_groups(student, 0.01), lr=1e-3)
    seen = {"student": [], "labeler_in": [], "labeler_out": [], "targets": []}
    student.register_forward_pre_hook(lambda m, args: seen["student"].append(args[0].detach().clone()))
    labeler.register_forward_hook(lambda m, args, out: (seen["labeler_in"].append(args[0].clone()),
                                                        seen["labeler_out"].append(out.clone())) and None)
    real = E.msegt_loss
    monkeypatch.setattr(E, "msegt_loss", lambda s, t, ce, lam: seen["targets"].append(t.clone()) or real(s, t, ce, lam))
    proto = E.Protocol(student, opt, data, ev, labeler=labeler)
    gen = torch.Generator().manual_seed(0)
    for _ in range(3):
        proto.step(torch.randperm(len(data), generator=gen)[:4], gen)
    assert len(seen["student"]) == len(seen["labeler_in"]) == len(seen["targets"]) == 3
    for xs, xl, out, t in zip(seen["student"], seen["labeler_in"], seen["labeler_out"], seen["targets"]):
        assert torch.equal(xs, xl)  # the very tensor the student trained on
        assert torch.equal(t, out)  # ... relabelled by the teacher
    assert not torch.equal(seen["student"][0], seen["student"][1])  # fresh views each iteration


# ----------------------------------------------------------------------------- end to end

KEYS = {"dataset", "method", "ipc", "temporal", "seed", "arch", "labels", "loss", "cutmix", "top1", "top5",
        "best_late", "late", "curve", "wall_time_s", "device", "num_clips", "settings", "condensed_file",
        "vdc_version"}


@pytest.mark.parametrize("labels,loss,cutmix,cset", [
    ("multisl", "msegt", "nocutmix", "sel.h5"),
    ("hard", "ce", "cutmix", "sel.h5"),
    ("soft", "kl", "nocutmix", "dist.h5"),
    ("soft", "msegt", "cutmix", "sel.h5"),
])
def test_evaluation_writes_complete_json(files, tmp_path, labels, loss, cutmix, cset):
    cfg = tiny_config(tmp_path)
    st = settings_for(cfg, labels, loss, cutmix)
    out = tmp_path / "r.json"
    E.evaluate(files / cset, files / "frames.h5", files / "teacher.pt", out, st)
    r = json.loads(out.read_text())
    assert KEYS <= set(r)
    assert set(r["best_late"]) == {"top1", "top5", "epoch"}
    assert [x["epoch"] for x in r["late"]] == [1, 2] and [x["epoch"] for x in r["curve"]] == [0, 1, 2]
    assert r["top1"] == r["late"][-1]["top1"] and 0 <= r["top1"] <= r["top5"] <= 100
    assert (r["labels"], r["loss"], r["cutmix"], r["seed"], r["arch"]) == (labels, loss, cutmix, 0, "minic3d")
    lrs = [x["lr"] for x in r["curve"]]
    assert lrs == pytest.approx([1e-3 * E.schedule_factor(e, 3) for e in range(3)])
    if cset == "sel.h5":
        assert (r["ipc"], r["num_clips"], r["batch"], r["iters_per_epoch"]) == (2, 6, 4, 2)
        assert r["temporal"] == "tc8-naive-none"
    else:
        assert r["temporal"] == "tc4-naive-dup" and r["soft_source"] == "label_logits"
    assert all(math.isfinite(x["loss"]) for x in r["curve"])


def test_invalid_label_loss_pair_is_refused(files, tmp_path):
    st = settings_for(tiny_config(tmp_path), "hard", "msegt")
    with pytest.raises(ValueError, match="cannot be trained with loss"):
        E.evaluate(files / "sel.h5", files / "frames.h5", None, tmp_path / "r.json", st)


def test_killed_evaluation_resumes_to_the_same_result(files, tmp_path, kill_after):
    st = settings_for(tiny_config(tmp_path, epochs=4, checkpoint_every=1))
    a = E.evaluate(files / "sel.h5", files / "frames.h5", files / "teacher.pt", tmp_path / "a.json", st,
                   workdir=tmp_path / "wa")
    kill_after(2)
    with pytest.raises(KeyboardInterrupt):
        E.evaluate(files / "sel.h5", files / "frames.h5", files / "teacher.pt", tmp_path / "b.json", st,
                   workdir=tmp_path / "wb")
    kill_after(None)
    b = E.evaluate(files / "sel.h5", files / "frames.h5", files / "teacher.pt", tmp_path / "b.json", st,
                   workdir=tmp_path / "wb")
    assert a["curve"] == b["curve"] and a["late"] == b["late"]
    assert not (tmp_path / "wb" / "last.pt").exists()


def test_nan_clip_stops_the_evaluation_before_any_result(files, tmp_path):
    from vdc.errors import NonFiniteError

    cs = CondensedSet.read(files / "dist.h5")
    cs.clips = cs.clips.astype(np.float32)
    cs.clips[0, 0, 0, 0, 0] = np.nan
    cs.write(tmp_path / "nan.h5")
    st = settings_for(tiny_config(tmp_path), "hard", "ce")
    with pytest.raises(NonFiniteError, match="nan.h5"):
        E.evaluate(tmp_path / "nan.h5", files / "frames.h5", None, tmp_path / "r.json", st)
    assert not (tmp_path / "r.json").exists()


# ----------------------------------------------------------------------------- the "full" pseudo-method

def test_full_method_takes_every_training_video_centre_clip(files, tmp_path):
    from vdc.condense import get_method
    from vdc.data.clips import center_frame_indices
    from vdc.data.frames import Frames

    ds = tiny_config(tmp_path)["datasets"]["tiny"] | {"name": "tiny"}
    ctx = Context(frames_path=files / "frames.h5", ipc=1, seed=0, settings={"temporal": "tc8-naive-none"},
                  stage={"dataset": ds, "method": "full"}, device=torch.device("cpu"), workdir=tmp_path / "w")
    cs = get_method("full")(ctx)
    fr = Frames(files / "frames.h5")
    train = fr.split_ids("train")
    assert cs.clips.dtype == np.uint8 and cs.clips.shape == (len(train), 8, 52, 56, 3)
    assert list(cs.source_video) == list(train) and list(cs.labels) == list(fr.labels[train])
    want_idx = center_frame_indices(torch.as_tensor(fr.lengths[train]), 8, 8).numpy()
    assert (cs.source_frames == want_idx).all()
    v = 4
    assert np.array_equal(cs.clips[v], fr.read_frames(int(train[v]), want_idx[v]))
    assert cs.attrs["method"] == "full" and cs.attrs["t_c"] == 8


@pytest.mark.parametrize("t_c,sampling,interp,plain,windows", [
    (16, "sliding", "none", list(range(4, 12)), {tuple(range(s, s + 8)) for s in range(9)}),
    (24, "segment", "none", list(range(8, 16)), {tuple(range(s, s + 8)) for s in (0, 8, 16)}),
    (4, "naive", "dup", [0, 0, 1, 1, 2, 2, 3, 3], {(0, 0, 1, 1, 2, 2, 3, 3)}),
])
def test_condensed_views_follow_the_temporal_setting(tmp_path, t_c, sampling, interp, plain, windows):
    """Frame k of every condensed video is the constant k/255: the views' frame values are the frame ids."""
    clips = np.broadcast_to(np.arange(t_c, dtype=np.uint8).reshape(1, t_c, 1, 1, 1), (2, t_c, 20, 20, 3)).copy()
    cs = CondensedSet(clips=clips, labels=np.array([0, 1]),
                      attrs={"t_c": t_c, "sampling": sampling, "interpolation": interp})
    ds = {"clip_len": 8, "input_size": 16}
    data = E.CondensedClips(cs, ds, (0.08, 1.0), (0.75, 1.33), "cpu")

    def frame_ids(x):  # [B, 3, T, S, S] normalised -> [B, T] frame ids
        from vdc.data.clips import denormalize
        return (denormalize(x)[:, 0, :, 8, 8] * 255).round().long()

    assert frame_ids(data.plain_view(torch.arange(2))).tolist() == [plain, plain]
    g = torch.Generator().manual_seed(0)
    seen = {tuple(r) for _ in range(30) for r in frame_ids(data.train_view(torch.arange(2), g)).tolist()}
    assert seen == windows


def test_loop_adamw_matches_torch_adamw_and_never_imports_dynamo():
    """vdc's AdamW (torch's functional kernel without the Optimizer class) gives torch.optim.AdamW's
    numbers, with decay groups and a changing learning rate, and resumes from its state dict."""
    import subprocess
    import sys

    from vdc.train import loop

    torch.manual_seed(0)
    a = torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.LayerNorm(3))
    b = copy.deepcopy(a)
    ours = loop.AdamW(loop.decay_groups(a, 0.01), lr=1e-2, betas=(0.9, 0.999))
    ref = torch.optim.AdamW(loop.decay_groups(b, 0.01), lr=1e-2, betas=(0.9, 0.999))
    x = torch.randn(8, 4)
    for step in range(6):
        for opt, net in ((ours, a), (ref, b)):
            for g in opt.param_groups:
                g["lr"] = 1e-2 * (0.5 if step >= 3 else 1.0)
            opt.zero_grad()
            net(x).pow(2).sum().backward()
            opt.step()
        if step == 2:  # resume ours from its state dict half-way
            state = copy.deepcopy(ours.state_dict())
            ours = loop.AdamW(loop.decay_groups(a, 0.01), lr=1e-2, betas=(0.9, 0.999))
            ours.load_state_dict(state)
    for p, q in zip(a.parameters(), b.parameters()):
        torch.testing.assert_close(p, q, rtol=0, atol=1e-7)
    code = ("import sys, torch; from vdc.train import loop; m = torch.nn.Linear(2, 2); "
            "o = loop.AdamW(loop.decay_groups(m, 0.01), lr=0.1); m(torch.ones(1, 2)).sum().backward(); o.step(); "
            "assert 'torch._dynamo' not in sys.modules")
    subprocess.run([sys.executable, "-c", code], check=True)


def test_soft_labels_share_one_crop_and_flip_per_batch_as_the_reference():
    """Video-DC val.py augments the soft-label batch tensor with torchvision transforms: one crop and one
    flip for the whole batch. Hard / Multi-SL (and soft_augment: clip) draw one per clip."""
    rng = np.random.default_rng(0)
    cs = CondensedSet(clips=rng.integers(0, 255, (6, 8, 20, 20, 3), dtype=np.uint8), labels=np.arange(6) % 3,
                      attrs={"t_c": 8, "sampling": "naive", "interpolation": "none"})
    ds = {"clip_len": 8, "input_size": 12}
    same = E.CondensedClips(cs, ds, (0.08, 1.0), (0.75, 1.33), "cpu", shared_augment=True)
    own = E.CondensedClips(cs, ds, (0.08, 1.0), (0.75, 1.33), "cpu", shared_augment=False)
    idx = torch.zeros(6, dtype=torch.long)            # six copies of clip 0: equal views iff equal boxes + flips
    x, flipped = same.train_views(idx, torch.Generator().manual_seed(1))
    assert all(torch.equal(x[0], x[i]) for i in range(6)) and flipped.all() == flipped.any()
    y, _ = own.train_views(idx, torch.Generator().manual_seed(1))
    assert not all(torch.equal(y[0], y[i]) for i in range(6))
