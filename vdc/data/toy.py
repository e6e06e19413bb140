"""A generated action dataset whose classes are defined by MOTION, written as real H.264 videos.

``python -m vdc toy --out ROOT --config config.yaml --dataset toy`` writes, in the UCF101 layout::

    ROOT/videos/<ClassName>/v_<ClassName>_g<GG>_c<CC>.mp4    H.264 (libx264, yuv420p, GOP = gop, crf)
    ROOT/ucfTrainTestlist/trainlist01.txt                     "ClassName/v_....mp4 <label 1-based>"
    ROOT/ucfTrainTestlist/testlist01.txt                      "ClassName/v_....mp4"
    ROOT/ucfTrainTestlist/classInd.txt                        "1 ClassName"   (written last)

so ingestion reads it exactly like UCF101 (``format: toy``). Videos of one class are grouped four
clips to a group, and train and test videos never share a group (UCF101's rule).

Every video shows one main object (an asymmetric, textured shape) moving over a cluttered
background with static look-alike shapes, small moving distractors and per-frame noise. Only the
object's motion depends on the class; shape, colours, texture, size, start position, speed, phase
and length are random. Translation wraps around the frame (a torus), so position says nothing
about direction: a single frame cannot tell the classes apart, an 8-frame clip can.

All classes are invariant under a horizontal flip (the training augmentation flips clips), so
"left" and "right" are one class, and so are clockwise and counter-clockwise rotation.

Determinism: video ``(class c, index i)`` is rendered from ``numpy.random.default_rng([seed, c, i])``
(indices 0..train_per_class-1 are train videos, the rest test), so any subset can be rendered in
parallel and the same seed gives identical files and decoded frames.
"""
from __future__ import annotations

import argparse
import logging
import math
import os
import shutil
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np

from vdc.errors import ConfigError

log = logging.getLogger("vdc.toy")

# Class names in UCF101 style (CamelCase) and the motion each one means. The first 10 are the default.
CLASSES = [
    "TranslateHorizontal",   # constant velocity left or right (random sign), wrapping around
    "TranslateUp",
    "TranslateDown",
    "Rotate",                # spin about a fixed centre, either direction
    "ZoomIn",                # size grows geometrically over the video
    "ZoomOut",
    "OscillateHorizontal",   # sinusoidal back-and-forth along x
    "OscillateVertical",
    "Orbit",                 # circular path, either direction
    "Pulse",                 # size oscillates
    "TranslateDiagonalUp",   # up-left or up-right
    "TranslateDiagonalDown",
    "Swing",                 # rotation oscillates (pendulum)
    "ZigZag",                # horizontal travel with a vertical oscillation
    "Still",                 # the object does not move (only distractors do)
]
MAX_CLASSES = len(CLASSES)
CLIPS_PER_GROUP = 4


# ----------------------------------------------------------------------------------------- shapes
# Signed distance (positive inside) in the object's local units: the object spans about [-1, 1]^2.

def _box(u, v, x0, x1, y0, y1):
    return np.minimum(np.minimum(u - x0, x1 - u), np.minimum(v - y0, y1 - v))


def _disc(u, v, cx, cy, r):
    return r - np.sqrt((u - cx) ** 2 + (v - cy) ** 2)


def _shape_l(u, v):
    return np.maximum(_box(u, v, -1, -0.3, -1, 1), _box(u, v, -1, 1, 0.35, 1))


def _shape_f(u, v):
    return np.maximum(np.maximum(_box(u, v, -1, -0.45, -1, 1), _box(u, v, -1, 1, -1, -0.5)),
                      _box(u, v, -1, 0.5, -0.15, 0.3))


def _shape_wedge(u, v):  # right triangle (-1,-1), (-1,1), (1,1)
    return np.minimum(np.minimum(u + 1, 1 - v), (v - u) / math.sqrt(2))


def _shape_lollipop(u, v):
    return np.maximum(_disc(u, v, -0.45, 0.0, 0.55), _box(u, v, -0.45, 1, -0.18, 0.18))


def _shape_arrow(u, v):
    head = np.minimum(u - 0.05, ((1 - u) * 0.95 - np.abs(v)) / 1.4)
    return np.maximum(_box(u, v, -1, 0.1, -0.22, 0.22), np.maximum(head, _box(u, v, -1, -0.6, -0.22, 0.6)))


