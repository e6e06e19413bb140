"""The ``tables`` stage: the paper's Tables 7, 8, 9, 11 and Figure 4 from the evaluation JSONs.

    python -m vdc tables --teachers results/teachers/toy/minic3d.json \\
        --frames toy=results/frames/toy.h5 --out results/tables --config config.yaml

Which runs a cell averages is fixed by the study configuration exactly as Snakemake's
``study_evals()`` requests them: dataset, method, IPC, the method's temporal setting, every seed of
``study.seeds``, the evaluation network, the label type, the configured loss (``ce`` for hard labels)
and CutMix switch. The JSON of each run is looked up at its declared path
(``vdc.config.eval_path``, the function the workflow's targets use; layout in ``PATHS["eval"]``).

Cells show ``mean ± std (n=runs)`` of the accuracy over seeds (sample std, n > 1). The accuracy is
``tables.accuracy``: ``final`` (final-epoch test accuracy, vdc's main number) or ``best_late`` (best of
the late epochs, the reference's selection on the test set), in the dataset's ``metric`` (top1 /
top5). A cell the study requests but with runs missing says so (``— (2/2 seeds missing)`` or
``12.3 (n=1; 1/2 seeds missing)``); rows for methods that were not run show ``—``; vdc never fills a
cell with a number it did not measure. The paper's DM†, MTT†, FRePo† rows (numbers of Wang et al.;
methods vdc does not implement) are kept for the layout and are always ``—``.

Every table is written as Markdown (``tableN.md``, with footnotes) and as a long CSV (``tableN.csv``:
one line per cell with mean, std, n, expected runs and the JSON paths it averages — the link from
each cell back to its runs). Figure 4 is ``figure4.png`` (+ ``figure4.csv``).

Full-dataset row: the teacher's test accuracy (``--teachers``: the teacher metrics JSONs, final epoch).
Ratio ‰ row: N_c·T_c / (N_train · mean source video length) × 1000 with N_c = classes × IPC, T_c of
the study's methods at that IPC (one value per distinct T_c), N_train and the mean length of the
source videos from the frames file (attr ``mean_source_frames_train``, else ``/videos/source_frames``
of the training split) unless ``datasets.<name>.total_frames_mean`` is set.
"""
from __future__ import annotations

import argparse
import csv
import json
import logging
import math
from dataclasses import dataclass, field
from pathlib import Path

import h5py
import numpy as np

from vdc.cli import add_settings_arguments
from vdc.config import ConfigError, eval_path, load_config, method_settings, parse_temporal, validate_config
from vdc.utils import atomic_path, read_json

log = logging.getLogger("vdc.tables")

METHOD_NAMES = {"random": "Random", "herding": "Herding", "rded": "RDED", "edc": "EDC", "datm": "DATM"}
# Table 8's rows in the paper's order; None = a method vdc does not run (numbers of Wang et al.)
PAPER_ROWS = [("random", "Random"), ("herding", "Herding"), ("rded", "RDED"), (None, "DM†"), (None, "MTT†"),
              (None, "FRePo†"), ("edc", "EDC"), ("datm", "DATM")]
ARCH_NAMES = {"minic3d": "MiniC3D", "minic3d_in": "MiniC3D-IN", "r2plus1d_r18": "R(2+1)D", "i3d_r18": "I3D",
              "slowonly_r18": "SlowOnly"}
TABLE7_ARCHS = ["minic3d", "r2plus1d_r18", "i3d_r18", "slowonly_r18"]
DASH = "—"


@dataclass
class Cell:
    """One table cell: the accuracies found, the JSON paths they came from, how many runs were expected."""

    values: list[float] = field(default_factory=list)
    sources: list[str] = field(default_factory=list)
    expected: int = 0          # runs the study requests for this cell (0 = not requested)
    text_override: str | None = None

    @property
    def n(self) -> int:
        return len(self.values)

    @property
    def mean(self) -> float:
        return float(np.mean(self.values)) if self.values else math.nan

    @property
    def std(self) -> float:
        return float(np.std(self.values, ddof=1)) if self.n > 1 else math.nan

    def text(self) -> str:
        if self.text_override is not None:
            return self.text_override
        missing = max(self.expected - self.n, 0)
        if not self.values:
            return f"{DASH} ({missing}/{self.expected} seeds missing)" if self.expected else DASH
        value = f"{self.mean:.1f} ± {self.std:.1f}" if self.n > 1 else f"{self.mean:.1f}"
        note = f"n={self.n}" + (f"; {missing}/{self.expected} seeds missing" if missing else "")
        return f"{value} ({note})"


