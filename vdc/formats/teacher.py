"""The teacher file: a trained network as the teacher stage writes it, or as a user supplies it.

Layout of ``results/teachers/<dataset>/<arch>.pt`` (``torch.save`` of a dict of tensors and plain values)::

    {"arch": str, "num_classes": int, "model": {"width": float, "dropout": float},
     "state_dict": {name: tensor}, "settings": the teacher stage's settings (dict)}

:func:`load_teacher` reads it with ``torch.load(weights_only=True)`` (loading never runs code) and
returns the network in eval mode. A user-supplied network (``teachers:`` in the dataset's config,
e.g. a Kinetics-pretrained I3D converted to vdc's layout) may also be a bare ``state_dict`` of the
named architecture; :func:`load_teacher` then needs ``arch``, ``num_classes`` and ``model``.
"""
from __future__ import annotations

from pathlib import Path

import torch
import torch.nn as nn

from vdc.errors import InputError, load_torch
from vdc.models import create_model
from vdc.utils import save_torch

REQUIRED = ("arch", "num_classes", "model", "state_dict")


def save_teacher(path, arch: str, num_classes: int, model_settings: dict, model: nn.Module, settings: dict) -> None:
    """Write a teacher file atomically."""
    save_torch({"arch": arch, "num_classes": int(num_classes), "model": dict(model_settings),
                "state_dict": {k: v.detach().cpu() for k, v in model.state_dict().items()},
                "settings": settings}, path)


def read_teacher(path, arch: str | None = None, num_classes: int | None = None, model: dict | None = None) -> dict:
    """The teacher file at ``path`` as a checked record {"arch", "num_classes", "model", "state_dict", ...}
    (a bare state_dict becomes one with the given ``arch``, ``num_classes`` and ``model`` settings)."""
    path = Path(path)
    fix = f"train it (snakemake {path}) or point the config's teachers entry at a valid file"
    ckpt = load_torch(path, "teacher network", fix)
    if isinstance(ckpt, dict) and "state_dict" not in ckpt and all(isinstance(v, torch.Tensor) for v in ckpt.values()):
        if arch is None or num_classes is None:
            raise InputError(f"{path}: a bare state_dict; vdc needs the architecture and the number of classes "
                             f"to build it (give the teacher through the config's teachers entry)")
        ckpt = {"arch": arch, "num_classes": num_classes, "model": dict(model or {}), "state_dict": ckpt}
    missing = [k for k in REQUIRED if not isinstance(ckpt, dict) or k not in ckpt]
    if missing:
        raise InputError(f"{path}: not a vdc teacher file (missing {', '.join(missing)}); {fix}")
    if arch is not None and ckpt["arch"] != arch:
        raise InputError(f"{path}: holds a {ckpt['arch']} network, but a {arch} teacher was asked for; {fix}")
    if num_classes is not None and int(ckpt["num_classes"]) != int(num_classes):
        raise InputError(f"{path}: a network for {ckpt['num_classes']} classes, the dataset has {num_classes}; {fix}")
    ckpt["path"] = str(path)
    return ckpt


def build_teacher(record: dict, device="cpu") -> nn.Module:
    """The network of a :func:`read_teacher` record, on ``device``, in eval mode."""
    net = create_model(record["arch"], int(record["num_classes"]), **record["model"])
    try:
        net.load_state_dict(record["state_dict"])
    except RuntimeError as exc:
        first = " ".join(str(exc).split())[:240]
        raise InputError(f"{record['path']}: the weights do not fit {record['arch']} {record['model']} ({first}); "
                         f"train it or point the config's teachers entry at a matching file") from None
    return net.to(device).eval()


def load_teacher(path, device="cpu", arch: str | None = None, num_classes: int | None = None,
                 model: dict | None = None) -> nn.Module:
    """The network stored at ``path``, on ``device``, in eval mode (see the module docstring)."""
    return build_teacher(read_teacher(path, arch, num_classes, model), device)


def teacher_arch(path) -> str:
    """The architecture recorded in a teacher file."""
    return str(load_torch(path, "teacher network", "retrain it")["arch"])
