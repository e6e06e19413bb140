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
from vdc.condense.rded import mosaic, mosaic_order
from vdc.condense.select import read_clips, spaced_windows, window_indices
from vdc.config import stage_settings
from vdc.data.clips import center_crop, crop_resize, denormalize, sample_resized_crop_boxes
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
    """make_ctx(method, ipc, seed, temporal, model, frames, hflip, pairs, **method settings): a StubContext
    on the uneven frames file (4/3/2 training videos) with the tiny config's settings for ``method`` and
    the dataset's flip (``hflip``, ``pairs`` = hflip_pairs)."""
    def build(method, ipc=2, seed=0, temporal=None, model=None, frames=None, hflip="on", pairs=None,
              **method_settings):
        ds = {"hflip": hflip, **({"hflip_pairs": pairs} if pairs else {})}
        cfg = tiny_config(methods={**METHODS, "random": {}, method: {**METHODS.get(method, {}), **method_settings}},
                          datasets={"tiny": ds})
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
    """store: frame with random windows (vdc's earlier Random): whole stored frames at the clip interval."""
    with caplog.at_level(logging.WARNING):
        ctx = make_ctx("random", ipc=3, seed=0, store="frame", window="random")
        a = get_method("random")(ctx)
    assert "class 2 (c) has 2 training videos, fewer than IPC=3" in caplog.text
    fr = check_selected_set(ctx, a)
    assert a.clips.shape[2:] == (H, W, 3)  # storage size
    for clip, vid, idx in zip(a.clips, a.source_video, a.source_frames):
        np.testing.assert_array_equal(clip, fr.read_frames(int(vid), idx))
        step = np.diff(idx)
        iv = 8 if fr.lengths[vid] >= 64 else fr.lengths[vid] // 8
        assert (step == iv).all(), "consecutive sampled frames at the clip interval"
    b = get_method("random")(make_ctx("random", ipc=3, seed=0, store="frame", window="random"))
    np.testing.assert_array_equal(a.clips, b.clips)
    np.testing.assert_array_equal(a.source_frames, b.source_frames)
    others = [get_method("random")(make_ctx("random", ipc=2, seed=s, store="frame", window="random")) for s in (1, 2)]
    a2 = get_method("random")(make_ctx("random", ipc=2, seed=0, store="frame", window="random"))
    assert any(not np.array_equal(a2.source_frames, o.source_frames) or
               not np.array_equal(a2.source_video, o.source_video) for o in others)


def test_random_stores_an_input_size_crop_of_the_first_window(make_ctx):
    """The reference's Random (its RDED script with one candidate): the first window of each video, one
    random resized crop (0.08-1) + flip, stored at input size."""
    ctx = make_ctx("random", ipc=2, seed=3)
    cs = get_method("random")(ctx)
    fr = check_selected_set(ctx, cs)
    assert cs.clips.shape[2:] == (SIZE, SIZE, 3) and cs.attrs["store"] == "crop" and cs.attrs["window"] == "first"
    for vid, idx in zip(cs.source_video, cs.source_frames):
        iv = 8 if fr.lengths[vid] >= 64 else fr.lengths[vid] // 8
        np.testing.assert_array_equal(idx, iv * np.arange(8))            # the first window: frames 0, iv, ..., 7 iv
    # by hand: the same videos (ctx.rng), then the boxes and the flips from the job's torch generator
    g = torch.Generator().manual_seed(3)
    boxes = sample_resized_crop_boxes(len(cs.labels), H, W, (0.08, 1.0), generator=g)
    flips = torch.rand(len(cs.labels), generator=g) < 0.5
    raw = torch.from_numpy(read_clips(fr, cs.source_video, cs.source_frames))
    want = (crop_resize(raw, boxes, SIZE, flips).clamp(0, 1) * 255).round().to(torch.uint8).permute(0, 2, 3, 4, 1)
    np.testing.assert_array_equal(cs.clips, want.numpy())
    assert 0 < cs.attrs["flipped"] < len(cs.labels)
    # the whole-frame storage stays available, on the same videos and windows
    frame = get_method("random")(make_ctx("random", ipc=2, seed=3, store="frame"))
    np.testing.assert_array_equal(frame.source_frames, cs.source_frames)
    assert frame.clips.shape[2:] == (H, W, 3)


def gradient_frames(path, per_class=6, length=20):
    """Videos whose frames brighten from left to right (a flipped crop darkens from left to right)."""
    ramp = np.linspace(20, 235, W).astype(np.uint8)
    frame = np.broadcast_to(ramp[None, :, None], (H, W, 3))
    videos = [np.broadcast_to(frame, (length, H, W, 3)).copy() for _ in range(3 * per_class)]
    labels = [c for c in range(3) for _ in range(per_class)]
    write_frames(path, videos, labels, [0] * len(videos), classes=["a", "b", "c"])


