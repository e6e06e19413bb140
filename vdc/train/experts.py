"""Expert trajectories for DATM: ``python -m vdc experts --frames H5 --out H5 --settings JSON``.

``num_experts`` networks (``experts.arch``, MiniC3D-IN by default) are trained on the real training
clips from independent initialisations; each one's parameters are recorded after initialisation and
after every epoch. Only snapshots 0..keep_epochs are stored (DATM reads no later ones:
keep_epochs = max_start_epoch + expert_epochs).

Recipes (``experts.recipe``; explicit lr / momentum / weight_decay / grad_clip / augment override):

=========  =====  ========  ======  =========  ===========================================
recipe     lr     momentum  wd      grad clip  augmentation
=========  =====  ========  ======  =========  ===========================================
authors    0.02   0.9       1e-4    40         random resized crop (0.08-1) + flip (the study's
                                               authors' K400 script)
mtt        0.01   0         0       none       none: centre crop (MTT / DATM buffer.py)
=========  =====  ========  ======  =========  ===========================================

Constant learning rate, batch ``experts.batch`` (16), one random 8-frame clip per video per epoch
(``vdc.data.clips.train_frame_indices``). After training, each expert's test top-1 (centre clip,
centre crop) is recorded.

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
           num_params, settings (JSON), vdc_version

Resume: every expert checkpoints to ``<workdir>/experts/<dataset>/expert_<i>.pt`` after each epoch
(model, optimiser and generator states, snapshots so far); a finished expert's file is kept and
reused, an unfinished one resumes from its last epoch (with the data generator's and the global
RNG's states, which dropout uses) and ends bit-identical on the CPU. The output
file is written atomically once all experts are done.
"""
from __future__ import annotations

import argparse
import json
import logging
import time
from pathlib import Path

import h5py
import numpy as np
import torch
import torch.nn.functional as F
from tqdm import tqdm

from vdc import __version__
from vdc.cli import add_settings_arguments, resolve_settings
from vdc.data import clips as C
from vdc.data.frames import Frames, VideoBank, load_bank
from vdc.models import create_model
from vdc.utils import atomic_path, get_device, save_torch, seed_everything, set_threads

log = logging.getLogger("vdc.experts")

RECIPES = {
    "authors": {"lr": 0.02, "momentum": 0.9, "weight_decay": 1e-4, "grad_clip": 40.0, "augment": True},
    "mtt": {"lr": 0.01, "momentum": 0.0, "weight_decay": 0.0, "grad_clip": 0.0, "augment": False},
}


def resolve_recipe(ex: dict) -> dict:
    """The recipe's hyperparameters with explicit keys of the experts section taken over them."""
    r = dict(RECIPES[ex.get("recipe", "authors")])
    for k in r:
        if ex.get(k) is not None:
            r[k] = ex[k]
    r["batch"] = int(ex.get("batch", 16))
    return r


def keep_epochs(ex: dict) -> int:
    """Snapshots kept: 0..keep_epochs (default every epoch), never more than were trained."""
    k = ex.get("keep_epochs")
    return int(ex["epochs"]) if k is None else min(int(k), int(ex["epochs"]))


def flat_params(model: torch.nn.Module) -> torch.Tensor:
    return torch.cat([p.detach().reshape(-1) for p in model.parameters()]).float().cpu()


# ----------------------------------------------------------------------------- one expert

def _clip_batch(bank: VideoBank, videos: torch.Tensor, frame_idx: torch.Tensor, size: int, augment: bool,
                generator: torch.Generator | None) -> torch.Tensor:
    raw = bank.gather(videos, frame_idx)
    x = C.random_resized_crop_flip(raw, size, generator=generator) if augment else C.center_crop(raw, size)
    return C.normalize(x)


@torch.no_grad()
def test_top1(model: torch.nn.Module, bank: VideoBank, size: int, clip_len: int, interval: int,
              batch: int = 64) -> float:
    """Top-1 (percent) on the centre clip, centre crop of every video of ``bank``."""
    model.eval()
    correct = 0
    dev = bank.lengths.device
    for s in range(0, len(bank), batch):
        v = torch.arange(s, min(s + batch, len(bank)), device=dev)
        fi = C.center_frame_indices(bank.lengths[v], clip_len, interval)
        x = C.normalize(C.center_crop(bank.gather(v, fi), size))
        correct += int((model(x).argmax(1) == bank.labels[v]).sum())
    return 100.0 * correct / max(len(bank), 1)


