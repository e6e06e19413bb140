"""The ``report`` stage: the figures of ``snakemake --report report.html`` besides the tables.

    python -m vdc report sets --condensed A.h5 B.h5 ... --frames toy=results/frames/toy.h5 \\
        --compare A.h5 ... --out results/report
    python -m vdc report curves --teachers T.json ... --evals E.json ... --histories D.h5 ... --out results/report

``sets`` — for every condensed set ``results/condensed/<ds>/<method>/<stem>.h5``:

* ``<out>/sets/<ds>/<method>/<stem>.strip.jpg``: one row per clip (at most ``--max-clips``, spread over the
  classes), its frames left to right (at most 8, evenly spaced), labelled with class, source video (row
  of the frames file) and, for selected clips, the source frames. A distilled clip (EDC, DATM: float
  pixels) is followed by a row of the real video it was initialised from (its centre window of T_c
  frames at the clip interval) — what the optimisation changed.
* ``<stem>.gif``: the same clips as an animated grid (distilled clip | its real source video side by side).
* ``<stem>.html``: both, embedded, with the set's settings and a table clip → class → source video path.

and per group of ``--compare`` sets with the same dataset, IPC and seed, ``<out>/compare/<ds>-ipc<IPC>-
seed<S>.html``: one row per class, one animated clip per method — what RDED / Herding / Random selected
next to what EDC / DATM synthesised, and from which real video (the paper's Figures 5–6).

``curves`` — learning curves as PNG:

* ``<out>/curves/teachers/<ds>-<arch>.png`` from a teacher metrics JSON (``curve``: epoch, loss, lr,
  train_top1, and test_top1 / test_top5 at the tested epochs);
* ``<out>/curves/evaluations/<ds>/<method>/<stem>.png``: every evaluation of one condensed set (the
  evaluation JSONs' ``curve``: training loss per epoch; ``tests`` / ``late``: test accuracy);
* ``<out>/curves/condense/<ds>/<method>/<stem>.png``: the optimisation history of a distilled set,
  read from the condensed file's ``/history`` group — 1-D datasets of one value per iteration, any
  names (DATM: ``loss``, ``alpha``, ``start_epoch`` and ``upper`` = the start-epoch window
  [min_start_epoch, upper), ``expert``, ``skipped``; EDC: ``loss`` and its terms, ``network``), with
  ``iteration`` as the x axis when present. A set without ``/history`` gets a figure that says so.
"""
from __future__ import annotations

import argparse
import base64
import html
import json
import logging
import math
import re
from pathlib import Path

import h5py
import numpy as np

from vdc.condensed import CondensedSet
from vdc.errors import InputError
from vdc.formats import media
from vdc.formats.evaluation import accuracy_by_epoch
from vdc.formats.media import pyplot, save_figure
from vdc.utils import atomic_path, read_json

log = logging.getLogger("vdc.report")

STEM_RE = re.compile(r"^ipc(?P<ipc>[0-9]+)-(?P<temporal>tc[0-9]+-[a-z]+-[a-z]+)-seed(?P<seed>[0-9]+)$")
TILE = 48           # display height of a clip tile (px)
MAX_FRAMES = 8      # frames shown per clip in a strip
GIF_COLORS = 64     # palette of the report's GIFs (noisy clips: 256 colours double the size)
PAGE_LIMIT = 1_400_000  # bytes of one HTML page: the report shows it as a data: URL, which Chromium caps at 2 MB
STYLE = ("body{font-family:sans-serif;margin:1em;color:#222} table{border-collapse:collapse} "
         "td,th{padding:.2em .5em;border-bottom:1px solid #ddd;text-align:left;vertical-align:top} "
         "img.clip{image-rendering:pixelated} .small{font-size:85%;color:#555} img{max-width:100%}")


# ------------------------------------------------------------------------------------ output names

def set_key(condensed: str | Path) -> tuple[str, str, str]:
    """(dataset, method, stem) of a condensed set's path results/condensed/<ds>/<method>/<stem>.h5."""
    p = Path(condensed)
    return p.parent.parent.name, p.parent.name, p.stem


