"""``python -m vdc.bench datm``: time and memory of one trajectory-matching iteration, naive vs recompute.

For each number of inner steps, one outer iteration (N inner SGD steps of MiniC3D-IN on a batch of
synthetic clips + the gradient w.r.t. clips, label logits and step size) is timed in both memory
modes of ``vdc/condense/trajectory.py`` (median of ``--repeats`` after one warm-up). Memory: on CUDA
the peak allocated (``torch.cuda.max_memory_allocated``); everywhere the peak of the bytes autograd
holds for backward (``SavedTensorMeter``) plus, for recompute, the stored theta_k (N x P floats).
Prints the ratio recompute / naive of both. Example (the figures in docs/datm.md)::

    python -m vdc.bench datm --size 48 --frames 8 --batch-syn 10 --syn-steps 2 4 8 --width 0.25
"""
from __future__ import annotations

import argparse
import resource
import statistics
import time

import torch

from vdc.condense.trajectory import FlatModel, InnerLoop, SavedTensorMeter, match, plan_steps
from vdc.models import create_model
from vdc.utils import get_device


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--size", type=int, default=48, help="frame size S (MiniC3D needs >= 43)")
    p.add_argument("--frames", type=int, default=8, help="clip length (and T_c: naive sampling)")
    p.add_argument("--classes", type=int, default=10)
    p.add_argument("--batch-syn", type=int, default=10, help="synthetic clips per inner step (= the set size)")
    p.add_argument("--syn-steps", type=int, nargs="+", default=[2, 4, 8])
    p.add_argument("--width", type=float, default=0.25)
    p.add_argument("--repeats", type=int, default=2)
    p.add_argument("--modes", nargs="+", default=["naive", "recompute"], choices=["naive", "recompute"])
    p.add_argument("--device", default="auto")
    p.add_argument("--threads", type=int, default=0, help="torch threads (0: leave as is)")


def _sync(dev):
    if dev.type == "cuda":
        torch.cuda.synchronize()


def run_case(inner, theta0, target, clips, labels, alpha, steps, batch_syn, frames, mode, repeats, dev) -> dict:
    gen = torch.Generator().manual_seed(0)
    plans = plan_steps(len(clips), steps, batch_syn, clips.shape[2], frames, "naive", True, gen, dev)
    match(inner, theta0, target, clips, labels, alpha, plans, mode)  # warm-up
    times = []
    if dev.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
    for _ in range(repeats):
        _sync(dev)
        t = time.perf_counter()
        with SavedTensorMeter() as meter:
            match(inner, theta0, target, clips, labels, alpha, plans, mode)
        _sync(dev)
        times.append(time.perf_counter() - t)
    stored = steps * theta0.numel() * theta0.element_size() if mode == "recompute" else 0
    out = {"time_s": statistics.median(times), "saved_bytes": meter.peak + stored}
    if dev.type == "cuda":
        out["cuda_peak_bytes"] = torch.cuda.max_memory_allocated() - base
    return out


def main(args: argparse.Namespace) -> int:
    if args.size < 43:
        raise SystemExit(f"--size {args.size}: MiniC3D needs frames of at least 43 px (three stride-2 convolutions and pools)")
    if args.threads:
        torch.set_num_threads(args.threads)
    dev = get_device(args.device)
    torch.manual_seed(0)
    model = create_model("minic3d_in", args.classes, width=args.width).to(dev)
    fm = FlatModel(model)
    theta0 = fm.flatten([p.detach() for p in model.parameters()])
    target = theta0 + 0.01 * torch.randn_like(theta0)
    clips = torch.randn(args.batch_syn, 3, args.frames, args.size, args.size, device=dev)
    labels = torch.randn(args.batch_syn, args.classes, device=dev)
    alpha = torch.tensor(0.01, device=dev)
    inner = InnerLoop(fm, args.frames)
    print(f"device {dev}, MiniC3D-IN width {args.width} ({fm.num_params:,} params), {args.batch_syn} clips "
          f"{args.frames}x{args.size}^2, threads {torch.get_num_threads()}")
    cuda = dev.type == "cuda"
    head = f"{'steps':>5} {'mode':>9} {'s/iter':>8} {'saved MiB':>10}" + (f" {'CUDA peak MiB':>13}" if cuda else "")
    print(head)
    for steps in args.syn_steps:
        res = {}
        for mode in args.modes:
            r = res[mode] = run_case(inner, theta0, target, clips, labels, alpha, steps, args.batch_syn,
                                     args.frames, mode, args.repeats, dev)
            line = f"{steps:>5} {mode:>9} {r['time_s']:>8.3f} {r['saved_bytes'] / 2**20:>10.1f}"
            if cuda:
                line += f" {r['cuda_peak_bytes'] / 2**20:>13.1f}"
            print(line, flush=True)
        if len(res) == 2:
            n, rc = res["naive"], res["recompute"]
            line = (f"{steps:>5} {'ratio':>9} {rc['time_s'] / n['time_s']:>8.2f} "
                    f"{rc['saved_bytes'] / n['saved_bytes']:>10.2f}")
            if cuda:
                line += f" {rc['cuda_peak_bytes'] / n['cuda_peak_bytes']:>13.2f}"
            print(line + "   (recompute / naive)", flush=True)
    print(f"process max RSS {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MiB")
    return 0
