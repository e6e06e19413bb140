"""Run a command on a GPU of its own: ``python -m vdc gpu-lease -- CMD ...``.

Snakemake never assigns GPU ids to local jobs: with ``--resources gpu=4`` it starts four GPU jobs
at once, and every one of them sees every GPU (and picks ``cuda:0``). The Snakemake rules therefore
start their GPU stages through this wrapper (``GPU_RUN`` in ``workflow/rules/common.smk``), which
leases one free device per job and runs the command with ``CUDA_VISIBLE_DEVICES`` set to it.

A lease is an exclusive ``fcntl.flock`` on ``<lock dir>/gpu<i>.lock``. The wrapper ``exec``s the
command with the locked file still open, so the command itself holds the lease, and the kernel
drops it the moment the process ends, however it ends (exit, crash, SIGKILL). When every device is
leased the wrapper waits for one to come free. The lock file names its holder (pid, host, command)
for ``cat``.

No lease is taken when a scheduler has already chosen the devices: under SLURM (``SLURM_JOB_ID``
set) or whenever ``CUDA_VISIBLE_DEVICES`` is already set, the command runs unchanged, as it does on
a machine without GPUs.

Settings (environment): ``VDC_NUM_GPUS`` (device count; default: ``nvidia-smi -L``, else
``torch.cuda.device_count()``), ``VDC_GPU_LOCK_DIR`` (default: ``<tmp>/vdc-gpu-locks-<user>``;
point several users' runs at one shared directory to make them share the devices politely).
"""
from __future__ import annotations

import argparse
import errno
import fcntl
import getpass
import glob
import logging
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

log = logging.getLogger("vdc.gpulease")


def default_lock_dir() -> Path:
    env = os.environ.get("VDC_GPU_LOCK_DIR")
    if env:
        return Path(env)
    return Path(tempfile.gettempdir()) / f"vdc-gpu-locks-{getpass.getuser()}"


def local_gpus_present() -> bool:
    """Whether this machine shows NVIDIA devices (cheap: no torch import), unless hidden by an empty
    CUDA_VISIBLE_DEVICES."""
    return os.environ.get("CUDA_VISIBLE_DEVICES", "x") != "" and bool(glob.glob("/dev/nvidia[0-9]*"))


def count_gpus() -> int:
    """Number of GPUs on this machine: VDC_NUM_GPUS, else nvidia-smi, else torch."""
    env = os.environ.get("VDC_NUM_GPUS")
    if env is not None:
        try:
            n = int(env)
        except ValueError:
            raise ValueError(f"VDC_NUM_GPUS={env!r} is not an integer; set it to the number of GPUs") from None
        if n < 0:
            raise ValueError(f"VDC_NUM_GPUS={env!r} is negative")
        return n
    if shutil.which("nvidia-smi"):
        try:
            out = subprocess.run(["nvidia-smi", "-L"], capture_output=True, text=True, timeout=30).stdout
            return sum(1 for line in out.splitlines() if line.startswith("GPU "))
        except (OSError, subprocess.TimeoutExpired):
            pass
    if not local_gpus_present():
        return 0  # no NVIDIA device nodes: skip importing torch (~2.5 s per job on a CPU machine)
    import torch

    return torch.cuda.device_count()


def scheduler_assigned() -> str | None:
    """Why no lease is needed (a scheduler already chose the devices), or None."""
    if os.environ.get("SLURM_JOB_ID"):
        return f"SLURM job {os.environ['SLURM_JOB_ID']}"
    if "CUDA_VISIBLE_DEVICES" in os.environ:
        return f"CUDA_VISIBLE_DEVICES={os.environ['CUDA_VISIBLE_DEVICES']} already set"
    return None


def try_lease(lock_dir: Path, num_gpus: int) -> tuple[int, int] | None:
    """Lock the first free device: (device index, open locked fd), or None when all are leased."""
    lock_dir.mkdir(parents=True, exist_ok=True)
    for dev in range(num_gpus):
        fd = os.open(lock_dir / f"gpu{dev}.lock", os.O_RDWR | os.O_CREAT, 0o666)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            os.close(fd)
            if exc.errno in (errno.EWOULDBLOCK, errno.EACCES):
                continue
            raise
        return dev, fd
    return None


def lease(lock_dir: Path, num_gpus: int, poll_s: float = 1.0, timeout_s: float | None = None) -> tuple[int, int]:
    """Wait for a free device and lock it: (device index, locked fd). The lock lasts while fd is open."""
    if num_gpus < 1:
        raise ValueError("lease needs at least one GPU")
    start = time.monotonic()
    waited = False
    while True:
        got = try_lease(lock_dir, num_gpus)
        if got is not None:
            return got
        if timeout_s is not None and time.monotonic() - start > timeout_s:
            raise TimeoutError(f"no free GPU among {num_gpus} after {timeout_s:.0f} s (leases in {lock_dir})")
        if not waited:
            log.info("all %d GPUs are leased (%s); waiting for one to come free", num_gpus, lock_dir)
            waited = True
        time.sleep(poll_s)


def _label(fd: int, command: list[str]) -> None:
    os.ftruncate(fd, 0)
    os.pwrite(fd, f"pid {os.getpid()} on {socket.gethostname()}: {' '.join(command)}\n".encode(), 0)


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--lock-dir", type=Path, default=None,
                   help="directory of the lease files (default: $VDC_GPU_LOCK_DIR or <tmp>/vdc-gpu-locks-<user>)")
    p.add_argument("--num-gpus", type=int, default=None,
                   help="devices to lease from (default: $VDC_NUM_GPUS, else nvidia-smi / torch)")
    p.add_argument("--poll", type=float, default=1.0, help="seconds between tries while all GPUs are leased")
    p.add_argument("command", nargs=argparse.REMAINDER, help="-- then the command to run")


def main(args: argparse.Namespace) -> int:
    command = list(args.command)
    if command and command[0] == "--":
        command = command[1:]
    if not command:
        raise SystemExit("gpu-lease: no command given (usage: python -m vdc gpu-lease -- CMD ...)")
    env = dict(os.environ)
    reason = scheduler_assigned()
    num_gpus = args.num_gpus if args.num_gpus is not None else (0 if reason else count_gpus())
    if reason or num_gpus == 0:
        log.debug("gpu-lease: running without a lease (%s)", reason or "no GPUs")
    else:
        lock_dir = args.lock_dir or default_lock_dir()
        dev, fd = lease(lock_dir, num_gpus, poll_s=args.poll)
        _label(fd, command)
        os.set_inheritable(fd, True)   # the command keeps the lock; it ends with the process
        env["CUDA_VISIBLE_DEVICES"] = str(dev)
        env["VDC_GPU_LEASE"] = str(lock_dir / f"gpu{dev}.lock")
        log.info("gpu-lease: GPU %d of %d for: %s", dev, num_gpus, " ".join(command))
    sys.stdout.flush()
    sys.stderr.flush()
    try:
        os.execvpe(command[0], command, env)
    except FileNotFoundError:
        raise SystemExit(f"gpu-lease: command not found: {command[0]}") from None
