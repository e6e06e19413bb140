"""vdc/data/clips.py: frame indices, temporal processing, batched augmentation, CutMix."""
import math

import pytest
import torch

from vdc.data import clips as C

torch.set_num_threads(1)


# ----------------------------------------------------------------------------- real-video frame indices

def reference_clip(length: int, t: int, tau: int, start: int | None = None) -> list[int]:
    """Video-DC dataset.py (VideoClsDataset.__getitem__), written out as the reference has it: 1-based
    frame files img_00001.jpg ..., a train start drawn by np.random.randint(1, R + 1) (``start`` given
    here), the val start R // 2; returned 0-based."""
    interval = length // t if length < t * tau else tau
    if start is None:  # mode 'val'
        start = (length - (t - 1) * interval) // 2
    frames = [start] * t if interval == 0 else list(range(start, start + t * interval, interval))
    return [f - 1 for f in frames]


def reference_starts(length: int, t: int, tau: int) -> range:
    """The train starts the reference can draw: np.random.randint(1, L - (t - 1) * interval + 1)."""
    interval = length // t if length < t * tau else tau
    return range(1, length - (t - 1) * interval + 1)


@pytest.mark.parametrize("t", [8, 16, 32, 4])
def test_indices_are_the_references_for_every_length(t):
    """Every training window (all starts) and the centre test clip equal the reference's, for every
    video length 1..400, at the clip length 8 and at the condensation windows T_c = 16, 32 (and 4)."""
    lengths = torch.arange(1, 401)
    room = C.window_room(lengths, t, 8)
    for L in range(1, 401):
        starts = reference_starts(L, t, 8)
        assert int(room[L - 1]) == len(starts)
        got = C.window_indices(torch.full((len(starts),), L), torch.arange(len(starts)), t, 8)
        assert got.tolist() == [reference_clip(L, t, 8, s) for s in starts], L
    centre = C.center_frame_indices(lengths, t, 8).tolist()
    for L in range(1, 401):
        want = reference_clip(L, t, 8)
        if want[0] < 0:  # L = t (or 1): the reference's 1-based start 0 names a file that does not exist
            assert L in (1, t) and centre[L - 1] == [i + 1 for i in want]
        else:
            assert centre[L - 1] == want, L


def test_windows_never_wrap_and_frames_repeat_only_below_one_frame_per_step():
    g = torch.Generator().manual_seed(0)
    for t in (8, 16, 32):
        lengths = torch.arange(1, 401).repeat(5)
        for idx in (C.train_frame_indices(lengths, t, 8, g), C.center_frame_indices(lengths, t, 8)):
            assert (idx >= 0).all() and (idx < lengths.unsqueeze(1)).all()
            steps = idx[:, 1:] - idx[:, :-1]
            long_enough = lengths >= t
            assert (steps[long_enough] > 0).all()                       # distinct, in order
            assert (steps[~long_enough] == 0).all()                     # L < t: one frame, as the reference
            assert (steps[lengths >= 8 * t] == 8).all()                 # interval 8 source frames
    # a 100-frame video's 16-frame window: interval floor(100 / 16) = 6, no wrap
    assert C.center_frame_indices(torch.tensor([100]), 16, 8)[0].tolist() == [4 + 6 * k for k in range(16)]


def test_a_29_frame_video_gives_8_distinct_frames():
    g = torch.Generator().manual_seed(0)
    for idx in (C.train_frame_indices(torch.full((100,), 29), 8, 8, g), C.center_frame_indices(torch.tensor([29]), 8, 8)):
        assert all(len(set(row)) == 8 for row in idx.tolist())
        assert ((idx[:, 1:] - idx[:, :-1]) == 3).all() and idx.max() <= 28


def test_train_starts_are_uniform_over_the_references():
    g = torch.Generator().manual_seed(0)
    for L in (29, 64, 100):
        idx = C.train_frame_indices(torch.full((4000,), L), 8, 8, g)
        starts = torch.bincount(idx[:, 0], minlength=L)
        want = len(reference_starts(L, 8, 8))
        assert (starts[:want] > 0).all() and starts[want:].sum() == 0
        assert starts[:want].float().std() / starts[:want].float().mean() < 0.25  # ~uniform
    again = C.train_frame_indices(torch.full((50,), 100), 8, 8, torch.Generator().manual_seed(1))
    assert torch.equal(again, C.train_frame_indices(torch.full((50,), 100), 8, 8, torch.Generator().manual_seed(1)))


