"""The experts file: DATM's expert trajectories, as the experts stage writes them and DATM reads them.

Layout of ``results/experts/<dataset>/experts.h5``::

    /expert_<i>/params  float32|float16 [S, P]  S = keep_epochs + 1 snapshots (row e = after epoch e,
                                                 row 0 = the initialisation); P = all parameters,
                                                 flattened and concatenated in named_parameters()
                                                 order (vdc.condense.trajectory.FlatModel's layout)
        attrs: test_top1 (percent, after the last trained epoch), train_loss (per epoch, JSON),
               seed, epochs
    /param_names   str   [n]   parameter names, in order
    /param_shapes  int64 [n, 5] each parameter's shape, padded with -1
    attrs: arch, model (JSON), num_classes, num_experts, epochs, keep_epochs, recipe (JSON of the
           resolved hyperparameters), dtype, input_size, clip_len, clip_interval, dataset, frames_file,
           num_params, settings (JSON), vdc_version, content_id (hash of everything above: equal files
           have equal ids; vdc/resume.py ties DATM's checkpoints to it)

:func:`write_experts` writes it atomically; :class:`Experts` reads the metadata eagerly and the
snapshots on demand.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import h5py
import numpy as np
import torch
import torch.nn as nn

from vdc import __version__
from vdc.errors import InputError, h5_dataset, open_h5
from vdc.resume import CONTENT_ID_ATTR, ContentHasher
from vdc.utils import atomic_path


@dataclass
class ExpertRecord:
    """One trained expert as the file stores it."""

    params: np.ndarray            # [S, P] snapshots 0..keep_epochs, in the file's dtype
    test_top1: float
    train_loss: list[float] = field(default_factory=list)
    seed: int = 0
    epochs: int = 0


def param_layout(model: nn.Module) -> tuple[list[str], np.ndarray]:
    """The flat-parameter layout of ``model``: names in named_parameters() order and shapes [n, 5]
    padded with -1."""
    names = [n for n, _ in model.named_parameters()]
    shapes = np.full((len(names), 5), -1, np.int64)
    for j, (_, p) in enumerate(model.named_parameters()):
        shapes[j, :p.dim()] = p.shape
    return names, shapes


def write_experts(path: str | Path, experts: list[ExpertRecord], model: nn.Module, attrs: dict) -> None:
    """Write the experts file atomically. ``model`` gives the parameter layout (any instance of the
    experts' architecture); ``attrs`` the file attributes of the module docstring but num_experts,
    num_params, vdc_version and content_id, which are added here."""
    names, shapes = param_layout(model)
    attrs = {**attrs, "num_experts": len(experts), "num_params": int(sum(p.numel() for p in model.parameters())),
             "vdc_version": __version__}
    ident = ContentHasher()
    with atomic_path(path, suffix=".h5.tmp") as tmp:
        with h5py.File(tmp, "w") as h5:
            for i, r in enumerate(experts):
                g = h5.create_group(f"expert_{i}")
                g.create_dataset("params", data=r.params, chunks=(1, r.params.shape[1]))
                g_attrs = {"test_top1": float(r.test_top1), "train_loss": json.dumps(r.train_loss),
                           "seed": int(r.seed), "epochs": int(r.epochs)}
                for key, v in g_attrs.items():
                    g.attrs[key] = v
                ident.update(f"expert_{i}/params", r.params)
                ident.update_text(f"expert_{i}", json.dumps(g_attrs, sort_keys=True))
            h5.create_dataset("param_names", data=names, dtype=h5py.string_dtype())
            h5["param_shapes"] = shapes
            ident.update_text("param_names", json.dumps(names))
            ident.update("param_shapes", shapes)
            for key, v in attrs.items():
                h5.attrs[key] = v
            ident.update_text("attrs", json.dumps(attrs, sort_keys=True, default=str))
            h5.attrs[CONTENT_ID_ATTR] = ident.hexdigest()


class Experts:
    """Reader of an experts file: metadata eagerly, snapshots on demand."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        fix = f"run the experts stage (snakemake {self.path})"
        self._h5 = open_h5(self.path, "experts file", fix)
        try:
            a = self._h5.attrs
            self.arch = str(a["arch"])
            self.model = json.loads(a["model"])
            self.num_classes = int(a["num_classes"])
            self.num_experts = int(a["num_experts"])
            self.keep_epochs = int(a["keep_epochs"])
            self.num_params = int(a["num_params"])
        except KeyError as exc:
            self._h5.close()
            raise InputError(f"{self.path}: not a vdc experts file (no attribute {exc}); delete it and {fix}") from None
        self.names = [n.decode() if isinstance(n, bytes) else n
                      for n in h5_dataset(self._h5, "param_names", self.path, "experts file", fix)[:]]
        self.test_top1 = [float(h5_dataset(self._h5, f"expert_{i}", self.path, "experts file", fix).attrs["test_top1"])
                          for i in range(self.num_experts)]

    def snapshot(self, expert: int, epoch: int, device="cpu", dtype=torch.float32) -> torch.Tensor:
        """Flat parameters [P] of ``expert`` after ``epoch`` (0 = initialisation)."""
        if not 0 <= epoch <= self.keep_epochs:
            raise IndexError(f"{self.path}: epoch {epoch} not stored (0..{self.keep_epochs}); raise "
                             f"experts.keep_epochs to at least max_start_epoch + expert_epochs and rerun the experts stage")
        row = self._h5[f"expert_{expert}/params"][epoch]
        return torch.from_numpy(np.asarray(row)).to(device=device, dtype=dtype)

    def close(self) -> None:
        self._h5.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
