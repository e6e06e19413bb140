"""``python -m vdc.bench protocol``: throughput of the evaluation protocol on the current device.

For each batch size B and each precision variant it measures, in clips per second (median of
``--steps`` timed steps after two warm-ups; CUDA synchronised):

  (a) bare   - the student's train step alone on a fixed, ready input [B, 3, 8, S, S]
               (forward, CE, backward, vdc's AdamW step): the ceiling;
  (b) full   - the protocol step as ``vdc evaluate`` runs it (``vdc.evaluate.Protocol.step``): temporal
               sampling of uint8 condensed clips at storage size on the device, per-clip random resized
               crop + flip, normalisation, the labeler's forward (Multi-SL relabelling), MSE-GT, student step;
  (v) views  - the data path of (b) alone (sampling + augmentation);
  (c) test   - the test pass (``loop.test_accuracy``) over prepared centre clips, at batch ``--test-batch``;

and prints (b)/(a): the fraction of the bare step's throughput the full protocol keeps (issue 13's
target on a GPU: >= 0.8). Variants (``--variants``; vdc/accel.py): ``fp32``; ``bf16`` (autocast);
``bf16_cl`` (autocast + channels_last_3d + fused AdamW: vdc's default on CUDA). On CUDA it also counts
the host synchronisations of one protocol step (``torch.cuda.set_sync_debug_mode``: every blocking
copy or read of a device value; 0 keeps the GPU's queue full).

``--ceiling-batch B`` adds the device's bf16 ceiling: a bf16 matmul of ``--matmul-size``^3 (TFLOP/s) and
the bare step at batch B in each variant, whose FLOPs (forward + backward, counted by
``torch.utils.flop_counter``) over its time give the achieved fraction of that ceiling (target: >= 25 %
at B = 256). Networks are freshly initialised (no files needed); student and labeler are both ``--arch``.
"""
from __future__ import annotations

import argparse
import warnings

import numpy as np
import torch
import torch.nn.functional as F

from vdc.accel import Accel
from vdc.bench.timing import timed
from vdc.condensed import CondensedSet
from vdc.data.frames import VideoBank
from vdc.evaluate import CondensedClips, Protocol
from vdc.models import create_model
from vdc.train import loop
from vdc.utils import get_device, set_threads, write_json

WARMUP = 2  # warm-up steps before each measurement (module docstring)
VARIANTS = {"fp32": {}, "bf16": {"bf16": True}, "bf16_cl": {"bf16": True, "channels_last": True, "fused": True}}


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--batch", type=int, nargs="+", default=[10, 100], help="student batch sizes")
    p.add_argument("--size", type=int, default=112, help="input size S")
    p.add_argument("--storage", type=int, nargs=2, help="stored frame H W (default: S x 128/112, S x 170/112)")
    p.add_argument("--width", type=float, default=1.0, help="network width")
    p.add_argument("--arch", default="minic3d")
    p.add_argument("--classes", type=int, default=101)
    p.add_argument("--steps", type=int, default=10, help="timed steps per measurement")
    p.add_argument("--test-videos", type=int, default=500)
    p.add_argument("--test-batch", type=int, default=100)
    p.add_argument("--variants", nargs="+", default=["fp32"], choices=list(VARIANTS),
                   help="precision / memory-format variants (vdc's CUDA default: bf16_cl)")
    p.add_argument("--ceiling-batch", type=int, default=0, help="also compare the bare step at this batch with a bf16 matmul")
    p.add_argument("--matmul-size", type=int, default=8192, help="n of the n^3 bf16 matmul ceiling")
    p.add_argument("--benchmark", action="store_true", help="cudnn.benchmark on (what deterministic: false does)")
    p.add_argument("--device", default="auto")
    p.add_argument("--threads", type=int, help="CPU threads (default: torch's)")
    p.add_argument("--json", help="also write the figures here")


