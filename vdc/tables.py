"""The ``tables`` stage: every study of vdc/studies.py (the paper's Tables 2–11 and Figure 4, plus the
label learning curves) as Markdown, CSV, LaTeX (booktabs), HTML and a figure, from the evaluation JSONs.

    python -m vdc tables --study table5 --teachers results/teachers/toy/minic3d.json \\
        --frames toy=results/frames/toy.h5 --out results/tables --config config.yaml
    python -m vdc tables --paper --out results/tables --config configs/ucf101.yaml   # side by side

Which runs a cell averages is :func:`vdc.studies.spec` — the function the workflow's targets expand, so a
table and its Snakemake inputs always agree; each run's JSON is read at its declared path
(``vdc.config.eval_path``). Cells show ``mean ± std (n=runs)`` over seeds (sample std, n > 1) of
``tables.accuracy``: ``final`` (final-epoch test accuracy, vdc's main number) or ``best_late`` (best of the
late epochs, the reference's model selection on the test set), in each dataset's ``metric`` (top1 / top5).
A requested cell with runs missing says so (``— (2/2 seeds missing)``, ``12.3 (n=1; 1/2 seeds
missing)``); cells a study does not run show ``—``; vdc never fills a cell with a number it did not
measure. Every table's caption states the datasets and their scale, the seeds and which accuracy it shows.

Files per study ``<name>`` in ``--out``: ``<name>.md`` (caption, table, notes), ``<name>.csv`` (one line
per cell: row, column, text, mean, std, n, expected, the paper keys dataset / row_key / col_key, and the
JSON paths it averages — the link from each cell back to its runs), ``<name>.tex`` (a booktabs table;
needs ``\\usepackage{booktabs,amssymb,textcomp}``), ``<name>.html`` (caption, table and figure, for the
Snakemake report), ``<name>.png`` (a bar chart per ablation; Figure 4's accuracy-vs-IPC lines; the
accuracy-vs-epoch curves of ``label_curves``).

Special cells: Full dataset = the teacher's test accuracy (``--teachers``: teacher metrics JSONs, final
epoch). Ratio ‰ = N_c·T_c / (N_train · mean source video length) × 1000 with N_c = classes × IPC, one value
per distinct T_c of the column's condensed sets; N_train and the mean length from the frames file (attr
``mean_source_frames_train``, else ``/videos/source_frames`` of the training split) unless
``datasets.<name>.total_frames_mean`` is set.

The paper side by side (``--paper``: ``paper.md`` + ``paper.html``): for every study of ``study.tables``
with numbers in ``vdc/paper_numbers.yaml``, each cell next to the paper's number for the same cell and the
difference. A dataset of one of the paper's formats (ucf101, hmdb51, ssv2, k400) is compared with that
dataset; a toy or ``list`` dataset with the dataset the paper ran the table on, marked as a different
scale (compare directions between cells, not values). The paper's numbers are one run each, best of the
late epochs; set ``tables.accuracy: best_late`` to compare like for like.
"""
from __future__ import annotations

import argparse
import base64
import csv
import html
import json
import logging
import math
from dataclasses import dataclass, field
from pathlib import Path

import h5py
import numpy as np
import yaml

from vdc.cli import add_settings_arguments
from vdc.config import ConfigError, load_config, parse_temporal, section, validate_config
from vdc.formats.evaluation import accuracy_by_epoch
from vdc.formats.media import pyplot, save_figure
from vdc.studies import ARCH_NAMES, LABEL_NAMES, STUDIES, STUDY_EXTS, TABLE7_ARCHS, Cell, Spec, Text, spec
from vdc.utils import atomic_path, read_json

log = logging.getLogger("vdc.tables")

DASH = "—"
PAPER_NUMBERS = Path(__file__).with_name("paper_numbers.yaml")
PAPER_FORMATS = ("ucf101", "hmdb51", "ssv2", "k400")
DPI = 110           # of the studies' figures


# ------------------------------------------------------------------------------------ cell values

