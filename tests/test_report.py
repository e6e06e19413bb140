"""The report (vdc/report.py and the workflow's report rules): condensed-set strips, GIFs and pages,
learning curves, and `snakemake --report` holding every table, built from a small synthetic results tree."""
from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import h5py
import numpy as np
import pytest
import yaml

from vdc import report
from vdc.condensed import CondensedSet
from vdc.config import load_config
from vdc.formats.media import read_video
from vdc.studies import STUDIES, study_runs
from vdc.utils import write_json

ROOT = Path(__file__).resolve().parents[1]
K = 3


def selected(path: Path, frames: Path, t_c=8, ipc=1) -> Path:
    """A RDED-like set: real uint8 clips with their source video and frames."""
    from vdc.data.frames import Frames

    with Frames(frames) as fr:
        vids = [int(fr.class_ids("train", k)[0]) for k in range(K) for _ in range(ipc)]
        idx = [np.arange(t_c) % fr.lengths[v] for v in vids]
        clips = np.stack([fr.read_frames(v, i) for v, i in zip(vids, idx)])
    CondensedSet(clips, np.repeat(np.arange(K), ipc), source_video=np.array(vids), source_frames=np.stack(idx),
                 attrs={"method": "rded", "dataset": "tiny", "ipc": ipc, "t_c": t_c, "sampling": "naive",
                        "interpolation": "none", "seed": 0}).write(path)
    return path


