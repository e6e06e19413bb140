"""Expert trajectories for DATM: one file per expert, and the index of a dataset's experts that DATM reads.

The experts stage trains each expert in its own job (20 experts = 20 GPU jobs) and writes one **expert
file** per job; a small CPU job then writes the **experts index**, the one file a DATM condense job is
given. The index holds no parameters: it names the expert files (next to it) and the content identity
of each, so its own ``content_id`` changes whenever any expert does (vdc/resume.py ties DATM's
checkpoints to it) and a DATM job reads exactly the experts that were indexed.

Expert file ``results/experts/<dataset>/expert_<i>.h5`` (:func:`write_expert`; :func:`expert_path`, the
workflow's ``vdc.config.PATHS["expert"]``)::

    /params        float32|float16 [S, P]  row r = the parameters after epoch epochs[r] (0 = the
                                           initialisation); P = all parameters flattened and concatenated
                                           in named_parameters() order (vdc.condense.trajectory.FlatModel)
    /epochs        int64 [S]               0, 1, ..., keep_epochs, then the last trained epoch when it is
                                           later (DATM's labels and initial clips come from the fully trained
                                           expert, DATM ``Label_Model_Timestamp = -1``)
    /param_names   str   [n]               parameter names, in order
    /param_shapes  int64 [n, 5]            each parameter's shape, padded with -1
    attrs: kind "vdc-expert", index, seed, epochs (trained), keep_epochs, test_top1 (percent, after the
           last epoch), train_loss and lr (per epoch, JSON), arch, model (JSON), num_classes, num_params,
           recipe (JSON of the resolved hyperparameters), dtype, input_size, clip_len, clip_interval,
           dataset, frames_file, settings (JSON), identity (JSON: the job identity of vdc/resume.py that
           wrote it), vdc_version, content_id (hash of everything above)

Experts index ``results/experts/<dataset>/experts.h5`` (:func:`write_index`)::

    /files         str [E]   the expert files, relative to the index's folder; row e = expert e
    /content_ids   str [E]   each file's content_id when it was indexed
    attrs: kind "vdc-experts-index", num_experts, arch, model (JSON), num_classes, num_params, epochs,
           keep_epochs, stored_epochs (JSON), dataset, vdc_version, content_id (hash of the rows and attrs)

:class:`Experts` reads an index: metadata eagerly, snapshots on demand from the expert files, each
checked against the content id the index recorded (a file rewritten since is refused).
"""
from __future__ import annotations

import json
import os
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

EXPERT_KIND = "vdc-expert"
INDEX_KIND = "vdc-experts-index"
# attributes every expert of one index shares (checked by write_index)
SHARED_ATTRS = ("arch", "model", "num_classes", "num_params", "epochs", "keep_epochs", "dataset")


def expert_path(experts_path: str | os.PathLike, index: int | str) -> Path:
    """The file of expert ``index`` of the experts index ``experts_path``: ``expert_<index>.h5`` in its folder
    (``index`` may be a wildcard such as ``"{expert}"``)."""
    return Path(experts_path).parent / f"expert_{index}.h5"


def stored_epochs(epochs: int, keep_epochs: int) -> list[int]:
    """The epochs an expert file stores: 0..keep_epochs, and the last trained epoch when it is later."""
    keep = min(int(keep_epochs), int(epochs))
    return list(range(keep + 1)) + ([int(epochs)] if epochs > keep else [])


@dataclass
class ExpertRecord:
    """One trained expert as its file stores it."""

    params: np.ndarray            # [S, P] snapshots at ``epochs``, in the file's dtype
    epochs: list[int]             # [S] the epoch of each row
    test_top1: float
    index: int
    seed: int
    train_loss: list[float] = field(default_factory=list)
    lr: list[float] = field(default_factory=list)


