"""Studies: each table and figure of the paper as a named piece of configuration that expands to exactly
the evaluation runs its cells need.

A **run** is one evaluation: (dataset, method or method variant, IPC, temporal setting, seed, evaluation
network, labels, loss, CutMix). It lives at ``vdc.config.eval_path(cfg, ...)`` (layout
``PATHS["eval"]``), and the condensed set it trains on at ``PATHS["condensed"]`` — the same files for
every study that needs them, so a run two studies share is computed once. Temporal tags are explicit in
every run and canonical: sampling is ``naive`` when T_c <= clip_len (segment and sliding windows then
cover the whole video, ``vdc.data.clips.condensed_frame_indices``) and interpolation is ``none`` when
T_c >= clip_len (nothing to fill), so two spellings of one computation share one file.

A study is a :class:`Spec`: a grid of rows x columns whose cells are

* :class:`Cell` with ``runs`` — the runs it averages (one per seed), and the ``(dataset, row, col)``
  keys under which the paper's number for the same cell is filed (``vdc/paper_numbers.yaml``);
* :class:`Cell` with ``special`` — ``ratio`` (Table 8's Ratio ‰ row) or ``full`` (the teacher's
  accuracy, the "Full dataset" row), filled by the tables stage from the frames / teacher files;
* :class:`Text` — fixed text (Table 7's ✓ marks, blanks);
* ``None`` — a cell the study does not run (``—``; the paper's DM† / MTT† / FRePo† rows).

Studies (``studies.<name>`` in the config; datasets / seeds / arch default to ``study.*``):

==============  ==============================================================================
table2          rows methods (EDC† = ``edc_dagger``, DATM, RDED) x columns labels x CutMix w/ / w/o
table3          rows methods x columns (soft, Multi-SL) x (KL, MSE-GT); no CutMix
table4, table10 rows temporal settings (naive / segment / sliding / sliding + linear) x methods
table5          rows methods x columns interpolation none (T_c 8) / dup / linear (T_c 4)
table6          rows datasets x columns [IPC, T_c] at a fixed frame budget, one method (RDED)
table7          rows EDC variants (``study.edc_networks``) x the networks they condense with + accuracy
table8, table11 rows methods x columns (dataset, IPC); soft (8, + Ratio ‰) and Multi-SL (11) labels
table9          rows methods x columns (dataset, evaluation network); Multi-SL at study.cross_arch_ipc
figure4         rows (method, label type) x columns (dataset, IPC): the data of the line plot
label_curves    rows label types on one condensed set; the tables stage adds columns per test epoch
==============  ==============================================================================

:func:`spec` builds one study, :func:`study_runs` the union of runs of several, :func:`check` lists the
config problems of the default studies (``study.tables``).
"""
from __future__ import annotations

from dataclasses import dataclass, field

from vdc.config import ConfigError, labeler_arch, method_settings, parse_temporal, path, section

STUDIES = ("table2", "table3", "table4", "table5", "table6", "table7", "table8", "table9", "table10", "table11",
           "figure4", "label_curves")
ABLATIONS = ("table2", "table3", "table4", "table5", "table6", "table7", "table10")
# The files the tables stage writes per study, <name>.<ext> (vdc/tables.py; the workflow's targets).
STUDY_EXTS = ("md", "csv", "tex", "html", "png")

METHOD_NAMES = {"full": "Full data", "random": "Random", "herding": "Herding", "rded": "RDED", "edc": "EDC",
                "datm": "DATM", "edc_dagger": "EDC†",
                "herding_argmax": "Herding (DeepCore argmax)"}
# Table 8's rows in the paper's order; None = a method vdc does not run (numbers of Wang et al.)
PAPER_ROWS = [("random", "Random"), ("herding", "Herding"), ("rded", "RDED"), (None, "DM†"), (None, "MTT†"),
              (None, "FRePo†"), ("edc", "EDC"), ("datm", "DATM")]
# = vdc.models.DISPLAY_NAMES (tests/test_models.py); a copy because this module must not import torch
# (the workflow imports it in every snakemake invocation).
ARCH_NAMES = {"minic3d": "MiniC3D", "minic3d_in": "MiniC3D-IN", "r2plus1d_r18": "R(2+1)D", "i3d_r18": "I3D",
              "slowonly_r18": "SlowOnly"}
