"""Code-aware reruns (code_for in workflow/rules/common.smk, vdc/fingerprint.py): editing a module reruns exactly the jobs that run it.

A small workflow with the real rule shapes (extract -> teacher -> condense per method -> evaluate),
whose jobs just touch their outputs, is run to completion on a copy of the vdc package. Then one
module of the copy is edited and Snakemake's own dry-run says which jobs it would rerun.
"""
from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import yaml

pytestmark = pytest.mark.slow   # about ten Snakemake runs

REPO = Path(__file__).resolve().parents[1]
METHODS = ["random", "herding", "rded"]

SNAKEFILE = """
from vdc.config import eval_path

configfile: "config.yaml"
include: {common!r}

rule all:
    input:
        [eval_path(config, d, m, 1, 0, "minic3d", lab) for d in STUDY["datasets"] for m in STUDY["methods"]
         for lab in ("hard", "multisl")],
        [eval_path(config, d, "random", 1, 0, "i3d_r18", lab) for d in STUDY["datasets"] for lab in ("hard", "multisl")],

rule extract:
    output: path("frames")
    params: code=code_for("extract")
    shell: "touch {{output}}"

rule teacher:
    input: lambda wc: path("frames", dataset=wc.dataset)
    output: path("teacher")
    params: code=code_for("teacher")
    shell: "touch {{output}}"

rule condense:
    input: unpack(method_needs), frames=lambda wc: path("frames", dataset=wc.dataset)
    output: path("condensed")
    params: code=code_for("condense")
    shell: "touch {{output}}"

rule evaluate:
    input: unpack(eval_labeler), condensed=path("condensed")
    output: path("eval")
    params: code=code_for("evaluate")
    shell: "touch {{output}}"
"""


def planned_after_edit(root: Path, env: dict, module: Path, text: str = "\n_EDITED_FOR_THE_TEST = 1\n") -> set:
    """The jobs a dry-run plans while ``module`` has ``text`` appended (the edit is undone after)."""
    old = module.read_text()
    module.write_text(old + text)
    try:
        return planned(root, env)
    finally:
        module.write_text(old)


@pytest.fixture(scope="module")
def workflow(tmp_path_factory):
    """A completed run of the small workflow on a copy of vdc; yields (dir, env, package dir)."""
    root = tmp_path_factory.mktemp("reruns")
    pkg = root / "pkg" / "vdc"
    shutil.copytree(REPO / "vdc", pkg, ignore=shutil.ignore_patterns("__pycache__"))
    for name in ("evaluate.py", "condense/stage.py", *(f"condense/{m}.py" for m in METHODS)):
        if not (pkg / name).exists():   # a stage another part of vdc has not written yet
            (pkg / name).write_text('"""stand-in for the test"""\nfrom vdc.data import clips\n')
    cfg = yaml.safe_load((REPO / "config.yaml").read_text())
    cfg["study"].update(methods=METHODS, ipc=[1], seeds=[0])
    (root / "config.yaml").write_text(yaml.safe_dump(cfg))
    (root / "Snakefile").write_text(SNAKEFILE.format(common=str(REPO / "workflow/rules/common.smk")))
    env = {**os.environ, "PYTHONPATH": str(root / "pkg")}
    res = snakemake(root, env, "--cores", "1")
    assert res.returncode == 0, res.stderr[-3000:]
    assert planned(root, env) == set(), "a completed workflow should have nothing to rerun"
    return root, env, pkg


def snakemake(root: Path, env: dict, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "snakemake", "--workflow-profile", "none", *args],
                          cwd=root, env=env, capture_output=True, text=True, timeout=300)


def planned(root: Path, env: dict, *args: str) -> set[tuple[str, str]]:
    """(rule, output) of every job a dry-run would run (the aggregate rule `all` left out)."""
    res = snakemake(root, env, "-n", *args)
    assert res.returncode == 0, res.stderr[-3000:]
    jobs, rule = set(), None
    for line in (res.stdout + res.stderr).splitlines():
        if m := re.match(r"^(?:local)?rule (\w+):$", line):
            rule = m.group(1)
        elif (m := re.match(r"^\s+output: (.+)$", line)) and rule:
            jobs.add((rule, m.group(1)))
            rule = None
    return jobs


def jobs_of(jobs: set, rule: str) -> list[str]:
    return sorted(out for r, out in jobs if r == rule)


def method_of(output: str) -> str:
    return output.split("/")[3]   # results/{condensed,eval}/<dataset>/<method>/...