# ----------------------------------------------------------------------------- condensed-video sampling

def test_naive_sampling_is_the_whole_video():
    assert C.condensed_frame_indices(3, 8, 8, "naive").tolist() == [list(range(8))] * 3
    assert C.condensed_frame_indices(2, 4, 8, "naive").tolist() == [[0, 1, 2, 3]] * 2
    assert C.condensed_frame_indices(2, 16, 8, "naive").shape == (2, 16)
    # shorter or equal to a clip: segment and sliding reduce to naive
    for s in ("segment", "sliding"):
        assert C.condensed_frame_indices(2, 8, 8, s).tolist() == [list(range(8))] * 2


def test_segment_sampling_takes_whole_disjoint_segments():
    g = torch.Generator().manual_seed(0)
    idx = C.condensed_frame_indices(200, 24, 8, "segment", g)
    starts = set(idx[:, 0].tolist())
    assert starts == {0, 8, 16}
    assert (idx - idx[:, :1] == torch.arange(8)).all()


def test_sliding_sampling_takes_any_window():
    g = torch.Generator().manual_seed(0)
    idx = C.condensed_frame_indices(300, 16, 8, "sliding", g)
    assert set(idx[:, 0].tolist()) == set(range(9))
    assert (idx - idx[:, :1] == torch.arange(8)).all()
    with pytest.raises(ValueError):
        C.condensed_frame_indices(1, 16, 8, "bogus")


# ----------------------------------------------------------------------------- interpolation

def ramp(t, b=2, h=3, w=4):
    """clips [b, t, h, w, 3] whose frame i has value i everywhere."""
    return torch.arange(t, dtype=torch.float).view(1, t, 1, 1, 1).expand(b, t, h, w, 3).contiguous()


def test_interpolation_dup():
    out = C.interpolate_time(ramp(4), 8, "dup")
    assert out.shape == (2, 8, 3, 4, 3)
    assert out[0, :, 0, 0, 0].tolist() == [0, 0, 1, 1, 2, 2, 3, 3]
    assert C.interpolate_time(ramp(2), 8, "dup")[0, :, 0, 0, 0].tolist() == [0] * 4 + [1] * 4


def test_interpolation_linear_has_the_references_corner_alignment():
    """align_corners=False (Video-DC utils_all.py Interpolate): output frame j samples input time
    (j + 0.5) * 4 / 8 - 0.5, clamped to [0, 3]: -0.25 -> 0, 0.25, 0.75, ..., 2.75, 3.25 -> 3."""
    out = C.interpolate_time(ramp(4), 8, "linear")
    assert out.shape == (2, 8, 3, 4, 3)
    want = torch.tensor([0, 0.25, 0.75, 1.25, 1.75, 2.25, 2.75, 3])  # by hand (align_corners=True: 0, 3/7, ...)
    assert torch.allclose(out[1, :, 2, 3, 1], want)
    assert torch.allclose(out, want.view(1, 8, 1, 1, 1).expand_as(out))
    assert torch.allclose(C.interpolate_time(ramp(2), 4, "linear")[0, :, 0, 0, 0], torch.tensor([0, 0.25, 0.75, 1]))
    u8 = (ramp(4) * 80).to(torch.uint8)  # 0, 80, 160, 240
    lo = C.interpolate_time(u8, 8, "linear")
    assert lo.dtype == torch.float32 and torch.allclose(lo[0, :, 0, 0, 0], want * 80 / 255)
    # the reference's call: trilinear on [B, C, T, H, W] to (8, H, W), align_corners=False
    x = torch.rand(2, 4, 5, 6, 3)
    ref = torch.nn.functional.interpolate(x.permute(0, 4, 1, 2, 3), size=(8, 5, 6), mode="trilinear",
                                          align_corners=False).permute(0, 2, 3, 4, 1)
    assert torch.allclose(C.interpolate_time(x, 8, "linear"), ref, atol=1e-6)


def test_interpolation_none_and_long_clips_unchanged():
    x = ramp(4)
    assert C.interpolate_time(x, 8, "none") is x
    y = ramp(8)
    assert C.interpolate_time(y, 8, "linear") is y
    with pytest.raises(ValueError):
        C.interpolate_time(x, 8, "cubic")