@dataclass
class Value:
    """What one table cell shows: the accuracies found, the JSON paths they came from, how many runs the
    study requested for it (0 = not run in this study)."""

    values: list[float] = field(default_factory=list)
    sources: list[str] = field(default_factory=list)
    expected: int = 0
    text_override: str | None = None
    keys: tuple[str, str, str] = ("", "", "")      # dataset, row key, column key (the paper's numbers)

    @property
    def n(self) -> int:
        return len(self.values)

    @property
    def mean(self) -> float:
        return float(np.mean(self.values)) if self.values else math.nan

    @property
    def std(self) -> float:
        return float(np.std(self.values, ddof=1)) if self.n > 1 else math.nan

    @property
    def numeric(self) -> bool:
        return self.text_override is None and self.expected > 0

    def text(self) -> str:
        if self.text_override is not None:
            return self.text_override
        missing = max(self.expected - self.n, 0)
        if not self.values:
            return f"{DASH} ({missing}/{self.expected} seeds missing)" if self.expected else DASH
        value = f"{self.mean:.1f} ± {self.std:.1f}" if self.n > 1 else f"{self.mean:.1f}"
        note = f"n={self.n}" + (f"; {missing}/{self.expected} seeds missing" if missing else "")
        return f"{value} ({note})"


def fixed(text: str, sources: list[str] | None = None, keys=("", "", "")) -> Value:
    return Value(sources=sources or [], text_override=text, keys=keys)


def _num(x: float) -> str:
    return "" if math.isnan(x) else f"{x:.4f}"


class Results:
    """The configuration plus what is on disk: evaluation JSONs, teacher metrics, frames files."""

    def __init__(self, cfg: dict, teachers: list[str | Path] = (), frames: dict[str, str] | None = None):
        self.cfg = cfg
        self.accuracy = cfg["tables"]["accuracy"]
        self.frames = frames or {}
        self.teachers = self._teacher_accuracy(teachers)
        self._json: dict[str, dict | None] = {}
        self._sizes: dict[str, tuple[int, int, float]] = {}

    def metric(self, ds: str) -> str:
        return self.cfg["datasets"][ds]["metric"]

    def json(self, path: str) -> dict | None:
        if path not in self._json:
            self._json[path] = read_json(path) if Path(path).exists() else None
        return self._json[path]

    def size(self, ds: str) -> tuple[int, int, float]:
        """:func:`dataset_size` of dataset ``ds``'s frames file (read once)."""
        if ds not in self._sizes:
            self._sizes[ds] = dataset_size(self.frames[ds], self.cfg["datasets"][ds])
        return self._sizes[ds]

    def accuracy_of(self, path: str, ds: str) -> float:
        js = self.json(path)
        if self.accuracy == "best_late":
            if not js.get("best_late"):
                raise ConfigError(f"{path}: no best_late entry; rerun its evaluation or set tables.accuracy: final")
            return float(js["best_late"][self.metric(ds)])
        return float(js[self.metric(ds)])

    def _teacher_accuracy(self, paths) -> dict[str, tuple[float, str]]:
        """dataset -> (final test accuracy in its metric, metrics JSON path) of the main teacher."""
        out = {}
        for p in paths:
            js = read_json(p)
            ds = js.get("dataset")
            ds = ds.get("name") if isinstance(ds, dict) else ds
            ds = ds or Path(p).parent.name
            if ds in self.cfg["datasets"] and js.get("arch", self.cfg["teacher"]["arch"]) == self.cfg["teacher"]["arch"]:
                out[ds] = (float(js[self.metric(ds)]), str(p))
        return out

    def value(self, cell) -> Value:
        if cell is None:
            return Value()
        if isinstance(cell, Text):
            return fixed(cell.text)
        keys = (cell.dataset, cell.row, cell.col)
        if cell.special == "full":
            acc = self.teachers.get(cell.dataset)
            return fixed(f"{acc[0]:.1f}", [acc[1]], keys) if acc else fixed(DASH, keys=keys)
        if cell.special == "ratio":
            return self._ratio(cell, keys)
        v = Value(expected=len(cell.runs), keys=keys)
        for run in cell.runs:
            p = run.eval_path(self.cfg)
            if self.json(p) is not None:
                v.values.append(self.accuracy_of(p, run.dataset))
                v.sources.append(p)
        return v

    def _ratio(self, cell: Cell, keys) -> Value:
        ds = cell.dataset
        if ds not in self.frames:
            return fixed(DASH, keys=keys)
        k, n_train, mean = self.size(ds)
        vals = [(t, 1000 * k * cell.ipc * t / (n_train * mean)) for t in cell.t_cs]
        text = f"{vals[0][1]:.3g}" if len(vals) == 1 else "; ".join(f"{v:.3g} (T_c={t})" for t, v in vals)
        out = fixed(text, [str(self.frames[ds])], keys)
        out.values = [v for _, v in vals]
        return out