def test_editing_a_method_reruns_only_that_method_and_its_evaluations(workflow):
    root, env, pkg = workflow
    jobs = planned_after_edit(root, env, pkg / "condense" / "rded.py")
    assert {method_of(o) for o in jobs_of(jobs, "condense")} == {"rded"}
    assert {method_of(o) for o in jobs_of(jobs, "evaluate")} == {"rded"}
    assert {r for r, _ in jobs} == {"condense", "evaluate"}   # no extraction, no teacher
    assert planned(root, env) == set()                        # edit reverted: nothing to do


def evaluated(jobs: set) -> set[tuple[str, str]]:
    """(method, "<arch>-<labels>") of the planned evaluations."""
    return {(method_of(o), o.split("/")[-1].rsplit("-", 2)[0]) for o in jobs_of(jobs, "evaluate")}


def test_editing_the_teacher_code_reruns_only_what_reads_a_teacher(workflow):
    """The teacher's training code reaches Herding/RDED (their observer) and soft/Multi-SL evaluations
    (their labeler) through the teacher file, never Random's condensed set or a hard-label evaluation."""
    root, env, pkg = workflow
    jobs = planned_after_edit(root, env, pkg / "train" / "teacher.py")
    assert jobs_of(jobs, "teacher")
    assert {method_of(o) for o in jobs_of(jobs, "condense")} == {"herding", "rded"}
    assert all(not label.endswith("hard") or m != "random" for m, label in evaluated(jobs))
    assert ("random", "minic3d-hard") not in evaluated(jobs) and ("random", "i3d_r18-hard") not in evaluated(jobs)
    assert ("random", "minic3d-multisl") in evaluated(jobs)


def test_editing_random_reruns_random_only(workflow):
    root, env, pkg = workflow
    jobs = planned_after_edit(root, env, pkg / "condense" / "random.py")
    assert {method_of(o) for o in jobs_of(jobs, "condense")} == {"random"}
    assert {m for m, _ in evaluated(jobs)} == {"random"}
    assert {r for r, _ in jobs} == {"condense", "evaluate"}


def test_editing_an_evaluation_network_reruns_only_its_jobs(workflow):
    root, env, pkg = workflow
    jobs = planned_after_edit(root, env, pkg / "models" / "i3d.py")
    assert evaluated(jobs) == {("random", "i3d_r18-hard"), ("random", "i3d_r18-multisl")}
    # ... and the I3D teacher that labels the I3D student (evaluate.labeler_arch: student), nothing else
    assert {r for r, _ in jobs} == {"evaluate", "teacher"} and jobs_of(jobs, "teacher") == [
        "results/teachers/toy/i3d_r18.pt"]


def test_editing_the_evaluation_protocol_reruns_every_evaluation(workflow):
    root, env, pkg = workflow
    jobs = planned_after_edit(root, env, pkg / "data" / "clips.py")
    assert {method_of(o) for o in jobs_of(jobs, "evaluate")} == set(METHODS)
    assert not jobs_of(jobs, "extract")
    jobs = planned_after_edit(root, env, pkg / "evaluate.py")
    assert {r for r, _ in jobs} == {"evaluate"}
    assert {method_of(o) for o in jobs_of(jobs, "evaluate")} == set(METHODS)


def test_comments_and_docstrings_rerun_nothing(workflow):
    root, env, pkg = workflow
    module = pkg / "condense" / "rded.py"
    old = module.read_text()
    assert old.startswith('"""'), "rded.py is expected to open with its docstring"
    module.write_text("# an edited comment\n" + old.replace('"""', '"""Edited docs. ', 1).replace("\n", "\n\n", 2))
    try:
        assert planned(root, env) == set()
    finally:
        module.write_text(old)


def test_rerun_triggers_select_or_suppress_code_reruns(workflow):
    root, env, pkg = workflow
    module = pkg / "condense" / "rded.py"
    old = module.read_text()
    module.write_text(old + "\n_EDITED_FOR_THE_TEST = 1\n")
    try:
        suppressed = planned(root, env, "--rerun-triggers", "mtime", "input")
        only_params = planned(root, env, "--rerun-triggers", "params")
        dry = snakemake(root, env, "-n", "--rerun-triggers", "params")
    finally:
        module.write_text(old)
    assert suppressed == set()
    assert {method_of(o) for _, o in only_params} == {"rded"}
    assert "Params have changed since last execution" in dry.stdout + dry.stderr
