"""One resume protocol for every long job (teacher, experts, EDC, DATM, evaluation).

A long job keeps its resumable state in one file, ``<workdir>/<stage>/<job>/<name>.pt``, where
``<job>`` is derived from the job's output path (so each job has its own folder, and the log names
it). The file holds the job's **identity** next to its state:

* the settings the job runs with (what Snakemake passes as ``--settings``), minus the keys that do
  not change the result (threads, checkpoint and logging intervals);
* the **content identity** of every input file (:func:`content_id`: the ``content_id`` attribute
  vdc stores in each HDF5 it writes, a SHA-256 of the bytes for other files), by role
  (frames, teacher, statistics, experts, ...);
* the fingerprint of the code the job runs (:func:`vdc.fingerprint.job_code`, the same value the
  Snakemake rule passes as ``params.code``).

:meth:`Checkpoint.load` returns the saved state only when all three agree; otherwise it says in the
log what changed and the job starts over. A file that cannot be read (a kill during a copy, a disk
error) or that holds anything but tensors and plain containers (``torch.load(weights_only=True)``
refuses it: loading never runs code) is moved aside to ``<name>.pt.corrupt`` with a warning and
the job starts over. :meth:`Checkpoint.save` writes atomically (temp file, then rename), so a kill
during the write leaves the previous checkpoint. :meth:`Checkpoint.remove` deletes the file once the
job's outputs are written.

State dicts hold only tensors, numbers, strings, lists and dicts (generator states are tensors).
"""
from __future__ import annotations

import functools
import hashlib
import json
import logging
import os
import re
from pathlib import Path
from typing import Any, Mapping

from vdc.utils import save_torch

log = logging.getLogger("vdc.resume")

# Settings that never change a job's result: a run may be resumed with other values of these.
VOLATILE_KEYS = {"threads", "checkpoint_every", "log_every", "eval_every_s", "workdir", "progress_every_s"}
CONTENT_ID_ATTR = "content_id"


# ----------------------------------------------------------------------------- content identity

def content_id(path: str | os.PathLike) -> str:
    """The identity of a file's contents: the ``content_id`` attribute of a vdc HDF5 file (a hash of
    the data written, stored by the writer), else the SHA-256 of the file's bytes."""
    path = Path(path)
    st = path.stat()
    return _content_id(str(path.resolve()), st.st_size, st.st_mtime_ns)


@functools.lru_cache(maxsize=256)
def _content_id(path: str, size: int, mtime_ns: int) -> str:
    if path.endswith((".h5", ".hdf5")):
        try:
            import h5py

            with h5py.File(path, "r") as h5:
                cid = h5.attrs.get(CONTENT_ID_ATTR)
            if cid:
                return f"h5:{cid}"
        except OSError:
            pass  # not readable as HDF5: hash the bytes (the reader will report the file itself)
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 22), b""):
            h.update(block)
    return f"sha256:{h.hexdigest()}"


class ContentHasher:
    """Incremental content identity for a writer: feed it every array it writes (in order), store
    :meth:`hexdigest` as the file's ``content_id`` attribute."""

    def __init__(self):
        self._h = hashlib.sha256()

    def update(self, name: str, array) -> None:
        import numpy as np

        a = np.ascontiguousarray(array)
        self._h.update(f"{name}:{a.dtype.str}:{a.shape};".encode())
        self._h.update(memoryview(a).cast("B") if a.size else b"")

    def update_text(self, name: str, text: str) -> None:
        self._h.update(f"{name}={text};".encode())

    def hexdigest(self) -> str:
        return self._h.hexdigest()[:32]


# ----------------------------------------------------------------------------- job identity

def stable_settings(settings: Mapping[str, Any]) -> Any:
    """``settings`` without the keys that do not change a job's result (VOLATILE_KEYS), recursively."""
    if isinstance(settings, Mapping):
        return {k: stable_settings(v) for k, v in settings.items() if k not in VOLATILE_KEYS}
    if isinstance(settings, (list, tuple)):
        return [stable_settings(v) for v in settings]
    return settings