def fixed(text: str, sources: list[str] | None = None) -> Cell:
    return Cell(sources=sources or [], text_override=text)


@dataclass
class Table:
    name: str
    title: str
    columns: list[str]
    rows: list[tuple[str, list[Cell]]]
    notes: list[str]

    def markdown(self) -> str:
        lines = [f"## {self.title}", "", "| | " + " | ".join(self.columns) + " |",
                 "|---|" + "---|" * len(self.columns)]
        lines += ["| " + label + " | " + " | ".join(c.text() for c in cells) + " |" for label, cells in self.rows]
        return "\n".join(lines + [""] + [f"{note}  " for note in self.notes]) + "\n"

    def write(self, out_dir: Path) -> list[Path]:
        md, csv_path = out_dir / f"{self.name}.md", out_dir / f"{self.name}.csv"
        with atomic_path(md) as tmp:
            tmp.write_text(self.markdown())
        with atomic_path(csv_path) as tmp, open(tmp, "w", newline="") as fh:
            w = csv.writer(fh)
            w.writerow(["row", "column", "cell", "mean", "std", "n", "expected", "sources"])
            for label, cells in self.rows:
                for col, c in zip(self.columns, cells):
                    w.writerow([label, col, c.text(), _num(c.mean), _num(c.std), c.n, c.expected, ";".join(c.sources)])
        return [md, csv_path]


def _num(x: float) -> str:
    return "" if math.isnan(x) else f"{x:.4f}"


class Study:
    """The study configuration plus the evaluation JSONs on disk: answers 'what does this cell show'."""

    def __init__(self, cfg: dict):
        self.cfg = cfg
        self.s = cfg["study"]
        self.accuracy = cfg["tables"]["accuracy"]

    def metric(self, ds: str) -> str:
        return self.cfg["datasets"][ds]["metric"]

    def temporal(self, ds: str, method: str, ipc: int) -> str:
        return method_settings(self.cfg, ds, method, ipc)["temporal"]

    def eval_path(self, ds: str, method: str, ipc: int, seed: int, arch: str, labels: str) -> Path:
        """Where the evaluate stage writes this run (vdc.config.eval_path, as the workflow's targets)."""
        return Path(eval_path(self.cfg, ds, method, ipc, seed, arch, labels))

    def accuracy_of(self, path: Path, ds: str) -> float:
        js = read_json(path)
        metric = self.metric(ds)
        if self.accuracy == "best_late":
            if not js.get("best_late"):
                raise ValueError(f"{path}: no best_late entry; rerun its evaluation or set tables.accuracy: final")
            return float(js["best_late"][metric])
        return float(js[metric])

    def cell(self, ds: str, method: str | None, ipc: int, arch: str, labels: str, requested: bool) -> Cell:
        if method is None or not requested:
            return Cell()
        c = Cell(expected=len(self.s["seeds"]))
        for seed in self.s["seeds"]:
            p = self.eval_path(ds, method, ipc, seed, arch, labels)
            if p.exists():
                c.values.append(self.accuracy_of(p, ds))
                c.sources.append(str(p))
        return c

    def accuracy_note(self) -> str:
        what = ("final-epoch test accuracy" if self.accuracy == "final" else
                "best test accuracy of the late epochs (the reference's model selection on the test set)")
        metrics = ", ".join(f"{ds}: {self.metric(ds)}" for ds in self.s["datasets"])
        return (f"Cells: mean ± std over seeds {self.s['seeds']} (sample std; n = runs found); {what} in % "
                f"({metrics}). Each cell's runs are listed in the CSV's `sources` column.")


# ------------------------------------------------------------------------------------ shared rows

def method_rows(study: Study, with_reported: bool) -> list[tuple[str | None, str]]:
    """(method, label) rows: the paper's methods in its order, then other study methods."""
    rows = [r for r in PAPER_ROWS if with_reported or r[0] is not None]
    known = {m for m, _ in rows}
    return rows + [(m, METHOD_NAMES.get(m, m)) for m in study.s["methods"] if m not in known]


def teacher_accuracy(paths: list[str | Path], study: Study) -> dict[str, tuple[float, str]]:
    """dataset -> (final test accuracy in its metric, metrics JSON path) of each given teacher."""
    out = {}
    for p in paths:
        js = read_json(p)
        ds = js.get("dataset")
        ds = ds.get("name") if isinstance(ds, dict) else ds
        ds = ds or Path(p).parent.name
        if ds in study.cfg["datasets"]:
            out[ds] = (float(js[study.metric(ds)]), str(p))
    return out