def param_layout(model: nn.Module) -> tuple[list[str], np.ndarray]:
    """The flat-parameter layout of ``model``: names in named_parameters() order and shapes [n, 5]
    padded with -1."""
    names = [n for n, _ in model.named_parameters()]
    shapes = np.full((len(names), 5), -1, np.int64)
    for j, (_, p) in enumerate(model.named_parameters()):
        shapes[j, :p.dim()] = p.shape
    return names, shapes


def write_expert(path: str | os.PathLike, r: ExpertRecord, model: nn.Module, attrs: dict) -> None:
    """Write one expert file atomically. ``model`` gives the parameter layout (any instance of the
    expert's architecture); ``attrs`` the file attributes of the module docstring but kind, index, seed,
    test_top1, train_loss, lr, num_params, vdc_version and content_id, which are added here."""
    names, shapes = param_layout(model)
    num_params = int(sum(p.numel() for p in model.parameters()))
    if r.params.shape != (len(r.epochs), num_params):
        raise ValueError(f"expert {r.index}: params {r.params.shape} do not match {len(r.epochs)} epochs x "
                         f"{num_params} parameters")
    attrs = {**attrs, "kind": EXPERT_KIND, "index": int(r.index), "seed": int(r.seed),
             "test_top1": float(r.test_top1), "train_loss": json.dumps(r.train_loss), "lr": json.dumps(r.lr),
             "num_params": num_params, "vdc_version": __version__}
    ident = ContentHasher()
    epochs = np.asarray(r.epochs, np.int64)
    with atomic_path(path, suffix=".h5.tmp") as tmp:
        with h5py.File(tmp, "w") as h5:
            h5.create_dataset("params", data=r.params, chunks=(1, r.params.shape[1]))
            h5["epochs"] = epochs
            h5.create_dataset("param_names", data=names, dtype=h5py.string_dtype())
            h5["param_shapes"] = shapes
            for key, v in attrs.items():
                h5.attrs[key] = v
            ident.update("params", r.params)
            ident.update("epochs", epochs)
            ident.update_text("param_names", json.dumps(names))
            ident.update("param_shapes", shapes)
            ident.update_text("attrs", json.dumps(attrs, sort_keys=True, default=str))
            h5.attrs[CONTENT_ID_ATTR] = ident.hexdigest()


def _attr(h5, key: str, path, what: str, fix: str):
    try:
        return h5.attrs[key]
    except KeyError:
        raise InputError(f"{path}: not a vdc {what} (no attribute {key}); delete it and {fix}") from None


def read_expert_attrs(path: str | os.PathLike) -> dict:
    """The attributes of an expert file (InputError when it is missing or not one)."""
    fix = f"run the experts stage (snakemake {path})"
    with open_h5(path, "expert file", fix) as h5:
        if _attr(h5, "kind", path, "expert file", fix) != EXPERT_KIND:
            raise InputError(f"{path}: not a vdc expert file (kind {h5.attrs['kind']!r}); {fix}")
        return {k: (v.item() if isinstance(v, np.generic) else v) for k, v in h5.attrs.items()}