TABLE7_ARCHS = ["minic3d", "r2plus1d_r18", "i3d_r18", "slowonly_r18"]
LABEL_NAMES = {"hard": "Hard", "soft": "Soft", "multisl": "Multi-SL"}
LOSS_NAMES = {"ce": "CE", "kl": "KL", "msegt": "MSE-GT"}
TITLES = {
    "table2": "Table 2 — CutMix × label type",
    "table3": "Table 3 — loss function × label type",
    "table4": "Table 4 — temporal processing (sampling, interpolation)",
    "table5": "Table 5 — interpolation",
    "table6": "Table 6 — IPC vs T_c at a fixed frame budget",
    "table7": "Table 7 — condensation networks for EDC",
    "table8": "Table 8 — main results (soft labels)",
    "table9": "Table 9 — cross-architecture generalisation",
    "table10": "Table 10 — temporal processing (the Table 4 study on a second dataset)",
    "table11": "Table 11 — main results with Multi-SL labels",
    "figure4": "Figure 4 — accuracy vs IPC per label type",
    "label_curves": "Learning curves — test accuracy over the evaluation epochs per label type",
}


# ----------------------------------------------------------------------------------------- runs

@dataclass(frozen=True, order=True)
class Run:
    """One evaluation run; its JSON is :meth:`eval_path`, its condensed set :meth:`condensed_path`."""

    dataset: str
    method: str
    ipc: int
    temporal: str
    seed: int
    arch: str
    labels: str
    loss: str
    cutmix: bool

    def eval_path(self, cfg: dict) -> str:
        return path("eval", results=cfg["results"], dataset=self.dataset, method=self.method, ipc=self.ipc,
                    temporal=self.temporal, seed=self.seed, arch=self.arch, labels=self.labels, loss=self.loss,
                    cutmix="cutmix" if self.cutmix else "nocutmix")

    def condensed_path(self, cfg: dict) -> str:
        return path("condensed", results=cfg["results"], dataset=self.dataset, method=self.method,
                    ipc=self.ipc, temporal=self.temporal, seed=self.seed)


def canonical_temporal(tag: str, clip_len: int) -> str:
    """The one spelling of a temporal setting: naive sampling when T_c <= clip_len (segment and sliding
    windows are then the whole video), no interpolation when T_c >= clip_len (nothing to fill)."""
    t = parse_temporal(tag)
    sampling = "naive" if t.t_c <= clip_len else t.sampling
    interp = "none" if t.t_c >= clip_len else t.interpolation
    return f"tc{t.t_c}-{sampling}-{interp}"


def make_run(cfg: dict, dataset: str, method: str, ipc: int, seed: int, arch: str, labels: str,
             loss: str | None = None, cutmix: bool | None = None, temporal: str | None = None) -> Run:
    """A run with the study's defaults filled in: loss ``ce`` for hard labels, else ``loss`` or
    evaluate.loss; CutMix evaluate.cutmix; temporal the method's own setting; the tag made canonical."""
    if dataset not in cfg["datasets"]:
        raise ConfigError(f"dataset '{dataset}' is not under datasets (defined: {', '.join(cfg['datasets'])})")
    if method not in cfg["methods"]:
        hint = " (EDC† is `edc_dagger: {base: edc, class_wise: false}`)" if method == "edc_dagger" else ""
        raise ConfigError(f"method '{method}' has no entry under methods (defined: {', '.join(cfg['methods'])}); "
                          f"add it under methods{hint} or remove it from the study")
    ev = section(cfg, dataset, "evaluate")
    loss = "ce" if labels == "hard" else (loss or ev["loss"])
    cutmix = bool(ev["cutmix"] if cutmix is None else cutmix)
    temporal = temporal or method_settings(cfg, dataset, method, int(ipc))["temporal"]
    temporal = canonical_temporal(temporal, int(cfg["datasets"][dataset]["clip_len"]))
    return Run(dataset, method, int(ipc), temporal, int(seed), arch, labels, loss, cutmix)


# ----------------------------------------------------------------------------------------- specs

@dataclass(frozen=True)
class Cell:
    """A cell of runs (mean ± std over ``runs``) or a ``special`` value; ``(dataset, row, col)`` are the keys
    of the paper's number for the same cell."""

    dataset: str
    row: str
    col: str
    runs: tuple[Run, ...] = ()
    special: str | None = None          # "ratio" | "full"
    t_cs: tuple[int, ...] = ()          # ratio: the T_c values of the condensed sets in this column
    ipc: int = 0                        # ratio: the column's IPC


@dataclass(frozen=True)
class Text:
    text: str