def dataset_size(frames_path: str | Path, ds_cfg: dict) -> tuple[int, int, float]:
    """(classes, training videos, mean source video length in frames) of a frames file."""
    with h5py.File(frames_path, "r") as h5:
        train = h5["videos/split"][:] == 0
        k = len(h5["classes"])
        if ds_cfg.get("total_frames_mean"):
            mean = float(ds_cfg["total_frames_mean"])
        elif "mean_source_frames_train" in h5.attrs:
            mean = float(h5.attrs["mean_source_frames_train"])
        else:
            mean = float(h5["videos/source_frames"][:][train].mean())
    return k, int(train.sum()), mean


# ------------------------------------------------------------------------------------ captions

def _fraction(w: float) -> str:
    return "1" if w == 1 else (f"1/{round(1 / w)}" if w < 1 and abs(1 / w - round(1 / w)) < 1e-6 else f"{w:g}")


def scale_note(cfg: dict, ds: str, archs: list[str]) -> str:
    """The dataset and the scale its runs (on networks ``archs``) are at, against the paper's."""
    d = cfg["datasets"][ds]
    ev = section(cfg, ds, "evaluate")
    widths = {a: cfg["models"][a]["width"] for a in archs}
    width = max(widths.values())
    nets = (f"networks at width {_fraction(width)}" if len(set(widths.values())) == 1 else
            "networks at width " + ", ".join(f"{_fraction(w)} ({ARCH_NAMES.get(a, a)})" for a, w in widths.items()))
    if d["format"] == "toy":
        t = d["toy"]
        what = (f"{ds}: synthetic toy data ({t['classes']} classes × {t['train_per_class']} training videos, "
                f"{t['size'][0]}×{t['size'][1]} frames, {d['input_size']}-px input)")
    else:
        what = f"{ds}: {d['format']} data, {d['input_size']}-px input"
    paper = d["format"] in PAPER_FORMATS and all(w == 1 for w in widths.values()) and ev["epochs"] == 300
    scale = ("paper scale" if paper else
             f"{nets}, {ev['epochs']} evaluation epochs (the paper: width 1, 300 epochs on UCF101 / HMDB51 / "
             f"SSv2 / K400)")
    return f"{what}; {scale}"


def spec_archs(cfg: dict, sp: Spec) -> list[str]:
    return sorted({r.arch for r in sp.runs()}) or [cfg["study"]["eval_arch"]]


def caption(cfg: dict, sp: Spec) -> str:
    """Datasets and their scale, seeds, and which accuracy the cells show (from the config alone, so the
    workflow can give the same text to the Snakemake report)."""
    archs = spec_archs(cfg, sp)
    what = ("final-epoch test accuracy" if cfg["tables"]["accuracy"] == "final" else
            "best test accuracy of the late epochs (the reference's model selection on the test set)")
    if sp.figure == "curves":
        what = "test accuracy at each epoch the evaluations recorded"
    metrics = ", ".join(f"{ds}: {cfg['datasets'][ds]['metric']}" for ds in sp.datasets)
    return (f"Datasets — {' | '.join(scale_note(cfg, ds, archs) for ds in sp.datasets)}. "
            f"Seeds {sp.seeds}: mean ± std over seeds (sample std; n = runs found). "
            f"Accuracy: {what} in % ({metrics}).")


def study_caption(cfg: dict, study: str | Spec) -> str:
    """Title and caption of a study (its name, or its :class:`Spec` when already built)."""
    sp = study if isinstance(study, Spec) else spec(cfg, study)
    return f"{sp.title}. {caption(cfg, sp)}"


def chance_levels(res: "Results", sp: Spec) -> dict[str, float]:
    """dataset -> chance accuracy (100/K % top-1, 500/K % top-5) where its frames file is known."""
    out = {}
    for ds in sp.datasets:
        if ds in res.frames:
            k = res.size(ds)[0]
            out[ds] = min(100.0, (100.0 if res.metric(ds) == "top1" else 500.0) / k)
    return out


def chance_note(res: "Results", levels: dict[str, float]) -> str | None:
    """The caption's note of the chance ``levels`` (:func:`chance_levels`)."""
    parts = [f"{ds} {c:.1f} % ({res.metric(ds)})" for ds, c in levels.items()]
    return f"Chance: {'; '.join(parts)}." if parts else None


# ------------------------------------------------------------------------------------ rendered table