def host_syncs(fn, device) -> int | None:
    """Host synchronisations ``fn()`` makes on CUDA (sync debug mode warnings), None elsewhere."""
    if device.type != "cuda":
        return None
    torch.cuda.synchronize()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        torch.cuda.set_sync_debug_mode("warn")
        try:
            fn()
        finally:
            torch.cuda.set_sync_debug_mode("default")
    return sum("synchroniz" in str(w.message).lower() for w in caught)


def student_step(student, opt, accel: Accel):
    """The bare step's closure factory: forward (autocast), CE, backward, optimiser step on ready input."""
    def step(x, y):
        with accel.autocast():
            loss = F.cross_entropy(student(x).float(), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    return step


def matmul_tflops(n: int, device, steps: int = 10) -> float:
    a = torch.randn(n, n, device=device, dtype=torch.bfloat16)
    b = torch.randn(n, n, device=device, dtype=torch.bfloat16)
    t = timed(lambda: a @ b, steps, device, warmup=3)
    return 2 * n ** 3 / t / 1e12


def step_flops(arch, width, classes, batch, size, accel: Accel) -> float:
    """FLOPs of one bare train step (forward + backward) at ``batch``, counted on a real run."""
    from torch.utils.flop_counter import FlopCounterMode

    dev = accel.device
    student = accel.prepare(create_model(arch, classes, width=width).to(dev)).train()
    opt = accel.adamw(loop.decay_groups(student, 0.01), lr=1e-3)
    x = accel.input(torch.randn(batch, 3, 8, size, size, device=dev))
    y = torch.randint(classes, (batch,), device=dev)
    with FlopCounterMode(display=False) as fc:
        student_step(student, opt, accel)(x, y)
    return float(fc.get_total_flops())


def bench(args: argparse.Namespace, device) -> dict:
    torch.manual_seed(0)
    s = args.size
    h, w = args.storage or (round(s * 128 / 112), round(s * 170 / 112))
    ds = {"clip_len": 8, "clip_interval": 8, "input_size": s}
    ev = {"labels": "multisl", "loss": "msegt", "mse_gt_lambda": 0.1, "cutmix": False, "cutmix_prob": 1.0,
          "cutmix_alpha": 1.0, "scale": [0.08, 1.0], "ratio": [3 / 4, 4 / 3]}
    rng = np.random.default_rng(0)
    out = {"device": loop.device_name(device), "arch": args.arch, "width": args.width, "classes": args.classes,
           "clip": [8, s, s], "storage": [h, w], "cudnn_benchmark": torch.backends.cudnn.benchmark, "rows": []}
    for variant in args.variants:
        accel = Accel(device, **VARIANTS[variant])
        labeler = accel.prepare(create_model(args.arch, args.classes, width=args.width).to(device).eval())
        for b in args.batch:
            student = accel.prepare(create_model(args.arch, args.classes, width=args.width).to(device).train())
            opt = accel.adamw(loop.decay_groups(student, 0.01), lr=1e-3)
            x = accel.input(torch.randn(b, 3, 8, s, s, device=device))
            y = torch.randint(args.classes, (b,), device=device)
            bare = student_step(student, opt, accel)
            cset = CondensedSet(clips=rng.integers(0, 256, (b, 8, h, w, 3), dtype=np.uint8),
                                labels=rng.integers(0, args.classes, b), attrs={"t_c": 8})
            data = CondensedClips(cset, ds, ev["scale"], ev["ratio"], device)
            proto = Protocol(student, opt, data, ev, labeler=labeler, accel=accel)
            gen = torch.Generator().manual_seed(0)
            idx = torch.arange(b, device=device)
            t_bare = timed(lambda: bare(x, y), args.steps, device, WARMUP)
            t_full = timed(lambda: proto.step(idx, gen), args.steps, device, WARMUP)
            t_view = timed(lambda: data.train_view(idx, gen), args.steps, device, WARMUP)
            row = {"variant": variant, "batch": b, "bare_s": t_bare, "full_s": t_full, "views_s": t_view,
                   "bare_clips_s": b / t_bare, "full_clips_s": b / t_full, "full_over_bare": t_bare / t_full,
                   "host_syncs_per_step": host_syncs(lambda: proto.step(idx, gen), device)}
            out["rows"].append(row)
            print(f"{variant:>8} {b:>6} {b / t_bare:>10.1f} {b / t_full:>10.1f} {b / t_view:>10.1f} "
                  f"{t_bare / t_full:>9.2f}" + (f" {row['host_syncs_per_step']:>6}" if device.type == "cuda" else ""),
                  flush=True)
            del student, opt, proto, data
    n = args.test_videos
    frames = torch.from_numpy(rng.integers(0, 256, (n * 16, h, w, 3), dtype=np.uint8)).to(device)
    bank = VideoBank(frames=frames, offsets=torch.arange(n, device=device) * 16,
                     lengths=torch.full((n,), 16, device=device), labels=torch.randint(args.classes, (n,), device=device),
                     ids=torch.arange(n))
    test = loop.TestClips(bank, ds)
    accel = Accel(device, **VARIANTS[args.variants[-1]])
    labeler = accel.prepare(create_model(args.arch, args.classes, width=args.width).to(device).eval())
    t_test = timed(lambda: loop.test_accuracy(labeler, test, args.test_batch, accel), max(1, args.steps // 5), device,
                   WARMUP)
    out["test_pass"] = {"videos": n, "batch": args.test_batch, "variant": args.variants[-1], "clips_s": n / t_test}
    print(f"test pass ({args.variants[-1]}): {n / t_test:.1f} clips/s ({n} videos, batch {args.test_batch})")
    if args.ceiling_batch:
        out["ceiling"] = ceiling(args, device)
    return out


def ceiling(args: argparse.Namespace, device) -> dict:
    """The bf16 matmul ceiling and the bare train step at ``--ceiling-batch`` in every variant."""
    b, s = args.ceiling_batch, args.size
    tflops = matmul_tflops(args.matmul_size, device)
    res = {"matmul_size": args.matmul_size, "matmul_bf16_tflops": tflops, "batch": b, "rows": []}
    print(f"\nbf16 matmul {args.matmul_size}^3: {tflops:.1f} TFLOP/s")
    for variant in args.variants:
        accel = Accel(device, **VARIANTS[variant])
        flops = step_flops(args.arch, args.width, args.classes, b, s, accel)
        student = accel.prepare(create_model(args.arch, args.classes, width=args.width).to(device).train())
        opt = accel.adamw(loop.decay_groups(student, 0.01), lr=1e-3)
        x = accel.input(torch.randn(b, 3, 8, s, s, device=device))
        y = torch.randint(args.classes, (b,), device=device)
        step = student_step(student, opt, accel)
        t = timed(lambda: step(x, y), args.steps, device, WARMUP)
        row = {"variant": variant, "step_s": t, "clips_s": b / t, "step_flops": flops,
               "achieved_tflops": flops / t / 1e12, "fraction_of_bf16_ceiling": flops / t / 1e12 / tflops}
        res["rows"].append(row)
        print(f"train step batch {b} {variant}: {t * 1e3:.2f} ms, {b / t:.0f} clips/s, {flops / 1e9:.1f} GFLOP -> "
              f"{row['achieved_tflops']:.1f} TFLOP/s = {100 * row['fraction_of_bf16_ceiling']:.1f} % of the bf16 matmul")
        del student, opt
    return res


def main(args: argparse.Namespace) -> int:
    set_threads(args.threads)
    device = get_device(args.device)
    if args.benchmark and device.type == "cuda":
        torch.backends.cudnn.benchmark = True
    print(f"device {loop.device_name(device)}, {args.arch} width {args.width}, {args.classes} classes, "
          f"clips 8x{args.size}x{args.size}")
    print(f"{'variant':>8} {'batch':>6} {'bare':>10} {'full':>10} {'views':>10} {'full/bare':>9}"
          + (" syncs" if device.type == "cuda" else "") + "   clips/s")
    out = bench(args, device)
    if args.json:
        write_json(args.json, out)
    return 0