def full_row(study: Study, teachers: dict, columns: list[tuple[str, object]]) -> list[Cell]:
    """The teacher's accuracy under the first column of each dataset, blank under the others."""
    cells, seen = [], set()
    for ds, _ in columns:
        if ds in seen:
            cells.append(fixed(""))
            continue
        seen.add(ds)
        acc = teachers.get(ds)
        cells.append(fixed(f"{acc[0]:.1f}", [acc[1]]) if acc else fixed(DASH))
    return cells


def dataset_size(frames_path: str | Path, ds_cfg: dict) -> tuple[int, int, float]:
    """(classes, training videos, mean source video length in frames) of a frames file."""
    with h5py.File(frames_path, "r") as h5:
        train = h5["videos/split"][:] == 0
        k = len(h5["classes"])
        if "total_frames_mean" in ds_cfg:
            mean = float(ds_cfg["total_frames_mean"])
        elif "mean_source_frames_train" in h5.attrs:
            mean = float(h5.attrs["mean_source_frames_train"])
        else:
            mean = float(h5["videos/source_frames"][:][train].mean())
    return k, int(train.sum()), mean


def ratio_row(study: Study, frames: dict[str, str], columns: list[tuple[str, int]]) -> list[Cell]:
    cells = []
    for ds, ipc in columns:
        if ds not in frames:
            cells.append(fixed(DASH))
            continue
        k, n_train, mean = dataset_size(frames[ds], study.cfg["datasets"][ds])
        t_cs = sorted({parse_temporal(study.temporal(ds, m, ipc)).t_c for m in study.s["methods"]})
        vals = [(t, 1000 * k * ipc * t / (n_train * mean)) for t in t_cs]
        text = f"{vals[0][1]:.3g}" if len(vals) == 1 else "; ".join(f"{v:.3g} (T_c={t})" for t, v in vals)
        cells.append(fixed(text, [str(frames[ds])]))
    return cells


# ------------------------------------------------------------------------------------ the tables

def ipc_columns(study: Study) -> list[tuple[str, int]]:
    return [(ds, ipc) for ds in study.s["datasets"] for ipc in study.s["ipc"]]


def label_table(study: Study, teachers: dict, frames: dict, labels: str, name: str, title: str,
                with_ratio: bool, with_reported: bool) -> Table:
    cols = ipc_columns(study)
    arch = study.s["eval_arch"]
    rows = []
    if with_ratio:
        rows.append(("Ratio ‰", ratio_row(study, frames, cols)))
    rows.append(("Full dataset", full_row(study, teachers, cols)))
    requested = labels in study.s["labels"]
    for method, label in method_rows(study, with_reported):
        req = requested and method in study.s["methods"]
        rows.append((label, [study.cell(ds, method, ipc, arch, labels, req) for ds, ipc in cols]))
    notes = [study.accuracy_note(),
             f"Evaluated on {ARCH_NAMES.get(arch, arch)} with {labels} labels "
             f"(loss {study.cfg['evaluate']['loss'] if labels != 'hard' else 'ce'}, "
             f"CutMix {'on' if study.cfg['evaluate']['cutmix'] else 'off'}); condensed with each method's temporal setting.",
             f"Full dataset: the {study.cfg['teacher']['arch']} teacher's final-epoch test accuracy.",
             f"{DASH}: not run in this study."]
    if with_ratio:
        notes.append("Ratio ‰ = N_c·T_c / (N_train · mean source video length) × 1000, N_c = classes × IPC.")
    if with_reported:
        notes.append("† numbers of Wang et al. in the paper; vdc does not implement DM, MTT or FRePo.")
    return Table(name, title, [f"{ds} IPC {ipc}" for ds, ipc in cols], rows, notes)


def table9(study: Study) -> Table:
    ipc = study.s["cross_arch_ipc"]
    cols = [(ds, a) for ds in study.s["datasets"] for a in study.s["cross_arch"]]
    rows = [(label, [study.cell(ds, m, ipc, a, "multisl", m in study.s["methods"]) for ds, a in cols])
            for m, label in method_rows(study, with_reported=False)]
    notes = [study.accuracy_note(),
             f"Cross-architecture: condensed with {study.cfg['teacher']['arch']} as teacher, IPC {ipc}, "
             f"Multi-SL labels, evaluated on each network.", f"{DASH}: not run in this study."]
    return Table("table9", f"Table 9 — cross-architecture generalisation (IPC {ipc}, Multi-SL)",
                 [f"{ds} {ARCH_NAMES.get(a, a)}" for ds, a in cols], rows, notes)


