"""Random selection: IPC random training videos per class, one clip each (study.md section 6), stored as
the reference's Random baseline stores it.

The reference's Random (MCG-NJU/Video-DC ``rded/scripts/ucf101-random-conv4-*.sh``,
``hmdb51-random-conv4-distill.sh``, ``k400-random-conv4.sh``) is its RDED script with one candidate:
``--num-crop 1 --mipc $IPC --ipc $IPC --factor 1``. Its ``select`` dataset (``dataset.py`` 265-305)
draws IPC random videos per class (``prune_dataset``) and, with ``nclips = 1``, takes each video's
*first* window (``dataset.py`` 151: ``np.linspace(1, L - 7 iv, 1)`` = frame 1, 1-based) of 8 frames at
interval 8 (floor(L/8) when shorter), with one ``RandomResizedCrop(112)`` (area 0.08-1, ratio 3/4-4/3)
and one ``RandomHorizontalFlip`` for all its frames (``dataset.py`` 271-274); the selector keeps all of
them (``synthesize/utils.py`` 146-148: IPC candidates for IPC clips) and saves each crop as 112^2 frames
(``synthesize/main.py`` 51-62). vdc:

* per class, ``min(IPC, n_c)`` training videos drawn without replacement from ``ctx.rng`` (a class with
  fewer than IPC training videos contributes all of them, with a warning, rather than repeating one);
* each video's window of T_c frames (``ctx.temporal.t_c``) at the real clip interval
  (``dataset.clip_interval``; floor(L / T_c) for short videos), ``window``: ``first`` (the reference's,
  default; vdc/condense/select.py ``spaced_windows``), ``random`` (``clips.train_frame_indices``,
  drawn from ``ctx.generator``) or ``centre`` (``clips.center_frame_indices``);
* ``store: crop`` (the reference's, default): one random resized crop (area ``scale``, ratio 3/4-4/3;
  boxes drawn from ``ctx.generator`` after the windows) and the dataset's flip (``datasets.<name>.hflip``,
  one draw per clip after the boxes; ``map``: clips of classes with a mirrored partner are not flipped,
  ``select.stored_flips``), resized to ``input_size``: uint8 [T_c, S, S, 3];
  ``store: frame``: the whole stored frames of the window, no crop, no flip: uint8 [T_c, H, W, 3].

``source_video`` (frames-file ids) and ``source_frames`` [N, T_c] (frame indices within each source
video) say where every clip came from.
"""
from __future__ import annotations

import numpy as np
import torch

from vdc.condense import register_method
from vdc.condense.base import Context
from vdc.condense.select import class_pool, read_clips, stored_flips, to_uint8, window_indices
from vdc.condensed import CondensedSet
from vdc.data.clips import HFlip, crop_resize, sample_resized_crop_boxes


@register_method("random")
def condense(ctx: Context) -> CondensedSet:
    s = ctx.settings
    chosen = [ctx.rng.choice(pool, size=min(ctx.ipc, len(pool)), replace=False)
              for pool in (class_pool(ctx, c, ctx.ipc) for c in range(ctx.num_classes))]
    videos = np.concatenate(chosen).astype(np.int64)
    labels = ctx.frames.labels[videos]
    idx = window_indices(ctx.frames.lengths[videos], ctx.temporal.t_c, int(ctx.dataset["clip_interval"]),
                         s["window"], ctx.generator)
    clips = read_clips(ctx.frames, videos, idx)
    attrs = {"window": s["window"], "store": s["store"]}
    if s["store"] == "crop":
        h, w = ctx.frames.frame_shape[:2]
        boxes = sample_resized_crop_boxes(len(videos), h, w, tuple(s["scale"]), generator=ctx.generator)
        hflip = HFlip.of(ctx.dataset, ctx.frames.classes)
        flipped = stored_flips(hflip, torch.as_tensor(labels), ctx.generator)
        clips = to_uint8(crop_resize(torch.from_numpy(clips), boxes, ctx.input_size, flipped))
        attrs.update(scale=list(s["scale"]), hflip=hflip.mode, flipped=int(flipped.sum()))
    return CondensedSet(clips=clips, labels=labels, source_video=videos, source_frames=idx, attrs=attrs)