@dataclass
class Table:
    name: str
    title: str
    caption: str
    columns: list[str]
    rows: list[tuple[str, list[Value]]]
    notes: list[str]
    references: set[str] = field(default_factory=set)   # row labels drawn as reference lines in the chart
    chance: float | None = None                         # chance accuracy (one dataset), a line in the chart

    def markdown(self) -> str:
        lines = [f"## {self.title}", "", self.caption, "", "| | " + " | ".join(self.columns) + " |",
                 "|---|" + "---|" * len(self.columns)]
        lines += ["| " + label + " | " + " | ".join(c.text() for c in cells) + " |" for label, cells in self.rows]
        return "\n".join(lines + [""] + [f"{note}  " for note in self.notes]) + "\n"

    def write_csv(self, path: Path) -> None:
        with atomic_path(path) as tmp, open(tmp, "w", newline="") as fh:
            w = csv.writer(fh)
            w.writerow(["row", "column", "cell", "mean", "std", "n", "expected", "dataset", "row_key", "col_key",
                        "sources"])
            for label, cells in self.rows:
                for col, c in zip(self.columns, cells):
                    w.writerow([label, col, c.text(), _num(c.mean) if c.numeric else "", _num(c.std), c.n, c.expected,
                                *c.keys, ";".join(c.sources)])

    def latex(self) -> str:
        cols = "l" + "c" * len(self.columns)
        lines = ["% vdc table (booktabs); needs \\usepackage{booktabs,amssymb,textcomp}", "\\begin{table}[t]",
                 "\\centering", f"\\caption{{{tex(self.title)}. {tex(self.caption)}}}",
                 f"\\label{{tab:vdc-{self.name}}}", "\\resizebox{\\linewidth}{!}{%", f"\\begin{{tabular}}{{{cols}}}",
                 "\\toprule", " & " + " & ".join(tex(c) for c in self.columns) + " \\\\", "\\midrule"]
        for label, cells in self.rows:
            lines.append(tex(label) + " & " + " & ".join(tex(c.text()) for c in cells) + " \\\\")
        lines += ["\\bottomrule", "\\end{tabular}}", "\\par\\smallskip\\footnotesize " + tex(" ".join(self.notes)),
                  "\\end{table}"]
        return "\n".join(lines) + "\n"

    def html(self, figure: Path | None = None) -> str:
        head = "".join(f"<th>{html.escape(c)}</th>" for c in self.columns)
        body = "".join("<tr><th>" + html.escape(label) + "</th>" + "".join(
            f"<td{' class=missing' if 'missing' in c.text() or c.text() == DASH else ''}>{html.escape(c.text())}</td>"
            for c in cells) + "</tr>" for label, cells in self.rows)
        img = ""
        if figure is not None and figure.exists():
            img = f'<img alt="{html.escape(self.title)}" src="data:image/png;base64,' \
                  f'{base64.b64encode(figure.read_bytes()).decode()}">'
        notes = "".join(f"<li>{html.escape(n)}</li>" for n in self.notes)
        return (f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>{html.escape(self.title)}</title>"
                f"<style>{HTML_STYLE}</style></head><body><h2>{html.escape(self.title)}</h2>"
                f"<p class=caption>{html.escape(self.caption)}</p><table><thead><tr><th></th>{head}</tr></thead>"
                f"<tbody>{body}</tbody></table><ul class=notes>{notes}</ul>{img}</body></html>\n")


HTML_STYLE = ("body{font-family:sans-serif;margin:1em;color:#222} table{border-collapse:collapse;margin:.5em 0} "
              "th,td{padding:.25em .6em;border-bottom:1px solid #ccc;text-align:center;white-space:nowrap} "
              "tbody th{text-align:left;font-weight:normal} thead th{border-bottom:2px solid #444} "
              "td.missing{color:#999} .caption{max-width:60em} .notes{font-size:90%;color:#444;max-width:60em} "
              "img{max-width:100%}")

_TEX = {"\\": "\\textbackslash{}", "&": "\\&", "%": "\\%", "$": "\\$", "#": "\\#", "_": "\\_", "{": "\\{",
        "}": "\\}", "~": "\\textasciitilde{}", "^": "\\textasciicircum{}", "±": "$\\pm$", "—": "---",
        "†": "$^\\dagger$", "✓": "$\\checkmark$", "‰": "\\textperthousand{}", "×": "$\\times$", "·": "$\\cdot$",
        "≥": "$\\geq$", "≤": "$\\leq$", "−": "$-$", "–": "--"}


def tex(text: str) -> str:
    """Plain text as LaTeX (special characters escaped, the symbols the tables use as math)."""
    return "".join(_TEX.get(ch, ch) for ch in text)


