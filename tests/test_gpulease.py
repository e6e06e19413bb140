"""GPU leases (vdc/gpulease.py): one device per concurrent job, freed when the holder dies.

The device count is faked with VDC_NUM_GPUS; the wrapped commands are small shell loops that
report their CUDA_VISIBLE_DEVICES and then wait for a release file.
"""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]

# Writes its device into <dir>/<name>.dev, then holds it until <dir>/release exists.
HOLD = 'echo "$CUDA_VISIBLE_DEVICES" > "$0/$1.dev.tmp" && mv "$0/$1.dev.tmp" "$0/$1.dev"; ' \
       'while [ ! -e "$0/release" ]; do sleep 0.05; done'


def lease_env(tmp_path: Path, num_gpus: int) -> dict:
    env = {k: v for k, v in os.environ.items() if k not in ("CUDA_VISIBLE_DEVICES", "SLURM_JOB_ID")}
    env.update(VDC_NUM_GPUS=str(num_gpus), VDC_GPU_LOCK_DIR=str(tmp_path / "locks"))
    return env


def start_holder(tmp_path: Path, name: str, env: dict) -> subprocess.Popen:
    cmd = [sys.executable, "-m", "vdc", "gpu-lease", "--poll", "0.1", "--", "sh", "-c", HOLD, str(tmp_path), name]
    return subprocess.Popen(cmd, env=env, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


def wait_for(path: Path, timeout: float = 20.0) -> str:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if path.exists():
            return path.read_text().strip()
        time.sleep(0.05)
    raise AssertionError(f"{path} did not appear within {timeout} s")


def finish(procs: list[subprocess.Popen], tmp_path: Path) -> None:
    (tmp_path / "release").touch()
    for p in procs:
        p.wait(timeout=20)


def test_concurrent_jobs_get_distinct_devices(tmp_path):
    env = lease_env(tmp_path, 3)
    procs = [start_holder(tmp_path, f"job{i}", env) for i in range(3)]
    try:
        devices = [wait_for(tmp_path / f"job{i}.dev") for i in range(3)]
    finally:
        finish(procs, tmp_path)
    assert sorted(devices) == ["0", "1", "2"]
    assert all(p.returncode == 0 for p in procs)


def test_waits_while_all_devices_are_leased(tmp_path):
    env = lease_env(tmp_path, 1)
    first = start_holder(tmp_path, "first", env)
    assert wait_for(tmp_path / "first.dev") == "0"
    second = start_holder(tmp_path, "second", env)
    try:
        time.sleep(1.5)
        assert not (tmp_path / "second.dev").exists(), "second job ran although the only GPU was leased"
        assert second.poll() is None
        first.send_signal(signal.SIGTERM)   # the holder ends: its lease goes with it
        first.wait(timeout=20)
        assert wait_for(tmp_path / "second.dev") == "0"
    finally:
        finish([first, second], tmp_path)


def test_lease_of_a_killed_job_is_freed(tmp_path):
    env = lease_env(tmp_path, 1)
    crashed = start_holder(tmp_path, "crashed", env)
    assert wait_for(tmp_path / "crashed.dev") == "0"
    lock = tmp_path / "locks" / "gpu0.lock"
    assert f"pid {crashed.pid} " in lock.read_text()   # the command itself holds the lease
    crashed.kill()                                     # SIGKILL: no cleanup code runs
    crashed.wait(timeout=20)
    nxt = start_holder(tmp_path, "next", env)
    try:
        assert wait_for(tmp_path / "next.dev", timeout=10) == "0"
    finally:
        finish([nxt], tmp_path)


def run_lease(env: dict, *extra: str) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "vdc", "gpu-lease", *extra, "--",
           "sh", "-c", 'echo "cvd=${CUDA_VISIBLE_DEVICES-unset}"; exit 3']
    return subprocess.run(cmd, env=env, cwd=REPO, capture_output=True, text=True, timeout=60)


def test_scheduler_assigned_devices_are_left_alone(tmp_path):
    env = lease_env(tmp_path, 4)
    slurm = run_lease({**env, "SLURM_JOB_ID": "42", "CUDA_VISIBLE_DEVICES": "2"})
    assert slurm.stdout.strip() == "cvd=2"
    preset = run_lease({**env, "CUDA_VISIBLE_DEVICES": "1"})
    assert preset.stdout.strip() == "cvd=1"
    assert slurm.returncode == preset.returncode == 3          # the command's own exit status
    assert not (tmp_path / "locks").exists()                   # no lease was taken


def test_no_gpus_runs_the_command_unchanged(tmp_path):
    res = run_lease(lease_env(tmp_path, 0))
    assert res.stdout.strip() == "cvd=unset"
    assert res.returncode == 3


def test_bad_device_count_is_a_clear_error(tmp_path):
    res = run_lease({**lease_env(tmp_path, 0), "VDC_NUM_GPUS": "four"})
    assert res.returncode != 0
    assert "VDC_NUM_GPUS" in res.stderr


@pytest.mark.slow
def test_snakemake_runs_four_gpu_jobs_at_once_each_on_its_own_gpu(tmp_path):
    """`snakemake --resources gpu=4` with rules started through GPU_RUN (as workflow/rules/common.smk defines it):
    four jobs run at the same time (each fails unless all four have started within 30 s) on four
    distinct devices."""
    (tmp_path / "Snakefile").write_text(textwrap.dedent(f"""
        import shlex, sys
        from pathlib import Path
        VDC = f"{{shlex.quote(sys.executable)}} -m vdc"
        GPU_RUN = f"{{VDC}} gpu-lease --"

        rule all:
            input: expand("gpu{{i}}.txt", i=range(4))

        rule gpu_job:
            output: "gpu{{i}}.txt"
            resources: gpu=1
            shell:
                "{{GPU_RUN}} sh -c 'echo $CUDA_VISIBLE_DEVICES > started{{wildcards.i}}; "
                "n=0; while [ $(ls started* | wc -l) -lt 4 ] && [ $n -lt 600 ]; do sleep 0.05; n=$((n+1)); done; "
                "test $(ls started* | wc -l) -ge 4 && cp started{{wildcards.i}} {{output}}'"
    """))
    env = lease_env(tmp_path, 4)
    env["PYTHONPATH"] = str(REPO)
    res = subprocess.run([sys.executable, "-m", "snakemake", "--cores", "4", "--resources", "gpu=4",
                          "--workflow-profile", "none"],
                         cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr[-3000:]
    devices = sorted((tmp_path / f"gpu{i}.txt").read_text().strip() for i in range(4))
    assert devices == ["0", "1", "2", "3"]
