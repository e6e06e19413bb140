"""``python -m vdc.bench extract``: extraction throughput at 1 and 2 workers on the toy dataset, and
(``--bank-gb G``) the read speed of frames banks on a synthetic UCF101-shaped frames file of G GB.

Extraction: generates the toy dataset under ``--root`` (or reuses it when its classInd.txt exists and
was made with the same settings), extracts it with 1 and then 2 worker processes, checks that both
files hold identical frames, and prints videos/s, frames/s, the 2-vs-1 speed-up and the bytes per
stored frame (HDF5 file size / stored frames, index included).

Banks (``--bank-gb``): writes ``--bank-file`` (default under the system's temp folder) with videos of
187 frames at 128 x 170 (UCF101's mean length and storage size, every frame kept) through
FramesWriter, then measures, each from a cold page cache (``posix_fadvise(DONTNEED)`` after an fsync)
and again warm:

* loading the whole split (:func:`vdc.data.frames.load_bank`: parallel ``preadv`` of 64 MB runs) vs
  one h5py range read (the previous loader);
* streaming training batches (64 random videos, the reference's 8-frame clips at interval 8): the
  parallel reads of :class:`StreamedVideoBank` vs the previous per-clip loop of h5py range reads.
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
    p.add_argument("--bank-gb", type=float, default=None, help="measure banks on a synthetic file of this size instead")
    p.add_argument("--bank-file", default=None, help="where to write it (deleted afterwards unless --keep)")
    p.add_argument("--keep", action="store_true", help="keep the synthetic bank file (reused when its size matches)")
    p.add_argument("--batches", type=int, default=20, help="streamed batches timed per variant")


def bench_settings(root: Path, args: argparse.Namespace) -> dict:
    """The toy and extract settings of the benchmark dataset, defaults filled by the config schema
    (the same values a study's toy dataset gets: every frame kept, ...)."""
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
    if args.bank_gb is not None:
        return bench_banks(args)
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


# ----------------------------------------------------------------------------- banks

UCF_FRAMES, UCF_SIZE = 187, (128, 170)


def write_synthetic(path: Path, gigabytes: float) -> None:
    """A frames file of ~``gigabytes`` GB: videos of 187 frames at 128 x 170, every frame kept, all in the
    train split (pixels: a repeated random block, so that writing is disk-bound)."""
    import h5py
    import numpy as np

    from vdc.data.frames import FramesWriter

    frame = UCF_SIZE[0] * UCF_SIZE[1] * 3
    n = max(1, int(gigabytes * 1e9 / (frame * UCF_FRAMES)))
    block = np.random.default_rng(0).integers(0, 256, (UCF_FRAMES, *UCF_SIZE, 3), dtype=np.uint8)
    with h5py.File(path, "w") as h5:
        w = FramesWriter(h5, n * UCF_FRAMES, UCF_SIZE)
        offsets = [w.append(block) for _ in range(n)]
        w.write_index(offsets, [UCF_FRAMES] * n, [i % 101 for i in range(n)], [0] * n, [f"v{i}" for i in range(n)],
                      [UCF_FRAMES] * n, [25.0] * n, [f"c{k}" for k in range(101)])
    fd = os.open(path, os.O_RDONLY)
    os.fsync(fd)
    os.close(fd)


def drop_cache(path: Path) -> None:
    """Evict the file's pages from the page cache (clean pages; no root needed)."""
    fd = os.open(path, os.O_RDONLY)
    os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
    os.close(fd)


def bench_banks(args: argparse.Namespace) -> int:
    import time

    import numpy as np
    import torch

    from vdc.data import clips as C
    from vdc.data.frames import READ_THREADS, Frames, StreamedVideoBank, load_bank

    torch.set_num_threads(1)
    path = Path(args.bank_file or Path(tempfile.gettempdir()) / "vdc_bank_bench.h5")
    want = args.bank_gb * 1e9
    if not (path.exists() and abs(path.stat().st_size - want) < 0.05 * want + 1e8):
        t0 = time.time()
        write_synthetic(path, args.bank_gb)
        print(f"wrote {path}: {path.stat().st_size / 1e9:.2f} GB in {time.time() - t0:.1f} s", flush=True)
    try:
        fr = Frames(path)
        ids = fr.split_ids("train")
        nbytes = int(fr.stored_lengths.sum()) * fr.frame_bytes
        print(f"{len(ids)} videos x {UCF_FRAMES} frames at {UCF_SIZE[0]}x{UCF_SIZE[1]}: {nbytes / 1e9:.2f} GB; "
              f"{READ_THREADS} read threads; {os.cpu_count()} cores", flush=True)
        from vdc.data.frames import host_memory

        avail = host_memory()[0]
        loads = ("cold", "warm") if 2.2 * nbytes < avail else ("cold",) if 1.2 * nbytes < avail else ()
        if not loads:
            print(f"whole-split loads skipped: {nbytes / 1e9:.1f} GB do not fit in {avail / 1e9:.1f} GB of RAM")
        for cache in loads:
            if cache == "cold":
                drop_cache(path)
            t0 = time.time()
            bank = load_bank(fr, "train", "cpu", max_bytes=float("inf"))
            dt = time.time() - t0
            print(f"load_bank, whole split, {cache}: {dt:.2f} s = {nbytes / dt / 1e9:.2f} GB/s", flush=True)
            del bank
            if cache == "cold":
                drop_cache(path)
            t0 = time.time()
            old = fr._h5["frames"][0:int(fr.stored_lengths.sum())]
            dt = time.time() - t0
            print(f"one h5py range read (previous loader), {cache}: {dt:.2f} s = {nbytes / dt / 1e9:.2f} GB/s", flush=True)
            del old
        streamed = StreamedVideoBank(fr, ids, "cpu")
        g = torch.Generator().manual_seed(0)
        batches = [torch.randint(len(ids), (64,), generator=g) for _ in range(args.batches)]
        idx = [C.train_frame_indices(streamed.lengths[v], 8, 8, g) for v in batches]

        def previous(v, i):  # the per-clip loop of earlier versions: one h5py range read per clip
            out = []
            for vid, fi in zip(streamed.ids[v].tolist(), i.numpy()):
                o = fr.offsets[vid]
                block = fr._h5["frames"][o + fi.min():o + fi.max() + 1]
                out.append(block[fi - fi.min()])
            return torch.from_numpy(np.stack(out))

        for cache in ("cold", "warm"):
            for name, fn in (("parallel reads", streamed.gather), ("per-clip h5py loop (previous)", previous)):
                if cache == "cold":
                    drop_cache(path)
                t0 = time.time()
                for v, i in zip(batches, idx):
                    fn(v, i)
                dt = time.time() - t0
                clips = 64 * len(batches)
                print(f"streamed batches of 64 clips, {name}, {cache}: {clips / dt:.0f} clips/s "
                      f"({dt / len(batches) * 1e3:.0f} ms per batch)", flush=True)
        fr.close()
    finally:
        if not args.keep:
            path.unlink(missing_ok=True)
    return 0
