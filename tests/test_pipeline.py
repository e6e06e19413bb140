"""The real workflow end to end on a tiny study: toy videos -> frames -> teacher, experts, EDC
statistics -> all five methods -> evaluations (three label types, two networks) -> tables.

It runs the repository's own Snakefile and rules (copied to a temporary folder with a tiny config),
so it checks the wiring between stages that the unit tests of each stage cannot.
"""
from __future__ import annotations

import csv
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
SNAKEMAKE = [sys.executable, "-m", "snakemake"]
METHODS = ["random", "herding", "rded", "edc", "datm"]

pytestmark = pytest.mark.slow


def tiny_config() -> dict:
    cfg = yaml.safe_load((ROOT / "config.yaml").read_text())
    ds = cfg["datasets"]["toy"]
    ds["toy"].update(classes=3, train_per_class=3, test_per_class=2, min_frames=16, max_frames=24)
    cfg["study"].update(methods=METHODS, ipc=[1], seeds=[0], cross_arch=["minic3d", "slowonly_r18"],
                        tables=["table8", "table9", "table11", "figure4", "label_curves"])
    cfg["teacher"].update(epochs=1, warmup_epochs=0, milestones=[], eval_every=1)
    cfg["experts"].update(num_experts=1, epochs=2, keep_epochs=2)
    cfg["evaluate"].update(epochs=2, late_epochs=[0, 1], test_every=1, checkpoint_every=1)
    cfg["methods"]["rded"].update(mipc=3, clips_per_video=2)
    cfg["methods"]["edc"].update(iterations=2, batch=3)
    cfg["methods"]["datm"].update(iterations=2, syn_steps=2, batch_syn=3, expert_epochs=1,
                                  current_max_start_epoch=1, max_start_epoch=1, expansion_end_epoch=1)
    return cfg


@pytest.fixture(scope="module")
def study(tmp_path_factory):
    root = tmp_path_factory.mktemp("pipeline")
    for name in ("Snakefile", "workflow", "envs", "profiles"):
        src = ROOT / name
        (shutil.copytree if src.is_dir() else shutil.copy)(src, root / name)
    (root / "config.yaml").write_text(yaml.safe_dump(tiny_config()))
    res = subprocess.run(SNAKEMAKE + ["--cores", "2"], cwd=root, capture_output=True, text=True, timeout=1200)
    assert res.returncode == 0, res.stdout[-2000:] + res.stderr[-4000:]
    return root, res


def test_the_study_runs_to_the_tables_and_prints_table8(study):
    root, res = study
    tables = root / "results" / "tables"
    for name in ("table8.md", "table8.csv", "table9.md", "table11.md", "figure4.png"):
        assert (tables / name).stat().st_size > 0, name
    assert "Table 8" in res.stdout  # the onsuccess handler printed the main table


def test_every_method_has_a_number_in_table8_and_table9(study):
    root, _ = study
    with open(root / "results" / "tables" / "table8.csv") as fh:
        rows = list(csv.DictReader(fh))
    text = (root / "results" / "tables" / "table8.md").read_text()
    for method in ("Random", "Herding", "RDED", "EDC", "DATM"):
        line = next(ln for ln in text.splitlines() if ln.startswith(f"| {method} "))
        assert any(ch.isdigit() for ch in line.split("|")[2]), line
    assert rows, "table8.csv is empty"
    t9 = (root / "results" / "tables" / "table9.md").read_text()
    assert "SlowOnly" in t9 and "MiniC3D" in t9


def test_a_finished_study_has_nothing_to_rerun(study):
    root, _ = study
    res = subprocess.run(SNAKEMAKE + ["--cores", "1", "-n"], cwd=root, capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr[-3000:]
    assert "Nothing to be done" in res.stdout + res.stderr, res.stdout[-3000:]


def test_repository_workflow_lints_clean_and_plans_the_default_study():
    res = subprocess.run(SNAKEMAKE + ["--lint"], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert res.returncode == 0 and "Lints for" not in res.stdout + res.stderr, res.stdout + res.stderr
    res = subprocess.run(SNAKEMAKE + ["-n", "--forceall", "--quiet", "rules"], cwd=ROOT,
                         capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr[-3000:]
    for rule in ("toy_dataset", "extract", "teacher", "experts", "stats", "condense", "evaluate", "tables"):
        assert rule in res.stdout, rule


PROGRESS = re.compile(r": \w+ (\d+)/(\d+) \(\d+%\), \S+ \w+/s, elapsed \d+:\d\d:\d\d, ETA \d+:\d\d:\d\d")


def test_logs_carry_the_settings_once_and_progress_with_an_eta_while_the_console_does_not(study):
    """Every long stage logs `step i/N, rate, elapsed, ETA | metrics` lines (vdc/progress.py) ending at N/N,
    and its resolved settings once (vdc/cli.py); the console shows neither the settings JSON nor the commands."""
    root, res = study
    assert "--settings" not in res.stdout + res.stderr
    logs = root / "logs"
    # teacher and evaluate (every job), and the other long stages: extract, experts, stats, EDC and DATM
    groups = {"teacher": ["teacher"], "evaluate": ["evaluate"], "extract": ["extract"], "experts": ["experts"],
              "stats": ["stats"], "edc": ["condense/**/method=edc"], "datm": ["condense/**/method=datm"]}
    for name, patterns in groups.items():
        files = [f for p in patterns for f in logs.glob(f"{p}/**/*.log")]
        assert files, f"no {name} logs under {logs}"
        for f in files:
            text = f.read_text()
            done = [m.groups() for m in PROGRESS.finditer(text)]
            assert done, f"{f}: no progress line with an ETA"
            assert done[-1][0] == done[-1][1], f"{f}: the last progress line is not the last step: {done[-1]}"
            assert text.count("vdc.settings INFO:") == 1, f"{f}: the settings are not logged exactly once"