def train_one_expert(i: int, train: VideoBank, test: VideoBank, num_classes: int, settings: dict,
                     work: Path, device: torch.device, source: str = "") -> dict:
    """Train expert ``i`` (resuming from ``work/expert_<i>.pt``); returns {snapshots [S, P], test_top1,
    train_loss, seed, epochs}. ``source`` identifies the frames file: a checkpoint of other data is not resumed."""
    ex, ds = settings["experts"], settings["dataset"]
    rec = resolve_recipe(ex)
    epochs, keep = int(ex["epochs"]), keep_epochs(ex)
    size, clip_len, interval = int(ds["input_size"]), int(ds.get("clip_len", 8)), int(ds.get("clip_interval", 8))
    seed = int(ex.get("seed", 0)) * 100003 + i
    ckpt_path = work / f"expert_{i}.pt"

    torch.manual_seed(seed)
    model = create_model(settings["arch"], num_classes, **settings["model"]).to(device)
    opt = torch.optim.SGD(model.parameters(), lr=rec["lr"], momentum=rec["momentum"],
                          weight_decay=rec["weight_decay"])
    gen = torch.Generator().manual_seed(seed)
    state = {"epoch": 0, "snapshots": [flat_params(model)], "train_loss": [], "done": False, "seed": seed}
    if ckpt_path.exists():
        ck = torch.load(ckpt_path, map_location="cpu", weights_only=False)
        if ck["settings"] != _identity(settings, source):
            log.warning("%s was written with other settings; retraining expert %d", ckpt_path, i)
        else:
            model.load_state_dict(ck["model"])
            opt.load_state_dict(ck["opt"])
            gen.set_state(ck["gen"])
            _set_global_rng(ck["rng"])
            state = ck["state"]
            log.info("expert %d: resuming after epoch %d", i, state["epoch"])
    if state["done"]:
        return state

    n = len(train)
    bar = tqdm(range(state["epoch"], epochs), desc=f"expert {i}", disable=None, leave=False)
    for epoch in bar:
        model.train()
        perm = torch.randperm(n, generator=gen).to(train.lengths.device)
        total, count = 0.0, 0
        for s in range(0, n, rec["batch"]):
            v = perm[s:s + rec["batch"]]
            fi = C.train_frame_indices(train.lengths[v], clip_len, interval, generator=gen)
            x = _clip_batch(train, v, fi, size, rec["augment"], gen)
            loss = F.cross_entropy(model(x), train.labels[v])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            if rec["grad_clip"]:
                torch.nn.utils.clip_grad_norm_(model.parameters(), rec["grad_clip"])
            opt.step()
            total += float(loss.detach()) * len(v)
            count += len(v)
        state["epoch"] = epoch + 1
        state["train_loss"].append(total / max(count, 1))
        if epoch + 1 <= keep:
            state["snapshots"].append(flat_params(model))
        bar.set_postfix(loss=f"{state['train_loss'][-1]:.3f}")
        if epoch + 1 == epochs:
            state["test_top1"] = test_top1(model, test, size, clip_len, interval)
            state["done"] = True
        save_torch({"model": model.state_dict(), "opt": opt.state_dict(), "gen": gen.get_state(),
                    "rng": _global_rng(), "state": state, "settings": _identity(settings, source)}, ckpt_path)
    log.info("expert %d: %d epochs, last train loss %.4f, test top1 %.2f", i, epochs,
             state["train_loss"][-1], state["test_top1"])
    return state


