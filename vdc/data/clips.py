"""Clip sampling, temporal processing and batched on-device augmentation.

Everything here works on whole batches of tensors on the device (no per-sample Python work):

* frame indices of training clips (random window at interval 8, or floor(L/8) when L < 64) and test
  clips (the centre window) for real videos of different lengths, as the reference draws them;
* the temporal processing of condensed videos of T_c frames: naive / segment / sliding-window
  sampling and none / dup(lication) / linear interpolation when T_c < the clip length;
* random resized crop + horizontal flip, identical for every frame of a clip, via one batched
  ``grid_sample`` (:func:`crop_flip`); the flip of a dataset (off / on / on with a label map of
  mirrored classes: :class:`HFlip`); centre crop; ImageNet normalisation; CutMix.

Frame indices are source frame numbers (0-based) of the video, exactly the reference's; a frames file
keeps every source frame unless configured otherwise (vdc/data/frames.py maps indices to stored rows).

Clip tensors: uint8 or float pixels [B, T, H, W, 3] in storage layout; network input is float
[B, 3, T, S, S] (N x C x T x H x W), normalised.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F

MEAN = (0.485, 0.456, 0.406)
STD = (0.229, 0.224, 0.225)


# ----------------------------------------------------------------------------- frame indices

def _interval(lengths: torch.Tensor, clip_len: int, interval: int) -> torch.Tensor:
    """The reference's interval (Video-DC ``dataset.py``): ``interval`` when the video has at least
    clip_len * interval frames, else floor(L / clip_len) (0 when L < clip_len)."""
    short = lengths < clip_len * interval
    return torch.where(short, lengths // clip_len, torch.full_like(lengths, interval))


def window_room(lengths: torch.Tensor, clip_len: int = 8, interval: int = 8) -> torch.Tensor:
    """R, the number of possible starts of a clip: L - (clip_len - 1) * iv (>= 1 for L >= 1)."""
    lengths = lengths.long()
    return lengths - (clip_len - 1) * _interval(lengths, clip_len, interval)


def window_indices(lengths: torch.Tensor, start: torch.Tensor, clip_len: int = 8, interval: int = 8) -> torch.Tensor:
    """The clip starting at source frame ``start`` [B] (0 <= start < R): start + iv * [0, ..., clip_len - 1]."""
    iv = _interval(lengths.long(), clip_len, interval)
    return start.long().unsqueeze(1) + iv.unsqueeze(1) * torch.arange(clip_len, device=lengths.device)


def train_frame_indices(lengths: torch.Tensor, clip_len: int = 8, interval: int = 8,
                        generator: torch.Generator | None = None) -> torch.Tensor:
    """The reference's training clip of each video, in source frames (Video-DC ``dataset.py``,
    ``VideoClsDataset.__getitem__``, mode train), 0-based:

        iv    = interval if L >= clip_len * interval else floor(L / clip_len)
        start ~ uniform{0, ..., R - 1},  R = L - (clip_len - 1) * iv
        idx   = start + iv * [0, 1, ..., clip_len - 1]

    (the reference draws ``np.random.randint(1, R + 1)`` and reads the 1-based frame files
    ``img_{start + k iv:05d}.jpg``). Indices always lie in [0, L - 1] and never wrap: a window longer
    than the clip (T_c = 16, 32 frames) on a short video gets a smaller interval, and only a video
    shorter than ``clip_len`` frames (iv = 0) repeats one frame, as the reference does.
    One uniform draw per video from ``generator``. lengths [B] -> long [B, clip_len]."""
    lengths = lengths.long()
    room = window_room(lengths, clip_len, interval).clamp(min=1)
    u = torch.rand(lengths.shape, generator=generator, device="cpu").to(lengths.device, non_blocking=True)
    start = (u * room).long().clamp(max=room - 1)
    return window_indices(lengths, start, clip_len, interval)


def center_frame_indices(lengths: torch.Tensor, clip_len: int = 8, interval: int = 8) -> torch.Tensor:
    """The reference's test clip of each video (mode val), 0-based: the interval of
    :func:`train_frame_indices` and start = R // 2 - 1 (the reference's 1-based start R // 2; clamped to
    0 where that is 0, i.e. L = clip_len or L = 1, where the reference would read a frame file
    ``img_00000.jpg`` that does not exist). lengths [B] -> long [B, clip_len]."""
    lengths = lengths.long()
    start = (window_room(lengths, clip_len, interval) // 2 - 1).clamp(min=0)
    return window_indices(lengths, start, clip_len, interval)


# ----------------------------------------------------------------------------- temporal processing

def condensed_frame_indices(batch: int, t_c: int, clip_len: int, sampling: str,
                            generator: torch.Generator | None = None, device="cpu") -> torch.Tensor:
    """Which frames of condensed videos of ``t_c`` frames form the clip the network sees.

    naive   : the whole video is the clip (all t_c frames, in order);
    segment : the video is cut into t_c // clip_len independent segments; each draw takes one whole
              segment (Wang et al.);
    sliding : any window of clip_len consecutive frames (overlapping windows share frames, so in
              distillation they are optimised together).
    When t_c <= clip_len, segment and sliding reduce to naive. Returns long [batch, T'].
    """
    if sampling == "naive" or t_c <= clip_len:
        return torch.arange(t_c, device=device).expand(batch, t_c)
    if sampling == "segment":
        nseg = t_c // clip_len
        seg = torch.randint(nseg, (batch,), generator=generator).to(device, non_blocking=True)
        return seg.unsqueeze(1) * clip_len + torch.arange(clip_len, device=device)
    if sampling == "sliding":
        start = torch.randint(t_c - clip_len + 1, (batch,), generator=generator).to(device, non_blocking=True)
        return start.unsqueeze(1) + torch.arange(clip_len, device=device)
    raise ValueError(f"unknown temporal sampling '{sampling}' (naive, segment, sliding)")


def interpolate_time(clips: torch.Tensor, clip_len: int, mode: str) -> torch.Tensor:
    """Bring clips [B, T, H, W, C] with T < clip_len to clip_len frames: none (unchanged), dup (repeat
    each frame, nearest-neighbour in time) or linear (linear interpolation along time with the
    reference's corner alignment, Video-DC ``utils_all.py`` ``Interpolate``: ``align_corners=False``,
    i.e. output frame j samples the input at t = (j + 0.5) T / clip_len - 0.5, clamped to [0, T - 1];
    4 -> 8 frames gives t = 0, 0.25, 0.75, 1.25, ..., 2.75, 3. Returns float, uint8 input scaled to [0, 1])."""
    t = clips.shape[1]
    if mode == "none" or t >= clip_len:
        return clips
    if mode == "dup":
        idx = (torch.arange(clip_len, device=clips.device) * t) // clip_len
        return clips[:, idx]
    if mode == "linear":  # float output, so uint8 input is brought to [0, 1] (as crop_resize would)
        x = clips.float() / 255.0 if clips.dtype == torch.uint8 else clips.float()
        x = x.permute(0, 2, 3, 4, 1)  # B H W C T
        b, h, w, c, _ = x.shape
        y = F.interpolate(x.reshape(b, h * w * c, t), size=clip_len, mode="linear", align_corners=False)
        return y.reshape(b, h, w, c, clip_len).permute(0, 4, 1, 2, 3)
    raise ValueError(f"unknown interpolation '{mode}' (none, dup, linear)")


# ----------------------------------------------------------------------------- spatial augmentation

def sample_resized_crop_boxes(batch: int, height: int, width: int, scale=(0.08, 1.0), ratio=(3 / 4, 4 / 3),
                              generator: torch.Generator | None = None, tries: int = 10) -> torch.Tensor:
    """torchvision RandomResizedCrop's box sampling, vectorised: returns float [batch, 4] boxes
    (y0, x0, h, w) in pixels. Ten tries per clip, then the centre-crop fallback, as torchvision does."""
    area = height * width
    log_r = (math.log(ratio[0]), math.log(ratio[1]))
    s = torch.empty(batch, tries).uniform_(scale[0], scale[1], generator=generator) * area
    r = torch.exp(torch.empty(batch, tries).uniform_(log_r[0], log_r[1], generator=generator))
    w = torch.sqrt(s * r).round()
    h = torch.sqrt(s / r).round()
    ok = (w > 0) & (h > 0) & (w <= width) & (h <= height)
    uy = torch.rand(batch, tries, generator=generator)
    ux = torch.rand(batch, tries, generator=generator)
    y0 = torch.floor(uy * (height - h + 1)).clamp(min=0)
    x0 = torch.floor(ux * (width - w + 1)).clamp(min=0)
    first = torch.where(ok.any(1), ok.float().argmax(1), torch.full((batch,), -1))
    boxes = torch.zeros(batch, 4)
    has = first >= 0
    j = first.clamp(min=0)
    ar = torch.arange(batch)
    boxes[:, 0], boxes[:, 1], boxes[:, 2], boxes[:, 3] = y0[ar, j], x0[ar, j], h[ar, j], w[ar, j]
    # fallback: centre crop with the ratio clamped into range
    in_ratio = width / height
    if in_ratio < ratio[0]:
        fw, fh = width, round(width / ratio[0])
    elif in_ratio > ratio[1]:
        fh, fw = height, round(height * ratio[1])
    else:
        fw, fh = width, height
    fb = torch.tensor([(height - fh) // 2, (width - fw) // 2, fh, fw], dtype=torch.float)
    boxes[~has] = fb
    return boxes


def crop_resize(clips: torch.Tensor, boxes: torch.Tensor, size: int, flip: torch.Tensor | None = None) -> torch.Tensor:
    """Crop box (y0, x0, h, w) of every frame of each clip, resize to size x size (bilinear), flip
    where ``flip`` is True. clips [B, T, H, W, C] uint8/float -> float [B, C, T, size, size] in [0, 1]."""
    b, t, h, w, c = clips.shape
    dev = clips.device
    x = clips.permute(0, 1, 4, 2, 3).reshape(b, t * c, h, w).float()
    if clips.dtype == torch.uint8:
        x = x / 255.0
    boxes = boxes.to(dev, torch.float)
    y0, x0, bh, bw = boxes.unbind(1)
    # pixel-centre coordinates of the output samples, mapped to normalised [-1, 1] input coords
    lin = (torch.arange(size, device=dev, dtype=torch.float) + 0.5) / size
    ys = y0.unsqueeze(1) + lin.unsqueeze(0) * bh.unsqueeze(1)  # [B, size]
    xs = x0.unsqueeze(1) + lin.unsqueeze(0) * bw.unsqueeze(1)
    if flip is not None:
        xs = torch.where(flip.to(dev, non_blocking=True).unsqueeze(1), xs.flip(1), xs)
    gy = ys / h * 2 - 1
    gx = xs / w * 2 - 1
    grid = torch.stack(torch.broadcast_tensors(gx.unsqueeze(1), gy.unsqueeze(2)), dim=-1)  # [B, size, size, 2]
    out = F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=False)
    return out.reshape(b, t, c, size, size).permute(0, 2, 1, 3, 4)


def flip_mode(value) -> str:
    """A dataset's ``hflip`` setting as a mode: YAML reads a bare ``off`` / ``on`` as false / true."""
    return {False: "off", True: "on"}[value] if isinstance(value, bool) else value


class HFlip:
    """The horizontal flip of one dataset's clips: ``datasets.<name>.hflip`` and ``hflip_pairs``.

    * ``off``: clips are never flipped;
    * ``on``: each clip is flipped with probability ``p`` (0.5), its label unchanged (the paper's
      protocol, every config's default);
    * ``map``: flipped as with ``on``, and a flipped clip of a class in ``hflip_pairs`` takes the paired
      class: mirrored classes such as Something-Something's "... from left to right" / "... from right
      to left" (mmaction2's ``Flip(flip_label_map=...)``).

    ``label_map`` long [K]: the class of a flipped clip of class k (k itself off the pairs; an
    involution). Every place that flips a clip draws with :meth:`draw` and then maps what it trains on:
    hard labels with :meth:`labels`, fixed per-class targets (soft labels, label logits) with
    :meth:`targets`. A labeler that sees the flipped view (Multi-SL) needs no mapping: its logits are
    already those of the mirrored clip.
    """

    MODES = ("off", "on", "map")

    def __init__(self, mode: str = "on", label_map: torch.Tensor | None = None, p: float = 0.5):
        if mode not in self.MODES:
            raise ValueError(f"hflip mode '{mode}': expected one of {', '.join(self.MODES)}")
        self.mode, self.p = mode, float(p)
        self.label_map = None if label_map is None else torch.as_tensor(label_map, dtype=torch.long)
        self._maps: dict[torch.device, torch.Tensor] = {}   # label_map per device, copied once (map_on)

    @classmethod
    def of(cls, dataset: dict, classes: list[str]) -> "HFlip":
        """The flip of a dataset section (schema-filled: ``hflip``, ``hflip_pairs``) for the class names
        of its frames file. A pair names two classes by id (0-based) or by name; a class may be in at
        most one pair. Mistakes are ConfigErrors naming the key."""
        from vdc.errors import ConfigError

        key = f"datasets.{dataset['name']}.hflip_pairs"
        mode, pairs = flip_mode(dataset["hflip"]), dataset["hflip_pairs"]
        if mode != "map":
            if pairs:
                raise ConfigError(f"{key} is set but hflip is '{mode}'; set hflip: map to use it (or remove it)")
            return cls(mode)
        if not pairs:
            raise ConfigError(f"{key}: hflip 'map' needs at least one pair of mirrored classes, e.g. [[86, 87]]")
        lookup = {c: i for i, c in enumerate(classes)}
        table = list(range(len(classes)))
        for pair in pairs:
            ids = []
            for c in pair:
                if isinstance(c, int) and 0 <= c < len(classes):
                    ids.append(c)
                elif isinstance(c, str) and c in lookup:
                    ids.append(lookup[c])
                else:
                    raise ConfigError(f"{key}: {c!r} is not a class id 0..{len(classes) - 1} or a class name "
                                      f"of this dataset")
            a, b = ids
            if a == b or table[a] != a or table[b] != b:
                raise ConfigError(f"{key}: pair {list(pair)} pairs a class with itself or a class already paired")
            table[a], table[b] = b, a
        return cls("map", torch.tensor(table))

    @property
    def maps(self) -> bool:
        """True when a flip changes labels (mode ``map``)."""
        return self.mode == "map"

    def draw(self, n: int, generator: torch.Generator | None = None, device="cpu") -> torch.Tensor:
        """Which of n clips to flip: bool [n]. Takes n uniforms from ``generator`` in every mode."""
        u = torch.rand(n, generator=generator)
        flipped = u < self.p if self.mode != "off" else torch.zeros(n, dtype=torch.bool)
        return flipped.to(device, non_blocking=True)

    def map_on(self, device) -> torch.Tensor:
        """:attr:`label_map` on ``device``, copied there once and kept (mode map only)."""
        device = torch.device(device)
        m = self._maps.get(device)
        if m is None:
            m = self._maps[device] = self.label_map.to(device)
        return m

    def labels(self, y: torch.Tensor, flipped: torch.Tensor) -> torch.Tensor:
        """Hard labels [B] of the views: the paired class where a clip was flipped (mode map)."""
        if not self.maps:
            return y
        return torch.where(flipped.to(y.device), self.map_on(y.device)[y], y)

    def targets(self, t: torch.Tensor, flipped: torch.Tensor) -> torch.Tensor:
        """Per-class targets [B, K] (soft labels, logits, probabilities) of the views: the columns of each
        pair swapped where a clip was flipped (mode map), so the mirrored clip's score for class k is the
        original's score for its paired class (:func:`mirror_targets`)."""
        if not self.maps:
            return t
        return mirror_targets(t, flipped.to(t.device), self.map_on(t.device))


def mirror_targets(t: torch.Tensor, flipped: torch.Tensor, label_map: torch.Tensor) -> torch.Tensor:
    """Per-class targets t [B, K] with the columns permuted by ``label_map`` [K] in the rows where
    ``flipped`` [B] (both on t's device): :meth:`HFlip.targets`' column swap, differentiable in t."""
    return torch.where(flipped.unsqueeze(1), t[:, label_map], t)


def crop_flip(clips: torch.Tensor, size: int, scale=(0.08, 1.0), ratio=(3 / 4, 4 / 3), hflip: HFlip | None = None,
              generator: torch.Generator | None = None, shared: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-clip random resized crop + horizontal flip (``hflip``; None = mode on), the same for all
    frames of a clip: the boxes are drawn first, then the flips (:meth:`HFlip.draw`). ``shared``: one
    box and one flip for the whole batch (what torchvision's transforms do to a batch tensor).
    [B, T, H, W, C] -> (float [B, C, T, size, size] in [0, 1], flipped bool [B])."""
    b, _, h, w, _ = clips.shape
    n = 1 if shared else b
    boxes = sample_resized_crop_boxes(n, h, w, scale, ratio, generator).expand(b, 4)
    flipped = (hflip or HFlip("on")).draw(n, generator).expand(b)
    return crop_resize(clips, boxes, size, flipped), flipped.to(clips.device, non_blocking=True)


def center_crop(clips: torch.Tensor, size: int) -> torch.Tensor:
    """Centre size x size crop (the test view); frames smaller than ``size`` are resized up.
    [B, T, H, W, C] -> float [B, C, T, size, size] in [0, 1]."""
    b, _, h, w, _ = clips.shape
    ch, cw = min(size, h), min(size, w)
    box = torch.tensor([(h - ch) // 2, (w - cw) // 2, ch, cw], dtype=torch.float).expand(b, 4)
    return crop_resize(clips, box, size)


def normalize(x: torch.Tensor) -> torch.Tensor:
    """ImageNet normalisation of [B, 3, T, H, W] pixels in [0, 1]."""
    mean = torch.tensor(MEAN, device=x.device, dtype=x.dtype).view(1, 3, 1, 1, 1)
    std = torch.tensor(STD, device=x.device, dtype=x.dtype).view(1, 3, 1, 1, 1)
    return (x - mean) / std


def denormalize(x: torch.Tensor) -> torch.Tensor:
    mean = torch.tensor(MEAN, device=x.device, dtype=x.dtype).view(1, 3, 1, 1, 1)
    std = torch.tensor(STD, device=x.device, dtype=x.dtype).view(1, 3, 1, 1, 1)
    return x * std + mean


def normalize_channels_last(x: torch.Tensor) -> torch.Tensor:
    """ImageNet normalisation of channel-last pixels [..., 3] in [0, 1] (e.g. clips [B, T, H, W, 3])."""
    mean = torch.tensor(MEAN, device=x.device, dtype=x.dtype)
    std = torch.tensor(STD, device=x.device, dtype=x.dtype)
    return (x - mean) / std


def denormalize_channels_last(x: torch.Tensor) -> torch.Tensor:
    """Inverse of :func:`normalize_channels_last`: [..., 3] normalised -> pixels."""
    mean = torch.tensor(MEAN, device=x.device, dtype=x.dtype)
    std = torch.tensor(STD, device=x.device, dtype=x.dtype)
    return x * std + mean


def cutmix(x: torch.Tensor, alpha: float = 1.0, generator: torch.Generator | None = None):
    """CutMix on [B, C, T, H, W]: one box (all frames) per batch pasted from a permutation of the
    batch. Returns (mixed x, permutation, lam) with lam = kept fraction of the original."""
    b, _, _, h, w = x.shape
    lam = _beta(alpha, generator)
    perm = torch.randperm(b, generator=generator).to(x.device, non_blocking=True)
    cut = math.sqrt(1 - lam)
    ch, cw = int(h * cut), int(w * cut)
    cy = int(torch.randint(h, (1,), generator=generator))
    cx = int(torch.randint(w, (1,), generator=generator))
    y0, y1 = max(cy - ch // 2, 0), min(cy + ch // 2, h)
    x0, x1 = max(cx - cw // 2, 0), min(cx + cw // 2, w)
    out = x.clone()
    out[..., y0:y1, x0:x1] = x[perm][..., y0:y1, x0:x1]
    lam = 1 - (y1 - y0) * (x1 - x0) / (h * w)
    return out, perm, lam


def _beta(alpha: float, generator: torch.Generator | None) -> float:
    """One Beta(alpha, alpha) draw, reproducible from ``generator``."""
    import numpy as np

    seed = int(torch.randint(2**62, (1,), generator=generator))
    return float(np.random.default_rng(seed).beta(alpha, alpha))