def render(res: Results, sp: Spec) -> Table:
    if sp.figure == "curves":
        return _render_curves(res, sp)
    rows = [(r.label, [res.value(c) for c in r.cells]) for r in sp.rows]
    notes = list(sp.notes)
    if sp.name == "table7":
        rows, origin = _table7_networks(res, sp, rows)
        notes.append(f"✓ columns: the networks each variant condensed with, read from the {origin}.")
    if sp.name == "table6":
        notes.append(_iterations_note(res, sp))
    levels = chance_levels(res, sp)
    chance = chance_note(res, levels)
    notes += ([chance] if chance else []) + [
        f"{DASH}: not run in this study; '(k/n seeds missing)': requested runs whose JSON is not there.",
        "Each cell's runs (JSON paths) are in the CSV's `sources` column."]
    return Table(sp.name, sp.title, caption(res.cfg, sp), sp.columns, rows, notes,
                 references={r.label for r in sp.rows if r.reference},
                 chance=next(iter(levels.values())) if len(set(levels.values())) == 1 and levels else None)


def _table7_networks(res: Results, sp: Spec, rows):
    """Table 7's ✓ marks from the condensed sets' own settings when readable, else the config's."""
    origins, out = set(), []
    for (label, values), row in zip(rows, sp.rows):
        nets = None
        for c in row.cells:
            if isinstance(c, Cell) and c.runs:
                for v in (res.json(r.eval_path(res.cfg)) for r in c.runs):
                    cf = (v or {}).get("condensed_file")
                    if cf and Path(cf).exists():
                        with h5py.File(cf, "r") as h5:
                            nets = json.loads(h5.attrs["settings"]).get("networks", [])
                        break
            if nets is not None:
                break
        if nets is None:
            origins.add("config")
            out.append((label, values))
        else:
            origins.add("condensed sets")
            out.append((label, [fixed("✓" if a in nets else "") for a in TABLE7_ARCHS] + values[len(TABLE7_ARCHS):]))
    return out, " / ".join(sorted(origins))


def _iterations_note(res: Results, sp: Spec) -> str:
    """Table 6 keeps the training iterations fixed: say what the runs did."""
    found = {}
    for c in sp.cells():
        for r in c.runs:
            js = res.json(r.eval_path(res.cfg))
            if js and "iters_per_epoch" in js:
                found.setdefault(js["iters_per_epoch"], []).append(f"[{r.ipc}, {parse_temporal(r.temporal).t_c}]")
    if not found:
        return "Iterations per epoch: no run found yet."
    if len(found) == 1:
        return f"Iterations per epoch: {next(iter(found))} in every run (fixed, as the paper keeps them)."
    return "Iterations per epoch DIFFER between columns: " + "; ".join(
        f"{k} in {', '.join(sorted(set(v)))}" for k, v in sorted(found.items()))


def _render_curves(res: Results, sp: Spec) -> Table:
    """label_curves: one column per test epoch any run recorded, mean ± std over seeds."""
    per_row = []
    epochs: set[int] = set()
    for r in sp.rows:
        cell = r.cells[0]
        series = []
        for run in cell.runs:
            js = res.json(run.eval_path(res.cfg))
            if js is not None:
                series.append((run.eval_path(res.cfg), accuracy_by_epoch(js, res.metric(run.dataset))))
                epochs.update(series[-1][1])
        per_row.append((r.label, cell, series))
    epochs_sorted = sorted(epochs)
    rows = []
    for label, cell, series in per_row:
        values = []
        for e in epochs_sorted:
            v = Value(expected=len(cell.runs), keys=(cell.dataset, cell.row, str(e)))
            for src, pts in series:
                if e in pts:
                    v.values.append(pts[e])
                    v.sources.append(src)
            values.append(v if series else Value(expected=len(cell.runs), keys=v.keys))
        if not epochs_sorted:
            values = [Value(expected=len(cell.runs), keys=(cell.dataset, cell.row, "curve"))]
        rows.append((label, values))
    columns = [f"epoch {e}" for e in epochs_sorted] or ["test accuracy"]
    chance = chance_note(res, chance_levels(res, sp))
    notes = list(sp.notes) + ([chance] if chance else []) + [
        "Epochs are 0-based, as in the evaluation JSONs.",
        f"{DASH} (k/n seeds missing): requested runs whose JSON is not there."]
    return Table(sp.name, sp.title, caption(res.cfg, sp), columns, rows, notes)


# ------------------------------------------------------------------------------------ figures

