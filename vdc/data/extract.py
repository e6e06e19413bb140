"""The ``extract`` stage: decode a dataset's videos into one frames HDF5 (layout: vdc/data/frames.py).

``python -m vdc extract --out results/frames/<ds>.h5 --report results/frames/<ds>.failed.tsv
[--threads N] --config config.yaml --dataset <ds>``

:func:`extract` runs these steps, one function each:

1. :func:`list_videos`: :func:`vdc.data.ingest.read_manifest` lists the split's videos (train first,
   then test) and :func:`vdc.data.ingest.check_splits` checks the split (empty split, duplicates,
   train/test overlap, classes without training videos: errors or warnings by the rule in docs/data.md).
2. :func:`probe_pass` (pass 1): open every video with decord and read its frame count and fps, and
   decode its last kept frame (catches truncated files whose header promises more than they hold).
   Videos decord cannot read are decoded with PyAV instead (decord 0.6 fails to resize to some widths).
   A video that decodes to fewer than ``min_decoded_fraction`` of the frames its container declares
   (frame count, else duration x fps; read by PyAV from the header) is a truncated file: failed.
3. :func:`plan_kept_frames`: the source frames each video keeps; their total is the size of one
   contiguous uncompressed ``/frames`` [F, H, W, 3] uint8, allocated up front.
4. :func:`decode_pass` (pass 2): decode each video's kept frames, resized during decoding to
   ``storage_size`` [H, W] (no aspect ratio kept), and stream them into ``/frames`` in manifest order
   through :class:`vdc.data.frames.FramesWriter`, which hashes them on the way (a 14 GB file is
   hashed in the same single pass, never re-read). Only a few videos are in memory at a time.
5. :func:`write_index_and_attrs`: ``/videos``, ``/classes``, the ``content_id`` attribute (hash of the
   frames and index written, vdc/data/frames.py) and the extraction's attributes.
6. :func:`_write_report` and the summary: the failure report and a log line.

Kept frames: every ``frame_stride``-th source frame, then, if more than ``max_frames`` remain, a
uniform subsample of ``max_frames`` of them (first and last included). The defaults (stride 1, no
cap) keep every frame, so every clip vdc draws is exactly the reference's (``exact_clips``); the
source frame number of each stored frame is recorded in ``/frame_source``.

Decoding runs in ``--threads`` worker processes (decord holds the GIL, so threads do not scale);
the output order is the manifest order whatever the number of workers, so the file is identical.
Both passes report through :class:`vdc.progress.Progress` (videos done / total, rate, ETA, failures)
at least every 30 s in the log, with a bar on a terminal.

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
import json
import contextlib
import logging
import os
import time
from concurrent.futures import Executor, ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable, Iterator

import h5py
import numpy as np

from vdc import __version__
from vdc.data.frames import SPLITS, FramesWriter
from vdc.data.ingest import VideoRecord, check_splits, read_manifest
from vdc.errors import InputError
from vdc.progress import Progress
from vdc.utils import atomic_path

log = logging.getLogger("vdc.extract")


class ExtractionError(InputError):
    """Too many videos failed to decode (or nothing could be read)."""


def kept_indices(num_frames: int, frame_stride: int, max_frames: int | None) -> np.ndarray:
    """Source frame indices kept from a video of ``num_frames`` frames: every ``frame_stride``-th,
    then uniformly subsampled down to ``max_frames`` (None: no cap). int64 [n], ascending."""
    idx = np.arange(0, num_frames, frame_stride, dtype=np.int64)
    if max_frames is not None and len(idx) > max_frames:
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


def declared_frames(path: str) -> int:
    """The frame count the container's header declares (PyAV, no decoding): the stream's frame count,
    else its duration (or the container's) x its average frame rate; 0 when the header says neither."""
    import av

    try:
        with av.open(path) as container:
            stream = container.streams.video[0]
            if stream.frames:
                return int(stream.frames)
            rate = float(stream.average_rate or 0)
            if stream.duration and stream.time_base:
                return round(float(stream.duration * stream.time_base) * rate)
            return round(container.duration / 1e6 * rate) if container.duration else 0
    except Exception:  # noqa: BLE001 - a header PyAV cannot read declares nothing
        return 0


def probe_video(job) -> tuple[int, float, str, str]:
    """(source frame count, fps, decoder "decord" | "pyav", error message or "") of one video.
    decord first (it reads the count from the container, then decodes the last kept frame to catch
    truncated files); PyAV (a full decode) when decord fails, e.g. decord 0.6's resize bug at some
    output widths (16, 24, 48, 72, ...). A video whose decodable frames are fewer than
    ``min_fraction`` x the frames its header declares (:func:`declared_frames`) is truncated: an error.
    job = (path, size, stride, max_frames, min_fraction)."""
    path, size, stride, max_frames, min_fraction = job
    if not os.path.isfile(path):
        return 0, 0.0, "", "file not found"
    n, fps, decoder, err = 0, 0.0, "", ""
    try:
        vr = _open(path, size)
        n, fps = len(vr), float(vr.get_avg_fps())
        if n > 0:
            vr.get_batch([int(kept_indices(n, stride, max_frames)[-1])]).asnumpy()
            decoder = "decord"
        else:
            err = "decord: no frames"
    except Exception as exc:  # noqa: BLE001 - any decoder error is a per-video failure
        err = f"decord: {type(exc).__name__}: {_one_line(exc)}"
    if not decoder:
        try:
            _, n, fps = _pyav_frames(path, (2, 2))
            if n == 0:
                return 0, 0.0, "", f"{err}; pyav: no frames"
            decoder = "pyav"
        except Exception as exc:  # noqa: BLE001
            return 0, 0.0, "", f"{err}; pyav: {type(exc).__name__}: {_one_line(exc)}"
    declared = declared_frames(path)
    if declared and n < min_fraction * declared:
        return 0, 0.0, "", (f"truncated or damaged: {decoder} decodes {n} of the {declared} frames the container "
                            f"declares (< min_decoded_fraction {min_fraction:g})")
    return n, fps, decoder, ""


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
    t0 = time.time()
    ds = settings["dataset"]
    classes, records, paths, warnings = list_videos(ds)
    failed: dict[int, str] = {}  # video -> reason, filled by both passes
    with _worker_pool(workers) as pool:
        probed = probe_pass(ds, paths, pool, workers, failed)
        _check_failures(ds, failed, paths, report)
        kept = plan_kept_frames(ds, probed.source_frames, failed)
        with atomic_path(out, suffix=".h5.tmp") as tmp, h5py.File(tmp, "w") as h5:
            writer = FramesWriter(h5, rows=sum(len(k) for k in kept), frame_size=_storage_size(ds))
            offsets, lengths = decode_pass(ds, writer, paths, kept, probed.decoder, pool, workers, failed)
            _check_failures(ds, failed, paths, report)
            warnings += check_decoded_classes(ds, classes, records, failed, report)
            write_index_and_attrs(ds, writer, classes, records, probed, offsets, lengths, failed, warnings)
    _write_report(report, paths, failed)
    return _summary(out, ds, records, failed, lengths, time.time() - t0)


@dataclass
class Probed:
    """What pass 1 found, per video in manifest order (zeros and "" for a video that failed the probe)."""

    source_frames: np.ndarray  # int64 [N] frames in the source video
    fps: np.ndarray            # float32 [N]
    decoder: list[str]         # "decord" or "pyav"


def list_videos(ds: dict) -> tuple[list[str], list[VideoRecord], list[str], list[str]]:
    """Step 1: (class names, the split's videos (train first, then test), their file paths, the split
    checks' warnings). The split checks (:func:`vdc.data.ingest.check_splits`) raise on errors."""
    classes, records = read_manifest(ds)
    warnings = check_splits(ds, classes, records)
    for w in warnings:
        log.warning("dataset '%s': %s", ds["name"], w)
    root = Path(ds["video_root"])
    return classes, records, [str(root / r.path) for r in records], warnings


def probe_pass(ds: dict, paths: list[str], pool: Executor | None, workers: int, failed: dict[int, str]) -> Probed:
    """Step 2 (pass 1): frame count, fps and decoder of every video (:func:`probe_video`); the videos
    that cannot be read are added to ``failed``."""
    n = len(paths)
    probed = Probed(np.zeros(n, np.int64), np.zeros(n, np.float32), [""] * n)
    jobs = ((p, _storage_size(ds), int(ds["frame_stride"]), ds["max_frames"], float(ds["min_decoded_fraction"]))
            for p in paths)
    progress = Progress(n, f"extract {ds['name']} probe", log, unit="video")
    for i, (frames, fps, decoder, err) in enumerate(ordered_map(probe_video, jobs, pool, 4 * workers)):
        probed.source_frames[i], probed.fps[i], probed.decoder[i] = frames, fps, decoder
        if err:
            failed[i] = err
        progress.update(failed=len(failed))
    progress.close()
    if probed.decoder.count("pyav"):
        log.info("%d videos are decoded with PyAV (decord could not read them)", probed.decoder.count("pyav"))
    return probed


def plan_kept_frames(ds: dict, source_frames: np.ndarray, failed: dict[int, str]) -> list[np.ndarray]:
    """Step 3: the source frame indices each video keeps (:func:`kept_indices`; none for a failed video)."""
    stride, max_frames = int(ds["frame_stride"]), ds["max_frames"]
    return [np.zeros(0, np.int64) if i in failed else kept_indices(int(n), stride, max_frames)
            for i, n in enumerate(source_frames)]


def decode_pass(ds: dict, writer: FramesWriter, paths: list[str], kept: list[np.ndarray], decoder: list[str],
                pool: Executor | None, workers: int, failed: dict[int, str]) -> tuple[np.ndarray, np.ndarray]:
    """Step 4 (pass 2): decode the kept frames of every video that passed the probe
    (:func:`decode_video`) and stream them into ``/frames`` in manifest order. Returns (offsets
    int64 [N], lengths int32 [N]); a video that fails here is added to ``failed`` and keeps length 0
    and the offset where it would have started."""
    offsets, lengths = np.zeros(len(paths), np.int64), np.zeros(len(paths), np.int32)
    todo = [i for i in range(len(paths)) if i not in failed]
    jobs = ((paths[i], _storage_size(ds), kept[i], decoder[i]) for i in todo)
    progress = Progress(len(todo), f"extract {ds['name']} decode", log, unit="video")
    for i, (frames, err) in zip(todo, ordered_map(decode_video, jobs, pool, 2 * workers)):
        offsets[i] = writer.row
        if err:
            failed[i] = err
        else:
            writer.append(frames, kept[i])
            lengths[i] = len(frames)
        progress.update(failed=len(failed))
    progress.close()
    unused = writer.frames.shape[0] - writer.row
    if unused:
        log.warning("%d rows of /frames are unused (videos that failed during decoding)", unused)
    return offsets, lengths


def check_decoded_classes(ds: dict, classes: list[str], records: list[VideoRecord], failed: dict[int, str],
                          report) -> list[str]:
    """After decoding: every class still has a training video (an error names the report, where the
    failures are listed); a class whose test videos all failed is a warning (returned)."""
    counts = {s: np.zeros(len(classes), np.int64) for s in SPLITS}
    for i, r in enumerate(records):
        if i not in failed:
            counts[r.split][r.label] += 1
    empty = [classes[k] for k in np.flatnonzero(counts["train"] == 0)]
    if empty:
        raise ExtractionError(f"dataset '{ds['name']}': every training video of class(es) {', '.join(empty[:5])} "
                              f"failed to decode (see {report}); each class needs training videos")
    untested = [classes[k] for k in np.flatnonzero(counts["test"] == 0)]
    warnings = [f"{len(untested)} class(es) have no decodable test video: {', '.join(untested[:5])}"] if untested else []
    for w in warnings:
        log.warning("dataset '%s': %s", ds["name"], w)
    return warnings


def write_index_and_attrs(ds: dict, writer: FramesWriter, classes: list[str], records: list[VideoRecord],
                          probed: Probed, offsets: np.ndarray, lengths: np.ndarray, failed: dict[int, str],
                          warnings: list[str] = ()) -> None:
    """Step 5: ``/videos``, ``/classes`` and ``content_id`` (:meth:`FramesWriter.write_index`), then the
    attributes of the extraction (layout in vdc/data/frames.py)."""
    split = np.array([SPLITS[r.split] for r in records], np.int8)
    split[list(failed)] = -1
    writer.write_index(offsets, lengths, labels=[r.label for r in records], split=split,
                       paths=[r.path for r in records], source_frames=probed.source_frames, fps=probed.fps,
                       classes=classes)
    n_src = probed.source_frames
    attrs = {
        "dataset": ds["name"], "format": ds["format"], "storage_size": list(_storage_size(ds)),
        "max_frames": -1 if ds["max_frames"] is None else int(ds["max_frames"]), "frame_stride": int(ds["frame_stride"]),
        "exact_clips": bool(np.array_equal(lengths[split >= 0], n_src[split >= 0])),
        "split_warnings": json.dumps(list(warnings)),
        "video_root": str(ds["video_root"]), "annotations": str(ds["annotations"]), "split_number": int(ds["split"]),
        "num_classes": len(classes), "num_videos": len(records), "num_failed": len(failed),
        "vdc_version": __version__,
        "mean_source_frames_train": float(n_src[split == 0].mean()) if (split == 0).any() else 0.0,
        "mean_source_frames_test": float(n_src[split == 1].mean()) if (split == 1).any() else 0.0,
    }
    for k, v in attrs.items():
        writer.h5.attrs[k] = v


def _summary(out, ds: dict, records: list, failed: dict[int, str], lengths: np.ndarray, secs: float) -> dict:
    """Step 6: the log line and the summary extract() returns."""
    frames = int(lengths.sum())
    nbytes = frames * int(np.prod(_storage_size(ds))) * 3
    log.info("%s: %d videos (%d failed), %d frames, %.1f MB in %.1f s", out, len(records), len(failed), frames,
             nbytes / 1e6, secs)
    return {"videos": len(records), "failed": len(failed), "frames": frames, "bytes": nbytes, "seconds": secs}


def _storage_size(ds: dict) -> tuple[int, int]:
    return tuple(int(x) for x in ds["storage_size"])


def _worker_pool(workers: int):
    """A pool of ``workers`` decoding processes (shut down on exit), or no pool (None) for one worker."""
    return ProcessPoolExecutor(workers) if workers > 1 else contextlib.nullcontext()


def _write_report(report, paths: list[str], failed: dict[int, str]) -> None:
    with atomic_path(report, suffix=".tsv.tmp") as tmp:
        with open(tmp, "w") as fh:
            fh.write("path\treason\n")
            for i in sorted(failed):
                fh.write(f"{paths[i]}\t{failed[i].replace(chr(9), ' ')}\n")


def _check_failures(ds: dict, failed: dict[int, str], paths: list[str], report) -> None:
    """Stop (after writing the report) when more than ``max_failed_fraction`` of the videos failed."""
    limit = float(ds["max_failed_fraction"])
    if failed and len(failed) / len(paths) > limit:
        _write_report(report, paths, failed)
        example = next(iter(sorted(failed)))
        raise ExtractionError(
            f"dataset '{ds['name']}': {len(failed)} of {len(paths)} videos failed to decode "
            f"({len(failed) / len(paths):.1%} > max_failed_fraction {limit:g}); see {report} "
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
