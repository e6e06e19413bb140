"""``python -m vdc.bench datm``: time and memory of one trajectory-matching iteration, naive vs recompute,
and (``--agreement``) how far the gradient moves with bf16 autocast, TF32 and the memory mode.

Timing. For each number of inner steps, one outer iteration (N inner SGD steps of MiniC3D-IN on a batch
of synthetic clips + the gradient w.r.t. clips, label logits and step size) is timed in both memory
modes of ``vdc/condense/trajectory.py`` (median of ``--repeats`` after one warm-up). Memory: on CUDA
the peak allocated during the iteration above what was allocated before it
(``torch.cuda.max_memory_allocated``); everywhere the peak of the bytes autograd holds for backward
(``SavedTensorMeter``) plus, for recompute, the stored theta_k (N x P floats). Prints the ratios
recompute / naive, and for recompute the peak at the most steps over the peak at the fewest ("flat in
steps": about 1).

Agreement (``--agreement``). The same iteration (same expert snapshots, clips, labels, step plans)
in several variants; for each, the relative L2 distance of the clip, label and step-size gradients to a
reference: naive mode, float32, TF32 off (float64 on the CPU, where the method is exact to 1e-15).
Variants: naive again (the reference's own run-to-run spread: 0 on the CPU, the GPU's non-deterministic
kernels otherwise), recompute float32, and on CUDA naive / recompute with TF32 and with bf16 autocast
(on the CPU bf16 autocast as well, slowly). DATM keeps float32 for this gradient unless bf16 lands
within the float32 spread (``performance.datm_bf16``, docs/gpu.md). UCF101 IPC 1 (issue 13)::

    python -m vdc.bench datm --size 112 --frames 8 --classes 101 --batch-syn 101 --width 1 \\
        --syn-steps 10 20 40 --modes recompute --agreement --agreement-steps 20 --json datm.json
"""
from __future__ import annotations

import argparse
import contextlib
import resource
import time

import torch

from vdc.accel import Accel
from vdc.bench.timing import sync, timed
from vdc.condense.trajectory import FlatModel, InnerLoop, SavedTensorMeter, match, plan_steps
from vdc.models import create_model
from vdc.utils import get_device, write_json


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--size", type=int, default=48, help="frame size S (MiniC3D needs >= 43)")
    p.add_argument("--frames", type=int, default=8, help="clip length (and T_c: naive sampling)")
    p.add_argument("--classes", type=int, default=10)
    p.add_argument("--batch-syn", type=int, default=10, help="synthetic clips per inner step (= the set size)")
    p.add_argument("--syn-steps", type=int, nargs="+", default=[2, 4, 8])
    p.add_argument("--width", type=float, default=0.25)
    p.add_argument("--repeats", type=int, default=2)
    p.add_argument("--modes", nargs="+", default=["naive", "recompute"], choices=["naive", "recompute"])
    p.add_argument("--naive-max-steps", type=int, default=None,
                   help="time naive mode only up to this many steps (its memory grows linearly)")
    p.add_argument("--agreement", action="store_true", help="also measure the gradient agreement (module doc)")
    p.add_argument("--agreement-steps", type=int, default=None, help="inner steps of the agreement runs (default: the first --syn-steps)")
    p.add_argument("--device", default="auto")
    p.add_argument("--threads", type=int, default=0, help="torch threads (0: leave as is)")
    p.add_argument("--json", help="also write the figures here")


class Problem:
    """One trajectory-matching problem: MiniC3D-IN, expert snapshots theta0 / target, synthetic clips,
    label logits and step size, all from fixed seeds (``dtype`` float32 or float64); the inner steps see
    DATM's default augmentation (``crop_flip``)."""

    def __init__(self, width, classes, size, frames, batch_syn, device, dtype=torch.float32):
        torch.manual_seed(0)
        model = create_model("minic3d_in", classes, width=width).to(device=device, dtype=dtype)
        self.fm = FlatModel(model)
        self.theta0 = self.fm.flatten([p.detach() for p in model.parameters()])
        g = torch.Generator().manual_seed(1)
        self.target = self.theta0 + 0.01 * torch.randn(self.theta0.shape, generator=g).to(device, dtype)
        self.clips = torch.randn(batch_syn, 3, frames, size, size, generator=g).to(device, dtype)
        self.labels = torch.randn(batch_syn, classes, generator=g).to(device, dtype)
        self.alpha = torch.tensor(0.01, device=device, dtype=dtype)
        self.inner = InnerLoop(self.fm, frames)
        self.frames, self.batch_syn, self.device = frames, batch_syn, device

    def plans(self, steps):
        gen = torch.Generator().manual_seed(0)
        return plan_steps(len(self.clips), steps, self.batch_syn, self.clips.shape[2], self.frames, "naive", "crop_flip",
                          gen, self.device, size=self.clips.shape[-1])

    def run(self, plans, mode, accel: Accel | None = None):
        with accel.autocast() if accel is not None else contextlib.nullcontext():
            return match(self.inner, self.theta0, self.target, self.clips, self.labels, self.alpha, plans, mode)


