"""``python -m vdc.bench edc``: time per iteration and peak memory of EDC, one network vs three in rotation.

Runs EDC's real iteration (``vdc.condense.edc.edc_step``: temporal sampling, differentiable random
resized crop + flip, forward with hooks on every BatchNorm3d and — ``--match-modules bn_conv``, EDC's
default — every Conv3d (channel and patch statistics), CE + class-wise and global statistics matching,
backward to the clips, Adam) on random clips with untrained networks (timing and memory do not depend
on the weights). Two configurations:

* ``minic3d`` alone (EDC's default),
* ``minic3d`` + ``i3d_r18`` + ``slowonly_r18`` in rotation (Table 7's largest ensemble),

each in every ``--variants`` precision: ``fp32`` (what EDC runs today) and ``bf16`` (bf16 autocast of
the forward + channels_last_3d networks, vdc/accel.py; on CUDA only - on the CPU bf16 is ~40x slower).

Reported per network: median seconds per iteration over ``--iters`` timed steps (after ``--warmup``)
and memory — on CUDA ``torch.cuda.max_memory_allocated`` during the steps (clips, Adam state, network
and the step's activations: the job's peak on that network); on the CPU the bytes autograd saves for
the backward of one step (distinct storages). With networks in rotation the peak is the largest
network's step, and an iteration of the ensemble costs the mean of its networks' steps. The UCF101
IPC-1 case of issue 13 (target: peak <= 5 GiB)::

    python -m vdc.bench edc --size 112 --frames 8 --t-c 16 --batch 101 --classes 101 --width 1 --resnet-width 1 \\
        --variants fp32 bf16 --json edc.json
"""
from __future__ import annotations

import argparse
import resource
import statistics

import numpy as np
import torch

from vdc.accel import Accel
from vdc.bench.timing import SavedBytes, timed
from vdc.data import clips as C
from vdc.condense.edc import StatMatcher, StepSettings, edc_step
from vdc.formats.stats import (MATCH, ConvStats, EDCStats, LayerStats, channel_moments, hooked_modules,
                               patch_moments)
from vdc.models import create_model
from vdc.utils import get_device, write_json

GIB = 2 ** 30


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--size", type=int, default=48, help="input size S (clips S x S)")
    p.add_argument("--frames", type=int, default=8, help="clip length the networks see")
    p.add_argument("--t-c", type=int, default=None, help="frames per synthetic video (default 2 x frames, sliding)")
    p.add_argument("--batch", type=int, default=10, help="synthetic videos per iteration")
    p.add_argument("--classes", type=int, default=10)
    p.add_argument("--width", type=float, default=0.25, help="MiniC3D width")
    p.add_argument("--resnet-width", type=float, default=0.125, help="width of I3D-R18 and SlowOnly-R18")
    p.add_argument("--iters", type=int, default=5, help="timed iterations per network")
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--variants", nargs="+", default=["fp32"], choices=["fp32", "bf16"],
                   help="precisions to measure (bf16: autocast + channels_last_3d, as on CUDA by default)")
    p.add_argument("--match-modules", choices=MATCH, default="bn_conv",
                   help="matched module inputs: BatchNorm3d only, or BatchNorm3d and Conv3d (EDC's default)")
    p.add_argument("--device", default="auto")
    p.add_argument("--json", help="also write the figures here")


def _stats_from(net, k: int, x: torch.Tensor) -> EDCStats:
    """Targets of the right shapes (what matters for timing): BatchNorm class targets equal to the running
    statistics; convolution targets = the statistics of one forward of ``x`` [B, 3, T, S, S]."""
    seen = {}
    mods = hooked_modules(net, "bn_conv")
    hs = [m.register_forward_hook(lambda mod, i, o, n=n: seen.__setitem__(n, i[0].detach().float()))
          for n, m, kind in mods if kind == "conv"]
    with torch.no_grad():
        net(x)
    for h in hs:
        h.remove()
    layers = {}
    for n, m, kind in mods:
        if kind == "bn":
            layers[n] = LayerStats(class_mean=np.tile(m.running_mean.cpu().numpy(), (k, 1)),
                                   class_var=np.tile(m.running_var.cpu().numpy(), (k, 1)), counts=np.ones(k, np.int64),
                                   running_mean=m.running_mean.cpu().numpy(), running_var=m.running_var.cpu().numpy())
            continue
        mean, var = (a.cpu().numpy() for a in channel_moments(seen[n], per_sample=False))
        pm, pv, grid = patch_moments(seen[n], per_sample=False)
        pm, pv = pm.cpu().numpy(), pv.cpu().numpy()
        layers[n] = ConvStats(class_mean=np.tile(mean, (k, 1)), class_var=np.tile(var, (k, 1)), counts=np.ones(k, np.int64),
                              mean=mean, var=var, class_patch_mean=np.tile(pm, (k, 1)), class_patch_var=np.tile(pv, (k, 1)),
                              patch_mean=pm, patch_var=pv, grid=np.asarray(grid))
    return EDCStats(layers=layers, attrs={"num_clips": k})


