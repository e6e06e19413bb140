"""EDC statistics: per-class statistics at every BatchNorm3d and Conv3d input of a trained network
(``python -m vdc stats``). What a statistic is, and the file it goes to: vdc/formats/stats.py.

One pass of the trained network (eval mode, its running statistics untouched) over the real
training videos, one view per video. ``view: train`` (the stage's, the reference's): the teacher's
training augmentation, as the BatchNorm running statistics were gathered (shaoshitong/EDC
``Branch_full_ImageNet_1k/recover/recover.py`` 126-150: ``RandomResizedCrop`` + ``RandomHorizontalFlip``
over the training set): a random window of ``clip_len`` frames at ``clip_interval`` (floor(L/clip_len)
for short videos; ``clips.train_frame_indices``), one random resized crop (the teacher's ``scale`` and
``ratio``) and a horizontal flip (the dataset's ``hflip``) for all its frames, resized to
``input_size``, ImageNet-normalised. ``view: centre`` (vdc's earlier pass, kept for comparison): the
protocol's test view, centre window and centre crop, no flip.

Randomness: every window, crop box and flip is drawn up front from one generator seeded with ``seed``
(0 in the stage), in the order windows, boxes, flips over the videos of the training split in bank
order, so the statistics are deterministic and independent of the pass's batch size.

Flip and labels (``datasets.<name>.hflip``): ``off`` never flips; ``on`` flips half the clips; ``map``
flips as ``on`` and a flipped clip of a class with a mirrored partner is counted as a clip of the
partner class, as the teacher was trained to see it (vdc.data.clips.HFlip).

At the input z of every hooked module the pass accumulates, in float64, the per-sample moments of
vdc/formats/stats.py (channel moments at every module, patch moments at convolutions) per class, and
their sums of squares over all clips for the global convolution targets. Under the GPU fast paths
(vdc/accel.py: bf16 autocast, channels_last_3d) the module inputs are bf16; their statistics are taken
after a cast to float32.
"""
from __future__ import annotations

import argparse
import logging
from pathlib import Path

import torch
import torch.nn as nn

from vdc.accel import Accel
from vdc.data import clips as C
from vdc.data.frames import Frames, load_bank
from vdc.errors import InputError
from vdc.formats.stats import (FORMAT, ConvStats, EDCStats, LayerStats, channel_moments, hooked_modules,
                               patch_moments, write_stats)
from vdc.progress import Progress

VIEWS = {"train": "training augmentation: random window, random resized crop + flip",
         "centre": "centre clip, centre crop"}
log = logging.getLogger("vdc.stats")


def draw_views(lengths: torch.Tensor, labels: torch.Tensor, frame_hw: tuple[int, int], clip_len: int,
               clip_interval: int, view: str, scale, ratio, hflip: C.HFlip, generator: torch.Generator):
    """Every video's view, drawn up front: (frame indices [N, clip_len], crop boxes [N, 4] or None for
    the centre crop, flipped bool [N], labels of the views [N]). All on the CPU."""
    n = len(lengths)
    if view == "centre":
        return (C.center_frame_indices(lengths, clip_len, clip_interval), None,
                torch.zeros(n, dtype=torch.bool), labels)
    if view != "train":
        raise ValueError(f"statistics view must be one of {', '.join(VIEWS)}, got '{view}'")
    idx = C.train_frame_indices(lengths, clip_len, clip_interval, generator)
    boxes = C.sample_resized_crop_boxes(n, *frame_hw, tuple(scale), tuple(ratio), generator)
    flipped = hflip.draw(n, generator)
    return idx, boxes, flipped, hflip.labels(labels, flipped)


class _Sums:
    """float64 sums of one module's per-sample statistics: per class, and of squares over all clips."""

    def __init__(self, k: int):
        self.k = k
        self.s = {}

    def add(self, name: str, per_sample: torch.Tensor, y: torch.Tensor, squares: bool) -> None:
        x = per_sample.double()
        if name not in self.s:
            self.s[name] = torch.zeros(self.k, x.shape[1], dtype=torch.float64, device=x.device)
            if squares:
                self.s[name + "^2"] = torch.zeros(x.shape[1], dtype=torch.float64, device=x.device)
        self.s[name].index_add_(0, y, x)
        if squares:
            self.s[name + "^2"] += (x * x).sum(0)