def _shape_crescent(u, v):
    return np.minimum(_disc(u, v, 0, 0, 1), -_disc(u, v, 0.45, -0.25, 0.75))


SHAPES = [_shape_l, _shape_f, _shape_wedge, _shape_lollipop, _shape_arrow, _shape_crescent]


# ----------------------------------------------------------------------------------------- rendering

def _grid(h: int, w: int):
    yy, xx = np.meshgrid(np.arange(h, dtype=np.float32) + 0.5, np.arange(w, dtype=np.float32) + 0.5, indexing="ij")
    return yy, xx


def _draw(canvas, yy, xx, cx, cy, theta, scale, shape, colors, texture):
    """Alpha-blend one object into ``canvas`` float [T, H, W, 3] in place.

    cx, cy, theta, scale: float [T] (pixels, radians, half-size in pixels); positions wrap around the
    frame. colors: [2, 3] in [0, 1]; texture: (kind, frequency, phase) in the object's local frame,
    so it rotates and scales with the object."""
    t, h, w, _ = canvas.shape
    c = lambda a: np.asarray(a, np.float32).reshape(t, 1, 1)  # noqa: E731
    dx = (xx[None] - c(cx) + w / 2) % w - w / 2
    dy = (yy[None] - c(cy) + h / 2) % h - h / 2
    cos, sin, s = c(np.cos(theta)), c(np.sin(theta)), c(scale)
    u = (cos * dx + sin * dy) / s
    v = (-sin * dx + cos * dy) / s
    alpha = np.clip(shape(u, v) * s + 0.5, 0.0, 1.0)  # anti-aliased edge, one pixel wide
    kind, freq, phase = texture
    if kind == 0:
        pattern = np.zeros_like(u)
    elif kind == 1:
        pattern = (np.sin(freq * u + phase) > 0).astype(np.float32)
    elif kind == 2:
        pattern = (np.sin(freq * u + phase) * np.sin(freq * v + phase) > 0).astype(np.float32)
    else:
        pattern = (np.sin(freq * np.sqrt(u * u + v * v) + phase) > 0).astype(np.float32)
    col = colors[0] + pattern[..., None] * (colors[1] - colors[0])
    a = alpha[..., None]
    canvas *= 1 - a
    canvas += a * col


def _contrasting_colors(rng, bg_lum):
    """Two colours for an object whose brightness differs from the background's by 0.35-0.55."""
    lum = bg_lum + rng.choice([-1, 1]) * rng.uniform(0.35, 0.55)
    if not 0.05 <= lum <= 0.95:
        lum = bg_lum - (lum - bg_lum)
    lum = float(np.clip(lum, 0.05, 0.95))
    base = np.clip(lum + rng.uniform(-0.2, 0.2, 3), 0, 1)
    second = np.clip(base + rng.choice([-1, 1]) * rng.uniform(0.15, 0.3) + rng.uniform(-0.1, 0.1, 3), 0, 1)
    return np.stack([base, second]).astype(np.float32)


def _texture(rng):
    return (int(rng.integers(0, 4)), float(rng.uniform(3.0, 7.0)), float(rng.uniform(0, 2 * math.pi)))