@dataclass
class Row:
    label: str
    cells: list
    reference: bool = False             # a reference level (the full-data run), drawn as a line, not a bar


@dataclass
class Spec:
    """One study: what each cell averages, plus the notes of its caption (what is fixed, what varies)."""

    name: str
    title: str
    columns: list[str]
    rows: list[Row]
    datasets: list[str]
    seeds: list[int]
    notes: list[str] = field(default_factory=list)
    figure: str = "bars"                # bars | ipc_lines (Figure 4) | curves (label_curves)

    def cells(self) -> list[Cell]:
        return [c for r in self.rows for c in r.cells if isinstance(c, Cell)]

    def runs(self) -> list[Run]:
        return sorted({run for c in self.cells() for run in c.runs})


def method_label(cfg: dict, method: str) -> str:
    if method in METHOD_NAMES:
        return METHOD_NAMES[method]
    base = cfg["methods"].get(method, {}).get("base")
    return f"{method} ({METHOD_NAMES.get(base, base)} variant)" if base else method


def _common(cfg: dict, name: str) -> tuple[dict, list[str], list[int], str]:
    st = cfg["studies"][name]
    datasets = st.get("datasets") or cfg["study"]["datasets"]
    seeds = st.get("seeds") or cfg["study"]["seeds"]
    arch = st.get("arch") or cfg["study"]["eval_arch"]
    return st, list(datasets), list(seeds), arch


def _cell(cfg, ds, row, col, seeds, **run) -> Cell:
    return Cell(ds, row, col, tuple(make_run(cfg, ds, seed=s, **run) for s in seeds))


def _prefix(datasets: list[str], ds: str, label: str) -> str:
    """Row / column label, with its dataset when the study spans several."""
    return f"{ds} · {label}" if len(datasets) > 1 else label


def _eval_note(cfg: dict, ds: str, arch: str, labels: str | None = None, show_loss: bool = True,
               show_cutmix: bool = True) -> str:
    """What the study's evaluations fix: network, labels, loss, CutMix (those a study varies left out)."""
    ev = section(cfg, ds, "evaluate")
    parts = [f"evaluated on {ARCH_NAMES.get(arch, arch)}"]
    if labels:
        parts.append(f"{LABEL_NAMES[labels]} labels")
    if show_loss:
        parts.append(f"loss {LOSS_NAMES[ev['loss']]} (CE for hard labels)")
    if show_cutmix:
        parts.append(f"CutMix {'on' if ev['cutmix'] else 'off'}")
    return ", ".join(parts)


def _labeler_note(cfg: dict, ds: str, arch: str) -> str:
    lab = section(cfg, ds, "evaluate")["labeler_arch"]
    if lab == "student":
        return "soft / Multi-SL labels from a teacher of each student's own architecture"
    return f"soft / Multi-SL labels from the {ARCH_NAMES.get(labeler_arch(cfg, ds, arch), lab)} teacher"


def _temporal_note(temporal: str | None) -> str:
    return (f"every condensed set at temporal setting {temporal}" if temporal else
            "each method at its own temporal setting (methods.<name>.temporal)")


def _table2(cfg: dict) -> Spec:
    st, dss, seeds, arch = _common(cfg, "table2")
    combos = [(lab, c) for lab in st["labels"] for c in (True, False)]
    cols = [f"{LABEL_NAMES[lab]} {'w/' if c else 'w/o'}" for lab, c in combos]
    rows = [Row(_prefix(dss, ds, method_label(cfg, m)),
                [_cell(cfg, ds, m, f"{lab}/{'cutmix' if c else 'nocutmix'}", seeds, method=m, ipc=st["ipc"],
                       arch=arch, labels=lab, cutmix=c, temporal=st["temporal"]) for lab, c in combos])
            for ds in dss for m in st["methods"]]
    notes = [f"IPC {st['ipc']}, {_temporal_note(st['temporal'])}; {_eval_note(cfg, dss[0], arch, show_cutmix=False)}; "
             f"columns: CutMix with (w/) and without (w/o).", "EDC† = EDC without the category-wise matching terms."]
    return Spec("table2", TITLES["table2"], cols, rows, dss, seeds, notes)