@torch.no_grad()
def compute_stats(net: nn.Module, frames: Frames, clip_len: int, clip_interval: int, input_size: int,
                  device="cpu", batch: int = 64, view: str = "train", scale=(0.08, 1.0), ratio=(3 / 4, 4 / 3),
                  hflip: C.HFlip | None = None, seed: int = 0, accel: Accel | None = None,
                  dataset: dict | None = None) -> EDCStats:
    """The per-class statistics at every BatchNorm3d and Conv3d input of ``net`` over the training split
    (module docstring). ``hflip`` None = flip mode on; ``accel`` None = float32 on ``device``;
    ``dataset``: the dataset's settings, whose ``bank_gb`` limits the split's bank (``load_bank``).

    ``net`` must already be in eval mode (its running statistics are what EDC matches, and a pass
    in train mode would change them); a network in train mode is an error."""
    if net.training:
        raise ValueError("compute_stats: the network must be in eval mode (net.eval())")
    modules = hooked_modules(net, "bn_conv")
    if not any(kind == "bn" for _, _, kind in modules):
        raise ValueError(f"compute_stats: {type(net).__name__} has no BatchNorm3d layer; EDC needs BN statistics")
    accel = accel or Accel(torch.device(device))
    hflip = hflip or C.HFlip("on")
    bank = load_bank(frames, "train", device, dataset=dataset)
    k, n = frames.num_classes, len(bank)
    if n == 0:
        raise InputError(f"{frames.path}: the training split is empty; nothing to compute statistics from "
                         f"(check the dataset's annotations and rerun extract)")
    gen = torch.Generator().manual_seed(seed)
    idx, boxes, flipped, labels = draw_views(bank.lengths.cpu(), bank.labels.cpu(), frames.frame_shape[:2], clip_len,
                                             clip_interval, view, scale, ratio, hflip, gen)
    dev = bank.lengths.device
    idx, flipped, labels = idx.to(dev), flipped.to(dev), labels.to(dev)
    sums = {name: _Sums(k) for name, _, _ in modules}
    grids: dict[str, tuple[int, int]] = {}
    now = {}

    def hook(name: str, kind: str):
        def fn(module, inputs, output):
            z, y, acc = inputs[0], now["y"], sums[name]
            with torch.autocast(z.device.type, enabled=False):       # float32 statistics under bf16 autocast
                z = z.float()
                m, v = channel_moments(z, per_sample=True)
                acc.add("mean", m, y, squares=kind == "conv")
                acc.add("var", v, y, squares=False)
                if kind == "conv":
                    pm, pv, grids[name] = patch_moments(z, per_sample=True)
                    acc.add("patch_mean", pm, y, squares=True)
                    acc.add("patch_var", pv, y, squares=False)
        return fn

    handles = [mod.register_forward_hook(hook(name, kind)) for name, mod, kind in modules]
    counts = torch.bincount(labels, minlength=k).double()     # clips per class of the views (float64)
    progress = Progress(-(-n // batch), f"stats {type(net).__name__}", log, unit="batch")
    try:
        for start in range(0, n, batch):
            stop = min(start + batch, n)
            raw = bank.gather(torch.arange(start, stop, device=dev), idx[start:stop])
            if boxes is None:
                x = C.center_crop(raw, input_size)
            else:
                x = C.crop_resize(raw, boxes[start:stop], input_size, flipped[start:stop])
            now["y"] = labels[start:stop]
            with accel.autocast():
                net(accel.input(C.normalize(x).to(device)))
            progress.update()
    finally:
        for h in handles:
            h.remove()
        progress.close()
    empty = torch.nonzero(counts == 0).flatten().tolist()
    if empty:
        names = [frames.classes[i] for i in empty]
        raise InputError(f"{frames.path}: classes {names} have no training clip; EDC's class-wise targets "
                         f"need at least one per class (check the dataset's split files)")
    unused = [name for name, _, _ in modules if not sums[name].s]
    if unused:
        raise ValueError(f"compute_stats: modules {unused} are never reached by the forward pass; EDC cannot "
                         f"match them")
    out = {name: _finish(sums[name].s, counts, n, mod, kind, grids.get(name)) for name, mod, kind in modules}
    attrs = {"format": FORMAT, "num_classes": k, "num_clips": n, "layers": [name for name, _, _ in modules],
             "view": view, "view_description": VIEWS[view], "seed": seed, "clip_len": clip_len,
             "clip_interval": clip_interval, "input_size": input_size, "scale": list(scale), "ratio": list(ratio),
             "hflip": hflip.mode, "frames_file": str(frames.path)}
    return EDCStats(layers=out, attrs=attrs)


def _finish(s: dict, counts: torch.Tensor, n: int, mod: nn.Module, kind: str, grid) -> LayerStats | ConvStats:
    """Class averages (sums / n_k) and, for a convolution, the global targets over all n clips."""
    def cls(key):
        return (s[key] / counts[:, None]).float().cpu().numpy()

    def glob(key):
        mean = s["mean" if key == "var" else "patch_mean"].sum(0) / n
        sq = s["mean^2" if key == "var" else "patch_mean^2"] / n
        return ((s[key].sum(0) / n + sq - mean * mean).clamp(min=0)).float().cpu().numpy()

    c = counts.long().cpu().numpy()
    if kind == "bn":
        return LayerStats(class_mean=cls("mean"), class_var=cls("var"), counts=c,
                          running_mean=mod.running_mean.detach().float().cpu().numpy(),
                          running_var=mod.running_var.detach().float().cpu().numpy())
    return ConvStats(class_mean=cls("mean"), class_var=cls("var"), counts=c,
                     mean=(s["mean"].sum(0) / n).float().cpu().numpy(), var=glob("var"),
                     class_patch_mean=cls("patch_mean"), class_patch_var=cls("patch_var"),
                     patch_mean=(s["patch_mean"].sum(0) / n).float().cpu().numpy(), patch_var=glob("patch_var"),
                     grid=torch.tensor(grid).numpy())


def stats_for_teacher(frames_path: str | Path, teacher_path: str | Path, out_path: str | Path, settings: dict,
                      batch: int = 64, view: str = "train") -> EDCStats:
    """The stats stage as a function: load the teacher, run the pass, write ``out_path``."""
    from vdc.accel import setup_backends
    from vdc.formats.teacher import load_teacher
    from vdc.utils import get_device, seed_everything

    seed_everything(0, settings["deterministic"])
    device = get_device(settings["device"])
    accel = setup_backends(settings, device)
    ds, t = settings["dataset"], settings["teacher"]
    net = accel.prepare(load_teacher(teacher_path, device))
    net.eval()
    with Frames(frames_path) as frames:
        stats = compute_stats(net, frames, int(ds["clip_len"]), int(ds["clip_interval"]), int(ds["input_size"]),
                              device=device, batch=batch, view=view, scale=t["scale"], ratio=t["ratio"],
                              hflip=C.HFlip.of(ds, list(frames.classes)), seed=0, accel=accel, dataset=ds)
    stats.attrs.update(arch=settings["arch"], teacher_file=str(teacher_path), settings=settings)
    write_stats(stats, out_path)
    kinds = [ls.kind for ls in stats.layers.values()]
    log.info("%s: statistics of %d BatchNorm and %d convolution inputs over %d training clips (%s)", out_path,
             kinds.count("bn"), kinds.count("conv"), stats.num_clips, VIEWS[view])
    return stats


def add_arguments(p: argparse.ArgumentParser) -> None:
    from vdc.cli import add_settings_arguments

    p.add_argument("--frames", required=True, help="frames HDF5 of the dataset")
    p.add_argument("--teacher", required=True, help="trained network (.pt from the teacher stage)")
    p.add_argument("--out", required=True, help="statistics HDF5 to write")
    p.add_argument("--arch", help="architecture (with --config)")
    p.add_argument("--batch", type=int, default=64, help="clips per forward pass (does not change the result)")
    p.add_argument("--view", choices=sorted(VIEWS), default="train",
                   help="train: the teacher's training augmentation (the reference's pass, the stage's); "
                        "centre: the test view (centre clip, centre crop)")
    add_settings_arguments(p)


def main(args: argparse.Namespace) -> int:
    from vdc.cli import resolve_settings

    wc = {"arch": args.arch} if args.arch else {}
    if args.config and not args.arch:
        raise SystemExit("stats: --config needs --arch")
    settings = resolve_settings(args, "stats", **wc)
    stats_for_teacher(args.frames, args.teacher, args.out, settings, batch=args.batch, view=args.view)
    return 0