def set_outputs(out: str | Path, condensed: str | Path) -> dict[str, str]:
    ds, method, stem = set_key(condensed)
    base = Path(out) / "sets" / ds / method / stem
    return {"html": f"{base}.html", "strip": f"{base}.strip.jpg", "gif": f"{base}.gif"}


def compare_groups(out: str | Path, condensed: list[str]) -> dict[str, list[str]]:
    """Output page -> the sets it compares (same dataset, IPC and seed)."""
    groups: dict[str, list[str]] = {}
    for c in condensed:
        ds, _, stem = set_key(c)
        m = STEM_RE.match(stem)
        if m:
            page = Path(out) / "compare" / f"{ds}-ipc{m['ipc']}-seed{m['seed']}.html"
            groups.setdefault(str(page), []).append(str(c))
    return {k: sorted(set(v)) for k, v in sorted(groups.items())}


def teacher_curve_output(out: str | Path, teacher_json: str | Path) -> str:
    p = Path(teacher_json)
    return str(Path(out) / "curves" / "teachers" / f"{p.parent.name}-{p.stem}.png")


def eval_curve_output(out: str | Path, condensed: str | Path) -> str:
    ds, method, stem = set_key(condensed)
    return str(Path(out) / "curves" / "evaluations" / ds / method / f"{stem}.png")


def eval_curve_outputs(out: str | Path, evals: list[str]) -> list[str]:
    """The evaluation-curve figures of a list of evaluation JSONs: one per condensed set."""
    return sorted({eval_curve_output(out, Path(ds) / method / f"{stem}.h5") for ds, method, stem in map(eval_set, evals)})


def history_output(out: str | Path, condensed: str | Path) -> str:
    ds, method, stem = set_key(condensed)
    return str(Path(out) / "curves" / "condense" / ds / method / f"{stem}.png")


def eval_set(eval_json: str | Path) -> tuple[str, str, str]:
    """(dataset, method, stem) of the condensed set an evaluation JSON at PATHS["eval"] belongs to."""
    p = Path(eval_json)
    return p.parent.parent.parent.name, p.parent.parent.name, p.parent.name


# ------------------------------------------------------------------------------------ condensed sets

