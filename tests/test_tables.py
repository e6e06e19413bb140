"""The tables stage (vdc/tables.py): every study renders from synthetic evaluation JSONs — Markdown, CSV
with each cell's sources, booktabs LaTeX, HTML and a figure — with missing runs said as such, never
invented; the paper's numbers side by side."""
from __future__ import annotations

import csv
import json

import numpy as np
import pytest

from vdc.__main__ import main as vdc_main
from vdc.condensed import CondensedSet
from vdc.config import deep_merge, validate_config
from vdc.data.frames import write_frames
from vdc.studies import STUDIES, spec, study_runs
from vdc.tables import build_tables, paper_side_by_side, tex
from vdc.utils import write_json

METHOD_BASE = {"random": 10, "rded": 20, "edc": 30, "datm": 40, "edc_dagger": 50, "edc_i3d": 60, "full": 70}
LABELS = {"hard": 0, "soft": 1, "multisl": 3}


def study_config(tmp_path, accuracy="final", fmt="toy", **over) -> dict:
    base = {
        "results": str(tmp_path / "results"),
        "study": {"datasets": ["toy"], "methods": ["random", "rded", "edc", "datm"], "ipc": [1, 5], "seeds": [0, 1],
                  "labels": ["hard", "soft", "multisl"], "cross_arch": ["minic3d", "i3d_r18"],
                  "edc_networks": ["edc", "edc_i3d"], "full_data": True, "tables": list(STUDIES)},
        "datasets": {"toy": {"format": fmt, "video_root": "v", "annotations": "a", "storage_size": [64, 64],
                             "input_size": 48}},
        "methods": {"full": {}, "random": {}, "rded": {}, "edc": {}, "datm": {},
                    "edc_dagger": {"base": "edc", "class_wise": False},
                    "edc_i3d": {"base": "edc", "networks": ["minic3d", "i3d_r18"]}},
        "tables": {"accuracy": accuracy},
    }
    return validate_config(deep_merge(base, over))


def acc(r) -> float:
    """A made-up but distinct accuracy per run."""
    return (METHOD_BASE[r.method] + r.ipc + 2 * r.seed + LABELS[r.labels] - (1 if r.loss == "kl" else 0)
            - (0.5 if r.cutmix else 0) + (0.25 if r.arch == "i3d_r18" else 0))


def missing(cfg) -> set:
    """One run left out per study: the seed-1 run of the study's first cell over seeds."""
    out = set()
    for name in STUDIES:
        first = next(c for c in spec(cfg, name).cells() if len(c.runs) > 1)
        out.add(first.runs[-1])
    return out


def write_runs(cfg, tmp_path, skip=()):
    cond = tmp_path / "edc_i3d.h5"   # Table 7 reads the networks a variant used from its condensed set
    CondensedSet(np.zeros((2, 8, 4, 4, 3), np.float16), [0, 1],
                 attrs={"settings": {"base": "edc", "networks": ["minic3d", "slowonly_r18"]}}).write(cond)
    for r in study_runs(cfg, list(STUDIES)):
        if r in skip:
            continue
        a = acc(r)
        write_json(r.eval_path(cfg), {
            "dataset": r.dataset, "method": r.method, "ipc": r.ipc, "temporal": r.temporal, "seed": r.seed,
            "arch": r.arch, "labels": r.labels, "loss": r.loss, "cutmix": "cutmix" if r.cutmix else "nocutmix",
            "top1": a, "top5": a + 40, "best_late": {"top1": a + 5, "top5": a + 45, "epoch": 19},
            "late": [{"epoch": 14, "top1": a - 2, "top5": a + 38}, {"epoch": 19, "top1": a, "top5": a + 40}],
            "tests": [{"epoch": e, "top1": a - (19 - e), "top5": a + 40} for e in (4, 9, 14, 19)],
            "iters_per_epoch": 5, "condensed_file": str(cond) if r.method == "edc_i3d" else None})
    write_json(tmp_path / "teacher.json", {"dataset": "toy", "arch": "minic3d", "top1": 52.6, "top5": 81.0})
    rng = np.random.default_rng(0)
    write_frames(tmp_path / "toy.h5", [rng.integers(0, 255, (4, 8, 8, 3), dtype=np.uint8) for _ in range(6)],
                 labels=[0, 0, 1, 1, 0, 1], splits=[0, 0, 0, 0, 1, 1], classes=["a", "b"],
                 attrs={"mean_source_frames_train": 100.0})
    return [tmp_path / "teacher.json"], {"toy": str(tmp_path / "toy.h5")}


