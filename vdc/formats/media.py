"""Clips as pictures and playable videos: uint8 conversion, tiling, animated GIF / H.264 MP4 writers
and a decoder (used by ``python -m vdc export``, the report's figures, and tests that decode files back);
and the matplotlib figures of the tables and the report (``pyplot``, ``save_figure``).

A clip is ``[T, H, W, 3]``: uint8 pixels, or float in [0, 1] (distilled clips, ``CondensedSet`` with
``value_range`` unit_float, possibly a little outside [0, 1]: clipped for display). Writers are atomic
(temporary file, then rename). MP4: libx264, yuv420p (the pixel format every player reads), frame size
padded to even numbers with black; GIF: Pillow, adaptive palette per frame (256 colours unless asked
for fewer), looping.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from vdc.utils import atomic_path


def to_uint8(clips: np.ndarray) -> np.ndarray:
    """uint8 pixels of uint8 or [0, 1]-float clips (any leading shape, last axis RGB)."""
    if clips.dtype == np.uint8:
        return clips
    return np.round(np.clip(np.asarray(clips, np.float32), 0.0, 1.0) * 255.0).astype(np.uint8)


def resize(frames: np.ndarray, height: int, width: int) -> np.ndarray:
    """Frames [T, H, W, 3] uint8 resized to height x width (bilinear when shrinking, nearest when growing
    by a whole factor so pixels stay sharp)."""
    from PIL import Image

    t, h, w, _ = frames.shape
    if (h, w) == (height, width):
        return frames
    grow = height % h == 0 and width % w == 0 and height >= h
    mode = Image.NEAREST if grow else Image.BILINEAR
    return np.stack([np.asarray(Image.fromarray(f).resize((width, height), mode)) for f in frames])


def tile(clips: list[np.ndarray], columns: int, gap: int = 2, fill: int = 255) -> np.ndarray:
    """Clips of equal shape [T, H, W, 3] laid out in a grid of ``columns`` -> one clip [T, H', W', 3]."""
    t, h, w, _ = clips[0].shape
    rows = -(-len(clips) // columns)
    out = np.full((t, rows * (h + gap) - gap, columns * (w + gap) - gap, 3), fill, np.uint8)
    for i, c in enumerate(clips):
        r, k = divmod(i, columns)
        out[:, r * (h + gap):r * (h + gap) + h, k * (w + gap):k * (w + gap) + w] = c
    return out


def gif_bytes(frames: np.ndarray, fps: float = 8.0, colors: int = 256) -> bytes:
    """An animated, looping GIF of frames [T, H, W, 3] uint8 (``colors``: palette size per frame; fewer
    colours, smaller files)."""
    import io

    from PIL import Image

    images = [Image.fromarray(f).quantize(colors=colors) for f in frames]
    buf = io.BytesIO()
    images[0].save(buf, format="GIF", save_all=True, append_images=images[1:], duration=int(round(1000 / fps)),
                   loop=0, disposal=1)
    return buf.getvalue()


def write_gif(path: str | Path, frames: np.ndarray, fps: float = 8.0) -> None:
    with atomic_path(path, suffix=".gif") as tmp:
        Path(tmp).write_bytes(gif_bytes(frames, fps))


def write_mp4(path: str | Path, frames: np.ndarray, fps: int = 8, crf: int = 18) -> None:
    """An H.264 MP4 (yuv420p) of frames [T, H, W, 3] uint8; odd sizes are padded to even with black."""
    import av

    t, h, w, _ = frames.shape
    he, we = h + h % 2, w + w % 2
    if (he, we) != (h, w):
        padded = np.zeros((t, he, we, 3), np.uint8)
        padded[:, :h, :w] = frames
        frames = padded
    with atomic_path(path, suffix=".mp4") as tmp:
        with av.open(str(tmp), mode="w", format="mp4") as container:
            stream = container.add_stream("libx264", rate=int(fps))
            stream.width, stream.height, stream.pix_fmt = we, he, "yuv420p"
            stream.options = {"crf": str(crf)}
            for f in frames:
                for packet in stream.encode(av.VideoFrame.from_ndarray(np.ascontiguousarray(f), format="rgb24")):
                    container.mux(packet)
            for packet in stream.encode():
                container.mux(packet)


def read_video(path: str | Path) -> np.ndarray:
    """Decode a video file (MP4, GIF, ...) back to frames [T, H, W, 3] uint8."""
    import av

    with av.open(str(path)) as container:
        return np.stack([f.to_ndarray(format="rgb24") for f in container.decode(video=0)])


# ----------------------------------------------------------------------------- figures

def pyplot():
    """matplotlib.pyplot on the Agg backend (no display needed): the figures of the tables and the report."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def save_figure(fig, out: str | Path, dpi: int = 100) -> None:
    """Write ``fig`` as a PNG at ``out`` (atomically) and close it."""
    with atomic_path(out, suffix=".png") as tmp:
        fig.savefig(tmp, dpi=dpi)
    pyplot().close(fig)
