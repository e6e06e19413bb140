"""The ``extract`` stage: decode a dataset's videos into one frames HDF5 (layout: vdc/data/frames.py).

``python -m vdc extract --out results/frames/<ds>.h5 --report results/frames/<ds>.failed.tsv
[--threads N] --config config.yaml --dataset <ds>``

1. :func:`vdc.data.ingest.read_manifest` lists the split's videos (train first, then test).
2. Pass 1 (probe): open every video with decord and read its frame count and fps, and decode its
   last kept frame (catches truncated files whose header promises more than they hold). Videos
   decord cannot read are decoded with PyAV instead (decord 0.6 fails to resize to some widths).
3. Allocate one contiguous uncompressed ``/frames`` [F, H, W, 3] uint8 for all kept frames.
4. Pass 2 (decode): decode each video's kept frames, resized during decoding to ``storage_size``
   [H, W] (no aspect ratio kept), and stream them into ``/frames`` in manifest order. Only a few
   videos are in memory at a time.

Kept frames: every ``frame_stride``-th source frame, then, if more than ``max_frames`` remain, a
uniform subsample of ``max_frames`` of them (first and last included).

Decoding runs in ``--threads`` worker processes (decord holds the GIL, so threads do not scale);
the output order is the manifest order whatever the number of workers, so the file is identical.

A video that fails in either pass is listed in the report TSV (header ``path<TAB>reason``, always
written) and stored with length 0 and split -1. If failed / total exceeds
``dataset.max_failed_fraction`` the stage fails with a message naming the report. If a video fails
only in pass 2, its rows were already allocated: the frames of the following videos are still
written contiguously, and the unused rows sit at the end of ``/frames`` (rows past sum(length)).
The file is written to a temporary name and renamed at the end: a killed extraction never leaves
a complete-looking file.
"""
from __future__ import annotations

import argparse
import collections
import logging
import os
from concurrent.futures import Executor, ProcessPoolExecutor
from pathlib import Path
from typing import Callable, Iterable, Iterator

import h5py
import numpy as np

from vdc.data.ingest import VideoRecord, read_manifest
from vdc.errors import InputError
from vdc.utils import atomic_path

log = logging.getLogger("vdc.extract")


class ExtractionError(InputError):
    """Too many videos failed to decode (or nothing could be read)."""


def kept_indices(num_frames: int, frame_stride: int = 1, max_frames: int = 64) -> np.ndarray:
    """Source frame indices kept from a video of ``num_frames`` frames: every ``frame_stride``-th,
    then uniformly subsampled down to ``max_frames``. int64 [n], ascending, n <= max_frames."""
    idx = np.arange(0, num_frames, frame_stride, dtype=np.int64)
    if len(idx) > max_frames:
        idx = idx[np.round(np.linspace(0, len(idx) - 1, max_frames)).astype(np.int64)]
    return idx


def _open(path: str, size):
    import decord

    h, w = size
    return decord.VideoReader(path, ctx=decord.cpu(0), width=int(w), height=int(h), num_threads=1)


def _pyav_frames(path: str, size, wanted=None):
    """Decode with PyAV (the fallback decoder): (uint8 [n, H, W, 3] of the frames in ``wanted``
    (all when None), number of decoded frames, fps). Bicubic resize, as decord's ffmpeg scaler."""
    import av

    h, w = size
    keep = None if wanted is None else {int(i): k for k, i in enumerate(wanted)}
    out = {}
    n = 0
    with av.open(path) as container:
        stream = container.streams.video[0]
        fps = float(stream.average_rate or 0)
        for frame in container.decode(stream):
            if keep is None or n in keep:
                arr = frame.to_ndarray(width=int(w), height=int(h), format="rgb24", interpolation="BICUBIC")
                out[n if keep is None else keep[n]] = arr
            n += 1
            if keep is not None and len(out) == len(keep):
                break
    frames = np.stack([out[k] for k in sorted(out)]) if out else np.zeros((0, int(h), int(w), 3), np.uint8)
    return frames, n, fps