def bar_chart(table: Table, path: Path, ylabel: str) -> None:
    """Grouped bars: one group per row, one bar per numeric column, error bars = std over seeds."""
    plt = pyplot()
    cols = [j for j, _ in enumerate(table.columns) if any(cells[j].numeric for _, cells in table.rows)]
    refs = [(label, c) for label, cells in table.rows if label in table.references for c in cells if c.n]
    rows = [(label, cells) for label, cells in table.rows
            if label not in table.references and any(cells[j].numeric for j in cols)]
    fig, ax = plt.subplots(figsize=(max(5.0, 0.5 * len(cols) * len(rows) + 2), 3.6))
    width = 0.8 / max(len(cols), 1)
    for k, j in enumerate(cols):
        xs, ys, es = [], [], []
        for i, (_, cells) in enumerate(rows):
            c = cells[j]
            if c.n:
                xs.append(i + (k - (len(cols) - 1) / 2) * width)
                ys.append(c.mean)
                es.append(0.0 if math.isnan(c.std) else c.std)
        ax.bar(xs, ys, width * 0.95, yerr=es, capsize=2, label=table.columns[j])
    for label, c in refs:
        ax.axhline(c.mean, color="black", ls="--", lw=1, label=f"{label}: {c.mean:.1f}")
    if table.chance is not None:
        ax.axhline(table.chance, color="grey", ls=":", lw=1, label=f"chance: {table.chance:.1f}")
    ax.set_xticks(range(len(rows)))
    ax.set_xticklabels([label for label, _ in rows], fontsize=8, rotation=20 if len(rows) > 6 else 0)
    ax.set_ylabel(ylabel)
    ax.set_title(table.title, fontsize=10)
    ax.grid(axis="y", alpha=0.3)
    if cols:
        ax.legend(fontsize=7, ncol=min(len(cols) + len(refs) + 1, 4))
    if not any(c.n for _, cells in rows for c in cells):
        ax.text(0.5, 0.5, "no runs found yet", transform=ax.transAxes, ha="center")
    fig.tight_layout()
    save_figure(fig, path, DPI)


def ipc_lines(res: Results, sp: Spec, path: Path) -> None:
    """Figure 4: accuracy vs IPC per method (lines), one panel per dataset and label type."""
    plt = pyplot()
    s = res.cfg["study"]
    dss, labs, ipcs = sp.datasets, s["labels"], s["ipc"]
    fig, axes = plt.subplots(len(dss), len(labs), figsize=(4 * len(labs), 3.2 * len(dss)), squeeze=False)
    by = {}
    for c in sp.cells():
        r = c.runs[0]
        by[(r.dataset, r.labels, r.method, r.ipc)] = res.value(c)
    for i, ds in enumerate(dss):
        for j, lab in enumerate(labs):
            ax = axes[i][j]
            for m in s["methods"]:
                pts = [(ipc, by[(ds, lab, m, ipc)]) for ipc in ipcs if by.get((ds, lab, m, ipc)) is not None]
                pts = [(ipc, v.mean, 0.0 if math.isnan(v.std) else v.std) for ipc, v in pts if v.n]
                if pts:
                    x, y, e = zip(*pts)
                    ax.errorbar(x, y, yerr=e, marker="o", capsize=3, label=_row_method(sp, m))
            ax.set_title(f"{ds} — {LABEL_NAMES[lab]} labels")
            ax.set_xlabel("IPC")
            ax.set_xticks(ipcs)
            ax.set_ylabel(f"{res.metric(ds)} accuracy (%)")
            ax.grid(alpha=0.3)
            if ax.lines:
                ax.legend(fontsize=8)
    fig.tight_layout()
    save_figure(fig, path, DPI)


def _row_method(sp: Spec, method: str) -> str:
    for r in sp.rows:
        for c in r.cells:
            if isinstance(c, Cell) and c.runs and c.runs[0].method == method:
                return r.label.split(" · ")[0]
    return method


