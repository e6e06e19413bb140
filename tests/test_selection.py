"""Random, Herding and RDED (vdc/condense/{random,herding,rded}.py) on a tiny frames file.

Teachers here are built directly (a random-init narrow MiniC3D, or a stub whose loss is known per
clip) and handed to the method through a Context subclass; the stage-level tests with teacher
files are in test_condense.py.
"""
import logging

import numpy as np
import pytest
import torch

from vdc.condense import get_method
from vdc.condense.base import Context
from vdc.condense.herding import centre_clip_features, herding_order
from vdc.condense.rded import candidate_windows, mosaic
from vdc.condense.select import read_clips, window_indices
from vdc.config import stage_settings
from vdc.data.clips import denormalize
from vdc.data.frames import Frames, load_bank, write_frames
from vdc.models import create_model

torch.set_num_threads(1)

H, W, SIZE = 48, 56, 48
TRAIN_PER_CLASS = (4, 3, 2)  # class 2 is short: fewer training videos than IPC 3


METHODS = {"herding": {"batch": 4}, "rded": {"mipc": 3, "clips_per_video": 3, "batch": 5}}


def uneven_frames(path, seed=0, lengths=None) -> None:
    """3 classes with 4/3/2 training videos (20..70 frames of noise) and one test video each."""
    rng = np.random.default_rng(seed)
    labels, splits = [], []
    for c, n in enumerate(TRAIN_PER_CLASS):
        labels += [c] * (n + 1)
        splits += [0] * n + [1]
    lengths = lengths or [int(rng.integers(20, 70)) for _ in labels]
    videos = [rng.integers(0, 256, (n, H, W, 3), dtype=np.uint8) for n in lengths]
    write_frames(path, videos, labels, splits, classes=["a", "b", "c"])


class StubContext(Context):
    """A Context whose teacher() returns a given module instead of loading a file."""

    model: torch.nn.Module | None = None

    def teacher(self, arch=None):
        return self.model


@pytest.fixture()
def make_ctx(tiny_config, tmp_path):
    """make_ctx(method, ipc, seed, temporal, model, frames, **method settings): a StubContext on the
    uneven frames file (4/3/2 training videos) with the tiny config's settings for ``method``."""
    def build(method, ipc=2, seed=0, temporal=None, model=None, frames=None, **method_settings):
        cfg = tiny_config(methods={**METHODS, "random": {}, method: {**METHODS.get(method, {}), **method_settings}})
        wc = {"method": method, "ipc": ipc, "seed": seed}
        if temporal:
            wc["temporal"] = temporal
        st = stage_settings(cfg, "condense", "tiny", **wc)
        frames = frames or tmp_path / "uneven.h5"
        if not frames.exists():
            uneven_frames(frames)
        ctx = StubContext(frames_path=frames, ipc=ipc, seed=seed, settings=st["settings"], stage=st,
                          device=torch.device("cpu"), workdir=tmp_path / "work")
        ctx.model = model
        return ctx
    return build


def tiny_teacher(seed=0):
    torch.manual_seed(seed)
    return create_model("minic3d", 3, width=0.125).eval()


def check_selected_set(ctx, cs, t_c=8):
    """Shapes, IPC per class, labels and provenance of a selection method's set."""
    fr = Frames(ctx.frames_path)
    want = [min(ctx.ipc, n) for n in TRAIN_PER_CLASS]
    assert np.bincount(cs.labels, minlength=3).tolist() == want
    assert cs.clips.dtype == np.uint8 and cs.clips.shape[1] == t_c
    assert (fr.split[cs.source_video] == 0).all(), "sources must be training videos"
    assert (fr.labels[cs.source_video] == cs.labels).all(), "sources must be of the clip's class"
    assert len(set(cs.source_video.tolist())) == len(cs.labels), "a video is used once"
    assert cs.source_frames.shape == (len(cs.labels), t_c)
    assert ((cs.source_frames >= 0) & (cs.source_frames < fr.lengths[cs.source_video][:, None])).all()
    return fr


# ------------------------------------------------------------------------------------- Random

def test_random_shapes_provenance_and_determinism(caplog, make_ctx):
    with caplog.at_level(logging.WARNING):
        ctx = make_ctx("random", ipc=3, seed=0)
        a = get_method("random")(ctx)
    assert "class 2 (c) has 2 training videos, fewer than IPC=3" in caplog.text
    fr = check_selected_set(ctx, a)
    assert a.clips.shape[2:] == (H, W, 3)  # storage size
    for clip, vid, idx in zip(a.clips, a.source_video, a.source_frames):
        np.testing.assert_array_equal(clip, fr.read_frames(int(vid), idx))
        step = np.diff(idx)
        iv = 8 if fr.lengths[vid] >= 64 else fr.lengths[vid] // 8
        assert (step == iv).all(), "consecutive sampled frames at the clip interval"
    b = get_method("random")(make_ctx("random", ipc=3, seed=0))
    np.testing.assert_array_equal(a.clips, b.clips)
    np.testing.assert_array_equal(a.source_frames, b.source_frames)
    others = [get_method("random")(make_ctx("random", ipc=2, seed=s)) for s in (1, 2)]
    a2 = get_method("random")(make_ctx("random", ipc=2, seed=0))
    assert any(not np.array_equal(a2.source_frames, o.source_frames) or
               not np.array_equal(a2.source_video, o.source_video) for o in others)


