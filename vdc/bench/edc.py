"""``python -m vdc.bench edc``: time per iteration and peak memory of EDC, one network vs three in rotation.

Runs EDC's real iteration (``vdc.condense.edc.edc_step``: temporal sampling, differentiable random
resized crop + flip, forward with hooks on every BatchNorm3d, CE + class-wise and global statistics
matching, backward to the clips, Adam) on random clips with untrained networks (timing and memory do
not depend on the weights). Two configurations:

* ``minic3d`` alone (EDC's default),
* ``minic3d`` + ``i3d_r18`` + ``slowonly_r18`` in rotation (Table 7's largest ensemble).

Reported per network: median seconds per iteration over ``--iters`` timed steps (after ``--warmup``)
and memory — on CUDA ``torch.cuda.max_memory_allocated`` of the step; on the CPU the bytes autograd
saves for the backward of one step (distinct storages, via ``saved_tensors_hooks``), plus the peak RSS
of the process at the end. With networks in rotation the peak is the largest network's step, and
an iteration of the ensemble costs the mean of its networks' steps.
"""
from __future__ import annotations

import argparse
import json
import resource
import statistics
import time

import numpy as np
import torch

from vdc.condense.edc import StatMatcher, _to_normalised, edc_step
from vdc.condense.edc_stats import EDCStats, LayerStats, bn_layers
from vdc.models import create_model
from vdc.utils import get_device, write_json


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
    p.add_argument("--device", default="auto")
    p.add_argument("--json", help="also write the figures here")


def _stats_from(net, k: int) -> EDCStats:
    """Class targets equal to the running statistics (shapes are what matter for timing)."""
    layers = {n: LayerStats(class_mean=np.tile(m.running_mean.cpu().numpy(), (k, 1)),
                            class_var=np.tile(m.running_var.cpu().numpy(), (k, 1)), counts=np.ones(k, np.int64),
                            running_mean=m.running_mean.cpu().numpy(), running_var=m.running_var.cpu().numpy())
              for n, m in bn_layers(net)}
    return EDCStats(layers=layers, attrs={"num_clips": k})


class _SavedBytes:
    """Bytes of the distinct tensor storages autograd saves for backward inside the context."""

    def __init__(self):
        self.seen: dict[int, int] = {}

    def pack(self, t):
        try:
            self.seen[t.untyped_storage().data_ptr()] = t.untyped_storage().nbytes()
        except RuntimeError:
            pass
        return t

    @property
    def total(self) -> int:
        return sum(self.seen.values())


def bench_networks(archs: list[str], a: argparse.Namespace, device) -> list[dict]:
    t_c = a.t_c or 2 * a.frames
    nets, matchers = [], []
    for i, arch in enumerate(archs):
        torch.manual_seed(i)
        width = a.width if arch.startswith("minic3d") else a.resnet_width
        net = create_model(arch, a.classes, width=width).to(device).eval()
        for p in net.parameters():
            p.requires_grad_(False)
        nets.append(net)
        matchers.append(StatMatcher(net, _stats_from(net, a.classes), 10.0, 0.8, True))
    g = torch.Generator().manual_seed(0)
    x = _to_normalised(torch.rand(a.batch, t_c, a.size, a.size, 3, generator=g)).to(device).requires_grad_(True)
    y = (torch.arange(a.batch) % a.classes).to(device)
    opt = torch.optim.Adam([x], lr=0.05, betas=(0.5, 0.9))
    cfg = {"t_c": t_c, "clip_len": a.frames, "sampling": "sliding", "interp": "none", "size": a.size,
           "scale": [0.5, 1.0], "r_bn": 0.01, "lo": _to_normalised(torch.zeros(3, device=device)),
           "hi": _to_normalised(torch.ones(3, device=device))}
    cuda = device.type == "cuda"

    def sync():
        if cuda:
            torch.cuda.synchronize()

    rows = []
    for arch, net, m in zip(archs, nets, matchers):
        for _ in range(a.warmup):
            edc_step(x, y, net, m, opt, 0.05, cfg, g)
        sync()
        if cuda:
            torch.cuda.reset_peak_memory_stats()
        times = []
        for _ in range(a.iters):
            t0 = time.perf_counter()
            edc_step(x, y, net, m, opt, 0.05, cfg, g)
            sync()
            times.append(time.perf_counter() - t0)
        saved = _SavedBytes()
        with torch.autograd.graph.saved_tensors_hooks(saved.pack, lambda t: t):
            edc_step(x, y, net, m, opt, 0.05, cfg, g)
        row = {"network": arch, "s_per_iter": statistics.median(times), "saved_for_backward_mib": saved.total / 2**20,
               "params": sum(p.numel() for p in net.parameters())}
        if cuda:
            row["peak_mib"] = torch.cuda.max_memory_allocated() / 2**20
        rows.append(row)
    for m in matchers:
        m.remove()
    return rows


def main(a: argparse.Namespace) -> int:
    torch.set_num_threads(a.threads)
    device = get_device(a.device)
    t_c = a.t_c or 2 * a.frames
    print(f"EDC iteration, batch {a.batch}, T_c {t_c} -> clip {a.frames} x {a.size}^2, {a.classes} classes, "
          f"device {device}, MiniC3D width {a.width}, ResNet width {a.resnet_width}")
    out = {"args": vars(a), "device": str(device)}
    for label, archs in (("one network", ["minic3d"]), ("three in rotation", ["minic3d", "i3d_r18", "slowonly_r18"])):
        rows = bench_networks(archs, a, device)
        per_iter = statistics.mean(r["s_per_iter"] for r in rows)
        mem_key = "peak_mib" if device.type == "cuda" else "saved_for_backward_mib"
        peak = max(r[mem_key] for r in rows)
        print(f"\n{label}: {per_iter * 1e3:.1f} ms per iteration (mean over the rotation), peak {mem_key} {peak:.1f}")
        print(f"  {'network':<14}{'ms/iter':>10}{'saved MiB':>12}" + (f"{'peak MiB':>11}" if device.type == "cuda" else ""))
        for r in rows:
            line = f"  {r['network']:<14}{r['s_per_iter'] * 1e3:>10.1f}{r['saved_for_backward_mib']:>12.1f}"
            if device.type == "cuda":
                line += f"{r['peak_mib']:>11.1f}"
            print(line)
        out[label] = {"networks": rows, "ms_per_iter": per_iter * 1e3, "peak": {mem_key: peak}}
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"\npeak RSS of this process: {rss:.0f} MiB")
    out["peak_rss_mib"] = rss
    ratio = out["three in rotation"]["ms_per_iter"] / out["one network"]["ms_per_iter"]
    print(f"three-network rotation / MiniC3D alone: {ratio:.2f}x time per iteration")
    if a.json:
        write_json(a.json, out)
    return 0