def _global_rng() -> dict:
    """The global RNG states (dropout draws from them), so a resumed expert continues identically."""
    return {"cpu": torch.get_rng_state(), "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else []}


def _set_global_rng(state: dict) -> None:
    torch.set_rng_state(state["cpu"])
    if state["cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def _identity(settings: dict, source: str) -> str:
    """What an expert checkpoint must agree on to be resumed: the settings (but threads, num_experts,
    dtype) and the frames file (path, size, modification time)."""
    ex = {k: v for k, v in settings["experts"].items() if k not in ("threads", "num_experts", "dtype")}
    return json.dumps({"arch": settings["arch"], "model": settings["model"], "experts": ex,
                       "dataset": settings["dataset"], "frames": source}, sort_keys=True)


# ----------------------------------------------------------------------------- the stage

def train_experts(frames_path: str | Path, out_path: str | Path, settings: dict,
                  workdir: str | Path | None = None) -> dict:
    """Train every expert and write the experts file (layout in the module docstring). Returns a summary."""
    ex, ds = settings["experts"], settings["dataset"]
    seed_everything(int(ex.get("seed", 0)), settings.get("deterministic", True))
    set_threads(ex.get("threads"))
    device = get_device(settings.get("device", "auto"))
    work = Path(workdir or settings.get("workdir", "work")) / "experts" / ds["name"]
    work.mkdir(parents=True, exist_ok=True)
    t0 = time.time()
    frames = Frames(frames_path)
    train, test = load_bank(frames, "train", device), load_bank(frames, "test", device)
    if len(train) == 0:
        raise ValueError(f"{frames_path}: no training videos; re-run extraction for dataset {ds['name']}")
    k = frames.num_classes
    st = Path(frames_path).stat()
    source = f"{Path(frames_path).resolve()}:{st.st_size}:{st.st_mtime_ns}"
    results = [train_one_expert(i, train, test, k, settings, work, device, source)
               for i in range(int(ex["num_experts"]))]

    probe = create_model(settings["arch"], k, **settings["model"])
    names = [n for n, _ in probe.named_parameters()]
    shapes = np.full((len(names), 5), -1, np.int64)
    for j, (_, p) in enumerate(probe.named_parameters()):
        shapes[j, :p.dim()] = p.shape
    dtype = np.float16 if ex.get("dtype", "float32") == "float16" else np.float32
    keep = keep_epochs(ex)
    with atomic_path(out_path, suffix=".h5.tmp") as tmp:
        with h5py.File(tmp, "w") as h5:
            for i, r in enumerate(results):
                snaps = torch.stack(r["snapshots"][:keep + 1]).numpy().astype(dtype)
                g = h5.create_group(f"expert_{i}")
                g.create_dataset("params", data=snaps, chunks=(1, snaps.shape[1]))
                g.attrs["test_top1"] = float(r["test_top1"])
                g.attrs["train_loss"] = json.dumps(r["train_loss"])
                g.attrs["seed"] = int(r.get("seed", i))
                g.attrs["epochs"] = int(r["epoch"])
            h5.create_dataset("param_names", data=names, dtype=h5py.string_dtype())
            h5["param_shapes"] = shapes
            attrs = {"arch": settings["arch"], "model": json.dumps(settings["model"], sort_keys=True),
                     "num_classes": k, "num_experts": len(results), "epochs": int(ex["epochs"]),
                     "keep_epochs": keep, "recipe": json.dumps(resolve_recipe(ex), sort_keys=True),
                     "dtype": np.dtype(dtype).name, "input_size": int(ds["input_size"]),
                     "clip_len": int(ds.get("clip_len", 8)), "clip_interval": int(ds.get("clip_interval", 8)),
                     "dataset": ds["name"], "frames_file": str(frames_path),
                     "num_params": int(sum(p.numel() for p in probe.parameters())),
                     "settings": json.dumps(settings, sort_keys=True), "vdc_version": __version__}
            for key, v in attrs.items():
                h5.attrs[key] = v
    accs = [r["test_top1"] for r in results]
    log.info("%d experts in %.1f s; test top1 %s", len(results), time.time() - t0, ", ".join(f"{a:.1f}" for a in accs))
    return {"test_top1": accs, "wall_time_s": time.time() - t0, "keep_epochs": keep}


class Experts:
    """Reader of an experts file: metadata eagerly, snapshots on demand."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        if not self.path.exists():
            raise FileNotFoundError(f"{self.path}: experts file not found; run the experts stage (snakemake {self.path})")
        self._h5 = h5py.File(self.path, "r")
        a = self._h5.attrs
        self.arch = str(a["arch"])
        self.model = json.loads(a["model"])
        self.num_classes = int(a["num_classes"])
        self.num_experts = int(a["num_experts"])
        self.keep_epochs = int(a["keep_epochs"])
        self.num_params = int(a["num_params"])
        self.names = [n.decode() if isinstance(n, bytes) else n for n in self._h5["param_names"][:]]
        self.test_top1 = [float(self._h5[f"expert_{i}"].attrs["test_top1"]) for i in range(self.num_experts)]

    def snapshot(self, expert: int, epoch: int, device="cpu", dtype=torch.float32) -> torch.Tensor:
        """Flat parameters [P] of ``expert`` after ``epoch`` (0 = initialisation)."""
        if not 0 <= epoch <= self.keep_epochs:
            raise IndexError(f"{self.path}: epoch {epoch} not stored (0..{self.keep_epochs}); raise "
                             f"experts.keep_epochs to at least max_start_epoch + expert_epochs and rerun the experts stage")
        row = self._h5[f"expert_{expert}/params"][epoch]
        return torch.from_numpy(np.asarray(row)).to(device=device, dtype=dtype)

    def close(self) -> None:
        self._h5.close()


# ----------------------------------------------------------------------------- CLI

def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--frames", required=True, help="frames HDF5 of the dataset")
    p.add_argument("--out", required=True, help="experts HDF5 to write")
    p.add_argument("--workdir", help="checkpoint folder root (default: settings workdir)")
    add_settings_arguments(p)


def main(args: argparse.Namespace) -> int:
    settings = resolve_settings(args, "experts")
    summary = train_experts(args.frames, args.out, settings, args.workdir)
    print(json.dumps(summary))
    return 0