def run_case(prob: Problem, steps: int, mode: str, repeats: int, accel: Accel | None = None) -> dict:
    """Median seconds of one outer iteration and its memory (module docstring)."""
    dev = prob.device
    plans = prob.plans(steps)
    prob.run(plans, mode, accel)  # warm-up (without the meter)
    last = {}

    def metered():
        with SavedTensorMeter() as last["meter"]:
            prob.run(plans, mode, accel)

    def reset():
        torch.cuda.reset_peak_memory_stats()
        last["base"] = torch.cuda.memory_allocated()

    seconds = timed(metered, repeats, dev, warmup=0, before=reset if dev.type == "cuda" else None)
    stored = steps * prob.theta0.numel() * prob.theta0.element_size() if mode == "recompute" else 0
    out = {"time_s": seconds, "saved_bytes": last["meter"].peak + stored}
    out["peak_bytes"] = torch.cuda.max_memory_allocated() - last["base"] if dev.type == "cuda" else out["saved_bytes"]
    return out


def datm_iteration(arch: str, width: float, classes: int, size: int, frames: int, batch_syn: int, syn_steps: int,
                   memory: str, accel: Accel, repeats: int = 2) -> dict:
    """Seconds and memory of one DATM outer iteration with ``batch_syn`` synthetic clips (the plan's ``datm`` op).
    CUDA: the peak counts everything the iteration allocates beyond the problem's own tensors."""
    if arch != "minic3d_in":
        raise ValueError(f"the DATM bench runs MiniC3D-IN (experts.arch), not {arch}")
    prob = Problem(width, classes, size, frames, batch_syn, accel.device)
    r = run_case(prob, syn_steps, memory, repeats, accel)  # Accel.autocast: a null context when bf16 is off
    r["peak_bytes"] += (prob.clips.numel() + prob.labels.numel() + 3 * prob.theta0.numel()) * 4
    return r


def _rel(a: torch.Tensor, b: torch.Tensor) -> float:
    a, b = a.double(), b.double()
    return float((a - b).norm() / b.norm().clamp_min(1e-300))


def agreement(a: argparse.Namespace, dev) -> list[dict]:
    """Gradient agreement of the variants against the reference (module docstring)."""
    steps = a.agreement_steps or a.syn_steps[0]
    cuda = dev.type == "cuda"
    tf32 = (torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32)
    det = torch.are_deterministic_algorithms_enabled()

    def set_tf32(on: bool):
        torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = on

    ref_dtype = torch.float32 if cuda else torch.float64
    ref_prob = Problem(a.width, a.classes, a.size, a.frames, a.batch_syn, dev, ref_dtype)
    plans = ref_prob.plans(steps)
    if cuda:
        set_tf32(False)
        torch.use_deterministic_algorithms(True, warn_only=True)
    t = time.perf_counter()
    ref = ref_prob.run(plans, "naive")
    sync(dev)
    ref_time = time.perf_counter() - t
    prob = Problem(a.width, a.classes, a.size, a.frames, a.batch_syn, dev, torch.float32)
    bf16 = Accel(dev, bf16=True)
    variants = [("naive float32 again" if cuda else "naive float32", "naive", None, False),
                ("recompute float32", "recompute", None, False)]
    if cuda:
        variants += [("naive float32 TF32", "naive", None, True), ("recompute float32 TF32", "recompute", None, True)]
    variants += [("naive bf16 autocast", "naive", bf16, cuda), ("recompute bf16 autocast", "recompute", bf16, cuda)]
    rows = [{"variant": f"reference: naive {'float32, TF32 off, deterministic' if cuda else 'float64'}",
             "mode": "naive", "time_s": ref_time, "clips": 0.0, "labels": 0.0, "alpha": 0.0}]
    for name, mode, accel, use_tf32 in variants:
        if cuda:
            set_tf32(use_tf32)
            torch.use_deterministic_algorithms(not use_tf32 and accel is None, warn_only=True)
        sync(dev)
        t = time.perf_counter()
        r = prob.run(plans, mode, accel)
        sync(dev)
        rows.append({"variant": name, "mode": mode, "time_s": time.perf_counter() - t,
                     "clips": _rel(r.grad_clips, ref.grad_clips), "labels": _rel(r.grad_labels, ref.grad_labels),
                     "alpha": _rel(r.grad_alpha, ref.grad_alpha)})
    if cuda:
        torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = tf32
        torch.use_deterministic_algorithms(det, warn_only=True)
    return rows