def measure_step(arch: str, width: float, classes: int, size: int, frames: int, t_c: int, batch: int, accel: Accel,
                 iters: int = 5, warmup: int = 2, seed: int = 0, match: str = "bn_conv") -> dict:
    """One EDC iteration of ``batch`` synthetic videos on network ``arch``: {seconds (median), peak_bytes
    (CUDA: max allocated during the steps, everything included; CPU: saved-for-backward bytes),
    saved_bytes, params}."""
    device = accel.device
    torch.manual_seed(seed)
    net = accel.prepare(create_model(arch, classes, width=width).to(device).eval())
    for p in net.parameters():
        p.requires_grad_(False)
    g = torch.Generator().manual_seed(0)
    probe = C.normalize(torch.rand(2, 3, frames, size, size, generator=g)).to(device)
    matcher = StatMatcher(net, _stats_from(net, classes, probe), 10.0, 0.8, True, match)
    if device.type == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    x = C.normalize_channels_last(torch.rand(batch, t_c, size, size, 3, generator=g)).to(device).requires_grad_(True)
    y = (torch.arange(batch) % classes).to(device)
    opt = torch.optim.Adam([x], lr=0.05, betas=(0.5, 0.9))
    cfg = StepSettings(t_c=t_c, clip_len=frames, sampling="sliding", interpolation="none", size=size, scale=(0.5, 1.0),
                       r_bn=0.01, device=device, accel=accel)

    def step():
        edc_step(x, y, net, matcher, opt, 0.05, cfg, g)

    seconds = timed(step, iters, device, warmup)
    with SavedBytes() as saved:
        step()
    matcher.remove()
    peak = torch.cuda.max_memory_allocated() if device.type == "cuda" else saved.total
    return {"seconds": seconds, "peak_bytes": peak, "saved_bytes": saved.total,
            "params": sum(p.numel() for p in net.parameters())}


def bench(a: argparse.Namespace, device) -> dict:
    t_c = a.t_c or 2 * a.frames
    out = {"args": vars(a), "device": str(device), "variants": {}}
    for variant in a.variants:
        accel = Accel(device, bf16=variant == "bf16", channels_last=variant == "bf16")
        res = {}
        for label, archs in (("one network", ["minic3d"]), ("three in rotation", ["minic3d", "i3d_r18", "slowonly_r18"])):
            rows = []
            for i, arch in enumerate(archs):
                width = a.width if arch.startswith("minic3d") else a.resnet_width
                r = measure_step(arch, width, a.classes, a.size, a.frames, t_c, a.batch, accel, a.iters, a.warmup, seed=i,
                                 match=a.match_modules)
                rows.append({"network": arch, "s_per_iter": r["seconds"], "peak_bytes": r["peak_bytes"],
                             "saved_for_backward_mib": r["saved_bytes"] / 2**20, "params": r["params"]})
                if device.type == "cuda":
                    torch.cuda.empty_cache()
            res[label] = {"networks": rows, "ms_per_iter": 1e3 * statistics.mean(r["s_per_iter"] for r in rows),
                          "peak_gib": max(r["peak_bytes"] for r in rows) / GIB}
        res["rotation_over_one"] = res["three in rotation"]["ms_per_iter"] / res["one network"]["ms_per_iter"]
        out["variants"][variant] = res
    return out


def main(a: argparse.Namespace) -> int:
    torch.set_num_threads(a.threads)
    device = get_device(a.device)
    t_c = a.t_c or 2 * a.frames
    print(f"EDC iteration, batch {a.batch}, T_c {t_c} -> clip {a.frames} x {a.size}^2, {a.classes} classes, "
          f"device {device}, MiniC3D width {a.width}, ResNet width {a.resnet_width}, matching {a.match_modules}")
    out = bench(a, device)
    mem = "CUDA peak" if device.type == "cuda" else "saved for backward"
    for variant, res in out["variants"].items():
        for label in ("one network", "three in rotation"):
            r = res[label]
            print(f"\n[{variant}] {label}: {r['ms_per_iter']:.1f} ms per iteration (mean over the rotation), "
                  f"peak ({mem}) {r['peak_gib']:.2f} GiB")
            print(f"  {'network':<14}{'ms/iter':>10}{'peak MiB':>12}")
            for n in r["networks"]:
                print(f"  {n['network']:<14}{n['s_per_iter'] * 1e3:>10.1f}{n['peak_bytes'] / 2**20:>12.1f}")
        print(f"[{variant}] three-network rotation / MiniC3D alone: {res['rotation_over_one']:.2f}x time per iteration")
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"\npeak RSS of this process: {rss:.0f} MiB")
    out["peak_rss_mib"] = rss
    if a.json:
        write_json(a.json, out)
    return 0