def curves_figure(res: Results, sp: Spec, path: Path) -> None:
    """label_curves: test accuracy against epoch per label type (mean ± std band over seeds)."""
    plt = pyplot()
    dss = sp.datasets
    levels = chance_levels(res, sp)
    fig, axes = plt.subplots(1, len(dss), figsize=(5.5 * len(dss), 3.6), squeeze=False)
    for k, ds in enumerate(dss):
        ax = axes[0][k]
        for r in sp.rows:
            cell = r.cells[0]
            if cell.dataset != ds:
                continue
            series = [accuracy_by_epoch(js, res.metric(ds)) for js in
                      (res.json(run.eval_path(res.cfg)) for run in cell.runs) if js is not None]
            epochs = sorted(set().union(*series)) if series else []
            if not epochs:
                continue
            mean = np.array([np.mean([s[e] for s in series if e in s]) for e in epochs])
            std = np.array([np.std([s[e] for s in series if e in s], ddof=1) if sum(e in s for s in series) > 1
                            else 0.0 for e in epochs])
            line, = ax.plot(epochs, mean, marker=".", label=f"{r.label.split(' · ')[-1]} (n={len(series)})")
            ax.fill_between(epochs, mean - std, mean + std, color=line.get_color(), alpha=0.2)
        run = next((c.runs[0] for c in sp.cells() if c.dataset == ds and c.runs), None)
        chance = levels.get(ds)
        if chance is not None:
            ax.axhline(chance, color="grey", ls=":", lw=1, label=f"chance {chance:.1f}")
        ax.set_xlabel("evaluation epoch (0-based)")
        ax.set_ylabel(f"test {res.metric(ds)} accuracy (%)")
        if run is not None:
            ax.set_title(f"{ds}: {run.method}, IPC {run.ipc}, {run.temporal}, {ARCH_NAMES.get(run.arch, run.arch)}",
                         fontsize=9)
        ax.grid(alpha=0.3)
        if ax.lines:
            ax.legend(fontsize=8)
        else:
            ax.text(0.5, 0.5, "no runs found yet", transform=ax.transAxes, ha="center")
    fig.tight_layout()
    save_figure(fig, path, DPI)


# ------------------------------------------------------------------------------------ one study