def _table3(cfg: dict) -> Spec:
    st, dss, seeds, arch = _common(cfg, "table3")
    combos = [(lab, loss) for lab in st["labels"] for loss in st["losses"]]
    cols = [f"{LABEL_NAMES[lab]} {LOSS_NAMES[loss]}" for lab, loss in combos]
    rows = [Row(_prefix(dss, ds, method_label(cfg, m)),
                [_cell(cfg, ds, m, f"{lab}/{loss}", seeds, method=m, ipc=st["ipc"], arch=arch, labels=lab,
                       loss=loss, temporal=st["temporal"]) for lab, loss in combos])
            for ds in dss for m in st["methods"]]
    notes = [f"IPC {st['ipc']}, {_temporal_note(st['temporal'])}; {_eval_note(cfg, dss[0], arch, show_loss=False)}.",
             "EDC† = EDC without the category-wise matching terms."]
    return Spec("table3", TITLES["table3"], cols, rows, dss, seeds, notes)


def _sampling_table(cfg: dict, name: str) -> Spec:
    st, dss, seeds, arch = _common(cfg, name)
    cols_ = [(ds, m) for ds in dss for m in st["methods"]]
    cols = [_prefix(dss, ds, method_label(cfg, m)) for ds, m in cols_]
    rows = [Row(f"{v['label']} ({v['temporal']})",
                [_cell(cfg, ds, v["key"], m, seeds, method=m, ipc=st["ipc"], arch=arch, labels=st["labels"],
                       temporal=v["temporal"]) for ds, m in cols_])
            for v in st["rows"]]
    notes = [f"IPC {st['ipc']}; {_eval_note(cfg, dss[0], arch, st['labels'])}.",
             "Row = the temporal setting of condensation and evaluation: tc<T_c>-<sampling>-<interpolation>. "
             "vdc's sliding windows are clip_len frames, so interpolation acts only on condensed videos shorter "
             "than a clip, where every sampling is naive: the run's canonical tag is in the CSV's sources."]
    return Spec(name, TITLES[name], cols, rows, dss, seeds, notes)


def _table5(cfg: dict) -> Spec:
    st, dss, seeds, arch = _common(cfg, "table5")
    cols = [f"{v['label']} ({v['temporal']})" for v in st["columns"]]
    rows = [Row(_prefix(dss, ds, method_label(cfg, m)),
                [_cell(cfg, ds, m, v["key"], seeds, method=m, ipc=st["ipc"], arch=arch, labels=st["labels"],
                       temporal=v["temporal"]) for v in st["columns"]])
            for ds in dss for m in st["methods"]]
    notes = [f"IPC {st['ipc']}; {_eval_note(cfg, dss[0], arch, st['labels'])}.",
             "Interpolation brings condensed videos shorter than the clip to clip_len frames (dup: repeat "
             "frames; linear: linear in time)."]
    return Spec("table5", TITLES["table5"], cols, rows, dss, seeds, notes)


def _table6(cfg: dict) -> Spec:
    st, dss, seeds, arch = _common(cfg, "table6")
    m = st["method"]
    keys = [(c["ipc"], parse_temporal(c["temporal"]).t_c, c["temporal"]) for c in st["columns"]]
    cols = [f"[{ipc}, {tc}]" for ipc, tc, _ in keys]
    rows = [Row(ds, [_cell(cfg, ds, m, f"{ipc}x{tc}", seeds, method=m, ipc=ipc, arch=arch, labels=st["labels"],
                           temporal=tag) for ipc, tc, tag in keys]) for ds in dss]
    budgets = sorted({ipc * tc for ipc, tc, _ in keys})
    notes = [f"{method_label(cfg, m)}; columns [IPC, T_c] with temporal settings "
             f"{', '.join(tag for _, _, tag in keys)}; {_eval_note(cfg, dss[0], arch, st['labels'])}.",
             f"Frame budget IPC × T_c = {' / '.join(map(str, budgets))} per class. Training iterations fixed: "
             f"batch = base_batch × IPC, so every run takes ceil(classes / base_batch) iterations per epoch "
             f"(the JSONs' iters_per_epoch, checked by the tables stage)."]
    return Spec("table6", TITLES["table6"], cols, rows, dss, seeds, notes)