def condensed_networks(study: Study, cells: list[Cell], ds: str, variant: str) -> tuple[list[str], str]:
    """The networks a Table 7 variant condensed with: from its condensed sets' settings when readable."""
    for c in cells:
        for src in c.sources:
            cf = read_json(src).get("condensed_file")
            if cf and Path(cf).exists():
                with h5py.File(cf, "r") as h5:
                    settings = json.loads(h5.attrs["settings"])
                return list(settings.get("networks", [])), "condensed set"
    return list(method_settings(study.cfg, ds, variant).get("networks", [])), "config"


def table7(study: Study) -> Table | None:
    variants = study.s.get("edc_networks", [])
    if not variants:
        return None
    ipc, arch = study.s["edc_networks_ipc"], study.s["eval_arch"]
    cols = [ARCH_NAMES[a] for a in TABLE7_ARCHS] + [f"{ds} accuracy" for ds in study.s["datasets"]]
    rows, origins = [], set()
    for v in variants:
        acc = [study.cell(ds, v, ipc, arch, "multisl", True) for ds in study.s["datasets"]]
        nets, origin = condensed_networks(study, acc, study.s["datasets"][0], v)
        origins.add(origin)
        rows.append((v, [fixed("✓" if a in nets else "") for a in TABLE7_ARCHS] + acc))
    notes = [study.accuracy_note(),
             f"EDC condensation networks (IPC {ipc}), evaluated on {ARCH_NAMES.get(arch, arch)} with Multi-SL labels; "
             f"networks read from the {' / '.join(sorted(origins))} settings.", f"{DASH}: not run in this study."]
    return Table("table7", "Table 7 — condensation networks for EDC", cols, rows, notes)


def figure4(study: Study, out_dir: Path) -> list[Path]:
    """Accuracy vs IPC per method (lines) and label type (panels), one row of panels per dataset."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    dss, labs, ipcs = study.s["datasets"], study.s["labels"], study.s["ipc"]
    fig, axes = plt.subplots(len(dss), len(labs), figsize=(4 * len(labs), 3.2 * len(dss)), squeeze=False)
    lines = []
    for i, ds in enumerate(dss):
        for j, lab in enumerate(labs):
            ax = axes[i][j]
            for m in study.s["methods"]:
                cells = [study.cell(ds, m, ipc, study.s["eval_arch"], lab, True) for ipc in ipcs]
                lines += [[ds, lab, m, ipc, _num(c.mean), _num(c.std), c.n, c.expected, ";".join(c.sources)]
                          for ipc, c in zip(ipcs, cells)]
                pts = [(ipc, c.mean, 0.0 if math.isnan(c.std) else c.std) for ipc, c in zip(ipcs, cells) if c.n]
                if pts:
                    x, y, e = zip(*pts)
                    ax.errorbar(x, y, yerr=e, marker="o", capsize=3, label=METHOD_NAMES.get(m, m))
            ax.set_title(f"{ds} — {lab} labels")
            ax.set_xlabel("IPC")
            ax.set_xticks(ipcs)
            ax.set_ylabel(f"{study.metric(ds)} accuracy (%)")
            ax.grid(alpha=0.3)
            if ax.lines:
                ax.legend(fontsize=8)
    fig.tight_layout()
    png, csv_path = out_dir / "figure4.png", out_dir / "figure4.csv"
    with atomic_path(png, suffix=".png") as tmp:
        fig.savefig(tmp, dpi=120)
    plt.close(fig)
    with atomic_path(csv_path) as tmp, open(tmp, "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["dataset", "labels", "method", "ipc", "mean", "std", "n", "expected", "sources"])
        w.writerows(lines)
    return [png, csv_path]


def build_tables(cfg: dict, teacher_jsons: list[str | Path], frames: dict[str, str],
                 out_dir: str | Path) -> list[Path]:
    """Write every table and Figure 4 into ``out_dir``; returns the files written (table8.md first)."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    study = Study(cfg)
    teachers = teacher_accuracy(teacher_jsons, study)
    tables = [label_table(study, teachers, frames, "soft", "table8",
                          "Table 8 — main results (soft labels)", with_ratio=True, with_reported=True),
              table9(study),
              label_table(study, teachers, frames, "multisl", "table11",
                          "Table 11 — Multi-SL labels", with_ratio=False, with_reported=False),
              table7(study)]
    written = []
    for t in tables:
        if t is not None:
            written += t.write(out_dir)
    return written + figure4(study, out_dir)


# ------------------------------------------------------------------------------------------ CLI

def add_arguments(p: argparse.ArgumentParser) -> None:
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
            raise SystemExit(f"--frames expects DATASET=PATH, got '{item}'")
        frames[ds] = p
    written = build_tables(cfg, args.teachers, frames, args.out)
    for p in written:
        log.info("wrote %s", p)
    print(Path(written[0]).read_text())
    return 0
