"""Random selection: IPC random training videos per class, one clip each (study.md section 6).

Per class, ``min(IPC, n_c)`` training videos are drawn without replacement from ``ctx.rng``; a class
with fewer than IPC training videos contributes all of them (a warning says so) rather than
repeating a video. Each chosen video contributes one clip of T_c frames (``ctx.temporal.t_c``) taken
at the real clip interval (``dataset.clip_interval``, 8; floor(L / T_c) for videos shorter than
T_c x interval), i.e. exactly the frames a training clip of the teacher would have, extended or
shortened to T_c consecutive sampled frames when T_c != 8:

* ``window: random`` (default): a random window (``clips.train_frame_indices``, drawn from ``ctx.generator``);
* ``window: centre``: the centre window (``clips.center_frame_indices``, the test clip).

Clips are stored uint8 at storage size, with ``source_video`` (frames-file ids) and
``source_frames`` [N, T_c] (frame indices within each source video).

The helpers it shares with Herding and RDED live in vdc/condense/select.py.
"""
from __future__ import annotations

import numpy as np

from vdc.condense import register_method
from vdc.condense.base import Context
from vdc.condense.select import class_pool, read_clips, window_indices
from vdc.condensed import CondensedSet


@register_method("random")
def condense(ctx: Context) -> CondensedSet:
    where = ctx.settings["window"]
    chosen = [ctx.rng.choice(pool, size=min(ctx.ipc, len(pool)), replace=False)
              for pool in (class_pool(ctx, c, ctx.ipc) for c in range(ctx.num_classes))]
    videos = np.concatenate(chosen).astype(np.int64)
    idx = window_indices(ctx.frames.lengths[videos], ctx.temporal.t_c, int(ctx.dataset["clip_interval"]),
                         where, ctx.generator)
    return CondensedSet(clips=read_clips(ctx.frames, videos, idx), labels=ctx.frames.labels[videos],
                        source_video=videos, source_frames=idx, attrs={"window": where})
