"""User errors: mistakes a person can fix, reported as one or two lines instead of a traceback.

Every stage raises a :class:`UserError` (or a subclass) for a problem in what it was given — a config
key, an annotation line, an input file that is missing, corrupt or degenerate — with a message that
names the file or key and says what to do. ``python -m vdc`` prints such an error as
``vdc <stage>: error: <message>`` and exits with status 2; anything else is a bug and keeps its
traceback. ``--debug`` (or ``VDC_DEBUG=1``) shows the traceback of user errors too.

The helpers below open vdc's files (HDF5, torch, JSON) so that a truncated or foreign file is reported
with its path and the fix rather than with h5py's or torch's own message.
"""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any


class UserError(Exception):
    """A mistake in what a stage was given; the message names the file or key and the fix."""


class ConfigError(UserError, ValueError):
    """A configuration problem (a key, a type, a value, a reference between keys)."""


class InputError(UserError, ValueError):
    """An input file or its data is missing, corrupt or unusable (empty split, NaN clips, ...)."""


class NonFiniteError(InputError):
    """A tensor that must be finite (clips, labels, logits, a loss) holds NaN or inf."""


def debug_enabled() -> bool:
    return os.environ.get("VDC_DEBUG", "") not in ("", "0")


# ----------------------------------------------------------------------------- safe readers

def open_h5(path: str | os.PathLike, what: str, fix: str, mode: str = "r"):
    """``h5py.File(path)`` for reading, with a missing or unreadable file reported as an InputError
    that names ``path``, says it should be ``what`` and gives ``fix``."""
    import h5py

    path = Path(path)
    if not path.exists():
        raise InputError(f"{path}: {what} not found; {fix}")
    try:
        return h5py.File(path, mode)
    except OSError as exc:
        raise InputError(f"{path}: cannot read this {what} ({_short(exc)}); the file is truncated or not "
                         f"HDF5 — delete it and {fix}") from None


def h5_dataset(h5, key: str, path: str | os.PathLike, what: str, fix: str):
    """``h5[key]`` with a missing dataset reported as an InputError naming the file."""
    try:
        return h5[key]
    except KeyError:
        raise InputError(f"{path}: not a {what} (no /{key}); {fix}") from None


def load_torch(path: str | os.PathLike, what: str, fix: str, map_location: Any = "cpu") -> Any:
    """``torch.load(path, weights_only=True)``: only tensors and plain containers are accepted (a file
    that would run code on load is refused). Missing, truncated or refused files raise InputError."""
    import pickle

    import torch

    path = Path(path)
    if not path.exists():
        raise InputError(f"{path}: {what} not found; {fix}")
    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as exc:
        raise InputError(f"{path}: refused to load this {what}: it holds objects other than tensors and plain "
                         f"containers ({_short(exc)}); vdc never writes such files — delete it and {fix}") from None
    except (RuntimeError, EOFError, OSError, ValueError) as exc:
        raise InputError(f"{path}: cannot read this {what} ({_short(exc)}); the file is truncated or not a "
                         f"torch file — delete it and {fix}") from None


def load_json(path: str | os.PathLike, what: str, fix: str) -> Any:
    path = Path(path)
    if not path.exists():
        raise InputError(f"{path}: {what} not found; {fix}")
    try:
        with open(path) as fh:
            return json.load(fh)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise InputError(f"{path}: not valid JSON ({_short(exc)}); the file is truncated — delete it and {fix}") from None


def _short(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    return (text[:200] + "…") if len(text) > 200 else text or type(exc).__name__


# ----------------------------------------------------------------------------- finite checks

def check_finite(x, what: str, where: str) -> None:
    """Raise NonFiniteError when tensor/array ``x`` holds NaN or inf. ``what`` names the values (e.g.
    "condensed clips"), ``where`` the file or job they belong to."""
    import numpy as np

    try:
        import torch

        if isinstance(x, torch.Tensor):
            bad = int((~torch.isfinite(x)).sum()) if x.is_floating_point() else 0
            total = x.numel()
        else:
            raise TypeError
    except TypeError:
        arr = np.asarray(x)
        bad = int((~np.isfinite(arr)).sum()) if np.issubdtype(arr.dtype, np.floating) else 0
        total = arr.size
    if bad:
        raise NonFiniteError(f"{where}: {what} hold {bad} non-finite value(s) of {total} (NaN or inf); "
                             f"nothing was written. Recreate the input (rerun the job that wrote it) or lower "
                             f"the learning rate if a loss diverged.")
