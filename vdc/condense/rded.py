"""RDED for video (Sun et al. 2024, as the study runs it; study.md section 6).

Per class c:

1. draw ``mipc`` random training videos (``ctx.rng``, without replacement; 70 UCF101/HMDB51, 100 K400);
2. from each take ``clips_per_video`` (m) evenly spaced windows of T_c frames at the real clip interval
   (Video-DC ``dataset.py`` 149-158: starts ``np.linspace(1, L - (T_c - 1) iv, m, dtype=int)``, 1-based;
   vdc/condense/select.py ``spaced_windows``), each with its own random resized crop (area ``scale``,
   ratio 3/4..4/3) + the dataset's horizontal flip (``datasets.<name>.hflip``), the same for all its
   frames, resized to ``input_size``. Flip ``off``: never; ``on``: p = 0.5; ``map``: as ``on`` except
   for classes with a mirrored partner, whose candidates are never flipped — a flipped clip of such a
   class is a clip of the partner class, so it could neither be scored as nor stand for its video's
   class (``select.stored_flips``; the draws are made all the same, so the other candidates' crops do
   not depend on the mode);
3. score every candidate by the teacher's cross-entropy on its true class,
   ``loss = CE(teacher(normalize(view)), c)`` (lower = more realistic), in batches of ``batch`` on the
   device. The view is the clip as the evaluation will present it: T_c <= clip_len or naive
   sampling -> the whole clip (interpolated to clip_len when the temporal setting says dup/linear);
   segment / sliding with T_c > clip_len -> the mean loss over its T_c // clip_len consecutive
   clip_len-frame segments;
4. keep each video's lowest-loss candidate, then the IPC videos with the lowest loss.

What is stored: the chosen **crop** — exactly the view the teacher scored, resized to ``input_size`` —
as uint8 [T_c, input_size, input_size, 3], like image RDED whose selected patch becomes the image.
``source_video`` / ``source_frames`` point at the window it came from.

``factor`` > 1 (image RDED's mosaic; the study uses 1, and Video-DC's ``synthesize/main.py`` 46 leaves
``mix_images`` out): per class the n·f² lowest-loss video-best crops (n = IPC, f = factor) are each
downsampled to input_size / f (area averaging; RDED's ``F.interpolate`` default is nearest) and
stitched into f x f grids of tubes (spatial concatenation only, as the paper does) **interleaved** as
RDED's ``mix_images`` fills them (LINs-lab/RDED ``synthesize/utils.py`` 139-166: cell k, row-major, of
all n images takes ``input_img[k*n:(k+1)*n]``): cell k of mosaic j holds the crop of rank k·n + j, so
each mosaic mixes best and worse crops. Such clips have no single source (``source_video`` = -1).
``input_size`` must be divisible by ``factor``.

Short classes: with fewer than ``mipc`` training videos all are used; with fewer than IPC videos
(factor 1) the class contributes one clip per video, i.e. fewer than IPC clips — repeating a video
would only duplicate near-identical clips. A warning names the class in both cases. For factor > 1
a class with fewer than IPC * factor^2 videos fills its mosaics by cycling through its ranked crops.
"""
from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from vdc.condense import register_method
from vdc.condense.base import Context
from vdc.condense.select import class_pool, spaced_windows, stored_flips, to_uint8
from vdc.condensed import CondensedSet
from vdc.config import Temporal
from vdc.data.clips import HFlip, crop_resize, interpolate_time, normalize, sample_resized_crop_boxes


def clip_loss(model: torch.nn.Module, views: torch.Tensor, labels: torch.Tensor, temporal: Temporal,
              clip_len: int) -> torch.Tensor:
    """Per-clip cross-entropy of ``model`` on views [B, 3, T_c, S, S] in [0, 1] -> [B] (see step 3)."""
    t_c = views.shape[2]
    if t_c > clip_len and temporal.sampling != "naive":
        segments = [views[:, :, s:s + clip_len] for s in range(0, t_c - clip_len + 1, clip_len)]
    else:
        thwc = interpolate_time(views.permute(0, 2, 3, 4, 1), clip_len, temporal.interpolation)
        segments = [thwc.permute(0, 4, 1, 2, 3)]
    losses = [F.cross_entropy(model(normalize(s)).float(), labels, reduction="none") for s in segments]
    return torch.stack(losses).mean(0)


def mosaic_order(ranked: np.ndarray, n: int, per_clip: int) -> np.ndarray:
    """The candidates of ``n`` mosaics of ``per_clip`` = f² cells each, mosaic by mosaic, cell by cell
    (row-major): cell k of mosaic j is ``ranked[k * n + j]`` (RDED's ``mix_images``), ``ranked`` being
    the class's n·f² crops in ranking order. Returns ``ranked`` reordered, length n·f²."""
    k, j = np.meshgrid(np.arange(per_clip), np.arange(n))      # [n, f²]: row j = mosaic j, column k = cell k
    return ranked[(k * n + j).ravel()]


def mosaic(tiles: torch.Tensor, factor: int) -> torch.Tensor:
    """Stitch factor^2 clips [factor^2, 3, T, S, S] into one [3, T, S, S] grid, row-major, each tile
    downsampled to S / factor (area averaging)."""
    n, c, t, s, _ = tiles.shape
    p = s // factor
    small = F.interpolate(tiles.transpose(1, 2).reshape(n * t, c, s, s), size=(p, p), mode="area")
    small = small.reshape(factor, factor, t, c, p, p)              # grid row, grid col, T, C, p, p
    return small.permute(3, 2, 0, 4, 1, 5).reshape(c, t, s, s)    # C, T, (row p), (col p)