def test_random_long_and_centre_windows(make_ctx):
    ctx = make_ctx("random", ipc=1, temporal="tc16-sliding-none", window="centre")
    cs = get_method("random")(ctx)
    fr = check_selected_set(ctx, cs, t_c=16)
    for vid, idx in zip(cs.source_video, cs.source_frames):
        length = fr.lengths[vid]
        iv = 8 if length >= 128 else max(length // 16, 1)
        start = max((length - (15 * iv + 1)) // 2, 0)
        np.testing.assert_array_equal(idx, (start + iv * np.arange(16)) % length)


# ------------------------------------------------------------------------------------- Herding

def test_herding_order_textbook():
    f = torch.tensor([[0.0], [1.0], [2.0], [3.0], [10.0]])  # mean 3.2
    # t=0: target 3.2 -> 3; t=1: 6.4-3=3.4 -> 2; t=2: 9.6-5=4.6 -> 1 (3.6 < 5.4); t=3: 12.8-6=6.8 -> 10; then 0
    assert herding_order(f, 5) == [3, 2, 1, 4, 0]
    # DeepCore's argmax: t=0 farthest from 3.2 -> 10; t=1: 6.4-10=-3.6 -> 3 (6.6); t=2: 9.6-13=-3.4 -> 3 is gone -> 2
    assert herding_order(f, 3, "argmax") == [4, 3, 2]
    assert herding_order(f, 9) == [3, 2, 1, 4, 0]  # k > n: every row once
    with pytest.raises(ValueError, match="argmin or argmax"):
        herding_order(f, 1, "median")


def test_herding_mean_approaches_class_mean():
    g = torch.Generator().manual_seed(0)
    f = torch.randn(200, 16, generator=g) * torch.linspace(0.5, 3, 16)
    mu = f.mean(0)
    order = herding_order(f, 40)
    err = [float(torch.linalg.vector_norm(f[order[:k]].mean(0) - mu)) for k in (1, 5, 10, 40)]
    assert err == sorted(err, reverse=True) and err[-1] < 0.1 * err[0]
    rand_err = np.mean([float(torch.linalg.vector_norm(f[torch.randperm(200, generator=g)[:10]].mean(0) - mu))
                        for _ in range(20)])
    assert err[2] < 0.5 * rand_err  # herding's 10 beat random 10 by far


def test_herding_selects_by_teacher_features(make_ctx):
    model = tiny_teacher()
    ctx = make_ctx("herding", ipc=2, model=model)
    cs = get_method("herding")(ctx)
    fr = check_selected_set(ctx, cs)
    bank = load_bank(fr, "train", "cpu")
    feats = centre_clip_features(model, bank, 8, 8, SIZE, batch=3)  # another batch size: same features
    for c in range(3):
        pos = np.flatnonzero(bank.labels.numpy() == c)
        expect = bank.ids.numpy()[pos[herding_order(feats[pos], 2)]]
        np.testing.assert_array_equal(cs.source_video[cs.labels == c], expect)
    for vid, idx in zip(cs.source_video, cs.source_frames):  # centre windows
        length = fr.lengths[vid]
        iv = 8 if length >= 64 else length // 8
        assert idx[0] == max((length - (7 * iv + 1)) // 2, 0)
    again = get_method("herding")(make_ctx("herding", ipc=2, seed=5, model=model))
    np.testing.assert_array_equal(cs.clips, again.clips)  # no randomness at all
    argmax = get_method("herding")(make_ctx("herding", ipc=2, model=model, criterion="argmax"))
    assert argmax.attrs["criterion"] == "argmax"


# ------------------------------------------------------------------------------------- RDED

class BrightnessTeacher(torch.nn.Module):
    """Logit of class j = -100 * (mean pixel brightness - target_j)^2, plus a last 'background'
    class with logit 0. The CE on class c is then ~ 100 * (brightness - target_c)^2 + log(1 + ...):
    lowest for the clip whose brightness is closest to target_c."""

    def __init__(self, targets):
        super().__init__()
        self.targets = torch.tensor(targets)

    def forward(self, x):
        b = denormalize(x).mean(dim=(1, 2, 3, 4))
        logits = -100 * (b[:, None] - self.targets[None]) ** 2
        return torch.cat([logits, torch.zeros(len(b), 1)], 1)


def test_rded_picks_lowest_loss_clip_on_planted_example(tmp_path, make_ctx):
    # every frame is uniform (crops and flips do not change a clip's brightness); frame i of a video
    # with base b has pixel value b + i, so the mean brightness of the window starting at s
    # (8 frames at interval 8) is (b + s + 28) / 255. With m = 3 windows in 64 frames
    # (span 57, room 7) the starts are 0, 4 (3.5 rounds to 4) and 7.
    bases = {0: [20, 70, 50, 120], 1: [150, 140, 100]}
    videos, labels, base_of = [], [], []
    for c, bs in bases.items():
        for b in bs:
            vals = (b + np.arange(64)).astype(np.uint8)
            videos.append(np.broadcast_to(vals[:, None, None, None], (64, H, W, 3)).copy())
            labels.append(c)
            base_of.append(b)
    write_frames(tmp_path / "planted.h5", videos, labels, [0] * len(videos), classes=["x", "y", "background"])
    # class x's target is video 70 at start 4; class y's is video 140 at start 7
    targets = [(70 + 4 + 28) / 255, (140 + 7 + 28) / 255]
    ctx = make_ctx("rded", ipc=2, frames=tmp_path / "planted.h5", model=BrightnessTeacher(targets),
                   mipc=10, clips_per_video=3)
    cs = get_method("rded")(ctx)
    # per video, the window nearest the target wins; then the two nearest videos per class:
    # x: 70 (start 4, distance 0), 50 (start 7, mean 85, distance 17); 120 (148: 46) and 20 (55: 47) lose
    # y: 140 (start 7, distance 0), 150 (start 0, mean 178, distance 3); 100 (135: 40) loses
    assert cs.labels.tolist() == [0, 0, 1, 1]
    assert [base_of[int(v)] for v in cs.source_video] == [70, 50, 140, 150]
    assert cs.source_frames[:, 0].tolist() == [4, 7, 7, 0]
    assert cs.clips.shape == (4, 8, SIZE, SIZE, 3)  # stored as the crop, at input size
    expect = np.array([base_of[int(v)] + f for v, f in zip(cs.source_video, cs.source_frames)])
    np.testing.assert_allclose(cs.clips[..., 0].reshape(4, 8, -1).astype(int), expect[..., None].repeat(SIZE * SIZE, -1), atol=1)
    assert cs.attrs["chosen_mean_loss"] < cs.attrs["candidate_mean_loss"]


def test_rded_shapes_determinism_and_short_classes(caplog, make_ctx):
    model = tiny_teacher()
    with caplog.at_level(logging.WARNING):
        ctx = make_ctx("rded", ipc=3, seed=0, model=model)
        a = get_method("rded")(ctx)
    assert "fewer than mipc=3" in caplog.text and "fewer than IPC=3" in caplog.text
    check_selected_set(ctx, a)
    assert a.clips.shape[2:] == (SIZE, SIZE, 3)
    b = get_method("rded")(make_ctx("rded", ipc=3, seed=0, model=model, batch=2))  # batch-independent
    np.testing.assert_array_equal(a.clips, b.clips)
    c = get_method("rded")(make_ctx("rded", ipc=3, seed=1, model=model))
    assert not np.array_equal(a.clips, c.clips)


def test_rded_mosaic_and_long_clips(make_ctx):
    model = tiny_teacher()
    ctx = make_ctx("rded", ipc=1, model=model, factor=2, mipc=4)
    cs = get_method("rded")(ctx)
    assert cs.clips.shape == (3, 8, SIZE, SIZE, 3) and cs.labels.tolist() == [0, 1, 2]
    assert (cs.source_video == -1).all() and cs.attrs["factor"] == 2
    long = get_method("rded")(make_ctx("rded", ipc=1, model=model, temporal="tc16-segment-none"))
    assert long.clips.shape == (3, 16, SIZE, SIZE, 3)


def test_candidate_windows_and_mosaic_layout():
    w = candidate_windows(np.array([64, 20]), t_c=8, interval=8, m=3)
    np.testing.assert_array_equal(w[0, :, 0], [0, 4, 7])
    np.testing.assert_array_equal(w[0, 1], 4 + 8 * np.arange(8))
    np.testing.assert_array_equal(w[1, 0], 2 * np.arange(8))  # short video: interval floor(20/8) = 2
    tiles = torch.stack([torch.full((3, 2, 4, 4), float(i)) for i in range(4)])
    grid = mosaic(tiles, 2)
    assert grid.shape == (3, 2, 4, 4)
    assert grid[0, 0, :2, :2].eq(0).all() and grid[0, 0, :2, 2:].eq(1).all()
    assert grid[0, 0, 2:, :2].eq(2).all() and grid[0, 0, 2:, 2:].eq(3).all()


def test_shared_window_helpers(make_ctx):
    ctx = make_ctx("random")
    centre = window_indices(np.array([64, 20]), t_c=8, interval=8, where="centre")
    np.testing.assert_array_equal(centre[0], 3 + 8 * np.arange(8))   # span 57 in 64 frames: start 3
    np.testing.assert_array_equal(centre[1], 2 + 2 * np.arange(8))   # short video: interval 2, span 15
    g1, g2 = torch.Generator().manual_seed(0), torch.Generator().manual_seed(0)
    np.testing.assert_array_equal(window_indices(np.array([64, 20]), 8, 8, "random", g1),
                                  window_indices(np.array([64, 20]), 8, 8, "random", g2))
    with pytest.raises(ValueError, match="'random' or 'centre'"):
        window_indices(np.array([64]), 8, 8, "middle")
    assert read_clips(ctx.frames, np.zeros(0, np.int64), np.zeros((0, 8), np.int64)).shape == (0, 8, H, W, 3)
