"""The frames HDF5 file (output of the ``extract`` stage) and in-memory / streamed video banks.

Layout of ``results/frames/<dataset>.h5`` (see docs/data.md, "Frames HDF5 layout")::

    /frames             uint8  [F, H, W, 3]  every kept frame, video after video, contiguous, uncompressed;
                                              all train videos first, then all test videos, so a whole
                                              split is one contiguous slice
    /frame_source       int32  [F]   source frame number (0-based) of each row of /frames (-1: unused row)
    /videos/offset      int64  [N]   first row of video i in /frames
    /videos/length      int32  [N]   stored frames of video i (0 when it failed to decode)
    /videos/label       int32  [N]   class id, 0..K-1
    /videos/split       int8   [N]   0 = train, 1 = test, -1 = failed (in no split)
    /videos/path        str    [N]   path relative to the dataset's video_root
    /videos/source_frames int32 [N]  frames of the source video (L, the reference's video length)
    /videos/fps         float32 [N]
    /classes            str    [K]
    attrs: dataset, format, storage_size [H, W], max_frames (-1: no cap), frame_stride, exact_clips,
           video_root, annotations, split_number, num_classes, num_videos, num_failed, split_warnings (JSON
           list), vdc_version, mean_source_frames_{train,test}, content_id

Video ids are row numbers of ``/videos/*``; condensed sets point back at them.

Frame indices are source frame numbers. Readers (:class:`Frames`, :class:`VideoBank`) take a clip's
indices in source frames of a video of ``lengths[v]`` = L source frames (the reference's rule,
vdc/data/clips.py) and map each to the stored row of the same source frame. With every frame stored
(``frame_stride`` 1, no ``max_frames`` cap: the default, ``exact_clips`` true) that row always exists,
so every clip is exactly the reference's. With a stride or a cap, an index maps to the stored frame
nearest to it (ties: the earlier): an approximation that saves memory.

``content_id`` identifies the data (vdc/resume.py ties checkpoints to it): the :class:`vdc.resume.ContentHasher`
digest of, in this order, the shape of ``/frames``, the frames of each stored video in row order (one
update per video, as the writer streams them), then ``/frame_source``, ``/videos/{offset, length, label,
split, path, source_frames, fps}`` and ``/classes``. The other attributes (paths, version) are not part
of it, so equal frames and index give equal ids wherever and by whichever vdc version they were written.
Both writers, the ``extract`` stage and :func:`write_frames`, go through :class:`FramesWriter`.

Banks (:func:`load_bank`): a split lives in device memory when it fits the device's free memory (less
a safety margin; ``datasets.<name>.bank_gb`` overrides the limit), else it is streamed: each batch's
frames are read from the file by a pool of threads (``os.preadv`` on the contiguous ``/frames``, which
releases the GIL and runs in parallel).
"""
from __future__ import annotations

import json
import logging
import os
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import h5py
import numpy as np

from vdc.errors import h5_dataset, open_h5
from vdc.resume import CONTENT_ID_ATTR, ContentHasher

log = logging.getLogger("vdc.frames")

SPLITS = {"train": 0, "test": 1}
WHAT = "frames file"
FIX = "rerun the extract stage (snakemake frames, or python -m vdc extract)"
INDEX = ("frame_source", "videos/offset", "videos/length", "videos/label", "videos/split", "videos/path",
         "videos/source_frames", "videos/fps", "classes")
READ_THREADS = min(16, 2 * (os.cpu_count() or 1))  # parallel range reads of a streamed bank or a bank load
CHUNK_BYTES = 64 << 20                             # a bank is loaded in reads of at most this size
MARGIN_FRACTION, MARGIN_MIN = 0.10, 4 << 30        # device memory a bank leaves free: max(10 %, 4 GiB)
HOST_MARGIN_FRACTION, HOST_MARGIN_MIN = 0.20, 2 << 30  # host RAM a CPU bank leaves free: max(20 %, 2 GiB)


def nearest_rows(source: np.ndarray, idx: np.ndarray) -> np.ndarray:
    """Positions in ``source`` (the ascending source frame numbers a video keeps) of the kept frames
    nearest to source frames ``idx`` (ties: the earlier). int64, the shape of ``idx``."""
    r = np.searchsorted(source, idx).clip(0, len(source) - 1)
    lo = (r - 1).clip(0, len(source) - 1)
    return np.where(np.abs(idx - source[lo]) <= np.abs(source[r] - idx), lo, r)