@register_method("rded")
def condense(ctx: Context) -> CondensedSet:
    ms, t = ctx.settings, ctx.temporal
    m, mipc, factor = int(ms["clips_per_video"]), int(ms["mipc"]), int(ms["factor"])
    scale, batch = tuple(ms["scale"]), int(ms["batch"])
    size, interval = ctx.input_size, int(ctx.dataset["clip_interval"])
    if size % factor:
        raise ValueError(f"rded: input_size {size} is not divisible by factor {factor}")
    per_clip = factor * factor

    # 1-2. candidate videos and windows; one crop box + flip per candidate, drawn up front (batch-size independent)
    bank = ctx.train_bank
    bank_pos = {int(v): i for i, v in enumerate(bank.ids.tolist())}
    videos = np.concatenate([ctx.rng.choice(pool, size=min(mipc, len(pool)), replace=False)
                             for pool in (class_pool(ctx, c, mipc, "mipc") for c in range(ctx.num_classes))])
    videos = videos.astype(np.int64)
    windows = spaced_windows(ctx.frames.lengths[videos], t.t_c, interval, m)         # [V, m, T_c]
    cand_video = np.repeat(videos, m)                                                # [V*m]
    cand_idx = windows.reshape(-1, t.t_c)
    cand_label = ctx.frames.labels[cand_video]
    h, w = ctx.frames.frame_shape[:2]
    boxes = sample_resized_crop_boxes(len(cand_video), h, w, scale, generator=ctx.generator)
    hflip = HFlip.of(ctx.dataset, ctx.frames.classes)
    flips = stored_flips(hflip, torch.as_tensor(cand_label), ctx.generator)

    dev = bank.lengths.device
    pos = torch.as_tensor([bank_pos[int(v)] for v in cand_video], dtype=torch.long, device=dev)
    idx_t = torch.as_tensor(cand_idx, device=dev)
    labels_t = torch.as_tensor(cand_label, device=dev)

    def views(sel: slice | torch.Tensor) -> torch.Tensor:
        return crop_resize(bank.gather(pos[sel], idx_t[sel]), boxes[sel], size, flips[sel])

    # 3. teacher cross-entropy of every candidate
    teacher = ctx.teacher()
    losses = []
    with torch.inference_mode():
        for lo in range(0, len(cand_video), batch):
            sl = slice(lo, lo + batch)
            losses.append(clip_loss(teacher, views(sl), labels_t[sl], t, ctx.clip_len).cpu())
    loss = torch.cat(losses).numpy().reshape(len(videos), m) if losses else np.zeros((0, m))

    # 4. each video's best window, then per class the lowest-loss videos
    best = loss.argmin(1)                               # [V]
    best_loss = loss[np.arange(len(videos)), best]
    best_cand = np.arange(len(videos)) * m + best       # candidate index of each video's best window
    chosen_per_class = []
    for c in range(ctx.num_classes):
        mine = np.flatnonzero(ctx.frames.labels[videos] == c)
        ranked = mine[np.argsort(best_loss[mine], kind="stable")]
        if factor == 1:
            if len(ranked) < ctx.ipc:
                ctx.log.warning("rded: class %d has %d candidate videos, fewer than IPC=%d: keeping %d clips",
                                c, len(ranked), ctx.ipc, len(ranked))
            chosen_per_class.append(ranked[:ctx.ipc])
        else:
            n_out = min(ctx.ipc, len(ranked))
            if len(ranked) < n_out * per_clip:
                ctx.log.warning("rded: class %d has %d candidate videos for %d mosaics of %d tiles: tiles repeat",
                                c, len(ranked), n_out, per_clip)
            cycled = ranked[np.arange(n_out * per_clip) % max(len(ranked), 1)]
            chosen_per_class.append(mosaic_order(cycled, n_out, per_clip))
    chosen = np.concatenate(chosen_per_class).astype(np.int64)   # indices into `videos`
    sel = torch.as_tensor(best_cand[chosen], dtype=torch.long)
    with torch.inference_mode():
        crops = views(sel) if len(sel) else torch.zeros(0, 3, t.t_c, size, size)
    attrs = {"chosen_mean_loss": float(best_loss[chosen].mean()) if len(chosen) else float("nan"),
             "candidate_mean_loss": float(loss.mean()) if loss.size else float("nan"),
             "candidates": int(loss.size), "observer_arch": ctx.stage["teacher_arch"], "stored": "crop",
             "hflip": hflip.mode}
    if factor == 1:
        return CondensedSet(clips=to_uint8(crops), labels=ctx.frames.labels[videos[chosen]],
                            source_video=videos[chosen], source_frames=cand_idx[best_cand[chosen]], attrs=attrs)
    tiles = crops.reshape(-1, per_clip, *crops.shape[1:])
    clips = torch.stack([mosaic(g, factor) for g in tiles]) if len(tiles) else crops[:0]
    return CondensedSet(clips=to_uint8(clips), labels=ctx.frames.labels[videos[chosen[::per_clip]]],
                        attrs={**attrs, "factor": factor})