def job_identity(settings: Mapping[str, Any], inputs: Mapping[str, Any], code: str) -> dict:
    """What a checkpoint must share with the job that resumes it (see the module docstring).
    ``inputs``: role -> path (None entries are skipped)."""
    return {"settings": stable_settings(settings),
            "inputs": {role: content_id(p) for role, p in sorted(inputs.items()) if p is not None},
            "code": code}


def _differences(old: dict, new: dict) -> list[str]:
    what = []
    if old.get("code") != new.get("code"):
        what.append("the code")
    if old.get("settings") != new.get("settings"):
        what.append("the settings")
    oi, ni = old.get("inputs", {}), new.get("inputs", {})
    for role in sorted(set(oi) | set(ni)):
        if oi.get(role) != ni.get(role):
            what.append(f"input '{role}'")
    return what or ["the identity format"]


def job_dir(workdir: str | os.PathLike, stage: str, out_path: str | os.PathLike) -> Path:
    """``<workdir>/<stage>/<job>``: one folder per job, named after its output path (readable stem +
    a hash of the resolved path, so two outputs never share a folder)."""
    out = Path(out_path).resolve()
    stem = re.sub(r"[^A-Za-z0-9._-]+", "_", "-".join(Path(out_path).with_suffix("").parts[-3:]))
    return Path(workdir) / stage / f"{stem}-{hashlib.sha1(str(out).encode()).hexdigest()[:8]}"


class Checkpoint:
    """The resumable state of one long job at ``path``, tied to ``identity`` (:func:`job_identity`)."""

    def __init__(self, path: str | os.PathLike, identity: dict, logger: logging.Logger | None = None):
        self.path = Path(path)
        self.identity = identity
        self._key = json.dumps(identity, sort_keys=True, default=str)
        self.log = logger or log

    def load(self) -> dict | None:
        """The saved state if this job wrote it, else None (with a log line saying why)."""
        if not self.path.exists():
            return None
        import pickle

        import torch

        try:
            saved = torch.load(self.path, map_location="cpu", weights_only=True)
            if not isinstance(saved, dict) or "identity" not in saved or "state" not in saved:
                raise ValueError("not a vdc checkpoint")
        except (pickle.UnpicklingError, RuntimeError, EOFError, OSError, ValueError, KeyError) as exc:
            aside = self.path.with_name(self.path.name + ".corrupt")
            os.replace(self.path, aside)
            self.log.warning("checkpoint %s could not be used (%s); moved it to %s and starting over",
                             self.path, " ".join(str(exc).split())[:160] or type(exc).__name__, aside)
            return None
        if saved["identity"] != self._key:
            try:
                changed = _differences(json.loads(saved["identity"]), self.identity)
            except (TypeError, ValueError):
                changed = ["the identity format"]
            self.log.info("checkpoint %s belongs to another run (changed: %s); starting over",
                          self.path, ", ".join(changed))
            return None
        return saved["state"]

    def save(self, state: dict) -> None:
        """Write ``state`` (tensors and plain containers only) atomically."""
        save_torch({"identity": self._key, "state": state}, self.path)

    def remove(self) -> None:
        """Delete the checkpoint (and its folder when that is left empty): the job is done."""
        self.path.unlink(missing_ok=True)
        try:
            self.path.parent.rmdir()
        except OSError:
            pass


# ----------------------------------------------------------------------------- random-number state

def rng_state(*generators) -> dict:
    """The global torch RNG (dropout draws from it; CUDA too) and the given generators' states."""
    import torch

    state = {"torch": torch.get_rng_state(), "generators": [g.get_state() for g in generators]}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict, *generators) -> None:
    import torch

    torch.set_rng_state(state["torch"])
    for g, s in zip(generators, state["generators"]):
        g.set_state(s)
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