class Frames:
    """Read-only view of a frames HDF5 file. The index (per video, and the source frame of each row)
    is read eagerly.

    ``lengths[v]``: L, the source frames of video v (0 if it failed): the length clip indices refer to;
    ``stored_lengths[v]``: its rows in ``/frames``; ``exact``: every video keeps every source frame."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self._h5 = open_h5(self.path, WHAT, FIX)  # missing / truncated / not HDF5: InputError naming the file
        try:
            frames = h5_dataset(self._h5, "frames", self.path, WHAT, FIX)
            v = {key: h5_dataset(self._h5, key, self.path, WHAT, FIX)[:] for key in INDEX}
        except BaseException:
            self._h5.close()
            raise
        self.offsets = v["videos/offset"].astype(np.int64)
        self.stored_lengths = v["videos/length"].astype(np.int64)
        self.source_frames = v["videos/source_frames"].astype(np.int64)
        self.lengths = np.where(self.stored_lengths > 0, self.source_frames, 0)
        self.labels = v["videos/label"].astype(np.int64)
        self.split = v["videos/split"].astype(np.int8)
        self.paths = [p.decode() if isinstance(p, bytes) else p for p in v["videos/path"]]
        self.classes = [c.decode() if isinstance(c, bytes) else c for c in v["classes"]]
        self.frame_source = v["frame_source"]  # int32 [F]
        self.attrs = dict(self._h5.attrs)
        self.frame_shape = tuple(frames.shape[1:])
        self.frame_bytes = int(np.prod(self.frame_shape))
        self.exact = self._every_frame_kept()
        self._raw_offset = frames.id.get_offset()  # byte offset of a contiguous /frames (None: chunked)
        self._fd = None
        self._fd_lock = threading.Lock()

    def _every_frame_kept(self) -> bool:
        """Each decoded video stores rows for source frames 0, 1, ..., L - 1 (clip indices are rows):
        L rows whose strictly ascending source numbers (as the writer enforces) start at 0 and end at L - 1."""
        ok = self.stored_lengths > 0
        if not np.array_equal(self.stored_lengths[ok], self.source_frames[ok]):
            return False
        first, last = self.offsets[ok], self.offsets[ok] + self.stored_lengths[ok] - 1
        return bool(np.all(self.frame_source[first] == 0) and np.all(self.frame_source[last] == self.source_frames[ok] - 1))

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    def split_ids(self, split: str) -> np.ndarray:
        return np.flatnonzero(self.split == SPLITS[split])

    def class_ids(self, split: str, label: int) -> np.ndarray:
        ids = self.split_ids(split)
        return ids[self.labels[ids] == label]

    def rows(self, vid: int, idx) -> np.ndarray:
        """Rows of ``/frames`` holding source frames ``idx`` of video ``vid`` (nearest kept frame when
        the file does not keep every frame)."""
        idx = np.asarray(idx, dtype=np.int64)
        o, n = self.offsets[vid], self.stored_lengths[vid]
        if self.exact:
            return o + idx
        return o + nearest_rows(self.frame_source[o:o + n], idx)

    def read_video(self, vid: int) -> np.ndarray:
        """All stored frames of video ``vid``: [stored_lengths[vid], H, W, 3]."""
        o, n = self.offsets[vid], self.stored_lengths[vid]
        return self._h5["frames"][o:o + n]

    def read_frames(self, vid: int, idx: Sequence[int]) -> np.ndarray:
        """Source frames ``idx`` (ascending or not, repeats allowed) of video ``vid``: [len(idx), H, W, 3]."""
        return self.read_rows(self.rows(vid, idx))

    def read_rows(self, rows: np.ndarray) -> np.ndarray:
        """Rows of ``/frames`` (any shape, any order): uint8 [*rows.shape, H, W, 3]. Runs of consecutive
        rows are read in parallel (:func:`parallel_read`)."""
        rows = np.asarray(rows, dtype=np.int64)
        uniq, inverse = np.unique(rows, return_inverse=True)
        buf = np.empty((len(uniq), *self.frame_shape), np.uint8)
        cut = np.flatnonzero(np.diff(uniq) != 1) + 1  # runs of consecutive rows
        starts = np.split(np.arange(len(uniq)), cut)
        runs = [(int(uniq[s[0]]), len(s), int(s[0])) for s in starts if len(s)]
        self.read_runs(runs, buf)
        return buf[inverse.reshape(rows.shape)]

    def read_runs(self, runs: list[tuple[int, int, int]], out: np.ndarray) -> None:
        """Read runs (first row in /frames, rows, first row in ``out``) into ``out`` [*, H, W, 3] uint8,
        in parallel (the scattered reads of a streamed batch): ``os.preadv`` on one descriptor when
        /frames is contiguous (the layout both writers produce), else through h5py one run at a time."""
        if self._raw_offset is None:
            ds = self._h5["frames"]
            for src, n, dst in runs:
                out[dst:dst + n] = ds[src:src + n]
            return
        fd = self._raw_fd()
        parallel_read(lambda run: self.pread(fd, run[0], run[1], out[run[2]:run[2] + run[1]]), runs)

    def read_sequential(self, runs: list[tuple[int, int, int]], sink) -> None:
        """Bulk reads (a bank load): the runs, in file order, cut into READ_THREADS contiguous groups,
        each read in order by one thread on its own descriptor (so the kernel's read-ahead sees one
        sequential stream per thread); ``sink(run, fd)`` reads and stores one run (it calls
        :meth:`pread`). Through h5py when /frames is not contiguous (fd None)."""
        if self._raw_offset is None or not runs:
            for run in runs:
                sink(run, None)
            return
        groups = [g for g in np.array_split(np.arange(len(runs)), min(READ_THREADS, len(runs))) if len(g)]

        def read_group(group):
            fd = os.open(self.path, os.O_RDONLY)
            try:
                os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_SEQUENTIAL)
                for i in group:
                    sink(runs[i], fd)
            finally:
                os.close(fd)
        parallel_read(read_group, groups)

    def pread(self, fd: int | None, src: int, n: int, out: np.ndarray) -> None:
        """Rows src .. src + n - 1 of /frames into ``out`` [n, H, W, 3] (contiguous): ``os.preadv`` on
        ``fd`` (which releases the GIL), or h5py when fd is None."""
        if fd is None:
            out[:] = self._h5["frames"][src:src + n]
            return
        view = memoryview(out).cast("B")
        pos, off = 0, self._raw_offset + src * self.frame_bytes
        while pos < len(view):  # preadv may return less than asked (e.g. > 2 GB at once)
            got = os.preadv(fd, [view[pos:]], off + pos)
            if got <= 0:
                raise OSError(f"{self.path}: short read at byte {off + pos}")
            pos += got

    def _raw_fd(self) -> int:
        """The descriptor of streamed reads (random access: no read-ahead)."""
        with self._fd_lock:
            if self._fd is None:
                self._fd = os.open(self.path, os.O_RDONLY)
                os.posix_fadvise(self._fd, 0, 0, os.POSIX_FADV_RANDOM)
            return self._fd

    def mean_length(self, split: str = "train") -> float:
        return float(self.attrs.get("mean_source_frames_" + split, self.lengths[self.split_ids(split)].mean()))

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None
        self._h5.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def _aranges(n: np.ndarray) -> np.ndarray:
    """concat(arange(n[0]), arange(n[1]), ...) without a Python loop."""
    n = np.asarray(n, np.int64)
    total = int(n.sum())
    starts = np.repeat(np.cumsum(n) - n, n)
    return np.arange(total, dtype=np.int64) - starts


_POOL: ThreadPoolExecutor | None = None
_POOL_LOCK = threading.Lock()


def parallel_read(fn, jobs: list) -> None:
    """fn over jobs on a shared pool of READ_THREADS threads (reads release the GIL); one job runs inline."""
    global _POOL
    if len(jobs) <= 1 or READ_THREADS <= 1:
        for j in jobs:
            fn(j)
        return
    with _POOL_LOCK:
        if _POOL is None:
            _POOL = ThreadPoolExecutor(READ_THREADS, thread_name_prefix="vdc-read")
    for f in [_POOL.submit(fn, j) for j in jobs]:
        f.result()


@dataclass
class VideoBank:
    """A set of videos as one uint8 tensor of frames plus an index, on one device.

    ``frames`` is [F, H, W, 3] uint8; video j of the bank occupies rows offsets[j] .. offsets[j] + stored[j].
    ``lengths[j]`` is its length L in source frames (what clip indices refer to); ``source`` [F] the
    source frame of each row, or None when every video keeps every frame (rows = indices).
    ``ids`` are the video ids in the frames file (row numbers of /videos).
    """

    frames: "torch.Tensor"
    offsets: "torch.Tensor"
    lengths: "torch.Tensor"
    labels: "torch.Tensor"
    ids: "torch.Tensor"
    stored: "torch.Tensor | None" = None
    source: "torch.Tensor | None" = None

    def __len__(self) -> int:
        return int(self.lengths.numel())

    def rows(self, videos: "torch.Tensor", frame_idx: "torch.Tensor") -> "torch.Tensor":
        """Rows of ``frames`` for bank positions ``videos`` [B] and source frame indices [B, T]: the
        same frame, or the nearest kept one (ties: the earlier) when not every frame is kept."""
        import torch

        off = self.offsets[videos].unsqueeze(1)
        if self.source is None:
            return off + frame_idx
        if getattr(self, "_key", None) is None:  # row -> position * M + source frame: ascending
            self._m = int(self.source.max()) + 2 if len(self.source) else 1
            pos = torch.repeat_interleave(torch.arange(len(self.stored), device=self.source.device), self.stored)
            self._key = pos * self._m + self.source
        last = off + self.stored[videos].unsqueeze(1) - 1
        r = torch.searchsorted(self._key, videos.unsqueeze(1) * self._m + frame_idx.clamp(min=0))
        hi = torch.minimum(torch.maximum(r, off), last)
        lo = torch.minimum(torch.maximum(r - 1, off), last)
        nearer_lo = (frame_idx - self.source[lo]).abs() <= (self.source[hi] - frame_idx).abs()
        return torch.where(nearer_lo, lo, hi)

    def gather(self, videos: "torch.Tensor", frame_idx: "torch.Tensor") -> "torch.Tensor":
        """uint8 clips [B, T, H, W, 3] for bank positions ``videos`` [B] and source frame indices [B, T]."""
        return self.frames[self.rows(videos, frame_idx)]


class StreamedVideoBank(VideoBank):
    """Same interface as VideoBank, but frames stay in the HDF5 file and each batch's frames are read
    on demand, in parallel (for splits that do not fit in device memory)."""

    def __init__(self, frames: Frames, ids: np.ndarray, device):
        import torch

        self._src = frames
        self._device = device
        self.ids = torch.as_tensor(ids, dtype=torch.long)
        self.lengths = torch.as_tensor(frames.lengths[ids], dtype=torch.long, device=device)
        self.labels = torch.as_tensor(frames.labels[ids], dtype=torch.long, device=device)
        self.offsets = self.frames = self.stored = self.source = None

    def gather(self, videos, frame_idx):
        import torch

        vids = self.ids[videos.cpu()].numpy()
        idx = frame_idx.cpu().numpy()
        if self._src.exact:
            rows = self._src.offsets[vids][:, None] + idx
        else:
            rows = np.stack([self._src.rows(int(v), i) for v, i in zip(vids, idx)]) if len(vids) else \
                np.zeros(idx.shape, np.int64)
        return torch.from_numpy(self._src.read_rows(rows)).to(self._device)


def bank_limit(device, dataset: dict | None = None) -> tuple[float, str]:
    """(bytes a bank may take on ``device``, why). ``dataset["bank_gb"]`` (a number, GB) when set; else
    the device's free memory less max(10 %, 4 GiB) of it on CUDA (``torch.cuda.mem_get_info``), or the
    host's available RAM less max(20 %, 2 GiB) of the total on the CPU."""
    import torch

    if dataset is not None and dataset["bank_gb"] is not None:
        return float(dataset["bank_gb"]) * 1e9, f"datasets.{dataset['name']}.bank_gb"
    device = torch.device(device)
    if device.type == "cuda":
        free, total = torch.cuda.mem_get_info(device)
        return free - max(MARGIN_FRACTION * total, MARGIN_MIN), f"free memory of {device} less a margin"
    avail, total = host_memory()
    return avail - max(HOST_MARGIN_FRACTION * total, HOST_MARGIN_MIN), "available RAM less a margin"


