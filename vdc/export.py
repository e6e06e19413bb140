"""The ``export`` stage: a condensed set as playable video files, one per class, for viewing outside vdc.

    python -m vdc export --condensed results/condensed/toy/rded/ipc5-tc8-naive-none-seed0.h5 \\
        --out exports/rded-ipc5 [--format mp4|gif] [--fps 8] [--scale 0] [--frames results/frames/toy.h5]

Per class ``k`` one file ``<k>_<class name>.<format>``: the class's clips side by side (in the set's
order), playing their T_c frames together — MP4 (H.264, yuv420p, plays once) or GIF (loops). Distilled
clips (float in [0, 1]) are clipped to [0, 1] for display. ``--scale`` enlarges every frame by a whole
factor (nearest neighbour, sharp pixels); 0 = the smallest factor that makes a clip at least 112 px high.
Class names come from ``--frames``, else the frames file the set names (attr ``frames_file``) when it
exists, else ``class<k>``. ``index.json`` lists each file with its clips' positions in the set and the
real videos they came from (``source_video``: row in the frames file; -1 = none).
"""
from __future__ import annotations

import argparse
import logging
import re
from pathlib import Path

import numpy as np

from vdc.condensed import CondensedSet
from vdc.errors import InputError
from vdc.formats import media
from vdc.report import FramesIndex
from vdc.utils import write_json

log = logging.getLogger("vdc.export")


def auto_scale(height: int, target: int = 112) -> int:
    return max(1, -(-target // max(height, 1)))


def export(condensed: str | Path, out_dir: str | Path, fmt: str = "mp4", fps: int = 8, scale: int = 0,
           frames_path: str | Path | None = None) -> list[Path]:
    """Write one video per class of the set; returns the files (and ``index.json`` last)."""
    if fmt not in ("mp4", "gif"):
        raise InputError(f"--format {fmt}: choose mp4 or gif")
    cset = CondensedSet.read(condensed)
    if len(cset.labels) == 0:
        raise InputError(f"{condensed}: the condensed set has no clips; rerun its condense job")
    clips = media.to_uint8(cset.clips)                               # [N, T, H, W, 3]
    n, t, h, w, _ = clips.shape
    s = scale or auto_scale(h)
    with FramesIndex(frames_path or cset.attrs.get("frames_file")) as frames:  # the class names
        names = {int(k): frames.class_name(int(k)) for k in np.unique(cset.labels)}
    out_dir = Path(out_dir)
    written, index = [], []
    for k in np.unique(cset.labels):
        members = np.flatnonzero(cset.labels == k)
        video = media.tile([media.resize(clips[i], h * s, w * s) for i in members], columns=len(members))
        name = names[int(k)]
        path = out_dir / f"{int(k):03d}_{re.sub(r'[^A-Za-z0-9_.-]+', '_', name)}.{fmt}"
        (media.write_mp4 if fmt == "mp4" else media.write_gif)(path, video, fps)
        written.append(path)
        index.append({"file": path.name, "class": int(k), "class_name": name, "clips": members.tolist(),
                      "source_video": cset.source_video[members].tolist()})
    write_json(out_dir / "index.json", {"condensed": str(condensed), "method": cset.attrs.get("method"),
                                        "ipc": cset.attrs.get("ipc"), "t_c": t, "fps": fps, "scale": s,
                                        "format": fmt, "files": index})
    return written + [out_dir / "index.json"]


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--condensed", required=True, help="condensed set (.h5)")
    p.add_argument("--out", required=True, help="output folder (one file per class)")
    p.add_argument("--format", choices=["mp4", "gif"], default="mp4")
    p.add_argument("--fps", type=int, default=8, help="frames per second (default 8)")
    p.add_argument("--scale", type=int, default=0, help="whole-number enlargement; 0 = at least 112 px high")
    p.add_argument("--frames", help="frames file of the set's dataset (class names); default: the set's own")


def main(args: argparse.Namespace) -> int:
    written = export(args.condensed, args.out, args.format, args.fps, args.scale, args.frames)
    for p in written:
        log.info("wrote %s", p)
    return 0