def probe_video(job) -> tuple[int, float, str, str]:
    """(source frame count, fps, decoder "decord" | "pyav", error message or "") of one video.
    decord first (it reads the count from the container, then decodes the last kept frame to catch
    truncated files); PyAV (a full decode) when decord fails, e.g. decord 0.6's resize bug at some
    output widths (16, 24, 48, 72, ...). job = (path, size, stride, max_frames)."""
    path, size, stride, max_frames = job
    if not os.path.isfile(path):
        return 0, 0.0, "", "file not found"
    try:
        vr = _open(path, size)
        n, fps = len(vr), float(vr.get_avg_fps())
        if n > 0:
            vr.get_batch([int(kept_indices(n, stride, max_frames)[-1])]).asnumpy()
            return n, fps, "decord", ""
        err = "decord: no frames"
    except Exception as exc:  # noqa: BLE001 - any decoder error is a per-video failure
        err = f"decord: {type(exc).__name__}: {_one_line(exc)}"
    try:
        _, n, fps = _pyav_frames(path, (2, 2))
        if n > 0:
            return n, fps, "pyav", ""
        return 0, 0.0, "", f"{err}; pyav: no frames"
    except Exception as exc:  # noqa: BLE001
        return 0, 0.0, "", f"{err}; pyav: {type(exc).__name__}: {_one_line(exc)}"


def decode_video(job) -> tuple[np.ndarray | None, str]:
    """(uint8 frames [n, H, W, 3] or None, error message or "") of one video.
    job = (path, size, indices, decoder)."""
    path, size, idx, decoder = job
    want = (len(idx), int(size[0]), int(size[1]), 3)
    try:
        if decoder == "decord":
            frames = _open(path, size).get_batch(list(map(int, idx))).asnumpy()
        else:
            frames, _, _ = _pyav_frames(path, size, idx)
        if frames.shape != want:
            return None, f"{decoder}: decoded shape {frames.shape}, expected {want}"
        return np.ascontiguousarray(frames, dtype=np.uint8), ""
    except Exception as exc:  # noqa: BLE001
        return None, f"{decoder}: {type(exc).__name__}: {_one_line(exc)}"


def _one_line(exc: Exception) -> str:
    return " ".join(str(exc).split())[:300]


def ordered_map(fn: Callable, jobs: Iterable, executor: Executor | None, window: int) -> Iterator:
    """fn over jobs, results in input order, at most ``window`` jobs in flight (bounded memory)."""
    if executor is None:
        yield from map(fn, jobs)
        return
    pending: collections.deque = collections.deque()
    for job in jobs:
        pending.append(executor.submit(fn, job))
        if len(pending) >= window:
            yield pending.popleft().result()
    while pending:
        yield pending.popleft().result()


def extract(settings: dict, out: str | os.PathLike, report: str | os.PathLike, workers: int = 1) -> dict:
    """Write the frames HDF5 ``out`` and the failure report ``report`` for ``settings["dataset"]``.
    Returns a summary {"videos", "failed", "frames", "bytes", "seconds"}."""
    import time

    from tqdm import tqdm

    import vdc

    t0 = time.time()
    ds = settings["dataset"]
    classes, records = read_manifest(ds)
    if not records:
        raise ExtractionError(f"dataset '{ds.get('name')}': the annotations list no videos")
    root = Path(ds["video_root"])
    size = tuple(int(x) for x in ds["storage_size"])
    stride, max_frames = int(ds.get("frame_stride", 1)), int(ds.get("max_frames", 64))
    paths = [str(root / r.path) for r in records]
    failed: dict[int, str] = {}

    executor = ProcessPoolExecutor(workers) if workers > 1 else None
    try:
        # pass 1: frame counts
        n_src = np.zeros(len(records), np.int64)
        fps = np.zeros(len(records), np.float32)
        decoder = [""] * len(records)
        jobs = ((p, size, stride, max_frames) for p in paths)
        for i, (n, f, dec, err) in enumerate(tqdm(ordered_map(probe_video, jobs, executor, 4 * workers),
                                                  total=len(paths), desc="probe", disable=None)):
            n_src[i], fps[i], decoder[i] = n, f, dec
            if err:
                failed[i] = err
        if decoder.count("pyav"):
            log.info("%d videos are decoded with PyAV (decord could not read them)", decoder.count("pyav"))
        idx = [kept_indices(int(n), stride, max_frames) if i not in failed else np.zeros(0, np.int64)
               for i, n in enumerate(n_src)]
        total_rows = int(sum(len(x) for x in idx))
        _check_failures(ds, failed, records, paths, report)

        lengths = np.zeros(len(records), np.int32)
        offsets = np.zeros(len(records), np.int64)
        with atomic_path(out, suffix=".h5.tmp") as tmp:
            with h5py.File(tmp, "w") as h5:
                data = h5.create_dataset("frames", shape=(total_rows, *size, 3), dtype=np.uint8)
                # pass 2: decode and stream in manifest order
                todo = [i for i in range(len(records)) if i not in failed]
                jobs = ((paths[i], size, idx[i], decoder[i]) for i in todo)
                row = 0
                for i, (frames, err) in zip(todo, tqdm(ordered_map(decode_video, jobs, executor, 2 * workers),
                                                       total=len(todo), desc="decode", disable=None)):
                    offsets[i] = row
                    if err:
                        failed[i] = err
                        continue
                    data[row:row + len(frames)] = frames
                    lengths[i] = len(frames)
                    row += len(frames)
                _check_failures(ds, failed, records, paths, report)
                split = np.array([0 if r.split == "train" else 1 for r in records], np.int8)
                split[list(failed)] = -1
                _write_index(h5, records, classes, offsets, lengths, split, n_src, fps)
                ok_train = (split == 0)
                attrs = {
                    "dataset": ds.get("name", ""), "format": ds["format"], "storage_size": list(size),
                    "max_frames": max_frames, "frame_stride": stride, "video_root": str(ds["video_root"]),
                    "annotations": str(ds["annotations"]), "split_number": int(ds.get("split", 1)),
                    "num_classes": len(classes), "num_videos": len(records), "num_failed": len(failed),
                    "vdc_version": vdc.__version__,
                    "mean_source_frames_train": float(n_src[ok_train].mean()) if ok_train.any() else 0.0,
                    "mean_source_frames_test": float(n_src[split == 1].mean()) if (split == 1).any() else 0.0,
                }
                for k, v in attrs.items():
                    h5.attrs[k] = v
                if row < total_rows:
                    log.warning("%d rows of /frames are unused (videos that failed during decoding)", total_rows - row)
    finally:
        if executor is not None:
            executor.shutdown()
    _write_report(report, [(paths[i], failed[i]) for i in sorted(failed)])
    secs = time.time() - t0
    nbytes = int(lengths.sum()) * int(np.prod(size)) * 3
    log.info("%s: %d videos (%d failed), %d frames, %.1f MB in %.1f s", out, len(records), len(failed),
             int(lengths.sum()), nbytes / 1e6, secs)
    return {"videos": len(records), "failed": len(failed), "frames": int(lengths.sum()), "bytes": nbytes,
            "seconds": secs}