def host_memory() -> tuple[int, int]:
    """(available, total) bytes of host RAM (Linux /proc/meminfo; os.sysconf elsewhere)."""
    try:
        with open("/proc/meminfo") as fh:
            info = {line.split(":")[0]: int(line.split()[1]) * 1024 for line in fh}
        return info["MemAvailable"], info["MemTotal"]
    except (OSError, KeyError, ValueError):
        total = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
        return total // 2, total


def load_bank(frames: Frames, split: str, device, max_bytes: float | None = None, ids: np.ndarray | None = None,
              dataset: dict | None = None) -> VideoBank:
    """A split (or the given video ids) in device memory, loaded once, or streamed from the file when
    its frames take more than the limit: ``max_bytes`` if given, else :func:`bank_limit` (the device's
    free memory, or ``dataset["bank_gb"]``). The load reads chunks of /frames in parallel."""
    import torch

    ids = frames.split_ids(split) if ids is None else np.asarray(ids)
    stored = frames.stored_lengths[ids]
    nbytes = int(stored.sum()) * frames.frame_bytes
    limit, why = (float(max_bytes), "max_bytes") if max_bytes is not None else bank_limit(device, dataset)
    if nbytes > limit:
        log.info("%s %s: %d videos, %.2f GB of frames > %.2f GB (%s): streamed from the file",
                 frames.path.name, split, len(ids), nbytes / 1e9, max(limit, 0) / 1e9, why)
        return StreamedVideoBank(frames, ids, device)
    t0 = time.time()
    device = torch.device(device)
    data = torch.empty((int(stored.sum()), *frames.frame_shape), dtype=torch.uint8, device=device)
    new_offsets = np.cumsum(stored) - stored
    runs = _chunked_runs(frames.offsets[ids], stored, new_offsets, max(1, CHUNK_BYTES // frames.frame_bytes))
    if device.type == "cpu":
        out = data.numpy()
        frames.read_sequential(runs, lambda run, fd: frames.pread(fd, run[0], run[1], out[run[2]:run[2] + run[1]]))
    else:
        _load_to_device(frames, runs, data)
    if nbytes > 1e9:
        log.info("%s %s: %.2f GB of frames loaded into %s in %.1f s", frames.path.name, split, nbytes / 1e9, device,
                 time.time() - t0)
    t = lambda a: torch.as_tensor(np.asarray(a), dtype=torch.long, device=device)  # noqa: E731
    source = None
    if not frames.exact and len(ids):
        source = t(frames.frame_source[np.repeat(frames.offsets[ids], stored) + _aranges(stored)])
    return VideoBank(frames=data, offsets=t(new_offsets), lengths=t(frames.lengths[ids]), labels=t(frames.labels[ids]),
                     ids=torch.as_tensor(ids, dtype=torch.long), stored=t(stored), source=source)


def _chunked_runs(src: np.ndarray, n: np.ndarray, dst: np.ndarray, chunk_rows: int) -> list[tuple[int, int, int]]:
    """Videos (first row in the file, rows, first row in the bank) merged where contiguous in both, then
    cut into runs of at most ``chunk_rows`` rows."""
    merged: list[list[int]] = []
    for s, k, d in zip(src.tolist(), n.tolist(), dst.tolist()):
        if k == 0:
            continue
        if merged and merged[-1][0] + merged[-1][1] == s and merged[-1][2] + merged[-1][1] == d:
            merged[-1][1] += k
        else:
            merged.append([s, k, d])
    return [(s + i, min(chunk_rows, k - i), d + i) for s, k, d in merged for i in range(0, k, chunk_rows)]


def _load_to_device(frames: Frames, runs, data) -> None:
    """:meth:`Frames.read_sequential` into each thread's pinned host buffer, then a copy to the run's
    rows of ``data`` on the device (blocking: the buffer is reused by the thread's next run)."""
    import torch

    local = threading.local()
    rows = max(n for _, n, _ in runs) if runs else 0

    def sink(run, fd):
        src, n, dst = run
        if getattr(local, "buf", None) is None:
            local.buf = torch.empty((rows, *frames.frame_shape), dtype=torch.uint8).pin_memory()
        frames.pread(fd, src, n, local.buf[:n].numpy())
        data[dst:dst + n].copy_(local.buf[:n])
    frames.read_sequential(runs, sink)


class FramesWriter:
    """Writes the layout above into an open, empty HDF5 file and computes its ``content_id`` on the way.

    ``/frames`` [rows, H, W, 3] uint8 and ``/frame_source`` [rows] are allocated up front (contiguous,
    uncompressed); :meth:`append` streams one video at a time into the next free rows (and hashes it:
    no second read of the file), :meth:`write_index` writes ``/videos`` and ``/classes``, hashes them
    and stores the ``content_id`` attribute."""

    def __init__(self, h5: h5py.File, rows: int, frame_size: Sequence[int]):
        self.h5 = h5
        self.frames = h5.create_dataset("frames", shape=(int(rows), *map(int, frame_size), 3), dtype=np.uint8)
        self.source = h5.create_dataset("frame_source", shape=(int(rows),), dtype=np.int32, fillvalue=-1)
        self.row = 0                      # next free row of /frames
        self.hasher = ContentHasher()
        self.hasher.update_text("frames", str(self.frames.shape))

    def append(self, video: np.ndarray, source: np.ndarray | None = None) -> int:
        """Write uint8 [n, H, W, 3] at the next free rows, with the source frame number of each
        (ascending; default 0..n-1); returns its first row (its offset)."""
        video = np.ascontiguousarray(video, dtype=np.uint8)
        source = np.arange(len(video)) if source is None else np.asarray(source)
        if len(source) != len(video) or np.any(np.diff(source) <= 0):
            raise ValueError(f"source frame numbers must be ascending, one per frame ({len(source)} for {len(video)})")
        offset = self.row
        self.frames[offset:offset + len(video)] = video
        self.source[offset:offset + len(video)] = source
        self.hasher.update("video", video)
        self.row += len(video)
        return offset

    def write_index(self, offsets, lengths, labels, split, paths: Sequence[str], source_frames, fps,
                    classes: Sequence[str]) -> str:
        """Write ``/videos/*`` and ``/classes`` (dtypes of the layout) and the ``content_id`` attribute;
        returns the content id."""
        self.hasher.update("frame_source", self.source[:])
        videos = self.h5.create_group("videos")
        columns = {"offset": np.asarray(offsets, np.int64), "length": np.asarray(lengths, np.int32),
                   "label": np.asarray(labels, np.int32), "split": np.asarray(split, np.int8), "path": list(paths),
                   "source_frames": np.asarray(source_frames, np.int32), "fps": np.asarray(fps, np.float32)}
        for name, column in columns.items():
            self._put(videos, name, column)
        self._put(self.h5, "classes", list(classes))
        cid = self.hasher.hexdigest()
        self.h5.attrs[CONTENT_ID_ATTR] = cid
        return cid

    def _put(self, group, name: str, data) -> None:
        """One dataset of the index, hashed as written (a list is a column of strings)."""
        if isinstance(data, list):
            group.create_dataset(name, data=data, dtype=h5py.string_dtype())
            self.hasher.update_text(name, json.dumps(data))
        else:
            group[name] = data
            self.hasher.update(name, data)


def write_frames(path: str | Path, videos: Sequence[np.ndarray], labels: Sequence[int], splits: Sequence[int],
                 classes: Sequence[str], paths: Sequence[str] | None = None, attrs: dict | None = None,
                 sources: Sequence[np.ndarray] | None = None, source_frames: Sequence[int] | None = None) -> None:
    """Write a small in-memory set of videos in the frames layout (tests, tools). Videos are
    reordered train first, then test, as the layout requires. ``sources[i]``: the source frame numbers
    of video i's frames and ``source_frames[i]`` its source length (default: every frame kept,
    0..n-1 and n). Not atomic: callers write to a temp path."""
    order = sorted(range(len(videos)), key=lambda i: ({0: 0, 1: 1}.get(splits[i], 2), i))
    vids = [videos[i] for i in order]
    src = [np.arange(len(videos[i])) if sources is None else np.asarray(sources[i]) for i in order]
    n_src = [len(videos[i]) if source_frames is None else int(source_frames[i]) for i in order]
    lengths = np.array([len(v) for v in vids], np.int32)
    shape = next((v.shape[1:] for v in vids if len(v)), (8, 8, 3))
    paths = list(paths) if paths is not None else [f"video_{i:05d}.mp4" for i in range(len(videos))]
    exact = all(len(s) == n and np.array_equal(s, np.arange(n)) for s, n in zip(src, n_src))
    with h5py.File(path, "w") as h5:
        writer = FramesWriter(h5, rows=int(lengths.sum()), frame_size=shape[:2])
        offsets = [writer.append(v, s) if len(v) else writer.row for v, s in zip(vids, src)]
        writer.write_index(offsets, lengths, labels=[labels[i] for i in order], split=[splits[i] for i in order],
                           paths=[paths[i] for i in order], source_frames=n_src,
                           fps=np.full(len(vids), 25.0, np.float32), classes=classes)
        a = {"dataset": "test", "format": "memory", "storage_size": list(shape[:2]), "max_frames": -1,
             "frame_stride": 1, "exact_clips": exact, "num_classes": len(classes),
             "num_failed": int(sum(1 for s in splits if s not in (0, 1))), "split_warnings": "[]"}
        a.update(attrs or {})
        for k, v in a.items():
            h5.attrs[k] = v