# ----------------------------------------------------------------------------- spatial augmentation

def test_random_resized_crop_is_the_same_for_every_frame_of_a_clip():
    g = torch.Generator().manual_seed(1)
    b, t, h, w = 6, 8, 40, 50
    base = torch.rand(b, 1, h, w, 3, generator=g) * 0.5
    x = base + 0.05 * torch.arange(t).view(1, t, 1, 1, 1)  # frame k = frame 0 + 0.05 k
    out, _ = C.crop_flip(x, 24, generator=g)
    assert out.shape == (b, 3, t, 24, 24)
    diff = out - out[:, :, :1]
    assert torch.allclose(diff, 0.05 * torch.arange(t).view(1, 1, t, 1, 1).expand_as(diff), atol=1e-5)
    # different clips got different crops
    same_clip = base[:1].expand(b, t, h, w, 3).contiguous()
    views, _ = C.crop_flip(same_clip, 24, generator=torch.Generator().manual_seed(2))
    assert not torch.allclose(views[0], views[1])


def test_crop_boxes_respect_scale_ratio_and_bounds():
    g = torch.Generator().manual_seed(0)
    h, w = 64, 80
    boxes = C.sample_resized_crop_boxes(2000, h, w, (0.08, 1.0), (3 / 4, 4 / 3), g)
    y0, x0, bh, bw = boxes.unbind(1)
    assert (y0 >= 0).all() and (x0 >= 0).all() and (y0 + bh <= h).all() and (x0 + bw <= w).all()
    area = bh * bw / (h * w)
    assert area.min() >= 0.07 and area.max() <= 1.0
    r = bw / bh
    assert r.min() >= 3 / 4 - 0.1 and r.max() <= 4 / 3 + 0.1  # rounding of w and h to pixels
    same = C.sample_resized_crop_boxes(2000, h, w, generator=torch.Generator().manual_seed(0))
    assert torch.equal(boxes, same)


def test_center_crop_copies_pixels_and_flip_mirrors():
    g = torch.Generator().manual_seed(0)
    x = torch.randint(0, 256, (2, 3, 20, 30, 3), generator=g, dtype=torch.uint8)
    out = C.center_crop(x, 16)
    want = x[:, :, 2:18, 7:23].permute(0, 4, 1, 2, 3).float() / 255
    assert torch.allclose(out, want, atol=1e-6)
    box = torch.tensor([[2.0, 7.0, 16.0, 16.0]]).expand(2, 4)
    flipped = C.crop_resize(x, box, 16, flip=torch.tensor([True, False]))
    assert torch.allclose(flipped[0], want[0].flip(-1), atol=1e-6)
    assert torch.allclose(flipped[1], want[1], atol=1e-6)


def test_normalize_roundtrip():
    x = torch.rand(2, 3, 4, 5, 5)
    assert torch.allclose(C.denormalize(C.normalize(x)), x, atol=1e-6)
    n = C.normalize(torch.ones(1, 3, 1, 1, 1))
    assert torch.allclose(n.flatten(), torch.tensor([(1 - m) / s for m, s in zip(C.MEAN, C.STD)]))


# ----------------------------------------------------------------------------- CutMix

def test_cutmix_box_and_lambda():
    g = torch.Generator().manual_seed(3)
    x = torch.arange(4, dtype=torch.float).view(4, 1, 1, 1, 1).expand(4, 3, 8, 20, 20).contiguous()
    for _ in range(10):
        out, perm, lam = C.cutmix(x, 1.0, g)
        pasted = out != x
        src = x[perm]
        assert torch.equal(out[pasted], src[pasted])
        # one box, all frames, all channels; lam = kept fraction of the original
        per_clip_box = (out != x[:, :1, :1].expand_as(x))[:, 0, 0]
        moved = perm != torch.arange(4)
        frac = per_clip_box[moved].float().mean(dim=(1, 2))
        assert torch.allclose(frac, torch.full_like(frac, 1 - lam))
        assert (out[:, :, :1] == out[:, :, 7:]).all()
        assert 0.0 <= lam <= 1.0 and math.isfinite(lam)


# ----------------------------------------------------------------------------- horizontal flip per dataset

def flip_settings(mode, pairs=()):
    return {"name": "d", "hflip": mode, "hflip_pairs": [list(p) for p in pairs]}