def main(args: argparse.Namespace) -> int:
    if args.size < 43:
        raise SystemExit(f"--size {args.size}: MiniC3D needs frames of at least 43 px (three stride-2 convolutions and pools)")
    if args.threads:
        torch.set_num_threads(args.threads)
    dev = get_device(args.device)
    prob = Problem(args.width, args.classes, args.size, args.frames, args.batch_syn, dev)
    print(f"device {dev}, MiniC3D-IN width {args.width} ({prob.fm.num_params:,} params), {args.batch_syn} clips "
          f"{args.frames}x{args.size}^2, threads {torch.get_num_threads()}")
    cuda = dev.type == "cuda"
    print(f"{'steps':>5} {'mode':>9} {'s/iter':>8} {'saved MiB':>10}" + (f" {'CUDA peak MiB':>13}" if cuda else ""))
    out = {"args": vars(args), "device": str(dev), "params": prob.fm.num_params, "timing": []}
    for steps in args.syn_steps:
        res = {}
        for mode in args.modes:
            if mode == "naive" and args.naive_max_steps and steps > args.naive_max_steps:
                continue
            r = res[mode] = run_case(prob, steps, mode, args.repeats)
            out["timing"].append({"steps": steps, "mode": mode, **r})
            line = f"{steps:>5} {mode:>9} {r['time_s']:>8.3f} {r['saved_bytes'] / 2**20:>10.1f}"
            if cuda:
                line += f" {r['peak_bytes'] / 2**20:>13.1f}"
            print(line, flush=True)
            if cuda:
                torch.cuda.empty_cache()
        if len(res) == 2:
            n, rc = res["naive"], res["recompute"]
            line = (f"{steps:>5} {'ratio':>9} {rc['time_s'] / n['time_s']:>8.2f} "
                    f"{rc['saved_bytes'] / n['saved_bytes']:>10.2f}")
            if cuda:
                line += f" {rc['peak_bytes'] / n['peak_bytes']:>13.2f}"
            print(line + "   (recompute / naive)", flush=True)
    rec = [r for r in out["timing"] if r["mode"] == "recompute"]
    if len(rec) >= 2:
        lo, hi = min(rec, key=lambda r: r["steps"]), max(rec, key=lambda r: r["steps"])
        out["recompute_peak_ratio"] = hi["peak_bytes"] / lo["peak_bytes"]
        print(f"recompute peak at {hi['steps']} steps / at {lo['steps']} steps: {out['recompute_peak_ratio']:.2f} "
              f"(flat in steps: ~1)")
    if args.agreement:
        del prob
        out["agreement"] = agreement(args, dev)
        print(f"\ngradient agreement at {args.agreement_steps or args.syn_steps[0]} steps: relative L2 distance to "
              f"{out['agreement'][0]['variant']}")
        print(f"  {'variant':<28}{'clips':>10}{'labels':>10}{'alpha':>10}{'s':>8}")
        for r in out["agreement"]:
            print(f"  {r['variant'][:28]:<28}{r['clips']:>10.2e}{r['labels']:>10.2e}{r['alpha']:>10.2e}{r['time_s']:>8.2f}")
    print(f"process max RSS {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MiB")
    if args.json:
        write_json(args.json, out)
    return 0
