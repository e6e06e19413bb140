"""A local job server that saves each stage job the ~3 s of ``import torch``.

A study runs a hundred or more short jobs on a small machine (the toy study: ~130 jobs on 2 cores),
and each ``python -m vdc <stage>`` spends about 3 s importing torch before it computes anything — a
third of the default study's CPU time. With the job server on (``jobserver: true`` in the config: the
workflow then exports ``VDC_JOBSERVER=<socket>`` to its jobs), a job's ``python -m vdc`` is a thin
client: it sends its command line, working directory, environment and its stdin / stdout / stderr file
descriptors over a Unix socket to a server process that has imported torch, numpy and h5py once; the
server forks a child that runs the stage exactly as ``python -m vdc`` would (the same ``main``, the
job's own files as its standard streams, so ``> {log} 2>&1`` works unchanged) and reports its exit
status back. The child imports vdc itself, fresh from disk: the server preloads only third-party
libraries, so an edited vdc module is never run stale.

* Start: the first client that finds no server starts one (``python -m vdc.jobserver serve SOCKET``,
  detached), under a lock, and waits for it; if that fails the job simply runs in its own process.
* Stop: the server exits after ``IDLE_S`` seconds without a job (and when its socket is removed).
* Kill: a job killed by Snakemake (SIGTERM / SIGINT to the client) or killed outright (the client's
  connection closes) kills its child.
* Results are the stage's own: the same code on the same files, and every job sets its torch thread
  count (``--threads``), so a result does not depend on whether it ran through the server.
* What it is not for: cluster jobs (each runs on its own node; leave ``jobserver`` false there) and
  CUDA in the server (the server never touches the GPU; each child initialises CUDA itself).
"""
from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import select
import signal
import socket
import struct
import subprocess
import sys
import time
from pathlib import Path

ENV = "VDC_JOBSERVER"
IDLE_S = float(os.environ.get("VDC_JOBSERVER_IDLE", 120.0))
PRELOAD = ("numpy", "h5py", "torch", "torch.nn", "torch.nn.functional", "yaml")


def socket_path() -> str:
    """The server socket of this interpreter and vdc install (one per user, in the temp folder)."""
    import vdc

    key = f"{sys.executable}|{Path(vdc.__file__).resolve().parent}|{os.getuid()}"
    tmp = os.environ.get("TMPDIR", "/tmp")
    return os.path.join(tmp, f"vdc-jobserver-{hashlib.sha1(key.encode()).hexdigest()[:12]}.sock")


# ----------------------------------------------------------------------------- wire format

def _send_msg(sock: socket.socket, obj) -> None:
    data = json.dumps(obj).encode()
    sock.sendall(struct.pack("!I", len(data)) + data)


def _recv_exact(sock: socket.socket, n: int) -> bytes:
    buf = b""
    while len(buf) < n:
        chunk = sock.recv(n - len(buf))
        if not chunk:
            raise ConnectionError("peer closed")
        buf += chunk
    return buf


def _recv_msg(sock: socket.socket):
    (n,) = struct.unpack("!I", _recv_exact(sock, 4))
    return json.loads(_recv_exact(sock, n))


# ----------------------------------------------------------------------------- client

def run_remote(argv: list[str], path: str | None = None) -> int | None:
    """Run ``python -m vdc <argv>`` on the server at ``path`` (starting it when needed); returns the exit
    status, or None when no server can be used (the caller then runs the job itself)."""
    path = path or os.environ.get(ENV) or socket_path()
    conn = _connect(path) or _start_and_connect(path)
    if conn is None:
        return None
    with conn:
        try:
            _send_msg(conn, {"argv": argv, "cwd": os.getcwd(), "env": dict(os.environ)})
            socket.send_fds(conn, [b"f"], [0, 1, 2])
        except OSError:
            return None
        stop = {"sig": None}

        def forward(signum, frame):  # Snakemake stopping the job: ask the server to kill the child
            stop["sig"] = signum
            with contextlib.suppress(OSError):
                _send_msg(conn, {"kill": signum})

        old = {s: signal.signal(s, forward) for s in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)}
        try:
            while True:
                try:
                    reply = _recv_msg(conn)
                    break
                except InterruptedError:
                    continue
                except ConnectionError:
                    return 1 if stop["sig"] is None else 128 + stop["sig"]
        finally:
            for s, h in old.items():
                signal.signal(s, h)
        return int(reply["status"])


def _connect(path: str) -> socket.socket | None:
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        s.connect(path)
        return s
    except OSError:
        s.close()
        return None