def _table7(cfg: dict) -> Spec:
    st, dss, seeds, arch = _common(cfg, "table7")
    variants, ipc = cfg["study"]["edc_networks"], cfg["study"]["edc_networks_ipc"]
    if not variants:
        raise ConfigError("study.edc_networks is empty: Table 7 compares EDC variants (methods with base: edc and "
                          "their own networks); list them there, e.g. [edc, edc_r2p1d, edc_i3d, edc_slowonly, "
                          "edc_i3d_slowonly]")
    temporal = st["temporal"] or cfg["study"]["temporal"]
    cols = [ARCH_NAMES[a] for a in TABLE7_ARCHS] + [f"{ds} accuracy" for ds in dss]
    rows = []
    for v in variants:
        nets = method_settings(cfg, dss[0], v, ipc).get("networks", [])
        key = "+".join(a for a in TABLE7_ARCHS if a in nets)
        rows.append(Row(v, [Text("✓" if a in nets else "") for a in TABLE7_ARCHS]
                        + [_cell(cfg, ds, key, "accuracy", seeds, method=v, ipc=ipc, arch=arch, labels=st["labels"],
                                 temporal=temporal) for ds in dss]))
    notes = [f"EDC condensing with the ✓ networks, IPC {ipc}, {_temporal_note(temporal)}; "
             f"{_eval_note(cfg, dss[0], arch, st['labels'])}."]
    return Spec("table7", TITLES["table7"], cols, rows, dss, seeds, notes)


def _label_table(cfg: dict, name: str, labels: str) -> Spec:
    st, dss, seeds, arch = _common(cfg, name)
    s = cfg["study"]
    temporal = s["temporal"]
    cols_ = [(ds, ipc) for ds in dss for ipc in s["ipc"]]
    rows = []
    if name == "table8":
        rows.append(Row("Ratio ‰", [
            Cell(ds, "ratio", str(ipc), special="ratio", ipc=ipc, t_cs=tuple(sorted({
                parse_temporal(make_run(cfg, ds, m, ipc, seeds[0], arch, labels, temporal=temporal).temporal).t_c
                for m in s["methods"]}))) for ds, ipc in cols_]))
    rows.append(Row("Full dataset", [Cell(ds, "full", str(ipc), special="full") if ipc == s["ipc"][0] else Text("")
                                     for ds, ipc in cols_]))
    if s["full_data"] and name == "table8":
        rows.append(Row("Full dataset (vdc protocol, hard labels)", [
            Cell(ds, "full_protocol", str(ipc), (make_run(cfg, ds, "full", 0, seeds[0], arch, "hard"),))
            if ipc == s["ipc"][0] else Text("") for ds, ipc in cols_], reference=True))
    method_rows = PAPER_ROWS if name == "table8" else [r for r in PAPER_ROWS if r[0] is not None]
    known = {m for m, _ in method_rows}
    method_rows = method_rows + [(m, method_label(cfg, m)) for m in s["methods"] if m not in known]
    for m, label in method_rows:
        if m is None or m not in s["methods"]:
            rows.append(Row(label, [None] * len(cols_)))
            continue
        rows.append(Row(label, [_cell(cfg, ds, m, str(ipc), seeds, method=m, ipc=ipc, arch=arch, labels=labels,
                                      temporal=temporal) for ds, ipc in cols_]))
    notes = [f"{_eval_note(cfg, dss[0], arch, labels)}; {_temporal_note(temporal)}.",
             f"Full dataset: the {cfg['teacher']['arch']} teacher's final-epoch test accuracy"
             + ("; the protocol's own run on every training clip (the `full` pseudo-method, hard labels, batch = "
                "base_batch × training clips per class) below it." if s["full_data"] and name == "table8" else ".")]
    if name == "table8":
        notes += ["Ratio ‰ = N_c·T_c / (N_train · mean source video length) × 1000, N_c = classes × IPC.",
                  "† numbers of Wang et al. in the paper; vdc does not implement DM, MTT or FRePo."]
    return Spec(name, TITLES[name], [f"{ds} IPC {ipc}" for ds, ipc in cols_], rows, dss, seeds, notes)


def _table9(cfg: dict) -> Spec:
    st, dss, seeds, _ = _common(cfg, "table9")
    s = cfg["study"]
    temporal = s["temporal"]
    ipc = s["cross_arch_ipc"]
    cols_ = [(ds, a) for ds in dss for a in s["cross_arch"]]
    rows = [Row(method_label(cfg, m), [_cell(cfg, ds, m, a, seeds, method=m, ipc=ipc, arch=a, labels="multisl",
                                             temporal=temporal) for ds, a in cols_]) for m in s["methods"]]
    notes = [f"Condensed with the {cfg['teacher']['arch']} teacher (selection) / networks (distillation) at IPC {ipc}, "
             f"{_temporal_note(temporal)}; evaluated on each network with Multi-SL labels; "
             f"{_labeler_note(cfg, dss[0], s['cross_arch'][-1])}."]
    return Spec("table9", TITLES["table9"], [f"{ds} {ARCH_NAMES.get(a, a)}" for ds, a in cols_], rows, dss, seeds,
                notes)