def test_flip_on_draws_exactly_as_before():
    """Mode on takes the same draws as the crop + flip of earlier versions (boxes, then one uniform per
    clip < 0.5), so results of every config that keeps the default do not move."""
    x = torch.rand(16, 4, 20, 30, 3, generator=torch.Generator().manual_seed(0))
    g1, g2 = torch.Generator().manual_seed(5), torch.Generator().manual_seed(5)
    boxes = C.sample_resized_crop_boxes(16, 20, 30, (0.08, 1.0), (3 / 4, 4 / 3), g1)
    legacy = C.crop_resize(x, boxes, 12, torch.rand(16, generator=g1) < 0.5)
    out, flipped = C.crop_flip(x, 12, hflip=C.HFlip.of(flip_settings("on"), ["a", "b"]), generator=g2)
    assert torch.equal(out, legacy) and 0 < int(flipped.sum()) < 16
    assert torch.equal(g1.get_state(), g2.get_state())


def test_flip_off_never_flips_and_keeps_the_random_stream():
    x = torch.rand(64, 2, 20, 30, 3, generator=torch.Generator().manual_seed(0))
    off = C.HFlip.of(flip_settings(False), ["a", "b"])  # YAML's bare `off`
    assert off.mode == "off" and C.HFlip.of(flip_settings("off"), ["a"]).mode == "off"
    g_off, g_on = torch.Generator().manual_seed(1), torch.Generator().manual_seed(1)
    out, flipped = C.crop_flip(x, 12, hflip=off, generator=g_off)
    assert not flipped.any()
    boxes = C.sample_resized_crop_boxes(64, 20, 30, generator=torch.Generator().manual_seed(1))
    assert torch.equal(out, C.crop_resize(x, boxes, 12))
    C.crop_flip(x, 12, hflip=C.HFlip("on"), generator=g_on)
    assert torch.equal(g_off.get_state(), g_on.get_state())  # what is drawn next is the same
    y = torch.arange(64) % 2
    assert torch.equal(off.labels(y, flipped), y)


def test_flip_map_changes_exactly_the_labels_of_flipped_clips_of_mapped_classes():
    classes = ["left to right", "right to left", "up", "turn left", "turn right"]
    hf = C.HFlip.of(flip_settings("map", [["left to right", "right to left"], [3, 4]]), classes)
    assert hf.label_map.tolist() == [1, 0, 2, 4, 3]
    g = torch.Generator().manual_seed(0)
    y = torch.arange(200) % 5
    flipped = hf.draw(200, g)
    new = hf.labels(y, flipped)
    mapped = torch.isin(y, torch.tensor([0, 1, 3, 4]))
    assert torch.equal(new != y, flipped & mapped)
    assert torch.equal(new[flipped & mapped], hf.label_map[y[flipped & mapped]])
    assert torch.equal(hf.labels(new, flipped), y)  # a flip of a flip: an involution
    t = torch.randn(200, 5)
    tt = hf.targets(t, flipped)
    assert torch.equal(tt[~flipped], t[~flipped])
    assert torch.equal(tt[flipped][:, [1, 0, 2, 4, 3]], t[flipped])
    # the views: flipped exactly where the labels say
    x = torch.rand(8, 2, 10, 12, 3)
    out, fl = C.crop_flip(x, 8, (1.0, 1.0), (1.2, 1.2), hf, torch.Generator().manual_seed(3))
    plain, _ = C.crop_flip(x, 8, (1.0, 1.0), (1.2, 1.2), C.HFlip("off"), torch.Generator().manual_seed(3))
    assert torch.allclose(out[fl], plain[fl].flip(-1), atol=1e-6) and torch.equal(out[~fl], plain[~fl])


@pytest.mark.parametrize("mode, pairs, match", [
    ("map", [], "at least one pair"),
    ("on", [[0, 1]], "hflip is 'on'"),
    ("map", [[0, 9]], "9 is not a class"),
    ("map", [["a", "nope"]], "'nope' is not a class"),
    ("map", [[0, 0]], "with itself"),
    ("map", [[0, 1], [1, 2]], "already paired"),
])
def test_flip_settings_mistakes_name_the_key(mode, pairs, match):
    from vdc.errors import ConfigError

    with pytest.raises(ConfigError, match=match) as err:
        C.HFlip.of(flip_settings(mode, pairs), ["a", "b", "c"])
    assert "datasets.d.hflip_pairs" in str(err.value)