def read_md(path):
    """{row label: [cells]} of a Markdown table."""
    rows = {}
    for line in path.read_text().splitlines():
        if line.startswith("| ") and not line.startswith("| |"):
            parts = [p.strip() for p in line.strip("|").split(" | ")]
            rows[parts[0]] = parts[1:]
    return rows


def cell(values):
    m, s = float(np.mean(values)), float(np.std(values, ddof=1))
    return f"{m:.1f} ± {s:.1f} (n={len(values)})"


@pytest.fixture()
def built(tmp_path):
    cfg = study_config(tmp_path)
    skip = missing(cfg)
    teachers, frames = write_runs(cfg, tmp_path, skip)
    out = tmp_path / "tables"
    written = build_tables(cfg, teachers, frames, out, list(STUDIES))
    return cfg, out, written, skip


def test_every_study_renders_every_format_and_says_which_run_is_missing(built):
    cfg, out, written, skip = built
    assert {p.name for p in written} == {f"{n}.{e}" for n in STUDIES for e in ("md", "csv", "tex", "html", "png")}
    for name in STUDIES:
        md = (out / f"{name}.md").read_text()
        assert "Seeds [0, 1]" in md and "final-epoch" in md or name == "label_curves", name
        assert "toy: synthetic toy data" in md and "1/2 seeds missing" in md, name
        latex = (out / f"{name}.tex").read_text()
        assert all(k in latex for k in ("\\toprule", "\\midrule", "\\bottomrule", "\\caption{")), name
        assert "<table>" in (out / f"{name}.html").read_text() and (out / f"{name}.png").read_bytes()[:4] == b"\x89PNG"
        with open(out / f"{name}.csv") as fh:
            rows = list(csv.DictReader(fh))
        sources = {s for r in rows for s in r["sources"].split(";") if "/eval/" in s}
        want = {r.eval_path(cfg) for r in spec(cfg, name).runs()} - {r.eval_path(cfg) for r in skip}
        assert sources == want, name   # every cell links back to exactly the runs it averages
        assert not any(r.eval_path(cfg) in sources for r in skip)


def test_cells_average_exactly_their_runs(built):
    cfg, out, _, skip = built
    t2 = read_md(out / "table2.md")
    # RDED, soft, no CutMix: 20 + 1 + 1 (+2 for seed 1)
    assert t2["RDED"][3] == cell([22, 24])
    assert t2["EDC†"][0] == "50.5 (n=1; 1/2 seeds missing)"      # the run left out: seed 1 of the first cell
    t3 = read_md(out / "table3.md")
    assert t3["DATM"][:2] == [cell([41, 43]), cell([42, 44])]     # soft KL one below soft MSE-GT
    t8 = read_md(out / "table8.md")
    # 1000 * 2 classes * IPC * T_c / (4 training videos * 100 frames); T_c 8 (selection), 16 (EDC, DATM)
    assert t8["Ratio ‰"] == ["40", "200"]    # every method at T_c = 8: one ratio per column
    assert t8["Full dataset"] == ["52.6", ""] and t8["DM†"] == ["—", "—"] and t8["Herding"] == ["—", "—"]
    assert t8["Full dataset (vdc protocol, hard labels)"] == ["70.0 (n=1)", ""]
    assert t8["DATM"] == [cell([42, 44]), cell([46, 48])]
    t6 = read_md(out / "table6.md")
    assert t6["toy"][1] == cell([27, 29]) and "5 in every run" in (out / "table6.md").read_text()   # [4, 8]
    t7 = read_md(out / "table7.md")
    assert t7["edc_i3d"][:4] == ["✓", "", "", "✓"]      # from the condensed set's own settings, not the config
    t4, t5 = read_md(out / "table4.md"), read_md(out / "table5.md")
    assert t4["Sliding-window + linear (tc4-sliding-linear)"][1] == t5["EDC"][2] == cell([34, 36])  # one run set
    curves = read_md(out / "label_curves.md")
    assert list(curves) == ["Hard", "Soft", "Multi-SL"] and curves["Soft"][-1] == cell([16, 18])
    assert curves["Soft"][0] == cell([1, 3])                          # epoch 4: 15 below the final epoch