def centre_window(length: int, t_c: int, interval: int) -> np.ndarray:
    """Source-frame indices of a video's centre window of t_c frames: the test clip's rule
    (``vdc.data.clips.center_frame_indices``, the reference's) in numpy, for display: interval
    ``interval``, or floor(L / t_c) when the video is shorter; start R // 2 - 1 (at least 0) with
    R = L - (t_c - 1) * interval; never wraps."""
    iv = interval if length >= t_c * interval else length // t_c
    start = max((length - (t_c - 1) * iv) // 2 - 1, 0)
    return start + iv * np.arange(t_c)


class FramesIndex:
    """Class names, video paths and frames of one frames file (read lazily, no torch)."""

    def __init__(self, path: str | Path | None, clip_interval: int = 8):
        self.fr = None
        self.interval = clip_interval
        if path and Path(path).exists():
            from vdc.data.frames import Frames

            self.fr = Frames(path)

    def class_name(self, k: int) -> str:
        """Class k's name in the frames file, else ``class<k>`` (no frames file, or no class k in it)."""
        return self.fr.classes[k] if self.fr is not None and k < len(self.fr.classes) else f"class{k}"

    def video_path(self, v: int) -> str:
        return self.fr.paths[v] if self.fr is not None and 0 <= v < len(self.fr.paths) else ""

    def window(self, v: int, t_c: int) -> np.ndarray | None:
        """The centre window of t_c frames of video v at the dataset's clip interval (None: unknown video)."""
        if self.fr is None or v < 0 or v >= len(self.fr.lengths) or self.fr.lengths[v] == 0:
            return None
        return self.fr.read_frames(v, centre_window(int(self.fr.lengths[v]), t_c, self.interval))

    def close(self) -> None:
        if self.fr is not None:
            self.fr.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def _tile_size(h: int, w: int) -> tuple[int, int]:
    return TILE, max(1, round(w * TILE / h))


def _label_tile(frames: np.ndarray, text: str) -> np.ndarray:
    """A clip [T, h, w, 3] with a one-line caption bar on top (for GIFs)."""
    from PIL import Image, ImageDraw

    t, h, w, _ = frames.shape
    out = np.full((t, h + 11, w, 3), 255, np.uint8)
    out[:, 11:] = frames
    bar = Image.new("RGB", (w, 11), "white")
    ImageDraw.Draw(bar).text((1, 0), text, fill="black")
    out[:, :11] = np.asarray(bar)
    return out


class SetView:
    """One condensed set prepared for display: its clips at tile size, their labels and real sources."""

    def __init__(self, path: str | Path, frames: FramesIndex, max_clips: int = 10):
        self.path = str(path)
        self.cs = CondensedSet.read(path)
        self.distilled = self.cs.value_range != "uint8"
        clips = media.to_uint8(self.cs.clips)
        n, self.t_c, h, w, _ = clips.shape
        self.size = _tile_size(h, w)
        labels = self.cs.labels
        rank = np.zeros(n, np.int64)                     # position of a clip within its class
        for k in np.unique(labels):
            rank[labels == k] = np.arange(int((labels == k).sum()))
        order = np.lexsort((labels, rank))[:max_clips]    # first clip of every class, then the second, ...
        self.shown = sorted(order.tolist(), key=lambda i: (labels[i], rank[i]))
        self.total = n
        self.clips, self.sources, self.rows = {}, {}, {}
        for i in self.shown:
            self.clips[i] = media.resize(clips[i], *self.size)
            v = int(self.cs.source_video[i])
            src = frames.window(v, self.t_c) if self.distilled else None
            self.sources[i] = None if src is None else media.resize(src, *self.size)
            sf = self.cs.source_frames[i] if self.cs.source_frames is not None else None
            self.rows[i] = {"clip": i, "class": int(labels[i]), "class_name": frames.class_name(int(labels[i])),
                            "video": v, "video_path": frames.video_path(v),
                            "frames": f"{int(sf.min())}–{int(sf.max())}" if sf is not None and len(sf) else ""}

    @property
    def title(self) -> str:
        a = self.cs.attrs
        return (f"{a.get('method', '?')} · {a.get('dataset', '?')} · IPC {a.get('ipc', '?')} · "
                f"tc{self.t_c}-{a.get('sampling', '?')}-{a.get('interpolation', '?')} · seed {a.get('seed', '?')}")

    def frame_idx(self) -> np.ndarray:
        return np.unique(np.linspace(0, self.t_c - 1, min(self.t_c, MAX_FRAMES)).round().astype(int))

    def strip(self, out: str | Path) -> None:
        """The strip (JPEG): a labelled row of frames per clip (+ its real source for distilled clips)."""
        from PIL import Image, ImageDraw, ImageFont

        fi = self.frame_idx()
        th, tw = self.size
        rows = []
        for i in self.shown:
            r = self.rows[i]
            what = "synthesised" if self.distilled else "selected"
            rows.append((f"c{r['class']} {r['class_name'][:16]}: {what}, video {r['video']}"
                         + (f", frames {r['frames']}" if r["frames"] else ""), self.clips[i][fi]))
            if self.distilled and self.sources[i] is not None:
                rows.append((f"   real video {r['video']} (centre window)", self.sources[i][fi]))
        font = ImageFont.load_default(size=11)
        gap, left, top = 2, 250, 30
        img = Image.new("RGB", (left + len(fi) * (tw + gap), top + len(rows) * (th + gap)), "white")
        draw = ImageDraw.Draw(img)
        more = f" (first {len(self.shown)} of {self.total} clips)" if len(self.shown) < self.total else ""
        draw.text((4, 2), self.title + more, fill="black", font=font)
        draw.text((left, 16), "frames " + ", ".join(map(str, fi)), fill="#555", font=font)
        for k, (label, clip) in enumerate(rows):
            y = top + k * (th + gap)
            draw.text((4, y + th // 2 - 6), label, fill="black", font=font)
            for j, f in enumerate(clip):
                img.paste(Image.fromarray(f), (left + j * (tw + gap), y))
        with atomic_path(out, suffix=".jpg") as tmp:
            img.save(tmp, format="JPEG", quality=85)

    def tile(self, i: int, frames: np.ndarray | None = None) -> np.ndarray:
        """Clip i for a GIF (its ``frames``, default all): labelled, next to its real source video when it
        was distilled."""
        r = self.rows[i]
        fi = np.arange(self.t_c) if frames is None else frames
        clip = _label_tile(self.clips[i][fi], f"c{r['class']} v{r['video']}")
        if self.distilled and self.sources[i] is not None:
            clip = media.tile([clip, _label_tile(self.sources[i][fi], "real")], columns=2)
        return clip

    def gif(self, columns: int = 5, clips: int | None = None, colors: int = GIF_COLORS) -> tuple[bytes, int]:
        """The animated grid of the first ``clips`` shown clips (all by default), and its width in pixels."""
        tiles = [self.tile(i) for i in self.shown[:clips]]
        shape = max(t.shape for t in tiles)
        tiles = [np.pad(t, ((0, 0), (0, shape[1] - t.shape[1]), (0, shape[2] - t.shape[2]), (0, 0)),
                        constant_values=255) for t in tiles]
        grid = media.tile(tiles, columns=min(columns, len(tiles)))
        return media.gif_bytes(grid, fps=4, colors=colors), grid.shape[2]


def _img(data: bytes, mime: str, css: str = "", width: int | None = None) -> str:
    w = f' width="{width}"' if width else ""
    return f'<img class="{css}"{w} src="data:{mime};base64,{base64.b64encode(data).decode()}">'


def set_page(view: SetView, strip: Path, gif: bytes, gif_width: int, gif_clips: int, embed_strip: bool = True) -> str:
    a = view.cs.attrs
    facts = {k: a[k] for k in ("method", "dataset", "ipc", "t_c", "sampling", "interpolation", "seed", "value_range",
                               "iterations", "networks", "class_wise", "init", "alpha", "skipped", "wall_time_s")
             if k in a}
    rows = "".join(f"<tr><td>{r['clip']}</td><td>{r['class']} {html.escape(r['class_name'])}</td><td>{r['video']}</td>"
                   f"<td>{html.escape(r['video_path'])}</td><td>{r['frames']}</td></tr>" for r in view.rows.values())
    what = ("synthesised clips (left) next to the real video each was initialised from (right, its centre window)"
            if view.distilled else "selected real clips")
    return (f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>{html.escape(view.title)}</title>"
            f"<style>{STYLE}</style></head><body><h2>{html.escape(view.title)}</h2>"
            f"<p class=small>{html.escape(view.path)} — {len(view.shown)} of {view.total} clips shown, "
            f"{html.escape(what)}.</p><p class=small>{html.escape(json.dumps(facts, default=str))}</p>"
            f"<h3>Animated</h3>{_img(gif, 'image/gif', 'clip', 2 * gif_width)}"
            + (f"<p class=small>(the first {gif_clips} clips; the GIF file next to this page has all "
               f"{len(view.shown)})</p>" if gif_clips < len(view.shown) else "") +
            f"<h3>Strip</h3>"
            + (_img(strip.read_bytes(), "image/jpeg") if embed_strip else
               f"<p class=small>too large to embed here: {html.escape(str(strip))}</p>") +
            f"<h3>Clips</h3><table><tr><th>clip</th><th>class</th><th>source video</th><th>path</th>"
            f"<th>source frames</th></tr>{rows}</table></body></html>\n")


def compare_page(views: list[SetView], title: str, max_classes: int | None = None) -> str:
    """Rows = classes (the first ``max_classes``), columns = sets: each class's first clip per set, with its
    source video."""
    all_classes = sorted({view.rows[i]["class"] for view in views for i in view.shown})
    classes = all_classes[:max_classes]
    heads = "".join(f"<th>{html.escape(v.cs.attrs.get('method', '?'))}<br><span class=small>"
                    f"tc{v.t_c}-{html.escape(str(v.cs.attrs.get('sampling')))}-"
                    f"{html.escape(str(v.cs.attrs.get('interpolation')))}</span></th>" for v in views)
    selected = {}  # class -> videos chosen by the selection methods of this group
    for v in views:
        if not v.distilled:
            for i in v.shown:
                selected.setdefault(v.rows[i]["class"], set()).add(v.rows[i]["video"])
    body = []
    for k in classes:
        cells = []
        name = ""
        for v in views:
            first = next((i for i in v.shown if v.rows[i]["class"] == k), None)
            if first is None:
                cells.append("<td>—</td>")
                continue
            r = v.rows[first]
            name = r["class_name"]
            also = " (also selected here)" if v.distilled and r["video"] in selected.get(k, ()) else ""
            src = f"{'from ' if v.distilled else ''}video {r['video']}{also}"
            tile = v.tile(first, v.frame_idx())
            cells.append(f"<td title='{html.escape(r['video_path'])}'>"
                         f"{_img(media.gif_bytes(tile, fps=2, colors=32), 'image/gif', 'clip', 2 * tile.shape[2])}"
                         f"<br><span class=small>{html.escape(src)}</span></td>")
        body.append(f"<tr><th>{k} {html.escape(name)}</th>{''.join(cells)}</tr>")
    return (f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title>"
            f"<style>{STYLE}</style></head><body><h2>{html.escape(title)}</h2><p class=small>Each class's first "
            f"clip in each condensed set (at most {MAX_FRAMES} evenly spaced frames; hover for the video's path): "
            f"selected real clips (Random, Herding, RDED) and synthesised clips (EDC, DATM) next to the real "
            f"video they started from (right of each pair, its centre window). "
            f"'also selected here' marks a distilled clip whose source video a selection method of this page "
            f"chose for the same class."
            + (f" The first {len(classes)} of {len(all_classes)} classes." if len(classes) < len(all_classes) else "")
            + f"</p><table><tr><th>class</th>{heads}</tr>{''.join(body)}</table>"
            f"</body></html>\n")


def build_sets(condensed: list[str], frames: dict[str, str], compare: list[str], out: str | Path,
               max_clips: int = 10, intervals: dict[str, int] | None = None) -> list[Path]:
    """Strip, GIF and page of every set in ``condensed``; the side-by-side pages of ``compare``.
    ``frames``: dataset -> frames file; ``intervals``: dataset -> clip interval (default 8)."""
    written = []
    indexes = {ds: FramesIndex(p, (intervals or {}).get(ds, 8)) for ds, p in frames.items()}
    views: dict[str, SetView] = {}
    for c in sorted(set(condensed) | set(compare)):
        ds, _, _ = set_key(c)
        views[c] = SetView(c, indexes.get(ds) or FramesIndex(None), max_clips)
    for c in sorted(set(condensed)):
        o = set_outputs(out, c)
        view = views[c]
        view.strip(o["strip"])
        gif, width = view.gif()
        with atomic_path(o["gif"], suffix=".gif") as tmp:
            Path(tmp).write_bytes(gif)
        n, small = len(view.shown), gif
        page = set_page(view, Path(o["strip"]), gif, width, n)
        while len(page) > PAGE_LIMIT and n > 1:   # fewer clips in the page's GIF until it fits
            n = n * 2 // 3
            small, width = view.gif(clips=n)
            page = set_page(view, Path(o["strip"]), small, width, n)
        if len(page) > PAGE_LIMIT:                 # then the strip stays a file of its own
            page = set_page(view, Path(o["strip"]), small, width, n, embed_strip=False)
        with atomic_path(o["html"]) as tmp:
            Path(tmp).write_text(page)
        written += [Path(o["html"]), Path(o["strip"]), Path(o["gif"])]
    order = {"random": 0, "herding": 1, "rded": 2, "edc": 3, "datm": 4}
    for page, members in compare_groups(out, compare).items():
        vs = sorted((views[c] for c in members), key=lambda v: (order.get(str(v.cs.attrs.get("method")), 9),
                                                                  str(v.cs.attrs.get("method")), v.t_c))
        ds, _, stem = set_key(members[0])
        m = STEM_RE.match(stem)
        title = f"Condensed sets side by side — {ds}, IPC {m['ipc']}, seed {m['seed']}"
        n = None
        text = compare_page(vs, title)
        while len(text) > PAGE_LIMIT and (n is None or n > 1):   # fewer classes until the page fits
            n = (n or len({v.rows[i]["class"] for v in vs for i in v.shown})) * 2 // 3
            text = compare_page(vs, title, max(n, 1))
        with atomic_path(page) as tmp:
            Path(tmp).write_text(text)
        written.append(Path(page))
    return written


# ------------------------------------------------------------------------------------ learning curves

def teacher_figure(teacher_json: str | Path, out: str | Path) -> None:
    js = read_json(teacher_json, "teacher metrics", "rerun its teacher job (snakemake teachers)")
    curve = js.get("curve") or []
    plt = pyplot()
    fig, (a1, a2) = plt.subplots(1, 2, figsize=(9, 3.2))
    ep = [c["epoch"] for c in curve]
    a1.plot(ep, [c["loss"] for c in curve], label="training loss")
    a1.set_xlabel("epoch")
    a1.set_ylabel("loss")
    lr = a1.twinx()
    lr.plot(ep, [c.get("lr", math.nan) for c in curve], color="grey", ls=":", label="lr")
    lr.set_ylabel("learning rate", color="grey")
    if any("train_top1" in c for c in curve):
        a2.plot(ep, [c.get("train_top1", math.nan) for c in curve], label="train top1")
    for key in ("test_top1", "test_top5"):
        pts = [(c["epoch"], c[key]) for c in curve if key in c]
        if pts:
            a2.plot(*zip(*pts), marker="o", label=key.replace("_", " "))
    a2.set_xlabel("epoch")
    a2.set_ylabel("accuracy (%)")
    a2.legend(fontsize=8)
    for a in (a1, a2):
        a.grid(alpha=0.3)
    fig.suptitle(f"Teacher {js.get('arch', '?')} on {Path(teacher_json).parent.name}: final test top1 "
                 f"{js.get('top1', math.nan):.1f} %, top5 {js.get('top5', math.nan):.1f} %", fontsize=9)
    fig.tight_layout()
    save_figure(fig, out)


def eval_figure(evals: list[str], out: str | Path, title: str) -> None:
    """Every evaluation of one condensed set: training loss per epoch and test accuracy points."""
    plt = pyplot()
    fig, (a1, a2) = plt.subplots(1, 2, figsize=(10, 3.6))
    metrics = set()
    for p in sorted(evals):
        js = read_json(p, "evaluation", "rerun its evaluation")
        metric = ((js.get("settings") or {}).get("dataset") or {}).get("metric", "top1")
        metrics.add(metric)
        label = f"{js.get('arch')} · {js.get('labels')} · {js.get('loss')} · {js.get('cutmix')}"
        curve = js.get("curve") or []
        line, = a1.plot([c["epoch"] for c in curve], [c["loss"] for c in curve], label=label)
        pts = accuracy_by_epoch(js, metric)
        if pts:
            e = sorted(pts)
            a2.plot(e, [pts[k] for k in e], marker="o", ms=3, color=line.get_color(), label=label)
    a1.set_yscale("log")
    a1.set_xlabel("epoch")
    a1.set_ylabel("training loss (log)")
    a2.set_xlabel("epoch")
    a2.set_ylabel(f"test {' / '.join(sorted(metrics))} accuracy (%)")
    for a in (a1, a2):
        a.grid(alpha=0.3)
    if a1.lines:
        a1.legend(fontsize=6)
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    save_figure(fig, out)


def read_history(condensed: str | Path) -> tuple[dict[str, np.ndarray], dict]:
    """(the /history arrays, the set's attributes) of a condensed file."""
    with h5py.File(condensed, "r") as h5:
        hist = {k: np.asarray(v[:], np.float64) for k, v in h5["history"].items()} if "history" in h5 else {}
        attrs = {k: (v.item() if isinstance(v, np.generic) else v) for k, v in h5.attrs.items()}
    return hist, attrs


def history_figure(condensed: str | Path, out: str | Path) -> None:
    """The optimisation history of a distilled set, one panel per recorded quantity."""
    hist, attrs = read_history(condensed)
    x = hist.pop("iteration", hist.pop("it", None))
    plt = pyplot()
    title = (f"{attrs.get('method', '?')} · {attrs.get('dataset', '?')} · IPC {attrs.get('ipc', '?')} · "
             f"seed {attrs.get('seed', '?')}: condensation history")
    if not hist:
        fig, ax = plt.subplots(figsize=(7, 2))
        known = {k: attrs[k] for k in ("iterations", "loss_first", "loss_last", "final_loss", "alpha") if k in attrs}
        ax.text(0.02, 0.5, "This condensed set stores no per-iteration history (/history); what it records:\n"
                + json.dumps(known, default=str)[:300], fontsize=8, va="center", wrap=True)
        ax.axis("off")
        ax.set_title(title, fontsize=9)
        save_figure(fig, out)
        return
    window = [k for k in ("start_epoch", "upper") if k in hist]
    panels = [k for k in hist if k not in window] + (["window"] if window else [])
    cols = min(3, len(panels))
    rows = -(-len(panels) // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(4 * cols, 2.8 * rows), squeeze=False)
    for ax, name in zip(axes.flat, panels):
        if name == "window":
            for k in window:
                y = hist[k]
                ax.plot(np.arange(len(y)) if x is None else x[:len(y)], y, label=k, lw=1)
            ax.legend(fontsize=7)
        else:
            y = hist[name]
            ax.plot(np.arange(len(y)) if x is None else x[:len(y)], y, lw=1)
            if name.startswith("loss") and np.all(y[np.isfinite(y)] > 0):
                ax.set_yscale("log")
        ax.set_title(name, fontsize=9)
        ax.set_xlabel("iteration")
        ax.grid(alpha=0.3)
    for ax in list(axes.flat)[len(panels):]:
        ax.axis("off")
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    save_figure(fig, out)


def build_curves(teachers: list[str], evals: list[str], histories: list[str], out: str | Path) -> list[Path]:
    written = []
    for t in teachers:
        o = teacher_curve_output(out, t)
        teacher_figure(t, o)
        written.append(Path(o))
    by_set: dict[tuple, list[str]] = {}
    for e in evals:
        by_set.setdefault(eval_set(e), []).append(e)
    for (ds, method, stem), members in sorted(by_set.items()):
        o = eval_curve_output(out, Path(ds) / method / f"{stem}.h5")
        eval_figure(members, o, f"Evaluations of {method} · {ds} · {stem} ({len(members)} runs)")
        written.append(Path(o))
    for c in histories:
        o = history_output(out, c)
        history_figure(c, o)
        written.append(Path(o))
    return written


# ------------------------------------------------------------------------------------------ CLI

def add_arguments(p: argparse.ArgumentParser) -> None:
    sub = p.add_subparsers(dest="what", required=True)
    s = sub.add_parser("sets", help="strips, GIFs and pages of condensed sets")
    s.add_argument("--condensed", nargs="*", default=[], help="condensed sets (.h5)")
    s.add_argument("--frames", nargs="*", default=[], metavar="DATASET=PATH", help="frames files (class names, "
                                                                                   "source videos)")
    s.add_argument("--compare", nargs="*", default=[], help="condensed sets to show side by side (grouped by "
                                                            "dataset, IPC and seed)")
    s.add_argument("--clip-interval", nargs="*", default=[], metavar="DATASET=N",
                   help="clip interval of each dataset (the real source windows shown; default 8)")
    s.add_argument("--max-clips", type=int, default=10, help="clips shown per set (default 10)")
    s.add_argument("--out", required=True, help="report folder (results/report)")
    c = sub.add_parser("curves", help="learning curves of teachers, evaluations and condensation")
    c.add_argument("--teachers", nargs="*", default=[], help="teacher metrics JSONs")
    c.add_argument("--evals", nargs="*", default=[], help="evaluation JSONs")
    c.add_argument("--histories", nargs="*", default=[], help="distilled condensed sets (their /history)")
    c.add_argument("--out", required=True, help="report folder (results/report)")


def _pairs(items: list[str], flag: str) -> dict[str, str]:
    out = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep:
            raise InputError(f"{flag} expects DATASET=VALUE, got '{item}'")
        out[key] = value
    return out


def main(args: argparse.Namespace) -> int:
    if args.what == "sets":
        frames, intervals = _pairs(args.frames, "--frames"), _pairs(args.clip_interval, "--clip-interval")
        written = build_sets(args.condensed, frames, args.compare, args.out, args.max_clips,
                             {ds: int(v) for ds, v in intervals.items()})
    else:
        written = build_curves(args.teachers, args.evals, args.histories, args.out)
    log.info("wrote %d files under %s", len(written), args.out)
    return 0