def write_index(path: str | os.PathLike, expert_files: list[str | os.PathLike]) -> dict:
    """Write the experts index of ``expert_files`` (expert e = the file whose ``index`` attribute is e;
    every index 0..E-1 exactly once, all experts of one architecture, dataset and epoch count), atomically.
    Returns its attributes. Files are named relative to the index's folder."""
    path = Path(path)
    metas = [read_expert_attrs(f) for f in expert_files]
    order = sorted(range(len(metas)), key=lambda j: metas[j]["index"])
    if [metas[j]["index"] for j in order] != list(range(len(metas))):
        raise InputError(f"{path}: the expert files {[str(f) for f in expert_files]} hold experts "
                         f"{sorted(m['index'] for m in metas)}, not 0..{len(metas) - 1}; rerun the experts stage")
    first = metas[order[0]]
    for j in order:
        odd = [k for k in SHARED_ATTRS if metas[j][k] != first[k]]
        if odd:
            raise InputError(f"{expert_files[j]}: differs from {expert_files[order[0]]} in {', '.join(odd)}; the "
                             f"experts of one index must come from one config: rerun the experts stage")
    files = [os.path.relpath(Path(expert_files[j]).resolve(), path.resolve().parent) for j in order]
    ids = [str(metas[j][CONTENT_ID_ATTR]) for j in order]
    attrs = {k: first[k] for k in SHARED_ATTRS}
    attrs.update(kind=INDEX_KIND, num_experts=len(files), vdc_version=__version__,
                 stored_epochs=json.dumps(stored_epochs(first["epochs"], first["keep_epochs"])))
    ident = ContentHasher()
    ident.update_text("files", json.dumps(files))
    ident.update_text("content_ids", json.dumps(ids))
    ident.update_text("attrs", json.dumps(attrs, sort_keys=True, default=str))
    attrs[CONTENT_ID_ATTR] = ident.hexdigest()
    with atomic_path(path, suffix=".h5.tmp") as tmp:
        with h5py.File(tmp, "w") as h5:
            h5.create_dataset("files", data=files, dtype=h5py.string_dtype())
            h5.create_dataset("content_ids", data=ids, dtype=h5py.string_dtype())
            for key, v in attrs.items():
                h5.attrs[key] = v
    return attrs


def _text(values) -> list[str]:
    return [v.decode() if isinstance(v, bytes) else str(v) for v in values]


class Experts:
    """Reader of an experts index: metadata eagerly, snapshots on demand from the expert files."""

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        fix = f"run the experts stage (snakemake {self.path})"
        with open_h5(self.path, "experts index", fix) as h5:
            kind = _attr(h5, "kind", self.path, "experts index", fix)
            if kind != INDEX_KIND:
                raise InputError(f"{self.path}: a {kind} file, not an experts index; give DATM the index "
                                 f"experts.h5 next to the expert files, or {fix}")
            a = h5.attrs
            self.arch = str(a["arch"])
            self.model = json.loads(a["model"])
            self.num_classes = int(a["num_classes"])
            self.num_experts = int(a["num_experts"])
            self.num_params = int(a["num_params"])
            self.epochs = int(a["epochs"])
            self.keep_epochs = int(a["keep_epochs"])
            self.stored_epochs = json.loads(a["stored_epochs"])
            files = _text(h5_dataset(h5, "files", self.path, "experts index", fix)[:])
            ids = _text(h5_dataset(h5, "content_ids", self.path, "experts index", fix)[:])
        self._row = {e: r for r, e in enumerate(self.stored_epochs)}
        self.files = [self.path.parent / f for f in files]
        self._h5 = []
        try:
            for f, cid in zip(self.files, ids):
                h5 = open_h5(f, "expert file", fix)
                self._h5.append(h5)
                if str(h5.attrs.get(CONTENT_ID_ATTR, "")) != cid:
                    raise InputError(f"{f}: changed since {self.path} indexed it; rerun the experts stage "
                                     f"(snakemake {self.path}) so that the index names the experts DATM reads")
            self.test_top1 = [float(h5.attrs["test_top1"]) for h5 in self._h5]
        except Exception:
            self.close()
            raise

    @property
    def final_epoch(self) -> int:
        """The last trained epoch (the fully trained expert)."""
        return self.epochs

    def snapshot(self, expert: int, epoch: int, device="cpu", dtype=torch.float32) -> torch.Tensor:
        """Flat parameters [P] of ``expert`` after ``epoch`` (0 = initialisation, :attr:`final_epoch` = the
        fully trained expert)."""
        if epoch not in self._row:
            raise IndexError(f"{self.path}: epoch {epoch} not stored (epochs {self.stored_epochs[0]}.."
                             f"{self.keep_epochs} and {self.final_epoch}); raise experts.keep_epochs to at least "
                             f"max_start_epoch + expert_epochs and rerun the experts stage")
        row = self._h5[expert]["params"][self._row[epoch]]
        return torch.from_numpy(np.asarray(row)).to(device=device, dtype=dtype)

    def close(self) -> None:
        for h5 in self._h5:
            h5.close()
        self._h5 = []

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