def motion(class_name: str, rng: np.random.Generator, t: int, h: int, w: int):
    """The main object's trajectory for one class: (cx, cy, theta, scale), each float [t].

    Amounts are per video, not per frame (an action is done once per video whatever its length):
    a translation covers 45-80 % of the frame, a rotation 200-330 degrees, an oscillation 1.2-1.8
    cycles. An 8-frame clip spread over the video (clips.train_frame_indices) therefore sees a few
    pixels or 25-40 degrees of motion per step and never aliases an oscillation. Translating
    objects start anywhere and wrap around; the others stay in the central 40 % of the frame, so
    that the test's centre crop sees them."""
    f = np.arange(t, dtype=np.float64)
    u = f / max(t - 1, 1)                               # progress through the video, 0..1
    side = min(h, w)
    moving = class_name.startswith("Translate") or class_name == "ZigZag"
    if moving:
        cx0, cy0 = rng.uniform(0, w), rng.uniform(0, h)
    else:
        cx0, cy0 = rng.uniform(0.3, 0.7) * w, rng.uniform(0.3, 0.7) * h
    s0 = rng.uniform(0.17, 0.25) * side                 # half-size: the object spans 34-50 % of the frame
    th0 = rng.uniform(0, 2 * math.pi)
    travel = rng.uniform(0.45, 0.8) * side * u          # distance covered so far
    sign = rng.choice([-1.0, 1.0])
    cycles = rng.uniform(1.2, 1.8)
    phase = rng.uniform(0, 2 * math.pi)
    amp = rng.uniform(0.12, 0.2) * side
    angle = 2 * math.pi * cycles * u + phase
    wave = np.sin(angle)
    cx, cy, th, s = np.full(t, cx0), np.full(t, cy0), np.full(t, th0), np.full(t, s0)
    if class_name == "TranslateHorizontal":
        cx = cx0 + sign * travel
    elif class_name == "TranslateUp":
        cy = cy0 - travel
    elif class_name == "TranslateDown":
        cy = cy0 + travel
    elif class_name == "Rotate":
        th = th0 + sign * math.radians(rng.uniform(200, 330)) * u
    elif class_name in ("ZoomIn", "ZoomOut"):
        small, big = rng.uniform(0.08, 0.13) * side, rng.uniform(0.26, 0.34) * side
        a, b = (small, big) if class_name == "ZoomIn" else (big, small)
        s = a * (b / a) ** u
    elif class_name == "OscillateHorizontal":
        cx = cx0 + amp * wave
    elif class_name == "OscillateVertical":
        cy = cy0 + amp * wave
    elif class_name == "Orbit":
        cx = cx0 + amp * np.cos(sign * angle)
        cy = cy0 + amp * np.sin(sign * angle)
    elif class_name == "Pulse":
        s = s0 * (1 + 0.4 * wave)
    elif class_name == "TranslateDiagonalUp":
        cx, cy = cx0 + sign * travel / math.sqrt(2), cy0 - travel / math.sqrt(2)
    elif class_name == "TranslateDiagonalDown":
        cx, cy = cx0 + sign * travel / math.sqrt(2), cy0 + travel / math.sqrt(2)
    elif class_name == "Swing":
        th = th0 + math.radians(rng.uniform(35, 60)) * wave
    elif class_name == "ZigZag":
        cx, cy = cx0 + sign * travel, cy0 + 0.7 * amp * wave
    elif class_name != "Still":
        raise ValueError(f"unknown toy class '{class_name}'")
    return cx, cy, th, s