def build_study(res: Results, name: str, out_dir: str | Path) -> list[Path]:
    """Write study ``name``'s files into ``out_dir``; returns them (the .md first)."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    sp = spec(res.cfg, name)
    table = render(res, sp)
    files = {ext: out_dir / f"{name}.{ext}" for ext in STUDY_EXTS}
    png = files["png"]
    if sp.figure == "ipc_lines":
        ipc_lines(res, sp, png)
    elif sp.figure == "curves":
        curves_figure(res, sp, png)
    else:
        metrics = sorted({res.metric(ds) for ds in sp.datasets})
        bar_chart(table, png, f"{' / '.join(metrics)} accuracy (%)")
    with atomic_path(files["md"]) as tmp:
        tmp.write_text(table.markdown())
    table.write_csv(files["csv"])
    with atomic_path(files["tex"]) as tmp:
        tmp.write_text(table.latex())
    with atomic_path(files["html"]) as tmp:
        tmp.write_text(table.html(png))
    return list(files.values())


def build_tables(cfg: dict, teacher_jsons: list[str | Path], frames: dict[str, str], out_dir: str | Path,
                 names: list[str] | None = None) -> list[Path]:
    """Write the studies ``names`` (default: study.tables); returns the files written."""
    res = Results(cfg, teacher_jsons, frames)
    written = []
    for name in names or cfg["study"]["tables"]:
        written += build_study(res, name, out_dir)
    return written


# ------------------------------------------------------------------------------------ the paper side by side

def load_paper_numbers() -> dict:
    with open(PAPER_NUMBERS) as fh:
        return yaml.safe_load(fh)


def _paper_dataset(cfg: dict, ds: str, entry: dict) -> tuple[str, bool]:
    """(the paper dataset a run dataset is compared with, whether it is the same dataset)."""
    fmt = cfg["datasets"][ds]["format"]
    if fmt in PAPER_FORMATS and fmt in entry:
        return fmt, True
    return entry["compare_with"], False


def paper_side_by_side(cfg: dict, teacher_jsons, frames: dict[str, str], out_dir: str | Path,
                       names: list[str] | None = None) -> list[Path]:
    """``paper.md`` / ``paper.html``: every cell with a paper number next to this run's."""
    paper = load_paper_numbers()
    res = Results(cfg, teacher_jsons, frames)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    sections, html_sections = [], []
    for name in names or cfg["study"]["tables"]:
        entry = paper["tables"].get(name)
        if entry is None:
            continue
        sp = spec(cfg, name)
        table = render(res, sp)
        lines, compared = [], {}
        for label, values in table.rows:
            for col, v in zip(table.columns, values):
                ds, row_key, col_key = v.keys
                if not ds:
                    continue
                pds, same = _paper_dataset(cfg, ds, entry)
                number = entry.get(pds, {}).get(row_key, {}).get(col_key)
                if number is None:
                    continue
                compared[ds] = (pds, same)
                if not same:
                    diff = "other scale"
                else:
                    diff = f"{v.mean - float(number):+.1f}" if v.n and v.text_override is None else ""
                lines.append((f"{label} · {col}", v.text(), f"{float(number):g}", diff))
        if not lines:
            continue
        heads = "; ".join(
            f"vdc {ds} vs the paper's {paper['datasets'][p]}" + ("" if same else
                                                              " — DIFFERENT SCALE: compare the direction between "
                                                              "cells, not the values")
            for ds, (p, same) in compared.items())
        scale = "; ".join(f"{scale_note(cfg, ds, spec_archs(cfg, sp))} | paper: {paper['scale'][p]}"
                          for ds, (p, _) in compared.items())
        md = [f"## {sp.title}", "", f"{heads}.  ", f"Scale: {scale}.  ",
              f"vdc: {res.accuracy} accuracy, seeds {sp.seeds}; the paper: one run, best of the late epochs "
              f"({', '.join(sorted({paper['metric'][p] for p, _ in compared.values()}))}).", "",
              "| cell | vdc | paper | vdc − paper |", "|---|---|---|---|"]
        md += [f"| {a} | {b} | {c} | {d} |" for a, b, c, d in lines]
        sections.append("\n".join(md) + "\n")
        rows = "".join(f"<tr><th>{html.escape(a)}</th><td>{html.escape(b)}</td><td>{c}</td><td>{d}</td></tr>"
                       for a, b, c, d in lines)
        html_sections.append(f"<h2>{html.escape(sp.title)}</h2><p class=caption>{html.escape(heads)}.<br>"
                             f"Scale: {html.escape(scale)}.</p><table><thead><tr><th>cell</th><th>vdc</th>"
                             f"<th>paper</th><th>vdc − paper</th></tr></thead><tbody>{rows}</tbody></table>")
    intro = ("# The paper side by side\n\nEach cell of this run next to the paper's number for the same cell "
             "(vdc/paper_numbers.yaml, from the paper's tables). A dataset vdc ran at another scale than the "
             "paper (the toy data, reduced widths or epochs) is marked: its values are not comparable, the "
             "order between cells is.\n\n")
    md_path, html_path = out_dir / "paper.md", out_dir / "paper.html"
    with atomic_path(md_path) as tmp:
        tmp.write_text(intro + ("\n".join(sections) if sections else "No study of this run has paper numbers.\n"))
    with atomic_path(html_path) as tmp:
        tmp.write_text(f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>The paper side by side</title>"
                       f"<style>{HTML_STYLE}</style></head><body><h1>The paper side by side</h1>"
                       f"<p class=caption>{html.escape(intro.splitlines()[2])}</p>{''.join(html_sections)}"
                       f"</body></html>\n")
    return [md_path, html_path]


# ------------------------------------------------------------------------------------------ CLI

def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--study", action="append", choices=STUDIES, metavar="NAME",
                   help=f"a study to build (repeatable; default: study.tables). One of: {', '.join(STUDIES)}")
    p.add_argument("--paper", action="store_true", help="write the paper side by side (paper.md, paper.html) "
                                                        "for the studies instead of the tables")
    p.add_argument("--teachers", nargs="*", default=[], help="teacher metrics JSONs (the Full-dataset row)")
    p.add_argument("--frames", nargs="*", default=[], metavar="DATASET=PATH", help="frames files (the ratio row)")
    p.add_argument("--out", required=True, help="output folder")
    add_settings_arguments(p)  # --settings: the study configuration as JSON; or --config config.yaml


def main(args: argparse.Namespace) -> int:
    if args.settings:
        try:
            cfg = validate_config(json.loads(args.settings), "--settings")
        except json.JSONDecodeError as exc:
            raise ConfigError(f"--settings is not valid JSON: {exc}") from None
    else:
        cfg = load_config(args.config)
    frames = {}
    for item in args.frames:
        ds, sep, p = item.partition("=")
        if not sep:
            raise ConfigError(f"--frames expects DATASET=PATH, got '{item}'")
        frames[ds] = p
    if args.paper:
        written = paper_side_by_side(cfg, args.teachers, frames, args.out, args.study)
    else:
        written = build_tables(cfg, args.teachers, frames, args.out, args.study)
    for p in written:
        log.info("wrote %s", p)
    for p in written:
        if p.suffix == ".md":
            print(p.read_text())
    return 0