def _write_index(h5, records: list[VideoRecord], classes, offsets, lengths, split, n_src, fps) -> None:
    str_dt = h5py.string_dtype()
    g = h5.create_group("videos")
    g["offset"] = offsets.astype(np.int64)
    g["length"] = lengths.astype(np.int32)
    g["label"] = np.array([r.label for r in records], np.int32)
    g["split"] = split
    g.create_dataset("path", data=[r.path for r in records], dtype=str_dt)
    g["source_frames"] = n_src.astype(np.int32)
    g["fps"] = fps.astype(np.float32)
    h5.create_dataset("classes", data=list(classes), dtype=str_dt)


def _write_report(report, rows) -> None:
    with atomic_path(report, suffix=".tsv.tmp") as tmp:
        with open(tmp, "w") as fh:
            fh.write("path\treason\n")
            for p, why in rows:
                fh.write(f"{p}\t{why.replace(chr(9), ' ')}\n")


def _check_failures(ds, failed, records, paths, report) -> None:
    limit = float(ds.get("max_failed_fraction", 0.05))
    if failed and len(failed) / len(records) > limit:
        _write_report(report, [(paths[i], failed[i]) for i in sorted(failed)])
        example = next(iter(sorted(failed)))
        raise ExtractionError(
            f"dataset '{ds.get('name')}': {len(failed)} of {len(records)} videos failed to decode "
            f"({len(failed) / len(records):.1%} > max_failed_fraction {limit:g}); see {report} "
            f"(e.g. {paths[example]}: {failed[example]}). Check dataset.video_root and the video files, "
            f"or raise max_failed_fraction.")


# ----------------------------------------------------------------------------------------- CLI

def add_arguments(p: argparse.ArgumentParser) -> None:
    from vdc.cli import add_settings_arguments

    p.add_argument("--out", required=True, help="frames HDF5 to write")
    p.add_argument("--report", required=True, help="TSV of the videos that failed (path, reason)")
    p.add_argument("--threads", type=int, default=1, help="parallel decoding processes")
    add_settings_arguments(p)


def main(args: argparse.Namespace) -> int:
    from vdc.cli import resolve_settings

    settings = resolve_settings(args, "extract")
    extract(settings, args.out, args.report, workers=max(1, args.threads))
    return 0