def render_video(class_id: int, rng: np.random.Generator, toy: dict) -> np.ndarray:
    """Render one video of class ``class_id``: uint8 [T, H, W, 3], T in [min_frames, max_frames].

    ``toy`` is the dataset's toy section as the schema fills it (``settings["dataset"]["toy"]``; uses
    size, min_frames, max_frames). Pure function of (class_id, the state of rng, toy)."""
    h, w = toy["size"]
    t = int(rng.integers(toy["min_frames"], toy["max_frames"] + 1))
    yy, xx = _grid(h, w)
    frames = np.empty((t, h, w, 3), np.float32)

    # background: a linear colour gradient plus a faint texture
    bg_lum = rng.uniform(0.2, 0.8)
    c0 = np.clip(bg_lum + rng.uniform(-0.15, 0.15, 3), 0, 1)
    c1 = np.clip(bg_lum + rng.uniform(-0.15, 0.15, 3), 0, 1)
    ang = rng.uniform(0, 2 * math.pi)
    ramp = ((math.cos(ang) * xx / w + math.sin(ang) * yy / h) + 1) / 2
    tex = 0.04 * np.sin(xx * rng.uniform(0.3, 0.9) + rng.uniform(0, 6)) * np.sin(yy * rng.uniform(0.3, 0.9))
    bg = c0 + (c1 - c0) * ramp[..., None] + tex[..., None]
    frames[:] = bg[None]

    one = np.ones(t)
    # static clutter: look-alike shapes of the same family, smaller than the main object
    for _ in range(int(rng.integers(1, 4))):
        _draw(frames, yy, xx, rng.uniform(0, w) * one, rng.uniform(0, h) * one, rng.uniform(0, 2 * math.pi) * one,
              rng.uniform(0.05, 0.1) * min(h, w) * one, SHAPES[rng.integers(len(SHAPES))],
              _contrasting_colors(rng, bg_lum) * 0.5 + bg[None, h // 2, w // 2] * 0.5, _texture(rng))
    # moving distractors: small objects with random constant velocities
    f = np.arange(t)
    for _ in range(int(rng.integers(0, 2))):
        vx, vy = rng.uniform(-1.5, 1.5, 2) * min(h, w) / 64
        _draw(frames, yy, xx, rng.uniform(0, w) + vx * f, rng.uniform(0, h) + vy * f,
              rng.uniform(0, 2 * math.pi) + rng.uniform(-0.05, 0.05) * f, rng.uniform(0.03, 0.05) * min(h, w) * one,
              SHAPES[rng.integers(len(SHAPES))], _contrasting_colors(rng, bg_lum), _texture(rng))
    # the main object
    cx, cy, th, s = motion(CLASSES[class_id], rng, t, h, w)
    _draw(frames, yy, xx, cx, cy, th, s, SHAPES[rng.integers(len(SHAPES))], _contrasting_colors(rng, bg_lum),
          _texture(rng))
    # sensor noise and a slight global brightness flicker
    frames += rng.normal(0, rng.uniform(0.005, 0.02), frames.shape).astype(np.float32)
    frames *= (1 + rng.normal(0, 0.02, t)).astype(np.float32)[:, None, None, None]
    return (np.clip(frames, 0, 1) * 255 + 0.5).astype(np.uint8)


# ----------------------------------------------------------------------------------------- files

def encode_video(frames: np.ndarray, path: str | os.PathLike, fps: int = 25, gop: int = 8, crf: int = 18) -> None:
    """Write uint8 [T, H, W, 3] RGB frames as H.264 (libx264, yuv420p) .mp4, atomically.
    H and W must be even (4:2:0 chroma)."""
    import av

    t, h, w, _ = frames.shape
    if h % 2 or w % 2:
        raise ValueError(f"toy size {h}x{w}: H.264 yuv420p needs even height and width")
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp")
    with av.open(str(tmp), "w", format="mp4") as out:
        st = out.add_stream("libx264", rate=fps)
        st.width, st.height, st.pix_fmt = w, h, "yuv420p"
        # one encoder thread: deterministic output and no oversubscription under parallel workers
        st.options = {"crf": str(crf), "g": str(gop), "keyint_min": str(gop), "preset": "veryfast",
                      "threads": "1", "sc_threshold": "0"}
        for fr in frames:
            for pkt in st.encode(av.VideoFrame.from_ndarray(np.ascontiguousarray(fr), format="rgb24")):
                out.mux(pkt)
        for pkt in st.encode():
            out.mux(pkt)
    os.replace(tmp, path)


def video_name(class_name: str, index: int, train_per_class: int) -> str:
    """``v_<Class>_g<GG>_c<CC>.mp4`` for video ``index`` of a class (train first, then test; the
    test videos start a new group)."""
    if index < train_per_class:
        g, c = divmod(index, CLIPS_PER_GROUP)
    else:
        g0 = -(-train_per_class // CLIPS_PER_GROUP)
        g, c = divmod(index - train_per_class, CLIPS_PER_GROUP)
        g += g0
    return f"v_{class_name}_g{g + 1:02d}_c{c + 1:02d}.mp4"


def _make_one(job):
    class_id, index, root, toy = job
    name = CLASSES[class_id]
    rng = np.random.default_rng([toy["seed"], class_id, index])
    frames = render_video(class_id, rng, toy)
    rel = f"{name}/{video_name(name, index, toy['train_per_class'])}"
    encode_video(frames, Path(root) / "videos" / rel, toy["fps"], toy["gop"], toy["crf"])
    return rel, len(frames)


def generate(root: str | os.PathLike, settings: dict, workers: int = 1) -> dict:
    """Write the toy dataset under ``root`` (layout in the module docstring) from
    ``settings["dataset"]["toy"]`` (every key filled, as the schema does). Returns a summary
    {"videos", "frames", "classes"}. classInd.txt is written last, so an interrupted run never
    looks complete."""
    from tqdm import tqdm

    toy = settings["dataset"]["toy"]
    k = toy["classes"]
    if not 2 <= k <= MAX_CLASSES:
        raise ConfigError(f"toy.classes = {k}: must be between 2 and {MAX_CLASSES}")
    if toy["min_frames"] > toy["max_frames"]:
        raise ConfigError(f"toy.min_frames ({toy['min_frames']}) > toy.max_frames ({toy['max_frames']})")
    if toy["size"][0] % 2 or toy["size"][1] % 2:
        raise ConfigError(f"toy.size = {toy['size']}: H.264 yuv420p needs even height and width")
    root = Path(root)
    ann = root / "ucfTrainTestlist"
    ann.mkdir(parents=True, exist_ok=True)
    for f in ("classInd.txt", "trainlist01.txt", "testlist01.txt"):
        (ann / f).unlink(missing_ok=True)
    if (root / "videos").exists():
        shutil.rmtree(root / "videos")
    for c in range(k):
        (root / "videos" / CLASSES[c]).mkdir(parents=True, exist_ok=True)
    per = toy["train_per_class"] + toy["test_per_class"]
    jobs = [(c, i, str(root), toy) for c in range(k) for i in range(per)]
    if workers > 1:
        with ProcessPoolExecutor(workers) as ex:
            results = list(tqdm(ex.map(_make_one, jobs, chunksize=4), total=len(jobs), desc="toy", disable=None))
    else:
        results = [_make_one(j) for j in tqdm(jobs, desc="toy", disable=None)]
    train, test = [], []
    for (c, i, _, _), (rel, _) in zip(jobs, results):
        (train if i < toy["train_per_class"] else test).append(f"{rel} {c + 1}" if i < toy["train_per_class"] else rel)
    _write_text(ann / "trainlist01.txt", train)
    _write_text(ann / "testlist01.txt", test)
    _write_text(ann / "classInd.txt", [f"{c + 1} {CLASSES[c]}" for c in range(k)])
    return {"videos": len(results), "frames": int(sum(n for _, n in results)), "classes": k}


def _write_text(path: Path, lines: list[str]) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text("\n".join(lines) + "\n")
    os.replace(tmp, path)


def check_layout(root: str | os.PathLike, settings: dict) -> None:
    """The dataset's video_root / annotations must be ROOT/videos and ROOT/ucfTrainTestlist."""
    ds = settings["dataset"]
    root = Path(root)
    for key, want in (("video_root", root / "videos"), ("annotations", root / "ucfTrainTestlist")):
        if Path(ds[key]).resolve() != want.resolve():
            raise ConfigError(f"dataset '{ds['name']}': {key} is '{ds[key]}' but the toy dataset at "
                              f"'{root}' puts it at '{want}'; set {key}: {want}")


def toy_roots(config: dict) -> dict:
    """{root: dataset name} for every dataset of a validated config with format toy; the root is the
    parent of its annotations folder. Raises ConfigError unless annotations is <root>/ucfTrainTestlist
    and video_root is <root>/videos (the layout :func:`generate` writes)."""
    out = {}
    for name, ds in config["datasets"].items():
        if ds["format"] != "toy":
            continue
        ann = Path(ds["annotations"])
        if ann.name != "ucfTrainTestlist" or Path(ds["video_root"]) != ann.parent / "videos":
            raise ConfigError(f"dataset '{name}' (format toy): set annotations: <root>/ucfTrainTestlist and "
                              f"video_root: <root>/videos (the toy layout); got annotations: {ds['annotations']}, "
                              f"video_root: {ds['video_root']}")
        out[str(ann.parent)] = name
    return out


# ----------------------------------------------------------------------------------------- CLI

def add_arguments(p: argparse.ArgumentParser) -> None:
    from vdc.cli import add_settings_arguments

    p.add_argument("--out", required=True, help="dataset root (videos/ and ucfTrainTestlist/ go under it)")
    p.add_argument("--threads", type=int, default=1, help="parallel worker processes")
    add_settings_arguments(p)


def main(args: argparse.Namespace) -> int:
    from vdc.cli import resolve_settings

    settings = resolve_settings(args, "toy")
    check_layout(args.out, settings)
    summary = generate(args.out, settings, workers=args.threads)
    log.info("toy dataset: %d videos, %d frames, %d classes under %s", summary["videos"], summary["frames"],
             summary["classes"], args.out)
    return 0
