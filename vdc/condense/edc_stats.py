"""EDC statistics: per-class BatchNorm-input statistics of a trained network (``python -m vdc stats``).

One pass of a trained network (eval mode) over the real training videos. Each video contributes one
view: its centre clip (``clip_len`` frames at ``clip_interval``, floor(L/clip_len) when shorter — the
test clip of the protocol) with a centre ``input_size`` crop, ImageNet-normalised. At the input
x [B, C, T, H, W] of EVERY ``nn.BatchNorm3d`` the pass records, per sample b,

    m_b = mean_{t,h,w} x[b, :, t, h, w]                          [B, C]
    v_b = mean_{t,h,w} (x[b, :, t, h, w] - m_b)^2   (biased)      [B, C]

and averages them within each class k over its n_k samples (sums in float64):

    class_mean[k] = (1/n_k) sum_{b in k} m_b        class_var[k] = (1/n_k) sum_{b in k} v_b

These are EDC's category-wise targets. The global targets are the BatchNorm running statistics,
which EDC reads from the network itself at condense time; they are stored here too so a stale file
(a teacher retrained after the pass) is detected.

The file layout (and its reader and writer) is in vdc/formats/stats.py: EDC reads the statistics
through that module, never through this stage's code.
"""
from __future__ import annotations

import argparse
import logging
from pathlib import Path

import torch
import torch.nn as nn

from vdc.data import clips as C
from vdc.data.frames import Frames, load_bank
from vdc.errors import InputError
from vdc.formats.stats import FORMAT, EDCStats, LayerStats, bn_layers, write_stats
from vdc.progress import Progress

VIEW = "centre clip, centre crop"
log = logging.getLogger("vdc.stats")


def sample_moments(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-sample mean and biased variance over (t, h, w): x [B, C, T, H, W] -> ([B, C], [B, C])."""
    return x.mean(dim=(2, 3, 4)), x.var(dim=(2, 3, 4), unbiased=False)


@torch.no_grad()
def compute_stats(net: nn.Module, frames: Frames, clip_len: int, clip_interval: int, input_size: int,
                  device="cpu", batch: int = 64) -> EDCStats:
    """The per-class statistics at every BatchNorm3d input of ``net`` over the training split.

    ``net`` must already be in eval mode (its running statistics are what EDC matches, and a pass
    in train mode would change them); a network in train mode is an error."""
    if net.training:
        raise ValueError("compute_stats: the network must be in eval mode (net.eval())")
    layers = bn_layers(net)
    if not layers:
        raise ValueError(f"compute_stats: {type(net).__name__} has no BatchNorm3d layer; EDC needs BN statistics")
    bank = load_bank(frames, "train", device)
    k = frames.num_classes
    n = len(bank)
    if n == 0:
        raise InputError(f"{frames.path}: the training split is empty; nothing to compute statistics from "
                         f"(check the dataset's annotations and rerun extract)")
    sums_m = {name: None for name, _ in layers}
    sums_v = {name: None for name, _ in layers}
    counts = torch.zeros(k, dtype=torch.float64, device=device)
    labels_now = {}

    def hook(name):
        def fn(module, inputs, output):
            m, v = sample_moments(inputs[0].float())
            y = labels_now["y"]
            if sums_m[name] is None:
                sums_m[name] = torch.zeros(k, m.shape[1], dtype=torch.float64, device=m.device)
                sums_v[name] = torch.zeros(k, m.shape[1], dtype=torch.float64, device=m.device)
            sums_m[name].index_add_(0, y, m.double())
            sums_v[name].index_add_(0, y, v.double())
        return fn

    handles = [mod.register_forward_hook(hook(name)) for name, mod in layers]
    progress = Progress(-(-n // batch), f"stats {type(net).__name__}", log, unit="batch")
    try:
        for start in range(0, n, batch):
            pos = torch.arange(start, min(start + batch, n), device=bank.lengths.device)
            idx = C.center_frame_indices(bank.lengths[pos], clip_len, clip_interval)
            x = C.normalize(C.center_crop(bank.gather(pos, idx), input_size)).to(device)
            y = bank.labels[pos].to(device)
            labels_now["y"] = y
            counts.index_add_(0, y, torch.ones_like(y, dtype=torch.float64))
            net(x)
            progress.update()
    finally:
        for h in handles:
            h.remove()
        progress.close()
    empty = torch.nonzero(counts == 0).flatten().tolist()
    if empty:
        names = [frames.classes[i] for i in empty]
        raise InputError(f"{frames.path}: classes {names} have no training video; EDC's class-wise targets "
                         f"need at least one per class (check the dataset's split files)")
    unused = [name for name, _ in layers if sums_m[name] is None]
    if unused:
        raise ValueError(f"compute_stats: BatchNorm3d layers {unused} are never reached by the forward pass; "
                         f"EDC cannot match them")
    out = {}
    for name, mod in layers:
        out[name] = LayerStats(
            class_mean=(sums_m[name] / counts[:, None]).float().cpu().numpy(),
            class_var=(sums_v[name] / counts[:, None]).float().cpu().numpy(),
            counts=counts.long().cpu().numpy(),
            running_mean=mod.running_mean.detach().float().cpu().numpy(),
            running_var=mod.running_var.detach().float().cpu().numpy())
    attrs = {"format": FORMAT, "num_classes": k, "num_clips": n, "layers": [name for name, _ in layers],
             "view": VIEW, "clip_len": clip_len, "clip_interval": clip_interval, "input_size": input_size,
             "frames_file": str(frames.path)}
    return EDCStats(layers=out, attrs=attrs)


def stats_for_teacher(frames_path: str | Path, teacher_path: str | Path, out_path: str | Path, settings: dict,
                      batch: int = 64) -> EDCStats:
    """The stats stage as a function: load the teacher, run the pass, write ``out_path``."""
    from vdc.formats.teacher import load_teacher
    from vdc.utils import get_device, seed_everything

    seed_everything(0, settings["deterministic"])
    device = get_device(settings["device"])
    ds = settings["dataset"]
    net = load_teacher(teacher_path, device)
    net.eval()
    with Frames(frames_path) as frames:
        stats = compute_stats(net, frames, int(ds["clip_len"]), int(ds["clip_interval"]), int(ds["input_size"]),
                              device=device, batch=batch)
    stats.attrs.update(arch=settings["arch"], teacher_file=str(teacher_path), settings=settings)
    write_stats(stats, out_path)
    log.info("%s: statistics of %d BN layers over %d training clips", out_path, len(stats.layers), stats.num_clips)
    return stats


def add_arguments(p: argparse.ArgumentParser) -> None:
    from vdc.cli import add_settings_arguments

    p.add_argument("--frames", required=True, help="frames HDF5 of the dataset")
    p.add_argument("--teacher", required=True, help="trained network (.pt from the teacher stage)")
    p.add_argument("--out", required=True, help="statistics HDF5 to write")
    p.add_argument("--arch", help="architecture (with --config)")
    p.add_argument("--batch", type=int, default=64, help="clips per forward pass (does not change the result)")
    p.add_argument("--threads", type=int, help="CPU threads for torch")
    add_settings_arguments(p)


def main(args: argparse.Namespace) -> int:
    from vdc.cli import resolve_settings
    from vdc.utils import set_threads

    set_threads(args.threads)
    wc = {"arch": args.arch} if args.arch else {}
    if args.config and not args.arch:
        raise SystemExit("stats: --config needs --arch")
    settings = resolve_settings(args, "stats", **wc)
    stats_for_teacher(args.frames, args.teacher, args.out, settings, batch=args.batch)
    return 0