def _mirrored(clips):
    """Which stored clips darken from left to right (were flipped)."""
    c = clips.astype(int)
    return c[:, :, :, :4].mean((1, 2, 3, 4)) > c[:, :, :, -4:].mean((1, 2, 3, 4))


@pytest.mark.parametrize("method", ["random", "rded"])
def test_flip_off_never_flips_a_stored_crop(tmp_path, make_ctx, method):
    gradient_frames(tmp_path / "ramp.h5")
    kw = {"model": tiny_teacher(), "mipc": 6, "clips_per_video": 2} if method == "rded" else {}
    on = get_method(method)(make_ctx(method, ipc=6, frames=tmp_path / "ramp.h5", **kw))
    off = get_method(method)(make_ctx(method, ipc=6, frames=tmp_path / "ramp.h5", hflip="off", **kw))
    assert _mirrored(on.clips).any() and not _mirrored(off.clips).any()
    assert on.attrs["hflip"] == "on" and off.attrs["hflip"] == "off"


def test_map_flips_only_classes_without_a_mirrored_partner(tmp_path, make_ctx):
    """hflip map: a flipped clip of a paired class is a clip of the partner class, so a stored crop of a
    paired class (a, b here) is never flipped; class c still is."""
    gradient_frames(tmp_path / "ramp.h5")
    ctx = make_ctx("random", ipc=6, frames=tmp_path / "ramp.h5", hflip="map", pairs=[["a", "b"]])
    cs = get_method("random")(ctx)
    flipped = _mirrored(cs.clips)
    assert not flipped[cs.labels < 2].any() and flipped[cs.labels == 2].any()