def _figure4(cfg: dict) -> Spec:
    st, dss, seeds, arch = _common(cfg, "figure4")
    s = cfg["study"]
    temporal = s["temporal"]
    cols_ = [(ds, ipc) for ds in dss for ipc in s["ipc"]]
    rows = [Row(f"{method_label(cfg, m)} · {LABEL_NAMES[lab]}",
                [_cell(cfg, ds, m, str(ipc), seeds, method=m, ipc=ipc, arch=arch, labels=lab, temporal=temporal)
                 for ds, ipc in cols_]) for m in s["methods"] for lab in s["labels"]]
    notes = [f"{_eval_note(cfg, dss[0], arch)}; {_temporal_note(temporal)}. The figure: one panel per dataset "
             f"and label type, accuracy against IPC per method."]
    return Spec("figure4", TITLES["figure4"], [f"{ds} IPC {ipc}" for ds, ipc in cols_], rows, dss, seeds, notes,
                figure="ipc_lines")


def _label_curves(cfg: dict) -> Spec:
    st, dss, seeds, arch = _common(cfg, "label_curves")
    s = cfg["study"]
    temporal = s["temporal"]
    m = st["method"] or s["methods"][0]
    ipc = st["ipc"] or max(s["ipc"])
    rows = [Row(_prefix(dss, ds, LABEL_NAMES[lab]),
                [_cell(cfg, ds, lab, "curve", seeds, method=m, ipc=ipc, arch=arch, labels=lab, temporal=temporal)])
            for ds in dss for lab in s["labels"]]
    notes = [f"{method_label(cfg, m)} at IPC {ipc}, {_temporal_note(temporal)}; {_eval_note(cfg, dss[0], arch)}. "
             f"Test accuracy at every test epoch the evaluation recorded (its JSON's `tests`, else its late "
             f"epochs; evaluate.test_every sets how often), mean ± std over seeds."]
    return Spec("label_curves", TITLES["label_curves"], ["test accuracy by epoch"], rows, dss, seeds, notes,
                figure="curves")


_BUILDERS = {"table2": _table2, "table3": _table3, "table4": lambda c: _sampling_table(c, "table4"),
             "table10": lambda c: _sampling_table(c, "table10"), "table5": _table5, "table6": _table6,
             "table7": _table7, "table8": lambda c: _label_table(c, "table8", "soft"), "table9": _table9,
             "table11": lambda c: _label_table(c, "table11", "multisl"), "figure4": _figure4,
             "label_curves": _label_curves}


def spec(cfg: dict, name: str) -> Spec:
    """The study ``name`` under config ``cfg``; a ConfigError names the study and the key to fix."""
    if name not in _BUILDERS:
        raise ConfigError(f"no study '{name}' (studies: {', '.join(STUDIES)})")
    try:
        return _BUILDERS[name](cfg)
    except ConfigError as exc:
        raise ConfigError(f"study {name} (studies.{name} / study:): {exc}") from None


def study_runs(cfg: dict, names=None) -> list[Run]:
    """Every run of the studies ``names`` (default: study.tables), each once."""
    names = cfg["study"]["tables"] if names is None else names
    return sorted({run for n in names for run in spec(cfg, n).runs()})


def teacher_archs(cfg: dict, runs: list[Run]) -> dict[str, list[str]]:
    """dataset -> the teacher networks the runs read (labelers of soft / Multi-SL labels, the networks
    of the methods that condensed them, the main teacher)."""
    out: dict[str, set] = {}
    for r in runs:
        archs = out.setdefault(r.dataset, {cfg["teacher"]["arch"]})
        if r.labels != "hard":
            archs.add(labeler_arch(cfg, r.dataset, r.arch))
        ms = method_settings(cfg, r.dataset, r.method, r.ipc)
        if "teacher" in ms.get("needs", []):
            archs.update(ms.get("networks", []))
    return {ds: sorted(a) for ds, a in sorted(out.items())}


def study_methods(cfg: dict) -> list[str]:
    """The methods and variants the default studies (study.tables) condense with."""
    return sorted({r.method for r in study_runs(cfg)})


def check(cfg: dict) -> list[str]:
    """Config problems of the default studies (study.tables), one line each."""
    out = []
    for name in cfg["study"]["tables"]:
        try:
            spec(cfg, name)
        except ConfigError as exc:
            out.append(f"  {exc}")
    return out
