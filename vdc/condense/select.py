"""Helpers the selection methods share (Random, Herding, RDED): a class's training videos, the windows of
T_c frames a video offers, reading those clips, the flip of a stored crop, and uint8 conversion.

A method imports this module, never another method's module, so that editing one method reruns only its
own condense jobs (vdc/fingerprint.py follows imports).
"""
from __future__ import annotations

import numpy as np
import torch

from vdc.condense.base import Context
from vdc.data import clips as C
from vdc.data.clips import HFlip, center_frame_indices, train_frame_indices
from vdc.data.frames import Frames


def class_pool(ctx: Context, label: int, want: int, what: str = "IPC") -> np.ndarray:
    """Training video ids of class ``label``; warns when there are fewer than ``want``."""
    pool = ctx.frames.class_ids("train", label)
    if len(pool) < want:
        ctx.log.warning("class %d (%s) has %d training videos, fewer than %s=%d: using all %d",
                        label, ctx.frames.classes[label], len(pool), what, want, len(pool))
    return pool


def spaced_windows(lengths: np.ndarray, t_c: int, interval: int, m: int) -> np.ndarray:
    """Frame indices [len(lengths), m, t_c] of m evenly spaced windows per video, as Video-DC's
    ``VideoClsDataset.__getitem__`` with ``nclips = m`` draws them (``dataset.py`` 128-158): for a video
    of L frames

        iv     = interval if L >= t_c * interval else floor(L / t_c)
        starts = np.linspace(1, L - (t_c - 1) * iv, m, dtype=int) - 1      (0-based; truncation)
        window = start + iv * [0, ..., t_c - 1]

    so m = 1 is the *first* window (start 0), the one the reference's Random baseline stores. Indices
    stay in [0, L - 1]; a video shorter than t_c frames (iv = 0) repeats one frame, as the reference.
    iv, R = L - (t_c - 1) * iv and the windows are ``clips.window_room`` / ``clips.window_indices``."""
    lengths = torch.from_numpy(np.array(lengths, np.int64))
    room = C.window_room(lengths, t_c, interval).numpy()
    starts = np.zeros((len(room), m), np.int64)
    for i, r in enumerate(room):        # one linspace per video (an array linspace rounds differently)
        starts[i] = np.linspace(1, r, m, dtype=int) - 1
    out = C.window_indices(lengths.repeat_interleave(m), torch.from_numpy(starts).reshape(-1), t_c, interval)
    return out.reshape(len(room), m, t_c).numpy()


def window_indices(lengths: np.ndarray, t_c: int, interval: int, where: str = "random",
                   generator: torch.Generator | None = None) -> np.ndarray:
    """Frame indices [N, t_c] of one window of t_c frames at ``interval`` per video: the first window
    (start 0: :func:`spaced_windows` with m = 1), a random window (``train_frame_indices``, drawn from
    ``generator``) or the centre one (``center_frame_indices``)."""
    lengths = torch.as_tensor(np.asarray(lengths), dtype=torch.long)
    if where == "first":
        idx = C.window_indices(lengths, torch.zeros_like(lengths), t_c, interval)
    elif where == "random":
        idx = train_frame_indices(lengths, t_c, interval, generator=generator)
    elif where == "centre":
        idx = center_frame_indices(lengths, t_c, interval)
    else:
        raise ValueError(f"window must be 'first', 'random' or 'centre', got '{where}'")
    return idx.numpy()


def read_clips(frames: Frames, videos: np.ndarray, frame_idx: np.ndarray) -> np.ndarray:
    """uint8 clips [N, T, H, W, 3] at storage size: frames ``frame_idx[i]`` of video ``videos[i]``."""
    if len(videos) == 0:
        return np.zeros((0, frame_idx.shape[1], *frames.frame_shape), np.uint8)
    return np.stack([frames.read_frames(int(v), fi) for v, fi in zip(videos, frame_idx)])


def stored_flips(hflip: HFlip, labels: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Which of the real clips of classes ``labels`` [N] (CPU) a selection method flips before storing
    them: one draw each (:meth:`HFlip.draw`, so the draws do not depend on the mode). ``off``: none;
    ``on``: the draws; ``map``: the draws except for classes with a mirrored partner — a flipped clip of
    such a class is a clip of the partner class, which cannot stand for its source video's class, so
    those clips are stored unflipped (the set keeps each clip's class and source video)."""
    flipped = hflip.draw(len(labels), generator)
    if hflip.maps:
        flipped &= hflip.label_map[labels] == labels
    return flipped


def to_uint8(views: torch.Tensor) -> np.ndarray:
    """float [B, 3, T, S, S] in [0, 1] -> uint8 [B, T, S, S, 3] (rounded)."""
    return (views.clamp(0, 1) * 255).round().to(torch.uint8).permute(0, 2, 3, 4, 1).cpu().numpy()
