"""Herding selection (Welling 2009; study.md section 6).

Features: for every training video, the teacher's pooled embedding ``teacher.forward_features`` of its
centre clip (``clip_len`` frames at ``clip_interval``, centre crop to ``input_size``, ImageNet
normalisation) — the test view, computed in batches of ``batch`` on the device. f_i in R^D.

Selection, per class with features f_1..f_n and mean mu = (1/n) sum_i f_i, greedily for t = 0..k-1::

    i_t = argmin_{i not selected} || (t + 1) * mu - sum_{j selected} f_j - f_i ||_2

i.e. the video whose feature, added to those already chosen, brings their mean closest to the class
mean (the classic herding rule; ``criterion: argmin``, the default). DeepCore — whose output the
paper's Herding rows used — takes the argmax of the same distance (``criterion: argmax``; PatrickZH/DeepCore
``deepcore/methods/herding.py`` ``herding()``: ``dist = metric((i + 1) * mu - sum(matrix[select_result]),
matrix[~select_result])``, ``p = torch.argmax(dist)``). The built-in variant ``herding_argmax``
(``base: herding, criterion: argmax``, schema ``methods.herding_argmax``) runs it next to the classic
row in one study.

What is stored (``store``): the paper's Herding rows came from the authors' DeepCore run
(Video-DC ``config/cross/herd-ucf.yaml`` 4: ``SYN_PATH: .../DeepCore/result/ucf101_Herding_ipc1``), read
by the same loader as every baseline (``dataset.py`` 41-87 ``Syn_Video``: 8 frames per clip, the files
``synthesize/main.py`` 51-62 writes at 112^2). That fork is not public; DeepCore selects on its
un-augmented dataset transform. ``crop`` (default): the view the features were computed from — the
centre window of T_c frames at the real clip interval, centre-cropped to ``input_size`` — uint8
[T_c, S, S, 3], the input-size clip of the reference's baselines (the Random and RDED sets are their
112^2 crops). ``frame``: the whole stored frames of the centre window, uint8 [T_c, H, W, 3]. No
randomness either way. A class with fewer than IPC training videos contributes all of them (with a
warning).
"""
from __future__ import annotations

import numpy as np
import torch

from vdc.condense import register_method
from vdc.condense.base import Context
from vdc.condense.select import class_pool, to_uint8, window_indices
from vdc.condensed import CondensedSet
from vdc.data.clips import center_crop, center_frame_indices, normalize
from vdc.data.frames import VideoBank


def herding_order(features: torch.Tensor, k: int, criterion: str = "argmin") -> list[int]:
    """Indices of ``k`` rows of ``features`` [n, D] in greedy herding order (see the module docstring)."""
    if criterion not in ("argmin", "argmax"):
        raise ValueError(f"herding criterion must be argmin or argmax, got '{criterion}'")
    f = features.double()
    n = f.shape[0]
    mu = f.mean(0)
    total = torch.zeros_like(mu)
    free = torch.ones(n, dtype=torch.bool)
    order = []
    for t in range(min(k, n)):
        dist = torch.linalg.vector_norm((t + 1) * mu - total - f, dim=1)
        dist[~free] = float("inf") if criterion == "argmin" else -float("inf")
        i = int(dist.argmin() if criterion == "argmin" else dist.argmax())
        order.append(i)
        free[i] = False
        total += f[i]
    return order


@torch.inference_mode()
def centre_clip_features(model: torch.nn.Module, bank: VideoBank, clip_len: int, interval: int, size: int,
                         batch: int) -> torch.Tensor:
    """``model.forward_features`` of the centre clip of every video of ``bank``: float [len(bank), D] (CPU)."""
    out = []
    for lo in range(0, len(bank), batch):
        pos = torch.arange(lo, min(lo + batch, len(bank)), device=bank.lengths.device)
        idx = center_frame_indices(bank.lengths[pos], clip_len, interval)
        x = normalize(center_crop(bank.gather(pos, idx), size))
        out.append(model.forward_features(x).float().cpu())
    return torch.cat(out) if out else torch.zeros(0, getattr(model, "num_features", 0))


@register_method("herding")
def condense(ctx: Context) -> CondensedSet:
    criterion = ctx.settings["criterion"]
    interval = int(ctx.dataset["clip_interval"])
    bank = ctx.train_bank
    feats = centre_clip_features(ctx.teacher(), bank, ctx.clip_len, interval, ctx.input_size,
                                 int(ctx.settings["batch"]))
    bank_ids = bank.ids.numpy()
    bank_pos = {int(v): i for i, v in enumerate(bank_ids)}
    videos = []
    for c in range(ctx.num_classes):
        pos = np.array([bank_pos[int(v)] for v in class_pool(ctx, c, ctx.ipc)], np.int64)
        order = herding_order(feats[pos], ctx.ipc, criterion) if len(pos) else []
        videos.append(bank_ids[pos[order]] if order else np.zeros(0, np.int64))
    videos = np.concatenate(videos).astype(np.int64)
    idx = window_indices(ctx.frames.lengths[videos], ctx.temporal.t_c, interval, "centre")
    pos = torch.as_tensor([bank_pos[int(v)] for v in videos], dtype=torch.long, device=bank.lengths.device)
    raw = bank.gather(pos, torch.as_tensor(idx, device=bank.lengths.device))
    store = ctx.settings["store"]
    clips = to_uint8(center_crop(raw, ctx.input_size)) if store == "crop" else raw.cpu().numpy()
    return CondensedSet(clips=clips, labels=ctx.frames.labels[videos], source_video=videos, source_frames=idx,
                        attrs={"criterion": criterion, "store": store, "feature_arch": ctx.stage["teacher_arch"]})
