"""The local job server (vdc/jobserver.py): a stage run through it gives the stage's own result, its
exit status and its output, and a job killed by Snakemake (SIGTERM) or killed outright (SIGKILL of the
client) takes its child with it; the server leaves when idle."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from vdc.condensed import CondensedSet
from vdc.config import stage_settings


@pytest.fixture()
def job(tmp_path, tiny_config, make_frames):
    make_frames(tmp_path / "f.h5")
    rng = np.random.default_rng(0)
    CondensedSet(clips=rng.integers(0, 255, (3, 8, 52, 56, 3), dtype=np.uint8), labels=[0, 1, 2],
                 attrs={"ipc": 1, "t_c": 8, "sampling": "naive", "interpolation": "none", "num_classes": 3}
                 ).write(tmp_path / "c.h5")
    sock = tmp_path / "js.sock"
    env = {**os.environ, "VDC_JOBSERVER": str(sock), "VDC_JOBSERVER_IDLE": "3"}

    def command(out, epochs=3, **kw):
        st = stage_settings(tiny_config(evaluate={"epochs": epochs, "late_epochs": [epochs - 1]}), "evaluate", "tiny",
                            arch="minic3d", labels="hard", loss="ce", cutmix="nocutmix", seed=0)
        return [sys.executable, "-m", "vdc", "evaluate", "--condensed", str(tmp_path / "c.h5"), "--frames",
                str(tmp_path / "f.h5"), "--out", str(tmp_path / out), "--threads", "1", "--settings", json.dumps(st)]

    yield tmp_path, sock, env, command
    subprocess.run(["pkill", "-f", f"vdc.jobserver serve {sock}"])


def children_of_server(sock) -> list[int]:
    out = subprocess.run(["pgrep", "-f", f"vdc.jobserver serve {sock}"], capture_output=True, text=True).stdout
    pids = [int(p) for p in out.split()]
    return [p for p in pids if int(open(f"/proc/{p}/stat").read().split()[3]) in pids]


def test_same_result_status_and_log_through_the_server(job):
    tmp, sock, env, command = job
    direct = subprocess.run(command("a.json"), capture_output=True, text=True, env={**env, "VDC_JOBSERVER": ""})
    served = subprocess.run(command("b.json"), capture_output=True, text=True, env=env)
    assert direct.returncode == served.returncode == 0 and sock.exists()
    a, b = (json.loads((tmp / n).read_text()) for n in ("a.json", "b.json"))
    assert a["curve"] == b["curve"] and a["late"] == b["late"]
    assert "final top1" in served.stderr                 # the child wrote to the client's stderr
    bad = subprocess.run(command("c.json")[:5] + ["missing.h5"] + command("c.json")[6:], capture_output=True,
                         text=True, env=env)
    assert bad.returncode == 2 and "missing.h5" in bad.stderr and "Traceback" not in bad.stderr


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGKILL])
def test_a_killed_job_takes_its_child_along(job, sig):
    tmp, sock, env, command = job
    subprocess.run(command("warm.json"), env=env, check=True, capture_output=True)    # server up
    client = subprocess.Popen(command("long.json", epochs=3000), env=env, stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL)
    deadline = time.time() + 20
    while not children_of_server(sock) and time.time() < deadline:
        time.sleep(0.1)
    assert children_of_server(sock), "the job never reached the server"
    client.send_signal(sig)
    client.wait(timeout=10)
    deadline = time.time() + 10
    while children_of_server(sock) and time.time() < deadline:
        time.sleep(0.1)
    assert not children_of_server(sock) and not (tmp / "long.json").exists()
    if sig == signal.SIGTERM:
        assert client.returncode == 128 + signal.SIGTERM


def test_the_server_leaves_when_idle(job):
    tmp, sock, env, command = job
    subprocess.run(command("a.json"), env=env, check=True, capture_output=True)
    assert sock.exists()
    deadline = time.time() + 15
    while sock.exists() and time.time() < deadline:
        time.sleep(0.2)
    assert not sock.exists()
