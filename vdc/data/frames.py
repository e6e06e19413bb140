"""The frames HDF5 file (output of the ``extract`` stage) and in-memory / streamed video banks.

Layout of ``results/frames/<dataset>.h5`` (see README, "File formats")::

    /frames             uint8  [F, H, W, 3]  every kept frame, video after video, contiguous, uncompressed;
                                              all train videos first, then all test videos, so a whole
                                              split is one contiguous slice
    /videos/offset      int64  [N]   first row of video i in /frames
    /videos/length      int32  [N]   kept frames of video i (0 when it failed to decode)
    /videos/label       int32  [N]   class id, 0..K-1
    /videos/split       int8   [N]   0 = train, 1 = test, -1 = failed (in no split)
    /videos/path        str    [N]   path relative to the dataset's video_root
    /videos/source_frames int32 [N]  frames in the source video before the max_frames cap
    /videos/fps         float32 [N]
    /classes            str    [K]
    attrs: dataset, format, storage_size [H, W], max_frames, frame_stride, video_root, annotations,
           split_number, num_classes, num_videos, num_failed, vdc_version, mean_source_frames_{train,test},
           content_id

Video ids are row numbers of ``/videos/*``; condensed sets point back at them.

``content_id`` identifies the data (vdc/resume.py ties checkpoints to it): the :class:`vdc.resume.ContentHasher`
digest of, in this order, the shape of ``/frames``, the frames of each stored video in row order (one
update per video, as the writer streams them), then ``/videos/{offset, length, label, split, path,
source_frames, fps}`` and ``/classes``. The other attributes (paths, version) are not part of it, so
equal frames and index give equal ids wherever and by whichever vdc version they were written.
Both writers, the ``extract`` stage and :func:`write_frames`, go through :class:`FramesWriter`.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import h5py
import numpy as np

from vdc.errors import h5_dataset, open_h5
from vdc.resume import CONTENT_ID_ATTR, ContentHasher

SPLITS = {"train": 0, "test": 1}
WHAT = "frames file"
FIX = "rerun the extract stage (snakemake frames, or python -m vdc extract)"
INDEX = ("videos/offset", "videos/length", "videos/label", "videos/split", "videos/path", "videos/source_frames",
         "videos/fps", "classes")


class Frames:
    """Read-only view of a frames HDF5 file. The per-video index is read eagerly (it is small)."""

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
        self.lengths = v["videos/length"].astype(np.int64)
        self.labels = v["videos/label"].astype(np.int64)
        self.split = v["videos/split"].astype(np.int8)
        self.paths = [p.decode() if isinstance(p, bytes) else p for p in v["videos/path"]]
        self.classes = [c.decode() if isinstance(c, bytes) else c for c in v["classes"]]
        self.attrs = dict(self._h5.attrs)
        self.frame_shape = tuple(frames.shape[1:])

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    def split_ids(self, split: str) -> np.ndarray:
        return np.flatnonzero(self.split == SPLITS[split])

    def class_ids(self, split: str, label: int) -> np.ndarray:
        ids = self.split_ids(split)
        return ids[self.labels[ids] == label]

    def read_video(self, vid: int) -> np.ndarray:
        o, n = self.offsets[vid], self.lengths[vid]
        return self._h5["frames"][o:o + n]

    def read_frames(self, vid: int, idx: Sequence[int]) -> np.ndarray:
        """Frames ``idx`` (ascending or not, repeats allowed) of video ``vid``: [len(idx), H, W, 3]."""
        idx = np.asarray(idx, dtype=np.int64)
        lo, hi = int(idx.min()), int(idx.max()) + 1
        o = self.offsets[vid]
        block = self._h5["frames"][o + lo:o + hi]  # one range read, then stride in numpy (fast)
        return block[idx - lo]

    def mean_length(self, split: str = "train") -> float:
        return float(self.attrs.get("mean_source_frames_" + split, self.lengths[self.split_ids(split)].mean()))

    def close(self) -> None:
        self._h5.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


@dataclass
class VideoBank:
    """A set of videos as one uint8 tensor of frames plus an index, on one device.

    ``frames`` is [F, H, W, 3] uint8; video j of the bank occupies rows offsets[j] .. offsets[j]+lengths[j].
    ``ids`` are the video ids in the frames file (row numbers of /videos).
    """

    frames: "torch.Tensor"
    offsets: "torch.Tensor"
    lengths: "torch.Tensor"
    labels: "torch.Tensor"
    ids: "torch.Tensor"

    def __len__(self) -> int:
        return int(self.lengths.numel())

    def gather(self, videos: "torch.Tensor", frame_idx: "torch.Tensor") -> "torch.Tensor":
        """uint8 clips [B, T, H, W, 3] for bank positions ``videos`` [B] and frame indices [B, T]."""
        rows = self.offsets[videos].unsqueeze(1) + frame_idx
        return self.frames[rows]


class StreamedVideoBank(VideoBank):
    """Same interface as VideoBank, but frames stay in the HDF5 file and clips are read on demand
    (for splits that do not fit in device memory)."""

    def __init__(self, frames: Frames, ids: np.ndarray, device):
        import torch

        self._src = frames
        self._device = device
        self.ids = torch.as_tensor(ids, dtype=torch.long)
        self.lengths = torch.as_tensor(frames.lengths[ids], dtype=torch.long, device=device)
        self.labels = torch.as_tensor(frames.labels[ids], dtype=torch.long, device=device)
        self.offsets = None
        self.frames = None

    def gather(self, videos, frame_idx):
        import torch

        out = [self._src.read_frames(int(self.ids[int(v)]), fi.tolist()) for v, fi in zip(videos.cpu(), frame_idx.cpu())]
        return torch.from_numpy(np.stack(out)).to(self._device)


def load_bank(frames: Frames, split: str, device, max_bytes: float = 8e9, ids: np.ndarray | None = None) -> VideoBank:
    """Load a split (or the given video ids) into device memory once, or stream it when it would
    take more than ``max_bytes``."""
    import torch

    ids = frames.split_ids(split) if ids is None else np.asarray(ids)
    lengths = frames.lengths[ids]
    nbytes = int(lengths.sum()) * int(np.prod(frames.frame_shape))
    if nbytes > max_bytes:
        return StreamedVideoBank(frames, ids, device)
    ds = frames._h5["frames"]
    offs = frames.offsets[ids]
    contiguous = len(ids) > 0 and np.all(offs[1:] == offs[:-1] + lengths[:-1])
    if contiguous:  # a whole split: one range read
        data = ds[offs[0]:offs[0] + int(lengths.sum())]
    else:
        data = np.concatenate([ds[o:o + n] for o, n in zip(offs, lengths)]) if len(ids) else \
            np.zeros((0, *frames.frame_shape), np.uint8)
    new_offsets = np.concatenate([[0], np.cumsum(lengths)[:-1]]) if len(ids) else np.zeros(0, np.int64)
    t = lambda a: torch.as_tensor(np.asarray(a), dtype=torch.long, device=device)  # noqa: E731
    return VideoBank(frames=torch.from_numpy(data).to(device), offsets=t(new_offsets), lengths=t(lengths),
                     labels=t(frames.labels[ids]), ids=torch.as_tensor(ids, dtype=torch.long))


class FramesWriter:
    """Writes the layout above into an open, empty HDF5 file and computes its ``content_id`` on the way.

    ``/frames`` [rows, H, W, 3] uint8 is allocated up front; :meth:`append` streams one video at a
    time into the next free rows (and hashes it: no second read of the file), :meth:`write_index`
    writes ``/videos`` and ``/classes``, hashes them and stores the ``content_id`` attribute."""

    def __init__(self, h5: h5py.File, rows: int, frame_size: Sequence[int]):
        self.h5 = h5
        self.frames = h5.create_dataset("frames", shape=(int(rows), *map(int, frame_size), 3), dtype=np.uint8)
        self.row = 0                      # next free row of /frames
        self.hasher = ContentHasher()
        self.hasher.update_text("frames", str(self.frames.shape))

    def append(self, video: np.ndarray) -> int:
        """Write uint8 [n, H, W, 3] at the next free rows; returns its first row (its offset)."""
        video = np.ascontiguousarray(video, dtype=np.uint8)
        offset = self.row
        self.frames[offset:offset + len(video)] = video
        self.hasher.update("video", video)
        self.row += len(video)
        return offset

    def write_index(self, offsets, lengths, labels, split, paths: Sequence[str], source_frames, fps,
                    classes: Sequence[str]) -> str:
        """Write ``/videos/*`` and ``/classes`` (dtypes of the layout) and the ``content_id`` attribute;
        returns the content id."""
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
                 classes: Sequence[str], paths: Sequence[str] | None = None, attrs: dict | None = None) -> None:
    """Write a small in-memory set of videos in the frames layout (tests, tools). Videos are
    reordered train first, then test, as the layout requires. Not atomic: callers write to a temp path."""
    order = sorted(range(len(videos)), key=lambda i: ({0: 0, 1: 1}.get(splits[i], 2), i))
    vids = [videos[i] for i in order]
    lengths = np.array([len(v) for v in vids], np.int32)
    shape = next((v.shape[1:] for v in vids if len(v)), (8, 8, 3))
    paths = list(paths) if paths is not None else [f"video_{i:05d}.mp4" for i in range(len(videos))]
    with h5py.File(path, "w") as h5:
        writer = FramesWriter(h5, rows=int(lengths.sum()), frame_size=shape[:2])
        offsets = [writer.append(v) if len(v) else writer.row for v in vids]
        writer.write_index(offsets, lengths, labels=[labels[i] for i in order], split=[splits[i] for i in order],
                           paths=[paths[i] for i in order], source_frames=lengths,
                           fps=np.full(len(vids), 25.0, np.float32), classes=classes)
        a = {"dataset": "test", "format": "memory", "storage_size": list(shape[:2]), "max_frames": int(lengths.max(initial=0)),
             "frame_stride": 1, "num_classes": len(classes), "num_failed": int(sum(1 for s in splits if s not in (0, 1)))}
        a.update(attrs or {})
        for k, v in a.items():
            h5.attrs[k] = v
