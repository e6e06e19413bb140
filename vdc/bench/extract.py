"""``python -m vdc.bench extract``: extraction throughput at 1 and 2 workers on the toy dataset.

Generates the toy dataset under ``--root`` (or reuses it when its classInd.txt exists and was made
with the same settings), extracts it with 1 and then 2 worker processes, checks that both files
hold identical frames, and prints videos/s, frames/s, the 2-vs-1 speed-up and the bytes per stored
frame (HDF5 file size / stored frames, index included).
"""
from __future__ import annotations

import argparse
import json
import os
import tempfile
from pathlib import Path


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--root", default="data/bench_toy", help="toy dataset folder (generated if absent)")
    p.add_argument("--classes", type=int, default=10)
    p.add_argument("--per-class", type=int, default=16, help="train videos per class (test: half of it)")
    p.add_argument("--size", type=int, nargs=2, default=[64, 64], metavar=("H", "W"), help="toy frame size")
    p.add_argument("--storage-size", type=int, nargs=2, default=None, metavar=("H", "W"),
                   help="extraction size (default: the toy size)")
    p.add_argument("--workers", type=int, nargs="+", default=[1, 2])


def bench_settings(root: Path, args: argparse.Namespace) -> dict:
    """The toy and extract settings of the benchmark dataset, defaults filled by the config schema
    (the same values a study's toy dataset gets: max_frames 64, frame_stride 1, ...)."""
    from vdc.config import stage_settings, validate_config

    toy = {"classes": args.classes, "train_per_class": args.per_class, "test_per_class": max(1, args.per_class // 2),
           "size": list(args.size), "seed": 0}
    dataset = {"format": "toy", "video_root": str(root / "videos"), "annotations": str(root / "ucfTrainTestlist"),
               "toy": toy, "storage_size": list(args.storage_size or args.size), "input_size": 16,
               "max_failed_fraction": 0.0}
    cfg = validate_config({"study": {"datasets": ["bench"], "methods": ["random"]}, "methods": {"random": {}},
                           "datasets": {"bench": dataset}})
    return stage_settings(cfg, "extract", "bench")


def main(args: argparse.Namespace) -> int:
    import h5py
    import numpy as np

    from vdc.data.extract import extract
    from vdc.data.toy import generate

    root = Path(args.root)
    settings = bench_settings(root, args)
    toy = settings["dataset"]["toy"]
    stamp = root / "bench_settings.json"
    if not ((root / "ucfTrainTestlist" / "classInd.txt").exists() and stamp.exists()
            and json.loads(stamp.read_text()) == toy):
        print(f"generating the toy dataset under {root} ...", flush=True)
        generate(root, settings, workers=max(args.workers))
        stamp.write_text(json.dumps(toy))
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        first = None
        for w in args.workers:
            out = Path(tmp) / f"w{w}.h5"
            s = extract(settings, out, Path(tmp) / f"w{w}.tsv", workers=w)
            size = os.path.getsize(out)
            with h5py.File(out) as h5:
                frames = h5["frames"][:]
            if first is None:
                first = frames
            elif not np.array_equal(first, frames):
                raise AssertionError(f"{w} workers wrote different frames than {args.workers[0]}")
            results[w] = s
            print(f"workers {w}: {s['videos']} videos, {s['frames']} frames in {s['seconds']:.2f} s -> "
                  f"{s['videos'] / s['seconds']:.1f} videos/s, {s['frames'] / s['seconds']:.0f} frames/s; "
                  f"{size / max(s['frames'], 1):.0f} bytes per stored frame "
                  f"({int(np.prod(frames.shape[1:]))} of pixels)", flush=True)
    if len(results) > 1:
        base = results[args.workers[0]]["seconds"]
        for w in args.workers[1:]:
            print(f"speed-up {w} vs {args.workers[0]} workers: {base / results[w]['seconds']:.2f}x "
                  f"(identical frames); on a machine with {os.cpu_count()} cores")
    return 0