def distilled(path: Path, t_c=16, ipc=1, history=True) -> Path:
    """An EDC-like set: float clips at the input size, each from a real video, with an optimisation history."""
    rng = np.random.default_rng(1)
    clips = rng.random((K * ipc, t_c, 48, 48, 3), dtype=np.float32) * 1.2 - 0.1
    CondensedSet(clips, np.repeat(np.arange(K), ipc), source_video=np.arange(K * ipc),
                 attrs={"method": "edc", "dataset": "tiny", "ipc": ipc, "t_c": t_c, "sampling": "sliding",
                        "interpolation": "none", "seed": 0, "iterations": 12}).write(path)
    if history:
        with h5py.File(path, "a") as h5:
            h5["history/iteration"] = np.arange(12)
            h5["history/loss"] = np.linspace(3, 1, 12)
            h5["history/start_epoch"] = np.arange(12) % 3
            h5["history/upper"] = np.minimum(np.arange(12) // 4 + 1, 3)
    return path


def test_set_pages_strips_gifs_and_the_side_by_side_page(tmp_path, make_frames):
    frames = make_frames(tmp_path / "tiny.h5", classes=K, lengths=(20, 30))
    root = tmp_path / "results" / "condensed" / "tiny"
    rded = selected(root / "rded" / "ipc1-tc8-naive-none-seed0.h5", frames)
    edc = distilled(root / "edc" / "ipc1-tc16-sliding-none-seed0.h5")
    out = tmp_path / "report"
    written = report.build_sets([str(rded), str(edc)], {"tiny": str(frames)}, [str(rded), str(edc)], out,
                                intervals={"tiny": 2})
    for c in (rded, edc):
        o = report.set_outputs(out, c)
        assert {Path(p) for p in o.values()} <= set(written)
        gif = read_video(o["gif"])
        assert gif.shape[0] == (8 if c == rded else 16)              # the clips play over their T_c frames
        page = Path(o["html"]).read_text()
        assert "data:image/gif;base64," in page and "data:image/jpeg;base64," in page and "class2" in page
        from PIL import Image

        assert Image.open(o["strip"]).size[1] > 3 * report.TILE      # a row per clip (+ its source)
    edc_page = Path(report.set_outputs(out, edc)["html"]).read_text()
    assert "next to the real video each was initialised from" in edc_page
    # a distilled clip's GIF tile is the synthetic clip next to its real source video
    assert read_video(report.set_outputs(out, edc)["gif"]).shape[2] > 2 * 48
    page = out / "compare" / "tiny-ipc1-seed0.html"
    assert page in written
    text = page.read_text()
    assert "rded" in text and "edc" in text and text.count("data:image/gif") == 2 * K


def test_pages_stay_under_the_report_limit(tmp_path, make_frames, monkeypatch):
    frames = make_frames(tmp_path / "tiny.h5", classes=K, lengths=(20, 30))
    edc = distilled(tmp_path / "results" / "condensed" / "tiny" / "edc" / "ipc2-tc16-sliding-none-seed0.h5", ipc=2)
    monkeypatch.setattr(report, "PAGE_LIMIT", 250_000)
    out = tmp_path / "report"
    report.build_sets([str(edc)], {"tiny": str(frames)}, [str(edc)], out)
    page = Path(report.set_outputs(out, edc)["html"]).read_text()
    assert len(page) <= 250_000 and "the first" in page                # fewer clips, the strip a file
    assert read_video(report.set_outputs(out, edc)["gif"]).shape[0] == 16   # the GIF file keeps every clip


def test_learning_curves(tmp_path):
    out = tmp_path / "report"
    teacher = tmp_path / "results" / "teachers" / "tiny" / "minic3d.json"
    write_json(teacher, {"arch": "minic3d", "top1": 50.0, "top5": 90.0, "curve": [
        {"epoch": e, "loss": 2.0 / (e + 1), "lr": 0.01, "train_top1": 10.0 * e} | (
            {"test_top1": 5.0 * e, "test_top5": 9.0 * e} if e % 2 else {}) for e in range(6)]})
    evals = []
    for lab in ("hard", "multisl"):
        p = tmp_path / "results" / "eval" / "tiny" / "rded" / "ipc1-tc8-naive-none-seed0" / f"minic3d-{lab}-ce-nocutmix.json"
        write_json(p, {"arch": "minic3d", "labels": lab, "loss": "ce", "cutmix": "nocutmix", "top1": 30,
                       "curve": [{"epoch": e, "loss": 3.0 - e / 10, "lr": 1e-3} for e in range(10)],
                       "late": [{"epoch": 9, "top1": 30, "top5": 60}],
                       "tests": [{"epoch": e, "top1": 3.0 * e, "top5": 60} for e in (2, 5, 9)]})
        evals.append(str(p))
    edc = distilled(tmp_path / "results" / "condensed" / "tiny" / "edc" / "ipc1-tc16-sliding-none-seed0.h5")
    bare = distilled(tmp_path / "results" / "condensed" / "tiny" / "datm" / "ipc1-tc16-sliding-none-seed0.h5",
                     history=False)
    written = report.build_curves([str(teacher)], evals, [str(edc), str(bare)], out)
    assert [p.name for p in written] == ["tiny-minic3d.png", "ipc1-tc8-naive-none-seed0.png",
                                         "ipc1-tc16-sliding-none-seed0.png", "ipc1-tc16-sliding-none-seed0.png"]
    assert all(p.read_bytes()[:4] == b"\x89PNG" for p in written)
    assert report.eval_curve_outputs(out, evals) == [str(written[1])]
    hist, _ = report.read_history(edc)
    assert set(hist) == {"iteration", "loss", "start_epoch", "upper"} and report.read_history(bare)[0] == {}


# ------------------------------------------------------------------------- snakemake --report, end to end

def tiny_study() -> dict:
    return {
        "results": "results", "workdir": "work", "logs": "logs", "device": "cpu",
        "study": {"datasets": ["tiny"], "methods": ["random", "rded", "edc", "datm"], "ipc": [1], "seeds": [0],
                  "labels": ["hard", "soft", "multisl"], "cross_arch": ["minic3d", "i3d_r18"],
                  "edc_networks": ["edc", "edc_i3d"], "tables": list(STUDIES)},
        "datasets": {"tiny": {"format": "list", "video_root": "videos", "annotations": "ann",
                              "storage_size": [52, 56], "input_size": 48}},
        "models": {a: {"width": 0.125, "dropout": 0.0} for a in ("minic3d", "minic3d_in", "i3d_r18", "slowonly_r18",
                                                                 "r2plus1d_r18")},
        "methods": {"random": {}, "rded": {}, "edc": {}, "datm": {}, "edc_dagger": {"base": "edc", "class_wise": False},
                    "edc_i3d": {"base": "edc", "networks": ["minic3d", "i3d_r18"]}},
    }


def synthetic_results(root: Path, make_frames) -> dict:
    """Every file the tables and report rules read, older files first (as the pipeline would write
    them), so that Snakemake runs only the tables, paper and report jobs."""
    cfg = load_config(root / "config.yaml")
    runs = study_runs(cfg)
    stamp = [time.time() - 1000]

    def done(*paths):
        stamp[0] += 10
        for p in paths:
            os.utime(p, (stamp[0], stamp[0]))

    ann = root / "ann"
    ann.mkdir()
    for name in ("train.txt", "test.txt"):
        (ann / name).write_text("")
    done(ann / "train.txt", ann / "test.txt")
    (root / "results" / "frames").mkdir(parents=True)
    frames = make_frames(root / "results" / "frames" / "tiny.h5", classes=K, lengths=(20, 30))
    (root / "results" / "frames" / "tiny.failed.tsv").write_text("path\treason\n")
    done(frames, root / "results" / "frames" / "tiny.failed.tsv")
    later = []
    for arch in ("minic3d", "i3d_r18", "minic3d_in"):
        t = root / "results" / "teachers" / "tiny" / f"{arch}.pt"
        t.parent.mkdir(parents=True, exist_ok=True)
        t.write_bytes(b"")
        write_json(t.with_suffix(".json"), {"dataset": "tiny", "arch": arch, "top1": 70.0, "top5": 95.0,
                                            "curve": [{"epoch": 0, "loss": 1.0, "lr": 0.1, "test_top1": 70.0}]})
        later += [t, t.with_suffix(".json")]
    experts = root / "results" / "experts" / "tiny" / "experts.h5"
    experts.parent.mkdir(parents=True)
    experts.write_bytes(b"")
    done(*later, experts)
    stats = []
    for arch in ("minic3d", "i3d_r18"):
        s = root / "results" / "stats" / "tiny" / f"{arch}.h5"
        s.parent.mkdir(parents=True, exist_ok=True)
        s.write_bytes(b"")
        stats.append(s)
    done(*stats)
    sets = sorted({(r.condensed_path(cfg), r.method, r.ipc, r.temporal) for r in runs}, key=lambda x: x[1] != "rded")
    rded_sets, other_sets = [], []
    for path, method, ipc, temporal in sets:
        t_c = int(re.match(r"tc(\d+)", temporal)[1])
        p = root / path
        if method in ("random", "rded"):
            p.parent.mkdir(parents=True, exist_ok=True)
            selected(p, frames, t_c=t_c, ipc=ipc)
            (rded_sets if method == "rded" else other_sets).append(p)
        else:
            p.parent.mkdir(parents=True, exist_ok=True)
            distilled(p, t_c=t_c, ipc=ipc)
            other_sets.append(p)
    done(*rded_sets)
    done(*other_sets)
    evals = []
    for r in runs:
        a = 30.0 + r.seed
        p = root / r.eval_path(cfg)
        write_json(p, {"dataset": "tiny", "method": r.method, "arch": r.arch, "labels": r.labels, "loss": r.loss,
                       "cutmix": "cutmix" if r.cutmix else "nocutmix", "top1": a, "top5": a + 30,
                       "best_late": {"top1": a, "top5": a + 30, "epoch": 1}, "late": [{"epoch": 1, "top1": a, "top5": 60}],
                       "tests": [{"epoch": 0, "top1": a - 5, "top5": 50}, {"epoch": 1, "top1": a, "top5": 60}],
                       "curve": [{"epoch": 0, "loss": 2.0, "lr": 1e-3}, {"epoch": 1, "loss": 1.5, "lr": 1e-3}],
                       "iters_per_epoch": 1})
        evals.append(p)
    done(*evals)
    return cfg


@pytest.mark.slow
def test_snakemake_report_holds_every_table(tmp_path, make_frames):
    root = tmp_path / "study"
    root.mkdir()
    for name in ("Snakefile", "workflow", "envs", "profiles"):
        src = ROOT / name
        (shutil.copytree if src.is_dir() else shutil.copy)(src, root / name)
    (root / "config.yaml").write_text(yaml.safe_dump(tiny_study()))
    synthetic_results(root, make_frames)
    snake = [sys.executable, "-m", "snakemake", "--rerun-triggers", "mtime"]
    plan = subprocess.run(snake + ["-n", "--quiet", "rules"], cwd=root, capture_output=True, text=True, timeout=300)
    assert plan.returncode == 0, plan.stderr[-3000:]
    jobs = dict(re.findall(r"^(\w+)\s+(\d+)$", plan.stdout, re.M))
    assert {k for k in jobs if k != "total"} == {"tables", "paper", "report_sets", "report_curves", "all"}, jobs
    assert jobs["tables"] == str(len(STUDIES))
    run = subprocess.run(snake + ["--cores", "2"], cwd=root, capture_output=True, text=True, timeout=900)
    assert run.returncode == 0, run.stdout[-2000:] + run.stderr[-4000:]
    built = subprocess.run(snake + ["--report", "report.html"], cwd=root, capture_output=True, text=True, timeout=300)
    assert built.returncode == 0, built.stderr[-3000:]
    html = (root / "report.html").read_text()
    for name in STUDIES:
        assert f"{name}.html" in html and f"{name}.png" in html, name     # every table and its figure
    assert "paper.html" in html and "tiny-ipc1-seed0.html" in html and "tiny-minic3d.png" in html
    # the caption of each table names its datasets, scale, seeds and the accuracy it shows
    assert "Seeds [0]" in html and "final-epoch test accuracy" in html and "tiny: list data" in html
    if shutil.which("chromium"):
        dom = subprocess.run(["chromium", "--headless", "--no-sandbox", "--disable-gpu",
                              "--disable-background-networking", "--disable-dev-shm-usage", "--virtual-time-budget=5000",
                              "--dump-dom", f"file://{root / 'report.html'}"], capture_output=True, text=True, timeout=120)
        assert "Condensed sets" in dom.stdout and "Tables" in dom.stdout and "Learning curves" in dom.stdout