def test_curves_fall_back_to_the_late_epochs(tmp_path):
    cfg = study_config(tmp_path)
    teachers, frames = write_runs(cfg, tmp_path)
    for r in spec(cfg, "label_curves").runs():
        p = r.eval_path(cfg)
        js = json.load(open(p))
        del js["tests"]
        write_json(p, js)
    build_tables(cfg, teachers, frames, tmp_path / "t", ["label_curves"])
    text = (tmp_path / "t" / "label_curves.md").read_text()
    assert "| | epoch 14 | epoch 19 |" in text


def test_no_runs_at_all_is_said_not_invented(tmp_path):
    cfg = study_config(tmp_path)
    build_tables(cfg, [], {}, tmp_path / "t", list(STUDIES))
    t8 = read_md(tmp_path / "t" / "table8.md")
    assert t8["Random"] == ["— (2/2 seeds missing)"] * 2
    assert t8["Full dataset"] == ["—", ""] and t8["Ratio ‰"] == ["—", "—"]
    t2 = read_md(tmp_path / "t" / "table2.md")
    assert set(t2["RDED"]) == {"— (2/2 seeds missing)"}


def test_best_late_and_command_line(tmp_path, capsys):
    cfg = study_config(tmp_path, "best_late")
    teachers, frames = write_runs(cfg, tmp_path)
    assert vdc_main(["tables", "--study", "table8", "--study", "table2", "--teachers", str(teachers[0]),
                     "--frames", f"toy={frames['toy']}", "--out", str(tmp_path / "late"),
                     "--settings", json.dumps(cfg)]) == 0
    printed = capsys.readouterr().out
    assert "Table 8" in printed and "best test accuracy of the late epochs" in printed and "Table 2" in printed
    assert read_md(tmp_path / "late" / "table8.md")["Random"][0] == cell([17, 19])   # best_late = final + 5
    assert not (tmp_path / "late" / "table9.md").exists()


def test_paper_side_by_side_marks_the_scale(tmp_path):
    cfg = study_config(tmp_path)
    teachers, frames = write_runs(cfg, tmp_path)
    paper_side_by_side(cfg, teachers, frames, tmp_path / "p", ["table2", "table8", "figure4"])
    text = (tmp_path / "p" / "paper.md").read_text()
    assert "vdc toy vs the paper's UCF101 — DIFFERENT SCALE" in text and "other scale" in text
    assert "| RDED · Soft w/o | 23.0 ± 1.4 (n=2) | 14.3 | other scale |" in text
    assert "Figure 4" not in text                      # no paper numbers for it
    # a dataset of the paper's own format is compared value by value
    ucf = study_config(tmp_path, fmt="ucf101")
    paper_side_by_side(ucf, teachers, frames, tmp_path / "q", ["table2"])
    text = (tmp_path / "q" / "paper.md").read_text()
    assert "| RDED · Soft w/o | 23.0 ± 1.4 (n=2) | 14.3 | +8.7 |" in text and "DIFFERENT SCALE" not in text
    assert "<table>" in (tmp_path / "q" / "paper.html").read_text()


def test_latex_escapes():
    assert tex("a_b 50% ± † — ‰ ✓") == "a\\_b 50\\% $\\pm$ $^\\dagger$ --- \\textperthousand{} $\\checkmark$"
