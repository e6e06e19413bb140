"""``python -m vdc.bench protocol``: throughput of the evaluation protocol on the current device.

For each batch size B it measures, in clips per second (median of ``--steps`` timed steps after
two warm-ups; CUDA synchronised):

  (a) bare   - the student's train step alone on a fixed, ready input [B, 3, 8, S, S]
               (forward, CE, backward, AdamW step): the ceiling;
  (b) full   - the protocol step as ``vdc evaluate`` runs it (``vdc.evaluate.Protocol.step``): temporal
               sampling of uint8 condensed clips at storage size on the device, per-clip random resized
               crop + flip, normalisation, the labeler's forward (Multi-SL relabelling), MSE-GT, student step;
  (v) views  - the data path of (b) alone (sampling + augmentation);
  (c) test   - the test pass (``loop.test_accuracy``) over prepared centre clips, at batch ``--test-batch``;

and prints (b)/(a): the fraction of the bare step's throughput the full protocol keeps. Networks are
freshly initialised (no files needed); student and labeler are both ``--arch``.
"""
from __future__ import annotations

import argparse
import statistics
import time

import numpy as np
import torch
import torch.nn.functional as F

from vdc.condensed import CondensedSet
from vdc.data.frames import VideoBank
from vdc.evaluate import CondensedClips, Protocol
from vdc.models import create_model
from vdc.train import loop
from vdc.utils import get_device, set_threads


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
    p.add_argument("--device", default="auto")
    p.add_argument("--threads", type=int, help="CPU threads (default: torch's)")


def _timed(fn, steps: int, device) -> float:
    """Median seconds of ``fn()`` over ``steps`` runs after two warm-ups."""
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    for _ in range(2):
        fn()
    sync()
    times = []
    for _ in range(steps):
        t = time.perf_counter()
        fn()
        sync()
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def main(args: argparse.Namespace) -> int:
    set_threads(args.threads)
    device = get_device(args.device)
    torch.manual_seed(0)
    s = args.size
    h, w = args.storage or (round(s * 128 / 112), round(s * 170 / 112))
    ds = {"clip_len": 8, "clip_interval": 8, "input_size": s}
    ev = {"labels": "multisl", "loss": "msegt", "mse_gt_lambda": 0.1, "cutmix": False, "cutmix_prob": 1.0,
          "cutmix_alpha": 1.0, "scale": [0.08, 1.0], "ratio": [3 / 4, 4 / 3]}
    rng = np.random.default_rng(0)
    labeler = create_model(args.arch, args.classes, width=args.width).to(device).eval()
    print(f"device {loop.device_name(device)}, {args.arch} width {args.width}, {args.classes} classes, "
          f"clips 8x{s}x{s} from storage {h}x{w}")
    print(f"{'batch':>6} {'bare':>10} {'full':>10} {'views':>10} {'full/bare':>9}   clips/s")
    for b in args.batch:
        student = create_model(args.arch, args.classes, width=args.width).to(device).train()
        opt = torch.optim.AdamW(loop.decay_groups(student, 0.01), lr=1e-3)
        x = torch.randn(b, 3, 8, s, s, device=device)
        y = torch.randint(args.classes, (b,), device=device)

        def bare():
            loss = F.cross_entropy(student(x), y)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()

        cset = CondensedSet(clips=rng.integers(0, 256, (b, 8, h, w, 3), dtype=np.uint8),
                            labels=rng.integers(0, args.classes, b), attrs={"t_c": 8})
        data = CondensedClips(cset, ds, ev["scale"], ev["ratio"], device)
        proto = Protocol(student, opt, data, ev, labeler=labeler)
        gen = torch.Generator().manual_seed(0)
        idx = torch.arange(b, device=device)
        t_bare = _timed(bare, args.steps, device)
        t_full = _timed(lambda: proto.step(idx, gen), args.steps, device)
        t_view = _timed(lambda: data.train_view(idx, gen), args.steps, device)
        print(f"{b:>6} {b / t_bare:>10.1f} {b / t_full:>10.1f} {b / t_view:>10.1f} {t_bare / t_full:>9.2f}")

    n = args.test_videos
    frames = torch.from_numpy(rng.integers(0, 256, (n * 16, h, w, 3), dtype=np.uint8)).to(device)
    bank = VideoBank(frames=frames, offsets=torch.arange(n, device=device) * 16,
                     lengths=torch.full((n,), 16, device=device), labels=torch.randint(args.classes, (n,), device=device),
                     ids=torch.arange(n))
    test = loop.TestClips(bank, ds)
    t_test = _timed(lambda: loop.test_accuracy(labeler, test, args.test_batch), max(1, args.steps // 5), device)
    print(f"test pass: {n / t_test:.1f} clips/s ({n} videos, batch {args.test_batch})")
    return 0
