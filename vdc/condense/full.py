"""The "full" pseudo-method: every training video, one clip each, so the evaluation protocol can be
run on all the training data (the protocol's own "Full dataset" reference, next to the teacher's).

Each clip is the video's centre window of clip_len frames at clip_interval (floor(L/clip_len) for short
videos; ``clips.center_frame_indices``), uint8 at storage size, with its hard label, source video id and
source frame indices — every class at its own size. Its IPC is 0, "every clip" (``vdc.condensed.ALL_CLIPS``):
the evaluation trains it with batch base_batch x round(training clips / classes), so an epoch has the
iterations of a condensed set's.

``study.full_data: true`` runs it on every study dataset, e.g.
``results/eval/<ds>/full/ipc0-tc8-naive-none-seed0/minic3d-hard-ce-nocutmix.json``.
"""
from __future__ import annotations

import numpy as np
import torch

from vdc.condense import register_method
from vdc.condense.base import Context
from vdc.condensed import CondensedSet
from vdc.data.clips import center_frame_indices


CHUNK = 256  # videos per batched gather (bounds the host copy)


@register_method("full")
def condense(ctx: Context) -> CondensedSet:
    t = ctx.temporal
    if t.t_c != ctx.clip_len:
        raise ValueError(f"method full takes one real clip of clip_len={ctx.clip_len} frames per video; "
                         f"its temporal setting must be tc{ctx.clip_len}-naive-none, not {t.tag}")
    bank = ctx.train_bank
    n = len(bank)
    frame_idx = center_frame_indices(bank.lengths, ctx.clip_len, int(ctx.dataset["clip_interval"]))  # [N, T]
    clips = []
    for i in range(0, n, CHUNK):
        videos = torch.arange(i, min(i + CHUNK, n), device=bank.lengths.device)
        clips.append(bank.gather(videos, frame_idx[videos]).cpu().numpy())
    clips = np.concatenate(clips) if clips else np.zeros((0, ctx.clip_len, *ctx.frames.frame_shape), np.uint8)
    ctx.log.info("full: %d training clips of %s", n, clips.shape[1:])
    return CondensedSet(clips=clips.astype(np.uint8), labels=bank.labels.cpu().numpy(),
                        source_video=bank.ids.cpu().numpy(), source_frames=frame_idx.cpu().numpy(),
                        attrs=ctx.base_attrs())
