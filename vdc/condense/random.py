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

This module also holds the small helpers the other selection methods share (Herding, RDED).
"""
from __future__ import annotations

import numpy as np
import torch

from vdc.condense import register_method
from vdc.condense.base import Context
from vdc.condensed import CondensedSet
from vdc.data.clips import center_frame_indices, train_frame_indices
from vdc.data.frames import Frames


def class_pool(ctx: Context, label: int, want: int, what: str = "IPC") -> np.ndarray:
    """Training video ids of class ``label``; warns when there are fewer than ``want``."""
    pool = ctx.frames.class_ids("train", label)
    if len(pool) < want:
        ctx.log.warning("class %d (%s) has %d training videos, fewer than %s=%d: using all %d",
                        label, ctx.frames.classes[label], len(pool), what, want, len(pool))
    return pool


def window_indices(lengths: np.ndarray, t_c: int, interval: int, where: str = "random",
                   generator: torch.Generator | None = None) -> np.ndarray:
    """Frame indices [N, t_c] of one window of t_c frames at ``interval`` per video (random or centre)."""
    lengths = torch.as_tensor(np.asarray(lengths), dtype=torch.long)
    if where == "random":
        idx = train_frame_indices(lengths, t_c, interval, generator=generator)
    elif where == "centre":
        idx = center_frame_indices(lengths, t_c, interval)
    else:
        raise ValueError(f"window must be 'random' or 'centre', got '{where}'")
    return idx.numpy()


def read_clips(frames: Frames, videos: np.ndarray, frame_idx: np.ndarray) -> np.ndarray:
    """uint8 clips [N, T, H, W, 3] at storage size: frames ``frame_idx[i]`` of video ``videos[i]``."""
    if len(videos) == 0:
        return np.zeros((0, frame_idx.shape[1], *frames.frame_shape), np.uint8)
    return np.stack([frames.read_frames(int(v), fi) for v, fi in zip(videos, frame_idx)])


@register_method("random")
def condense(ctx: Context) -> CondensedSet:
    where = ctx.settings.get("window", "random")
    chosen = [ctx.rng.choice(pool, size=min(ctx.ipc, len(pool)), replace=False)
              for pool in (class_pool(ctx, c, ctx.ipc) for c in range(ctx.num_classes))]
    videos = np.concatenate(chosen).astype(np.int64)
    idx = window_indices(ctx.frames.lengths[videos], ctx.temporal.t_c, int(ctx.dataset["clip_interval"]),
                         where, ctx.generator)
    return CondensedSet(clips=read_clips(ctx.frames, videos, idx), labels=ctx.frames.labels[videos],
                        source_video=videos, source_frames=idx, attrs={"window": where})
