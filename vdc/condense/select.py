"""Helpers the selection methods share (Random, Herding, RDED): a class's training videos, one window of
T_c frames per video, and reading those clips from the frames file.

A method imports this module, never another method's module, so that editing one method reruns only its
own condense jobs (vdc/fingerprint.py follows imports).
"""
from __future__ import annotations

import numpy as np
import torch

from vdc.condense.base import Context
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
    """Frame indices [N, t_c] of one window of t_c frames at ``interval`` per video: a random window
    (``train_frame_indices``, drawn from ``generator``) or the centre one (``center_frame_indices``)."""
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
