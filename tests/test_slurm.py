"""The SLURM workflow profile (profiles/slurm), checked two ways.

1. Without a cluster: the profile, read the way Snakemake reads it, gives every GPU rule of the
   workflow one GPU on the GPU partition and keeps the CPU rules off it.
2. Against a real single-node SLURM started by scripts/slurm_fixture.sh (root; installs slurm-wlm
   and munge with apt-get if needed): a small workflow whose rules carry the real rule names runs
   through `--profile profiles/slurm --workflow-profile tests/slurm_profile`, and SLURM's own
   records (scontrol, the plugin's sbatch lines and per-job logs) show that each job went through
   sbatch with the profile's resources, the GPU rule with --gpus=1 on the fake GPU.
"""
from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
FIXTURE = REPO / "scripts" / "slurm_fixture.sh"
PROFILE = REPO / "profiles" / "slurm"
TEST_PROFILE = REPO / "tests" / "slurm_profile"
GPU_RULES = {"teacher", "experts", "stats", "condense", "evaluate"}
CPU_RULES = {"toy_dataset", "extract", "tables"}


# ---------------------------------------------------------------------------------- the profile
def profile_resources(text: str) -> tuple[dict, dict]:
    """(default-resources, set-resources) of a profile, through Snakemake's own profile parser."""
    import io

    from snakemake.profiles import ProfileConfigFileParser

    stream = io.StringIO(text)
    stream.name = str(PROFILE / "config.yaml")
    parsed = ProfileConfigFileParser().parse(stream)
    defaults = dict(item.split("=", 1) for item in parsed["default-resources"])
    per_rule: dict[str, dict] = {}
    for item in parsed["set-resources"]:
        rule, assign = item.split(":", 1)
        key, value = assign.split("=", 1)
        per_rule.setdefault(rule, {})[key] = value
    return defaults, per_rule


def test_profile_puts_gpu_rules_on_one_gpu_and_cpu_rules_off_the_gpu_partition():
    text = (PROFILE / "config.yaml").read_text()
    defaults, per_rule = profile_resources(text)
    assert set(per_rule) == GPU_RULES | CPU_RULES
    for rule in GPU_RULES:
        res = per_rule[rule]
        assert res["gpu"] == "1" and res["gres"] == "" and res["slurm_partition"] == "gpu", rule
        assert int(res["cpus_per_gpu"]) >= 1
        assert "attempt" in res["runtime"] and "attempt" in res["mem_mb"], "retries must get more time"
    for rule in CPU_RULES:
        res = {**defaults, **per_rule[rule]}
        assert res["slurm_partition"] == "cpu" and "gpu" not in res, rule
    assert "attempt" in defaults["runtime"]
    # clusters without --gpus: one switch in the site block turns every GPU request into a gres
    _, gres = profile_resources(text.replace("use_gres: false", "use_gres: true"))
    assert all(gres[r]["gpu"] == "0" and gres[r]["gres"] == "gpu:1" for r in GPU_RULES)


def test_profile_knows_every_gpu_rule_of_the_workflow():
    """A rule that declares a GPU (`gpu=GPU` or `gpu=1`) but has no entry in the profile would be sent to the CPU
    partition; a profile entry for a rule that does not exist is a typo."""
    declared, gpu_declared = set(), set()
    for smk in (REPO / "workflow" / "rules").glob("*.smk"):
        for name, body in re.findall(r"^\s*rule (\w+):\n(.*?)(?=^\S|\Z)", smk.read_text(), re.M | re.S):
            declared.add(name)
            if re.search(r"\bgpu\s*=\s*(1|GPU)\b", body):
                gpu_declared.add(name)
    assert gpu_declared <= GPU_RULES, f"GPU rules missing from profiles/slurm: {gpu_declared - GPU_RULES}"
    assert GPU_RULES <= gpu_declared, f"profile sends rules to the GPU that declare none: {GPU_RULES - gpu_declared}"
    assert (GPU_RULES | CPU_RULES) <= declared, f"profile names unknown rules: {(GPU_RULES | CPU_RULES) - declared}"


# ---------------------------------------------------------------------------------- a real SLURM
@pytest.fixture(scope="module")
def slurm_cluster():
    if os.geteuid() != 0:
        pytest.skip("the SLURM test starts slurmctld/slurmd as root; not root here")
    if not shutil.which("slurmctld") and not shutil.which("apt-get"):
        pytest.skip("SLURM is not installed and there is no apt-get to install it")
    status = subprocess.run([str(FIXTURE), "status"], capture_output=True, text=True, timeout=60)
    started_here = "slurmctld not running" in status.stdout
    up = subprocess.run([str(FIXTURE), "up"], capture_output=True, text=True, timeout=900)
    if up.returncode == 3:
        pytest.skip(f"cannot start a test SLURM here: {up.stderr.strip().splitlines()[-1]}")
    assert up.returncode == 0, up.stderr
    yield
    if started_here:
        down = subprocess.run([str(FIXTURE), "down"], capture_output=True, text=True, timeout=120)
        assert down.returncode == 0, down.stderr


def run_through_slurm(workdir: Path, *targets: str, limit_s: int = 300) -> tuple[subprocess.CompletedProcess, float]:
    """Snakemake with the SLURM profile under `timeout -k` (a lost job must not hang the test)."""
    cmd = ["timeout", "-k", "15", str(limit_s), sys.executable, "-m", "snakemake",
           "--profile", str(PROFILE), "--workflow-profile", str(TEST_PROFILE), *targets]
    start = time.monotonic()
    res = subprocess.run(cmd, cwd=workdir, capture_output=True, text=True, timeout=limit_s + 60,
                         env={**os.environ, "PYTHONPATH": str(REPO)})
    return res, time.monotonic() - start


