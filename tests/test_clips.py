"""vdc/data/clips.py: frame indices, temporal processing, batched augmentation, CutMix."""
import math

import pytest
import torch

from vdc.data import clips as C

torch.set_num_threads(1)


# ----------------------------------------------------------------------------- real-video frame indices

def test_train_indices_long_short_and_tiny_videos():
    g = torch.Generator().manual_seed(0)
    lengths = torch.tensor([100, 20, 5]).repeat(50)
    idx = C.train_frame_indices(lengths, 8, 8, generator=g)
    assert idx.shape == (150, 8)
    steps = idx[:, 1:] - idx[:, :-1]
    long, short, tiny = idx[0::3], idx[1::3], idx[2::3]
    assert (steps[0::3] == 8).all() and long.min() >= 0 and long.max() <= 99   # interval 8, span 57
    assert len(set(long[:, 0].tolist())) > 10                                  # random starts
    assert (steps[1::3] == 2).all() and short.max() <= 19                     # floor(20 / 8) = 2
    assert (tiny == torch.tensor([0, 1, 2, 3, 4, 0, 1, 2])).all()             # shorter than a clip: loops
    again = C.train_frame_indices(lengths, 8, 8, generator=torch.Generator().manual_seed(0))
    assert torch.equal(idx, again)


def test_center_indices():
    idx = C.center_frame_indices(torch.tensor([100, 20]), 8, 8)
    assert idx[0].tolist() == [21 + 8 * k for k in range(8)]  # (100 - 57) // 2 = 21
    assert idx[1].tolist() == [2 + 2 * k for k in range(8)]   # interval 2, span 15, (20 - 15) // 2 = 2


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


def test_interpolation_linear():
    out = C.interpolate_time(ramp(4), 8, "linear")
    assert out.shape == (2, 8, 3, 4, 3)
    want = torch.linspace(0, 3, 8)  # align_corners: first and last frames kept
    assert torch.allclose(out[1, :, 2, 3, 1], want)
    assert torch.allclose(out, want.view(1, 8, 1, 1, 1).expand_as(out))
    u8 = (ramp(4) * 80).to(torch.uint8)  # 0, 80, 160, 240
    lo = C.interpolate_time(u8, 8, "linear")
    assert lo.dtype == torch.float32 and torch.allclose(lo[0, :, 0, 0, 0], torch.linspace(0, 240, 8) / 255)


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
    out = C.random_resized_crop_flip(x, 24, generator=g)
    assert out.shape == (b, 3, t, 24, 24)
    diff = out - out[:, :, :1]
    assert torch.allclose(diff, 0.05 * torch.arange(t).view(1, 1, t, 1, 1).expand_as(diff), atol=1e-5)
    # different clips got different crops
    same_clip = base[:1].expand(b, t, h, w, 3).contiguous()
    views = C.random_resized_crop_flip(same_clip, 24, generator=torch.Generator().manual_seed(2))
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