def _start_and_connect(path: str, wait_s: float = 30.0) -> socket.socket | None:
    """Start a server under a lock (one starter at a time) and connect to it."""
    lock_path = path + ".lock"
    try:
        lock = open(lock_path, "w")
    except OSError:
        return None
    with lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        conn = _connect(path)  # another client may have started it meanwhile
        if conn is not None:
            return conn
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)
        try:
            subprocess.Popen([sys.executable, "-m", "vdc.jobserver", "serve", path], stdin=subprocess.DEVNULL,
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
                             close_fds=True)
        except OSError:
            return None
        deadline = time.monotonic() + wait_s
        while time.monotonic() < deadline:
            conn = _connect(path)
            if conn is not None:
                return conn
            time.sleep(0.05)
    return None


# ----------------------------------------------------------------------------- server

def serve(path: str, idle_s: float | None = None) -> None:
    """Accept jobs on ``path`` until ``idle_s`` seconds pass without one (or the socket file is gone)."""
    import importlib

    idle_s = IDLE_S if idle_s is None else idle_s
    for name in PRELOAD:
        importlib.import_module(name)
    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    with contextlib.suppress(FileNotFoundError):
        os.unlink(path)
    server.bind(path)
    os.chmod(path, 0o600)
    server.listen(64)
    ino = os.stat(path).st_ino
    children: dict[int, socket.socket] = {}   # child pid -> its client's connection
    last = time.monotonic()
    try:
        while True:
            readable, _, _ = select.select([server, *children.values()], [], [], 0.05)
            for sock in readable:
                if sock is server:
                    conn, _ = server.accept()
                    pid = _start_job(conn, server)
                    if pid is None:
                        conn.close()
                    else:
                        children[pid] = conn
                else:  # a client spoke or went away: either way its child stops
                    pid = next(p for p, c in children.items() if c is sock)
                    with contextlib.suppress(ConnectionError, OSError, ValueError):
                        msg = _recv_msg(sock)
                        with contextlib.suppress(ProcessLookupError):
                            os.kill(pid, int(msg.get("kill", signal.SIGTERM)))
                        continue
                    with contextlib.suppress(ProcessLookupError):
                        os.kill(pid, signal.SIGKILL)
            for pid in list(children):
                done, status = os.waitpid(pid, os.WNOHANG)
                if done:
                    conn = children.pop(pid)
                    code = os.waitstatus_to_exitcode(status)   # negative: killed by that signal
                    with contextlib.suppress(OSError):
                        _send_msg(conn, {"status": code if code >= 0 else 128 - code})
                    conn.close()
            if children:
                last = time.monotonic()
            elif time.monotonic() - last > idle_s or not _still_ours(path, ino):
                return
    finally:
        server.close()
        if _still_ours(path, ino):
            os.unlink(path)


def _still_ours(path: str, ino: int) -> bool:
    try:
        return os.stat(path).st_ino == ino
    except FileNotFoundError:
        return False


def _start_job(conn: socket.socket, server: socket.socket) -> int | None:
    """Read one job from ``conn`` and fork its child; the child never returns."""
    try:
        job = _recv_msg(conn)
        _, fds, _, _ = socket.recv_fds(conn, 1, 3)
    except (ConnectionError, OSError, ValueError):
        return None
    if len(fds) != 3:
        return None
    pid = os.fork()
    if pid:
        for fd in fds:
            os.close(fd)
        return pid
    # the child: become the job
    status = 1
    try:
        server.close()
        conn.close()
        for target, fd in enumerate(fds):
            os.dup2(fd, target)
            os.close(fd)
        for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGCHLD):
            signal.signal(sig, signal.SIG_DFL)
        os.chdir(job["cwd"])
        os.environ.clear()
        os.environ.update(job["env"])
        os.environ.pop(ENV, None)        # a job's own subprocesses start normally
        sys.stdin = open(0, closefd=False)
        sys.stdout = open(1, "w", closefd=False, buffering=1)
        sys.stderr = open(2, "w", closefd=False, buffering=1)
        sys.argv = ["python -m vdc", *job["argv"]]
        from vdc.__main__ import main

        status = main(job["argv"])
    except SystemExit as exc:
        status = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    except BaseException:  # noqa: BLE001 - the job's own error: print it as python would, then exit 1
        import traceback

        traceback.print_exc()
        status = 1
    finally:
        with contextlib.suppress(Exception):
            sys.stdout.flush()
            sys.stderr.flush()
        os._exit(int(status or 0) % 256)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) == 2 and argv[0] == "serve":
        serve(argv[1])
        return 0
    print("usage: python -m vdc.jobserver serve SOCKET (started by vdc itself; see the module docstring)",
          file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main())