def submitted_jobs(log: str) -> dict[str, str]:
    """SLURM job id -> rule, from the plugin's 'submitted with SLURM jobid' lines."""
    found = re.findall(r"submitted with SLURM jobid (\d+) \(log: \S*/slurm_logs/rule_(\w+)/(?:[^)\s]+/)?\1\.log\)", log)
    return {jobid: rule for jobid, rule in found}


def sbatch_calls(log: str) -> dict[str, list[str]]:
    """rule -> the sbatch command lines the plugin ran for it (logged with --verbose)."""
    calls: dict[str, list[str]] = {}
    for line in log.splitlines():
        if m := re.search(r"sbatch call: (sbatch .*?--comment rule_(\w+).*?) --wrap=", line):
            calls.setdefault(m.group(2).split("_wildcards_")[0], []).append(m.group(1))
    return calls


def scontrol_job(jobid: str) -> str:
    return subprocess.run(["scontrol", "show", "job", jobid], capture_output=True, text=True, timeout=60).stdout


SMALL_WORKFLOW = """
rule all:
    input: "teacher.txt"

rule toy_dataset:
    output: "toy.txt"
    shell: "echo SLURM_JOB_ID=$SLURM_JOB_ID > {{output}}"

rule teacher:
    input: "toy.txt"
    output: "teacher.txt"
    threads: 2
    resources: gpu=1
    shell:
        "{python} -c 'import torch; print(\\"cuda_available\\", torch.cuda.is_available())' > {{output}}; "
        "echo CUDA_VISIBLE_DEVICES=$CUDA_VISIBLE_DEVICES SLURM_JOB_ID=$SLURM_JOB_ID >> {{output}}"
"""


@pytest.mark.slurm
@pytest.mark.slow
def test_small_workflow_runs_through_slurm_with_a_gpu_job(slurm_cluster, tmp_path):
    (tmp_path / "Snakefile").write_text(SMALL_WORKFLOW.format(python=sys.executable))
    res, wall = run_through_slurm(tmp_path)
    log = res.stdout + res.stderr
    print(f"SLURM small workflow: {wall:.1f} s wall")
    assert res.returncode == 0, log[-4000:]
    assert f"Using profiles {PROFILE} and workflow specific profile {TEST_PROFILE}" in log

    jobs = submitted_jobs(log)
    assert sorted(jobs.values()) == ["teacher", "toy_dataset"], log[-4000:]
    calls = sbatch_calls(log)
    (gpu_call,), (cpu_call,) = calls["teacher"], calls["toy_dataset"]
    assert "--gpus=1" in gpu_call and " -p gpu " in gpu_call and "--cpus-per-gpu=8" in gpu_call
    assert "--gpus" not in cpu_call and " -p cpu " in cpu_call

    for jobid, rule in jobs.items():
        record = scontrol_job(jobid)                      # slurmctld keeps it for MinJobAge
        assert "JobState=COMPLETED" in record, record
        assert f"Comment=rule_{rule}" in record
        assert (tmp_path / ".snakemake" / "slurm_logs" / f"rule_{rule}" / f"{jobid}.log").exists()
        if rule == "teacher":
            assert "TresPerJob=gres:gpu:1" in record and "Partition=gpu" in record, record
        else:
            assert "gres:gpu" not in record and "Partition=cpu" in record, record

    teacher_id = next(j for j, r in jobs.items() if r == "teacher")
    out = (tmp_path / "teacher.txt").read_text()
    assert f"CUDA_VISIBLE_DEVICES=0 SLURM_JOB_ID={teacher_id}" in out   # the fake GPU SLURM assigned
    assert "cuda_available" in out


@pytest.mark.slurm
@pytest.mark.slow
def test_real_pipeline_frames_and_teacher_through_slurm(slurm_cluster, tmp_path):
    """The real workflow (toy data -> frames -> teacher, 2 teacher epochs) through SLURM."""
    import yaml

    cfg = yaml.safe_load((REPO / "config.yaml").read_text())
    cfg["teacher"].update(epochs=2, warmup_epochs=1, milestones=[1], eval_every=1)
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(cfg))
    res, wall = run_through_slurm(tmp_path, "frames", "teachers", "-s", str(REPO / "Snakefile"),
                                  "--configfile", "config.yaml", limit_s=900)
    log = res.stdout + res.stderr
    print(f"SLURM frames + teacher: {wall:.1f} s wall")
    assert res.returncode == 0, log[-4000:]
    jobs = submitted_jobs(log)
    assert sorted(jobs.values()) == ["extract", "teacher", "toy_dataset"], log[-4000:]
    calls = sbatch_calls(log)
    assert "--gpus=1" in calls["teacher"][0] and " -p gpu " in calls["teacher"][0]
    assert all("--gpus" not in calls[r][0] and " -p cpu " in calls[r][0] for r in ("toy_dataset", "extract"))
    for jobid, rule in jobs.items():
        record = scontrol_job(jobid)
        assert "JobState=COMPLETED" in record, record
        assert ("TresPerJob=gres:gpu:1" in record) == (rule == "teacher"), record
    assert (tmp_path / "results" / "teachers" / "toy" / "minic3d.json").exists()