def test_random_long_and_centre_windows(make_ctx):
    ctx = make_ctx("random", ipc=1, temporal="tc16-sliding-none", window="centre", store="frame")
    cs = get_method("random")(ctx)
    fr = check_selected_set(ctx, cs, t_c=16)
    for vid, idx in zip(cs.source_video, cs.source_frames):
        length = fr.lengths[vid]
        iv = 8 if length >= 128 else length // 16
        start = max((length - 15 * iv) // 2 - 1, 0)
        np.testing.assert_array_equal(idx, start + iv * np.arange(16))


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
    for vid, idx in zip(cs.source_video, cs.source_frames):  # centre windows (the reference's val clip)
        length = fr.lengths[vid]
        iv = 8 if length >= 64 else length // 8
        assert idx[0] == max((length - 7 * iv) // 2 - 1, 0)
    # stored as the view the features came from: the centre input-size crop of the centre window
    assert cs.clips.shape[2:] == (SIZE, SIZE, 3) and cs.attrs["store"] == "crop"
    raw = torch.from_numpy(read_clips(fr, cs.source_video, cs.source_frames))
    want = (center_crop(raw, SIZE) * 255).round().to(torch.uint8).permute(0, 2, 3, 4, 1).numpy()
    np.testing.assert_array_equal(cs.clips, want)
    again = get_method("herding")(make_ctx("herding", ipc=2, seed=5, model=model))
    np.testing.assert_array_equal(cs.clips, again.clips)  # no randomness at all
    frame = get_method("herding")(make_ctx("herding", ipc=2, model=model, store="frame"))
    np.testing.assert_array_equal(frame.source_video, cs.source_video)
    np.testing.assert_array_equal(frame.clips, read_clips(fr, cs.source_video, cs.source_frames))
    argmax = get_method("herding")(make_ctx("herding", ipc=2, model=model, criterion="argmax"))
    assert argmax.attrs["criterion"] == "argmax"


def test_herding_argmax_variant_runs_through_the_condense_stage(tiny_config, frames_file, tmp_path):
    """The built-in variant herding_argmax (DeepCore's rule) is a method of every config: it condenses
    through the stage next to herding (argmin) and picks by argmax."""
    from vdc.condense.stage import run_condense
    from vdc.formats.teacher import save_teacher

    model = create_model("minic3d", 3, width=0.125).eval()
    save_teacher(tmp_path / "t.pt", "minic3d", 3, {"width": 0.125, "dropout": 0.5}, model, {})
    cfg = tiny_config(study={"methods": ["herding", "herding_argmax"]})
    assert cfg["methods"]["herding_argmax"] == {"base": "herding", "criterion": "argmax"}
    sets = {}
    for method in ("herding", "herding_argmax"):
        st = stage_settings(cfg, "condense", "tiny", method=method, ipc=2, seed=0)
        assert st["settings"]["base"] == "herding" and st["settings"]["store"] == "crop"
        sets[method] = run_condense(frames_file, tmp_path / f"{method}.h5", st, teacher_paths={"minic3d": tmp_path / "t.pt"})
    cs = sets["herding_argmax"]
    assert cs.attrs["criterion"] == "argmax" and cs.attrs["method"] == "herding_argmax"
    assert sets["herding"].attrs["criterion"] == "argmin"
    with Frames(frames_file) as fr:
        bank = load_bank(fr, "train", "cpu")
        feats = centre_clip_features(model, bank, 8, 8, SIZE, batch=4)
    for c in range(3):
        pos = np.flatnonzero(bank.labels.numpy() == c)
        np.testing.assert_array_equal(cs.source_video[cs.labels == c],
                                      bank.ids.numpy()[pos[herding_order(feats[pos], 2, "argmax")]])


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
    # (8 frames at interval 8) is (b + s + 28) / 255. With m = 3 windows in 64 frames the starts are
    # the reference's np.linspace(1, 64 - 56, 3, dtype=int) - 1 = [1, 4.5, 8] -> [1, 4, 8] - 1 = 0, 3, 7.
    bases = {0: [20, 70, 50, 120], 1: [150, 140, 100]}
    videos, labels, base_of = [], [], []
    for c, bs in bases.items():
        for b in bs:
            vals = (b + np.arange(64)).astype(np.uint8)
            videos.append(np.broadcast_to(vals[:, None, None, None], (64, H, W, 3)).copy())
            labels.append(c)
            base_of.append(b)
    write_frames(tmp_path / "planted.h5", videos, labels, [0] * len(videos), classes=["x", "y", "background"])
    # class x's target is video 70 at start 3; class y's is video 140 at start 7
    targets = [(70 + 3 + 28) / 255, (140 + 7 + 28) / 255]
    ctx = make_ctx("rded", ipc=2, frames=tmp_path / "planted.h5", model=BrightnessTeacher(targets),
                   mipc=10, clips_per_video=3)
    cs = get_method("rded")(ctx)
    # per video, the window nearest the target wins; then the two nearest videos per class:
    # x: 70 (start 3, distance 0), 50 (start 7, mean 85, distance 16); 20 (55: 46) and 120 (148: 47) lose
    # y: 140 (start 7, distance 0), 150 (start 0, mean 178, distance 3); 100 (135: 40) loses
    assert cs.labels.tolist() == [0, 0, 1, 1]
    assert [base_of[int(v)] for v in cs.source_video] == [70, 50, 140, 150]
    assert cs.source_frames[:, 0].tolist() == [3, 7, 7, 0]
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
    w = spaced_windows(np.array([64, 20, 5]), t_c=8, interval=8, m=3)
    np.testing.assert_array_equal(w[0, :, 0], [0, 3, 7])          # linspace(1, 8, 3, dtype=int) - 1
    np.testing.assert_array_equal(w[0, 1], 3 + 8 * np.arange(8))
    np.testing.assert_array_equal(w[1, :, 0], [0, 2, 5])          # interval floor(20/8) = 2: linspace(1, 6, 3)
    np.testing.assert_array_equal(w[1, 0], 2 * np.arange(8))
    np.testing.assert_array_equal(w[2, 1], [2] * 8)               # shorter than 8 frames: interval 0, one frame
    np.testing.assert_array_equal(spaced_windows(np.array([64]), 8, 8, 1)[0, 0], 8 * np.arange(8))  # m = 1: first
    tiles = torch.stack([torch.full((3, 2, 4, 4), float(i)) for i in range(4)])
    grid = mosaic(tiles, 2)
    assert grid.shape == (3, 2, 4, 4)
    assert grid[0, 0, :2, :2].eq(0).all() and grid[0, 0, :2, 2:].eq(1).all()
    assert grid[0, 0, 2:, :2].eq(2).all() and grid[0, 0, 2:, 2:].eq(3).all()
    # RDED's mix_images: cell k of mosaic j is rank k * n + j (n = 2 mosaics of 4 cells)
    np.testing.assert_array_equal(mosaic_order(np.arange(8), 2, 4), [0, 2, 4, 6, 1, 3, 5, 7])


def test_rded_mosaic_interleaves_the_ranking(tmp_path, make_ctx):
    """factor 2, IPC 2: 8 ranked crops per class fill 2 mosaics as RDED's mix_images does, cell k of
    mosaic j = rank k·2 + j (not 4 consecutive ranks per mosaic)."""
    bases = [20, 40, 60, 80, 100, 120, 140, 160]
    videos = [np.full((16, H, W, 3), b, np.uint8) for b in bases]
    write_frames(tmp_path / "ranks.h5", videos, [0] * 8, [0] * 8, classes=["x", "background"])
    ctx = make_ctx("rded", ipc=2, frames=tmp_path / "ranks.h5", model=BrightnessTeacher([0.0]), factor=2,
                   mipc=8, clips_per_video=1)
    cs = get_method("rded")(ctx)                 # ranking = ascending brightness: rank r is base 20 (r + 1)
    assert cs.clips.shape == (2, 8, SIZE, SIZE, 3)
    half = SIZE // 2
    for j in range(2):
        cells = [cs.clips[j, 0, :half, :half, 0], cs.clips[j, 0, :half, half:, 0],
                 cs.clips[j, 0, half:, :half, 0], cs.clips[j, 0, half:, half:, 0]]
        assert [int(c.mean().round()) for c in cells] == [bases[k * 2 + j] for k in range(4)]


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
